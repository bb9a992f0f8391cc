//! Bad input gets typed, clear errors; temp files, attached databases and other page sizes
//! keep working.

use std::sync::atomic::{AtomicU64, Ordering};

use pagelog_log::LogError;
use pagelog_vfs::{Durability, PagelogVfs, VfsError, VfsOptions};

static N: AtomicU64 = AtomicU64::new(0);

fn vfs_with(page_size: u32) -> PagelogVfs {
    PagelogVfs::register(
        &format!("errors-{}", N.fetch_add(1, Ordering::Relaxed)),
        VfsOptions {
            page_size,
            ..VfsOptions::new(Durability::Sync)
        },
    )
    .unwrap()
}

#[test]
fn other_journal_modes_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_with(4096);
    let conn = vfs.connect(&dir.path().join("a.db")).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .unwrap();
    for mode in ["DELETE", "truncate", "PERSIST", "MEMORY", "OFF"] {
        let err = conn
            .execute_batch(&format!("PRAGMA journal_mode={mode}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pagelog requires WAL mode"), "{mode}: {err}");
        assert!(err.contains(&mode.to_ascii_lowercase()), "{mode}: {err}");
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "the database is untouched");
}

#[test]
fn a_corrupt_record_in_the_middle_of_the_log_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let vfs = vfs_with(4096);
    {
        let conn = vfs.connect(&path).unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        for i in 0..20 {
            conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
    }
    let seg = dir
        .path()
        .join("a.db-pagelog")
        .join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    // Damage the payload of record 3, CREATE TABLE (records start after the 64-byte segment
    // header; record 1 is page 1 of the new database, 40 + 32 + 4 + 4096 bytes; record 2 the
    // checkpoint mark written at creation, 40 + 32 bytes).
    let r1 = 40 + 32 + 4 + 4096;
    let r3 = 64 + r1 + 72;
    let at = r3 + 40 + 100;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let err = vfs.open_database(&path).unwrap_err();
    match &err {
        VfsError::Log(LogError::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, &seg);
            assert_eq!(*offset, r3 as u64);
        }
        other => panic!("expected a Corrupt log error, got {other}"),
    }
    assert!(
        err.to_string().contains("00000000000000000001.seg"),
        "{err}"
    );
    // Through plain rusqlite the open fails too (SQLite cannot carry our message), and the
    // VFS keeps the reason for the caller.
    let r = rusqlite::Connection::open_with_flags_and_vfs(
        &path,
        rusqlite::OpenFlags::default(),
        vfs.name(),
    )
    .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)));
    assert!(r.is_err());
    assert!(
        pagelog_vfs::last_error().is_some_and(|e| e.contains("corrupt log")),
        "{:?}",
        pagelog_vfs::last_error()
    );
}

#[test]
fn a_plain_sqlite_database_is_not_silently_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .unwrap();
    let err = vfs_with(4096).open_database(&path).unwrap_err();
    assert!(matches!(err, VfsError::NotManaged { .. }), "{err}");
    // Refusing leaves nothing behind: no log directory next to the file.
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["plain.db"]);
}

#[test]
fn a_database_file_that_does_not_match_its_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let vfs = vfs_with(4096);
    {
        let conn = vfs.connect(&path).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES ('hello')")
            .unwrap();
    }
    // Change a byte of the checkpointed main file behind pagelog's back.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = vfs.open_database(&path).unwrap_err();
    assert!(matches!(err, VfsError::ChecksumMismatch { .. }), "{err}");
}

#[test]
fn temp_tables_and_attached_databases_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_with(4096);
    let conn = vfs.connect(&dir.path().join("main.db")).unwrap();
    conn.execute_batch(
        "PRAGMA temp_store=FILE;
         CREATE TEMP TABLE scratch(x);
         INSERT INTO scratch SELECT value FROM generate_series(1, 5000);
         CREATE TABLE t(x);
         INSERT INTO t SELECT x FROM scratch;",
    )
    .unwrap_or_else(|e| {
        // generate_series is an extension not always compiled in: fall back to a CTE.
        assert!(e.to_string().contains("generate_series"), "{e}");
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS scratch(x);
             WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 5000)
             INSERT INTO scratch SELECT x FROM s;
             CREATE TABLE t(x);
             INSERT INTO t SELECT x FROM scratch;",
        )
        .unwrap();
    });
    let other = dir.path().join("other.db");
    conn.execute("ATTACH DATABASE ?1 AS other", [other.to_str().unwrap()])
        .unwrap();
    conn.execute_batch("CREATE TABLE other.u(y); INSERT INTO other.u SELECT x * 2 FROM t;")
        .unwrap();
    let sum: i64 = conn
        .query_row("SELECT sum(y) FROM other.u", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sum, 5000 * 5001);
    drop(conn);
    // The attached database got its own log and recovers on its own.
    assert!(dir.path().join("other.db-pagelog").is_dir());
    let db = vfs.open_database(&other).unwrap();
    assert!(db.last_lsn() >= 3);
}

#[test]
fn page_sizes_other_than_4096() {
    let dir = tempfile::tempdir().unwrap();
    for ps in [512u32, 1024, 8192, 16384, 65536] {
        let vfs = vfs_with(ps);
        let path = dir.path().join(format!("p{ps}.db"));
        {
            let conn = vfs.connect(&path).unwrap();
            let got: i64 = conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap();
            assert_eq!(got, ps as i64);
            conn.execute_batch(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
                 WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 300)
                 INSERT INTO t(v) SELECT randomblob(700) FROM s;
                 DELETE FROM t WHERE id % 3 = 0;
                 VACUUM;",
            )
            .unwrap();
        }
        let conn = vfs.connect(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 200, "page size {ps}");
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "page size {ps}");
    }
    assert!(matches!(
        PagelogVfs::register(
            "errors-bad-page-size",
            VfsOptions {
                page_size: 3000,
                ..VfsOptions::new(Durability::Sync)
            }
        ),
        Err(VfsError::Config(_))
    ));
}

#[test]
fn exclusive_locking_mode_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let vfs = vfs_with(4096);
    let db = vfs.open_database(&path).unwrap();
    let conn = vfs.connect(&path).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .unwrap();
    for pragma in [
        "PRAGMA locking_mode=EXCLUSIVE",
        "PRAGMA main.locking_mode = exclusive",
    ] {
        let err = conn.execute_batch(pragma).unwrap_err().to_string();
        assert!(
            err.contains("locking_mode=exclusive refused"),
            "{pragma}: {err}"
        );
    }
    let mode: String = conn
        .query_row("PRAGMA locking_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "normal");
    let mode: String = conn
        .query_row("PRAGMA locking_mode=NORMAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "normal");
    // Still in normal mode: a commit and a checkpoint release the locks a snapshot's copy
    // takes (in exclusive mode SQLite would not take them at all).
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let copy = db
        .fs()
        .open(
            &dir.path().join("copy"),
            pagelog_log::fs::OpenOptions::create(),
        )
        .unwrap();
    let base = db.copy_main_file(&*copy).unwrap();
    assert_eq!(base.last_lsn, db.last_lsn());
}
