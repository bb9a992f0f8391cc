//! Limits: a transaction whose log record would exceed the log's record limit is refused
//! cleanly (SQLITE_FULL, a clear message, nothing appended) and the database goes on; the
//! commit LSN a thread can ask for is per database.

use std::sync::atomic::{AtomicU64, Ordering};

use pagelog_log::LogOptions;
use pagelog_vfs::record::KIND_TXN;
use pagelog_vfs::{Durability, PagelogVfs, VfsOptions};
use rusqlite::ErrorCode;

static N: AtomicU64 = AtomicU64::new(0);

const MAX_RECORD: usize = 4 << 20;

fn vfs(durability: Durability) -> PagelogVfs {
    let mut opts = VfsOptions::new(durability);
    opts.log = LogOptions {
        segment_size: 1 << 20,
        max_record_bytes: MAX_RECORD,
        ..LogOptions::default()
    };
    PagelogVfs::register(
        &format!("limits-{}", N.fetch_add(1, Ordering::Relaxed)),
        opts,
    )
    .unwrap()
}

fn small(conn: &rusqlite::Connection, i: i64) {
    conn.execute("INSERT INTO t VALUES (?1, ?2)", (i, vec![i as u8; 3000]))
        .unwrap();
}

fn assert_refused(err: rusqlite::Error) {
    match &err {
        rusqlite::Error::SqliteFailure(e, _) => {
            assert_eq!(e.code, ErrorCode::DiskFull, "{err}");
            assert_eq!(e.extended_code, rusqlite::ffi::SQLITE_FULL, "{err}");
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = pagelog_vfs::last_error().expect("the VFS's message");
    assert!(
        msg.contains("larger than the maximum of 4194304 bytes"),
        "{msg}"
    );
}

#[test]
fn a_transaction_over_the_record_limit_is_refused_and_the_database_goes_on() {
    for durability in [Durability::Sync, Durability::Gated] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let vfs = vfs(durability);
        let big = vec![0x5au8; 2 << 20];
        {
            let db = vfs.open_database(&path).unwrap();
            let conn = vfs.connect(&path).unwrap();
            conn.execute_batch("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)")
                .unwrap();
            for i in 0..10 {
                small(&conn, i);
            }
            let before = db.log().last_lsn();
            // One explicit transaction of 3 × 2 MiB: refused at COMMIT.
            conn.execute_batch("BEGIN").unwrap();
            for i in 0..3 {
                conn.execute("INSERT INTO t VALUES (?1, ?2)", (1000 + i, &big))
                    .unwrap();
            }
            assert_refused(conn.execute_batch("COMMIT").unwrap_err());
            if !conn.is_autocommit() {
                conn.execute_batch("ROLLBACK").unwrap();
            }
            // An autocommit statement over the limit: refused too.
            assert_refused(
                conn.execute(
                    "INSERT INTO t SELECT 2000 + value, ?1 FROM generate_series(1, 3)",
                    [&big],
                )
                .map(|_| ())
                .or_else(|e| {
                    // Without generate_series, a recursive CTE does the same.
                    if e.to_string().contains("no such table") {
                        conn.execute(
                            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s \
                             WHERE x < 3) INSERT INTO t SELECT 2000 + x, ?1 FROM s",
                            [&big],
                        )
                        .map(|_| ())
                    } else {
                        Err(e)
                    }
                })
                .unwrap_err(),
            );
            assert_eq!(db.log().last_lsn(), before, "nothing appended");
            assert_eq!(db.failure(), None, "not poisoned");
            for i in 10..20 {
                small(&conn, i);
            }
            // A transaction just under the limit still commits.
            conn.execute("INSERT INTO t VALUES (3000, ?1)", [vec![1u8; 3 << 20]])
                .unwrap();
            conn.execute("DELETE FROM t WHERE k = 3000", []).unwrap();
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
            for i in 20..25 {
                small(&conn, i);
            }
            db.wait_durable(db.last_lsn()).unwrap();
            let mut reader = db.log().reader(db.log().first_lsn()).unwrap();
            while let Some(info) = reader.next_info() {
                let info = info.unwrap();
                if info.kind == KIND_TXN {
                    assert!(info.len as usize <= MAX_RECORD, "{info:?}");
                }
            }
        }
        // Reopen: recovery checks the whole-database checksum against the log's.
        let db = vfs.open_database(&path).unwrap();
        assert!(!db.open_report().created);
        let conn = vfs.connect(&path).unwrap();
        let keys: Vec<i64> = conn
            .prepare("SELECT k FROM t ORDER BY k")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, (0..25).collect::<Vec<_>>(), "{durability:?}");
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        small(&conn, 25);
    }
}

#[test]
fn the_commit_lsn_of_a_thread_is_per_database() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let vfs = vfs(Durability::Gated);
    let a = vfs.open_database(&pa).unwrap();
    let b = vfs.open_database(&pb).unwrap();
    let ca = vfs.connect(&pa).unwrap();
    let cb = vfs.connect(&pb).unwrap();
    ca.execute_batch("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    cb.execute_batch("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    // A's LSNs run ahead of B's, so that one database's LSN is not the other's.
    for i in 0..20 {
        small(&ca, i);
    }
    small(&ca, 100);
    let la = a.last_lsn();
    assert_eq!(pagelog_vfs::last_commit_lsn_of(&a), Some(la));
    small(&cb, 100);
    let lb = b.last_lsn();
    assert_ne!(la, lb);
    assert_eq!(
        pagelog_vfs::last_commit_lsn_of(&a),
        Some(la),
        "A's, not B's"
    );
    assert_eq!(pagelog_vfs::last_commit_lsn_of(&b), Some(lb));
    // The thread-wide value is the trap this replaces: it is B's now.
    assert_eq!(pagelog_vfs::last_commit_lsn(), Some(lb));

    // One transaction over A and an attached B commits once in each.
    ca.execute("ATTACH ?1 AS aux", [pb.to_str().unwrap()])
        .unwrap();
    ca.execute_batch(
        "BEGIN; INSERT INTO main.t VALUES (200, x'01'); INSERT INTO aux.t VALUES (200, x'02'); COMMIT",
    )
    .unwrap();
    assert!(a.last_lsn() > la && b.last_lsn() > lb);
    assert_eq!(pagelog_vfs::last_commit_lsn_of(&a), Some(a.last_lsn()));
    assert_eq!(pagelog_vfs::last_commit_lsn_of(&b), Some(b.last_lsn()));
    a.wait_durable(pagelog_vfs::last_commit_lsn_of(&a).unwrap())
        .unwrap();
    assert!(a.durable_lsn() >= a.last_lsn());

    // Another thread committed nothing.
    let a2 = a.clone();
    std::thread::spawn(move || assert_eq!(pagelog_vfs::last_commit_lsn_of(&a2), None))
        .join()
        .unwrap();
}
