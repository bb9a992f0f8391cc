//! The facade API: bookmarks, durability and replication waits (blocking and async), stats,
//! snapshots, close and reopen, typed errors.

use std::sync::Arc;
use std::time::Duration;

use pagelog::{Bookmark, Config, Database, Durability, Error, RestoreOptions};

/// A minimal executor: park the thread until the waker fires.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

fn config(store: &std::path::Path, durability: Durability) -> Config {
    Config::new()
        .durability(durability)
        .store_url(store.to_str().unwrap())
        .batch_delay(Duration::from_millis(20))
}

#[test]
fn gated_writes_bookmarks_and_waits() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let db = Database::open(dir.path().join("a.db"), config(&store, Durability::Gated)).unwrap();
    let conn = db.connect().unwrap();
    conn.execute_batch("CREATE TABLE t(x)").unwrap();
    let mut marks = Vec::new();
    for i in 0..50 {
        conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        marks.push(db.commit_bookmark(&conn).unwrap());
    }
    // Bookmarks sort as strings in commit order and parse back.
    let strs: Vec<String> = marks.iter().map(|m| m.to_string()).collect();
    let mut sorted = strs.clone();
    sorted.sort();
    assert_eq!(strs, sorted);
    assert_eq!(strs[7].parse::<Bookmark>().unwrap(), marks[7]);
    // Async durability for many requests at once, then blocking.
    let futures: Vec<_> = marks
        .iter()
        .map(|m| db.wait_durable_async(m).unwrap())
        .collect();
    for f in futures {
        block_on(f).unwrap();
    }
    let last = *marks.last().unwrap();
    assert!(db.stats().durable_lsn >= last.lsn);
    db.wait_durable(&last).unwrap();
    block_on(db.wait_replicated_async(&last).unwrap()).unwrap();
    let s = db.stats();
    assert!(s.replicated_lsn.unwrap() >= last.lsn, "{s:?}");
    assert_eq!(s.current_lsn, db.bookmark().lsn);
    // A bookmark of another timeline is refused by name.
    let other = Bookmark::new(9, 1);
    assert!(matches!(
        db.wait_durable(&other),
        Err(Error::WrongTimeline { current: 1, .. })
    ));
    // Restore at a bookmark gives exactly the rows committed up to it.
    let snap = db.snapshot_now().unwrap();
    assert!(snap.lsn >= last.lsn);
    db.close().unwrap();
    let store = pagelog::open_store(store.to_str().unwrap(), &Default::default()).unwrap();
    let out = dir.path().join("r.db");
    pagelog::restore(&*store, &out, &RestoreOptions::at_bookmark(marks[19])).unwrap();
    let n: i64 = rusqlite::Connection::open(&out)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 20);
}

#[test]
fn reopen_continues_and_second_owner_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let path = dir.path().join("a.db");
    let db = Database::open(&path, config(&store, Durability::Sync)).unwrap();
    let conn = db.connect().unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let m = db.commit_bookmark(&conn).unwrap();
    // Sync mode: durable on return.
    assert!(db.stats().durable_lsn >= m.lsn);
    drop(conn);
    db.close().unwrap();

    let db = Database::open(&path, config(&store, Durability::Sync)).unwrap();
    let conn = db.connect().unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let m2 = db.commit_bookmark(&conn).unwrap();
    assert!(m2 > m);
    db.wait_replicated(&m2, Some(Duration::from_secs(30)))
        .unwrap();
    // Dropping without close keeps what was committed (and the next open ships the rest).
    drop(conn);
    drop(db);
    let db = Database::open(&path, Config::new()).unwrap();
    let n: i64 = db
        .connect()
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    // Without a store, replication is a typed error.
    assert!(matches!(
        db.wait_replicated(&db.bookmark(), None),
        Err(Error::NoStore(_))
    ));
    assert!(db.stats().replicated_lsn.is_none());
}

#[test]
fn another_process_owning_the_database_is_refused() {
    // The owner is a child process holding the database open.
    if std::env::var("PAGELOG_API_CHILD").is_ok() {
        let path = std::env::var("PAGELOG_API_DB").unwrap();
        let db = Database::open(&path, Config::new()).unwrap();
        db.connect()
            .unwrap()
            .execute_batch("CREATE TABLE IF NOT EXISTS t(x)")
            .unwrap();
        println!("ready");
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owned.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "another_process_owning_the_database_is_refused",
            "--nocapture",
        ])
        .env("PAGELOG_API_CHILD", "1")
        .env("PAGELOG_API_DB", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        use std::io::BufRead;
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
        if line.contains("ready") {
            break;
        }
    }
    let e = Database::open(&path, Config::new()).unwrap_err();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        matches!(e, Error::Vfs(pagelog::vfs::VfsError::Owned { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("pid"), "{e}");
}

#[test]
fn bad_store_urls_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["gs://bucket/x", "s3://A", "file://relative"] {
        let e = Database::open(dir.path().join("a.db"), Config::new().store_url(url)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Store(pagelog::snapshot::StoreError::Invalid { .. })
            ),
            "{url}: {e}"
        );
        assert!(e.to_string().contains("store URL"), "{e}");
    }
}

