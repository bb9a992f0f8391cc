use pagelog_vfs::{Durability, PagelogVfs, VfsOptions};

#[test]
fn create_write_reopen_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = PagelogVfs::register("smoke", VfsOptions::new(Durability::Sync)).unwrap();
    let path = dir.path().join("a.db");
    {
        let conn = vfs.connect(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            .unwrap();
        for i in 0..100 {
            conn.execute("INSERT INTO t(v) VALUES (randomblob(300))", [])
                .unwrap();
            let _ = i;
        }
        let err = conn
            .execute_batch("PRAGMA journal_mode=DELETE")
            .unwrap_err();
        eprintln!("journal_mode=DELETE -> {err}");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        conn.execute("INSERT INTO t(v) VALUES (x'01')", []).unwrap();
    }
    let db = vfs.open_database(&path).unwrap();
    eprintln!("{:?}", db.open_report());
    let conn = vfs.connect(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 101);
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}
