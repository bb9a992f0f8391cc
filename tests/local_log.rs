//! The local log without a store: trimmed after checkpoints so that it stays bounded, with
//! every commit kept across close, drop and reopen; one `Database` per path per process; a
//! refused plain SQLite file left as it was.

use std::path::Path;
use std::time::{Duration, Instant};

use pagelog::{Config, Database, Error};

const SEGMENT: u64 = 128 << 10;

/// Bytes in the database's log directory. Segments are trimmed and recycled (removed or
/// renamed) in the background, so an entry listed may be gone when it is looked at: the
/// directory is then listed again, until one listing is read whole.
fn log_dir_bytes(db_path: &Path) -> u64 {
    let dir = format!("{}-pagelog", db_path.display());
    for _ in 0..1000 {
        let sizes: std::io::Result<Vec<u64>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| Ok(e?.metadata()?.len()))
            .collect();
        match sizes {
            Ok(sizes) => return sizes.iter().sum(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("listing {dir}: {e}"),
        }
    }
    panic!("{dir}: no listing read whole in 1000 tries")
}

fn config() -> Config {
    Config::new()
        .log_segment_size(SEGMENT)
        .local_log_check_interval(Duration::from_millis(5))
}

/// Write `rounds` rounds of ~200 KiB of commits, each ending with a checkpoint, to a database
/// that stays small (the same rows are rewritten); returns the row checksum at the end.
fn write_rounds(db: &Database, rounds: usize, first: i64) -> i64 {
    let conn = db.connect().unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, n INTEGER, v BLOB)")
        .unwrap();
    for r in 0..rounds {
        for k in 0..4 {
            let n = first + (r * 4 + k) as i64;
            conn.execute(
                "INSERT OR REPLACE INTO t VALUES (?1, ?2, zeroblob(50000))",
                (k as i64, n),
            )
            .unwrap();
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    conn.query_row("SELECT sum(n) FROM t", [], |r| r.get(0))
        .unwrap()
}

fn read_sum(db: &Database) -> i64 {
    let conn = db.connect().unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    conn.query_row("SELECT sum(n) FROM t", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn without_a_store_the_local_log_is_trimmed_after_checkpoints_and_commits_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    // A few segments: the current one, the checkpointed one before it, recycled spares.
    let bound = 6 * SEGMENT;
    let mut expected = 0;
    for run in 0..3 {
        let db = Database::open(&path, config()).unwrap();
        if run > 0 {
            assert_eq!(read_sum(&db), expected, "run {run}: commits lost on reopen");
        }
        // About 2.4 MiB of log per run, 19 segments.
        expected = write_rounds(&db, 12, run * 1000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_dir_bytes(&path) > bound && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let bytes = log_dir_bytes(&path);
        assert!(bytes <= bound, "run {run}: {bytes} bytes of local log");
        assert!(db.stats().log_bytes <= bound);
        if run == 1 {
            // Dropped without close (the safe minimum), after more commits without a checkpoint.
            let conn = db.connect().unwrap();
            conn.execute("UPDATE t SET n = n + 1 WHERE k = 0", [])
                .unwrap();
            expected += 1;
            drop(conn);
            drop(db);
        } else {
            db.close().unwrap();
            assert!(log_dir_bytes(&path) <= bound);
        }
    }
    let db = Database::open(&path, config()).unwrap();
    assert_eq!(read_sum(&db), expected);
    db.close().unwrap();
}

#[test]
fn trimming_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let db = Database::open(&path, config().truncate_local_log(false)).unwrap();
    write_rounds(&db, 12, 0);
    db.close().unwrap();
    // Nothing trimmed: every commit's record is still there.
    assert!(log_dir_bytes(&path) > 10 * SEGMENT);
}

#[test]
fn a_second_open_in_the_same_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let path = dir.path().join("a.db");
    let cfg = Config::new().store_url(store.to_str().unwrap());
    let db = Database::open(&path, cfg.clone()).unwrap();
    db.connect()
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .unwrap();
    // Also through another spelling of the same path.
    let other = dir.path().join(".").join("a.db");
    for p in [&path, &other] {
        let err = Database::open(p, cfg.clone()).unwrap_err();
        assert!(matches!(&err, Error::AlreadyOpen(_)), "{err}");
        assert!(err.to_string().contains("already open in this process"));
    }
    // And with another configuration (another VFS underneath): the same refusal, not the
    // log lock's "open elsewhere" naming this very process.
    for other_cfg in [
        cfg.clone().durability(pagelog::Durability::Gated),
        cfg.clone().page_size(8192),
        Config::new(),
    ] {
        let err = Database::open(&path, other_cfg).unwrap_err();
        assert!(matches!(&err, Error::AlreadyOpen(_)), "{err}");
    }
    // The first handle is untouched by the refusals, and closes cleanly.
    db.connect()
        .unwrap()
        .execute("INSERT INTO t VALUES (2)", [])
        .unwrap();
    db.close().unwrap();
    // Closed: it opens again.
    let db = Database::open(&path, cfg.clone()).unwrap();
    let n: i64 = db
        .connect()
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    drop(db);
    // Dropped: it opens again too.
    Database::open(&path, cfg).unwrap().close().unwrap();
}

#[test]
fn refusing_a_plain_sqlite_file_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .unwrap();
    let err = Database::open(&path, Config::new()).unwrap_err();
    assert!(
        matches!(&err, Error::Vfs(pagelog::vfs::VfsError::NotManaged { .. })),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["plain.db"]);
}