#[test]
fn an_unreachable_store_at_open_does_not_stop_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let options = pagelog::StoreOptions {
        // Nothing listens on port 1.
        endpoint: Some("http://127.0.0.1:1".into()),
        region: Some("us-east-1".into()),
        credentials: Some(("AKIDEXAMPLE".into(), "not-a-secret".into())),
        max_attempts: Some(1),
        attempt_timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let db = Database::open(
        &path,
        Config::new()
            .store_url("s3://unreachable-bucket/app")
            .store_options(options)
            .close_timeout(Duration::from_millis(500)),
    )
    .unwrap();
    let conn = db.connect().unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let mark = db.commit_bookmark(&conn).unwrap();
    assert!(
        db.is_durable(&mark),
        "Sync: durable on return, store or not"
    );
    let e = db
        .wait_replicated(&mark, Some(Duration::from_millis(300)))
        .unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    let s = db.stats();
    let shipper = s.shipper.unwrap();
    assert!(!shipper.store_available, "{shipper:?}");
    assert!(
        shipper
            .last_error
            .unwrap_or_default()
            .contains("127.0.0.1:1"),
        "the error names the endpoint"
    );
    drop(conn);
    // Close gives up on the store after its timeout; the data stays local.
    assert!(db.close().is_err());
    let db = Database::open(&path, Config::new()).unwrap();
    let n: i64 = db
        .connect()
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

fn is_readonly(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ReadOnly
    )
}

/// Connections kept past `close` (or a drop) of their `Database`, whether they had read
/// already or never touched the database: they can still read and checkpoint, but cannot begin
/// a write transaction, whose commit nothing would ship. One that had begun writing before
/// the close can still commit (the next open ships it). A reopened database's new connections
/// write and ship as usual, while the old ones stay refused; everything acknowledged is in the
/// store.
#[test]
fn connections_kept_past_close_can_read_but_not_write() {
    for durability in [Durability::Sync, Durability::Gated] {
        for by_drop in [false, true] {
            let ctx = format!("{durability:?} by_drop={by_drop}");
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("store");
            let path = dir.path().join("a.db");
            let db = Database::open(&path, config(&store, durability)).unwrap();
            let used = db.connect().unwrap();
            used.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
                .unwrap();
            let untouched = db.connect().unwrap();
            let in_txn = db.connect().unwrap();
            in_txn
                .execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (100);")
                .unwrap();
            if by_drop {
                drop(db);
            } else {
                db.close().unwrap();
            }
            for (name, c) in [("used", &used), ("untouched", &untouched)] {
                let n: i64 = c
                    .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                    .unwrap_or_else(|e| panic!("{ctx} {name}: {e}"));
                assert_eq!(n, 1, "{ctx} {name}");
                let e = c.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
                assert!(is_readonly(&e), "{ctx} {name}: {e:?}");
            }
            // Begun before the close: it commits (locally; shipped by the next open).
            in_txn.execute_batch("COMMIT").unwrap();
            let e = in_txn.execute("INSERT INTO t VALUES (5)", []).unwrap_err();
            assert!(is_readonly(&e), "{ctx} in_txn: {e:?}");
            // Checkpoints add no transaction: allowed.
            used.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();

            let db = Database::open(&path, config(&store, durability)).unwrap();
            let conn = db.connect().unwrap();
            conn.execute("INSERT INTO t VALUES (3)", []).unwrap();
            let m = db.commit_bookmark(&conn).unwrap();
            db.wait_replicated(&m, Some(Duration::from_secs(30)))
                .unwrap();
            let e = used.execute("INSERT INTO t VALUES (4)", []).unwrap_err();
            assert!(is_readonly(&e), "{ctx}: {e:?}");
            let rows: Vec<i64> = conn
                .prepare("SELECT x FROM t ORDER BY x")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows, vec![1, 3, 100], "{ctx}");
            drop((used, untouched, in_txn, conn));
            db.close().unwrap();
            let out = dir.path().join("r.db");
            pagelog::restore(
                &*pagelog::snapshot::open_store(store.to_str().unwrap(), &Default::default())
                    .unwrap(),
                &out,
                &RestoreOptions::default(),
            )
            .unwrap();
            let n: i64 = rusqlite::Connection::open(&out)
                .unwrap()
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 3, "{ctx}");
        }
    }
}

/// A connection that never read before its `Database` was closed reads afterwards (its first
/// read rebuilds the WAL-index, which takes the write lock without beginning a write), and
/// cannot write.
#[test]
fn a_connection_that_never_read_reads_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let path = dir.path().join("a.db");
    {
        let db = Database::open(&path, config(&store, Durability::Sync)).unwrap();
        db.connect()
            .unwrap()
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        db.close().unwrap();
    }
    let db = Database::open(&path, config(&store, Durability::Sync)).unwrap();
    let fresh = db.connect().unwrap();
    db.close().unwrap();
    let n: i64 = fresh
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let e = fresh.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert!(is_readonly(&e), "{e:?}");
}

/// Reopened in the same process with another durability while a connection of the earlier
/// `Database` is still alive: a typed error saying so (the log is held by this process, not
/// "open elsewhere"); once that connection is dropped, the open works.
#[test]
fn reopening_with_other_settings_while_old_connections_live_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let path = dir.path().join("a.db");
    let db = Database::open(&path, config(&store, Durability::Sync)).unwrap();
    let old = db.connect().unwrap();
    old.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    db.close().unwrap();
    match Database::open(&path, config(&store, Durability::Gated)) {
        Err(e @ Error::StillInUse { .. }) => {
            let m = e.to_string();
            assert!(m.contains("a.db") && m.contains("still in use"), "{m}");
        }
        other => panic!("expected StillInUse, got {other:?}"),
    }
    // The same settings share the open log.
    let same = Database::open(&path, config(&store, Durability::Sync)).unwrap();
    same.close().unwrap();
    drop(old);
    let db = Database::open(&path, config(&store, Durability::Gated)).unwrap();
    let n: i64 = db
        .connect()
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    db.close().unwrap();
}
