//! One writer and four readers on one database through the pagelog VFS, each thread with its
//! own connection (real files in a tempdir), in both durability modes.
//!
//! The writer moves random amounts between accounts (the total never changes) and, in some
//! transactions, inserts or deletes rows with blobs of up to ~20 KB in another table, so pages
//! split, overflow chains come and go, the WAL grows and checkpoints (automatic, PASSIVE and
//! TRUNCATE) run while readers read. Readers loop over read transactions checking that every
//! snapshot is consistent: the total, the row count against the count the writer recorded in
//! the same transaction, the blob bytes, and that snapshots never go back in time. Any error
//! other than SQLITE_BUSY/SQLITE_LOCKED (retried, on top of `busy_timeout`) fails the test;
//! SQLITE_CORRUPT is counted separately. At the end: `PRAGMA integrity_check` is ok, the
//! checksum the VFS keeps matches the database SQLite sees, the database rebuilt from the whole
//! log equals it page for page, and the database reopens (through recovery) with the same
//! content.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pagelog_log::fs::{Fs, OpenOptions, StdFs};
use pagelog_vfs::checksum::PageHashes;
use pagelog_vfs::replay::replay_log;
use pagelog_vfs::{Database, Durability, PagelogVfs, VfsOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, ErrorCode};

const ACCOUNTS: i64 = 100;
const INITIAL_BALANCE: i64 = 1_000;
const TOTAL: i64 = ACCOUNTS * INITIAL_BALANCE;
const READERS: usize = 4;
/// Gated mode: the writer waits for durability every this many commits.
const GATE_EVERY: u64 = 8;

fn writer_txns() -> u64 {
    std::env::var("PAGELOG_CONCURRENCY_TXNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000)
}

fn seed() -> u64 {
    std::env::var("PAGELOG_CONCURRENCY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

/// Deterministic blob content for row `id`, so a reader can tell a wrong page from a right one.
fn blob(id: i64, len: usize) -> Vec<u8> {
    let mut x = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Busy,
    Corrupt,
    Other,
}

fn classify(e: &rusqlite::Error) -> Class {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Class::Busy,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Class::Corrupt,
        _ => Class::Other,
    }
}

/// What every thread reports into.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    busy_retries: AtomicU64,
    corrupt: AtomicU64,
    /// Errors other than BUSY, and broken invariants, with the thread that saw them.
    failures: Mutex<Vec<String>>,
}

impl Shared {
    fn fail(&self, who: &str, what: String) {
        let mut f = self.failures.lock().unwrap();
        if f.len() < 50 {
            f.push(format!("{who}: {what}"));
        }
    }

    fn failed(&self) -> bool {
        !self.failures.lock().unwrap().is_empty()
    }
}

/// Run `body` until it succeeds or fails with something other than BUSY. On BUSY the open
/// transaction (if any) is rolled back and the whole body runs again.
fn retry<T>(
    conn: &Connection,
    shared: &Shared,
    who: &str,
    mut body: impl FnMut(&Connection) -> rusqlite::Result<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        match body(conn) {
            Ok(v) => return Some(v),
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                match classify(&e) {
                    Class::Busy if start.elapsed() < Duration::from_secs(60) => {
                        shared.busy_retries.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_micros(200));
                    }
                    class => {
                        if class == Class::Corrupt {
                            shared.corrupt.fetch_add(1, Ordering::Relaxed);
                        }
                        let detail = pagelog_vfs::last_error().unwrap_or_default();
                        shared.fail(
                            who,
                            format!("{class:?} error: {e} (last VFS error: {detail:?})"),
                        );
                        return None;
                    }
                }
            }
        }
    }
}

fn connect(vfs: &PagelogVfs, path: &Path) -> Connection {
    let conn = vfs.connect(path).expect("connect");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

fn setup(vfs: &PagelogVfs, path: &Path) {
    let conn = connect(vfs, path);
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE accounts(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL);
         CREATE TABLE blobs(id INTEGER PRIMARY KEY, len INTEGER NOT NULL, b BLOB NOT NULL);
         CREATE INDEX blobs_len ON blobs(len);
         CREATE TABLE meta(k INTEGER PRIMARY KEY CHECK (k = 0), n INTEGER NOT NULL,
                           bytes INTEGER NOT NULL, txn INTEGER NOT NULL);
         INSERT INTO meta VALUES (0, 0, 0, 0);
         COMMIT;",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for id in 0..ACCOUNTS {
        tx.execute(
            "INSERT INTO accounts VALUES (?1, ?2)",
            (id, INITIAL_BALANCE),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[derive(Debug, Default)]
struct WriterStats {
    commits: u64,
    inserted: u64,
    deleted: u64,
    passive: u64,
    truncate: u64,
    truncate_busy: u64,
    gates: u64,
}

fn writer(
    vfs: &PagelogVfs,
    path: &Path,
    db: &Database,
    seed: u64,
    txns: u64,
    shared: &Shared,
    barrier: &Barrier,
) -> WriterStats {
    let conn = connect(vfs, path);
    conn.execute_batch("PRAGMA wal_autocheckpoint = 200")
        .unwrap();
    barrier.wait();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut st = WriterStats::default();
    let mut next_id: i64 = 1;
    for txn in 1..=txns {
        if shared.failed() {
            break;
        }
        let a = rng.random_range(0..ACCOUNTS);
        let b = rng.random_range(0..ACCOUNTS);
        let amount = rng.random_range(1..=500i64);
        let inserts: Vec<(i64, usize)> = if rng.random_bool(0.3) {
            (0..rng.random_range(1..=6))
                .map(|i| (next_id + i, rng.random_range(100..20_000)))
                .collect()
        } else {
            Vec::new()
        };
        let deletes = if rng.random_bool(0.2) {
            rng.random_range(1..=8)
        } else {
            0
        };
        let delete_pick = rng.random_range(0..1_000_000i64);
        let done = retry(&conn, shared, "writer", |c| {
            c.execute_batch("BEGIN IMMEDIATE")?;
            c.execute(
                "UPDATE accounts SET bal = bal - ?1 WHERE id = ?2",
                (amount, a),
            )?;
            c.execute(
                "UPDATE accounts SET bal = bal + ?1 WHERE id = ?2",
                (amount, b),
            )?;
            for (id, len) in &inserts {
                c.execute(
                    "INSERT INTO blobs(id, len, b) VALUES (?1, ?2, ?3)",
                    (id, *len as i64, blob(*id, *len)),
                )?;
            }
            let mut deleted = 0;
            if deletes > 0 {
                let n: i64 = c.query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))?;
                if n > 0 {
                    deleted = c.execute(
                        "DELETE FROM blobs WHERE id IN
                           (SELECT id FROM blobs ORDER BY id LIMIT ?1 OFFSET ?2)",
                        (deletes, delete_pick % n),
                    )?;
                }
            }
            c.execute(
                "UPDATE meta SET n = (SELECT count(*) FROM blobs),
                                 bytes = (SELECT coalesce(sum(len), 0) FROM blobs),
                                 txn = ?1",
                [txn as i64],
            )?;
            c.execute_batch("COMMIT")?;
            Ok(deleted)
        });
        let Some(deleted) = done else { break };
        st.commits += 1;
        st.inserted += inserts.len() as u64;
        st.deleted += deleted as u64;
        next_id += inserts.len() as i64;
        if db.durability() == Durability::Gated && txn.is_multiple_of(GATE_EVERY) {
            let lsn = pagelog_vfs::last_commit_lsn().expect("a commit LSN on the writer thread");
            if let Err(e) = db.wait_durable(lsn) {
                shared.fail("writer", format!("wait_durable({lsn}): {e}"));
                break;
            }
            if db.durable_lsn() < lsn {
                shared.fail(
                    "writer",
                    format!("durable {} < {lsn} after wait", db.durable_lsn()),
                );
            }
            st.gates += 1;
        }
        if txn.is_multiple_of(97) {
            let r = retry(&conn, shared, "writer checkpoint", |c| {
                c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
            });
            if r.is_none() {
                break;
            }
            st.passive += 1;
        }
        if txn.is_multiple_of(401) {
            let r = retry(&conn, shared, "writer checkpoint", |c| {
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                })
            });
            match r {
                None => break,
                Some(busy) => {
                    st.truncate += 1;
                    st.truncate_busy += (busy != 0) as u64;
                }
            }
        }
    }
    if let Err(e) = db.wait_durable(db.last_lsn()) {
        shared.fail("writer", format!("final wait_durable: {e}"));
    }
    st
}

#[derive(Debug, Default, Clone, Copy)]
struct ReaderStats {
    snapshots: u64,
    scans: u64,
    last_txn: i64,
}

/// What one read transaction saw.
struct Snapshot {
    total: i64,
    accounts: i64,
    n: i64,
    bytes: i64,
    txn: i64,
    count: i64,
    sum_len: i64,
    indexed: i64,
    bad_blobs: Vec<i64>,
    scanned: i64,
}

fn reader(
    vfs: &PagelogVfs,
    path: &Path,
    idx: usize,
    shared: &Shared,
    barrier: &Barrier,
) -> ReaderStats {
    let who = format!("reader {idx}");
    let conn = connect(vfs, path);
    barrier.wait();
    let mut st = ReaderStats::default();
    while !shared.stop.load(Ordering::Acquire) && !shared.failed() {
        let scan = st.snapshots % 16 == idx as u64;
        let snap = retry(&conn, shared, &who, |c| {
            c.execute_batch("BEGIN")?;
            let (total, accounts): (i64, i64) =
                c.query_row("SELECT sum(bal), count(*) FROM accounts", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let (n, bytes, txn): (i64, i64, i64) =
                c.query_row("SELECT n, bytes, txn FROM meta", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            let (count, sum_len): (i64, i64) = c.query_row(
                "SELECT count(*), coalesce(sum(len), 0) FROM blobs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            // The index must agree with the table in the same snapshot.
            let indexed: i64 = c.query_row(
                "SELECT count(*) FROM blobs INDEXED BY blobs_len WHERE len >= 0",
                [],
                |r| r.get(0),
            )?;
            let mut bad_blobs = Vec::new();
            let mut scanned = 0i64;
            if scan {
                let mut stmt = c.prepare_cached("SELECT id, len, b FROM blobs ORDER BY id")?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let id: i64 = r.get(0)?;
                    let len: i64 = r.get(1)?;
                    let b: Vec<u8> = r.get(2)?;
                    scanned += b.len() as i64;
                    if b.len() as i64 != len || b != blob(id, len as usize) {
                        bad_blobs.push(id);
                    }
                }
            }
            c.execute_batch("COMMIT")?;
            Ok(Snapshot {
                total,
                accounts,
                n,
                bytes,
                txn,
                count,
                sum_len,
                indexed,
                bad_blobs,
                scanned,
            })
        });
        let Some(Snapshot {
            total,
            accounts,
            n,
            bytes,
            txn,
            count,
            sum_len,
            indexed,
            bad_blobs,
            scanned,
        }) = snap
        else {
            break;
        };
        if total != TOTAL || accounts != ACCOUNTS {
            shared.fail(
                &who,
                format!("txn {txn}: total {total} over {accounts} accounts"),
            );
        }
        if n != count || bytes != sum_len || indexed != count {
            shared.fail(
                &who,
                format!(
                    "txn {txn}: meta says {n} rows / {bytes} bytes, table has {count} / \
                     {sum_len}, index has {indexed}"
                ),
            );
        }
        if txn < st.last_txn {
            shared.fail(
                &who,
                format!("snapshot went back from txn {} to {txn}", st.last_txn),
            );
        }
        if scan {
            st.scans += 1;
            if !bad_blobs.is_empty() || scanned != bytes {
                shared.fail(
                    &who,
                    format!(
                        "txn {txn}: blob content wrong for ids {bad_blobs:?}, {scanned} bytes \
                         scanned, meta says {bytes}"
                    ),
                );
            }
        }
        st.last_txn = txn;
        st.snapshots += 1;
    }
    st
}

/// Checksum of the database image SQLite sees, from scratch.
fn image_checksum(conn: &mut Connection, page_size: u32) -> (u64, u32) {
    let image = conn.serialize(rusqlite::MAIN_DB).unwrap();
    assert_eq!(
        image.len() % page_size as usize,
        0,
        "image length {}",
        image.len()
    );
    let pages = (image.len() / page_size as usize) as u32;
    let mut h = PageHashes::new(page_size);
    h.resize(pages);
    for (i, page) in image.chunks_exact(page_size as usize).enumerate() {
        h.set(i as u32 + 1, page);
    }
    (h.checksum(), pages)
}

/// Content and consistency checks on a quiet database; returns (blob rows, last writer txn).
fn check_quiet(vfs: &PagelogVfs, path: &Path, db: &Database, replay_to: &Path) -> (i64, i64) {
    let mut conn = connect(vfs, path);
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec!["ok".to_string()], "integrity_check");
    let total: i64 = conn
        .query_row("SELECT sum(bal) FROM accounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, TOTAL);
    let (n, bytes, txn): (i64, i64, i64) = conn
        .query_row("SELECT n, bytes, txn FROM meta", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    let (count, sum_len): (i64, i64) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(len), 0) FROM blobs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, bytes), (count, sum_len));
    let mut stmt = conn.prepare("SELECT id, len, b FROM blobs").unwrap();
    let bad: Vec<i64> = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .filter(|(id, len, b)| *b != blob(*id, *len as usize))
        .map(|(id, _, _)| id)
        .collect();
    drop(stmt);
    assert!(bad.is_empty(), "blob content wrong for ids {bad:?}");
    assert_eq!(
        image_checksum(&mut conn, db.page_size()),
        db.checksum(),
        "the VFS's whole-database checksum differs from the image SQLite sees"
    );
    check_log_replay(&mut conn, db, replay_to);
    (count, txn)
}

/// Rebuild the database from the whole log into `target` and compare it with SQLite's image.
fn check_log_replay(conn: &mut Connection, db: &Database, target: &Path) {
    db.wait_durable(db.last_lsn()).unwrap();
    let _ = std::fs::remove_file(target);
    let file = StdFs.open(target, OpenOptions::create_new()).unwrap();
    let replayed = replay_log(
        db.log(),
        db.log().first_lsn(),
        db.last_lsn(),
        &*file,
        Some(db.page_size()),
    )
    .unwrap();
    assert_eq!(replayed.last_lsn, db.last_lsn());
    assert_eq!((replayed.checksum, replayed.db_pages), db.checksum());
    drop(file);
    let rebuilt = std::fs::read(target).unwrap();
    let image = conn.serialize(rusqlite::MAIN_DB).unwrap();
    assert_eq!(
        rebuilt.len(),
        image.len(),
        "replayed file and image lengths"
    );
    let ps = db.page_size() as usize;
    let differing: Vec<usize> = (0..rebuilt.len() / ps)
        .filter(|&i| rebuilt[i * ps..(i + 1) * ps] != image[i * ps..(i + 1) * ps])
        .map(|i| i + 1)
        .collect();
    assert!(
        differing.is_empty(),
        "pages rebuilt from the log differ from SQLite's image: {differing:?}"
    );
}

fn one_writer_four_readers(mode: Durability, name: &str) {
    let seed = seed();
    let txns = writer_txns();
    eprintln!("{name}: seed {seed} (set PAGELOG_CONCURRENCY_SEED to repeat), {txns} writer txns");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.db");
    let vfs = PagelogVfs::register(name, VfsOptions::new(mode)).unwrap();
    let db = vfs.open_database(&path).unwrap();
    assert_eq!(db.durability(), mode);
    setup(&vfs, &path);

    let shared = Shared::default();
    let barrier = Barrier::new(READERS + 1);
    let started = Instant::now();
    let (wstats, rstats) = thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|i| {
                let (vfs, path, shared, barrier) = (&vfs, &path, &shared, &barrier);
                s.spawn(move || reader(vfs, path, i, shared, barrier))
            })
            .collect();
        let w = s.spawn(|| {
            let st = writer(&vfs, &path, &db, seed, txns, &shared, &barrier);
            shared.stop.store(true, Ordering::Release);
            st
        });
        let w = w.join().expect("writer panicked");
        let r: Vec<ReaderStats> = readers
            .into_iter()
            .map(|h| h.join().expect("reader panicked"))
            .collect();
        (w, r)
    });
    let elapsed = started.elapsed();
    eprintln!(
        "{name}: {elapsed:?}, writer {wstats:?}, readers {rstats:?}, busy retries {}, log {:?}",
        shared.busy_retries.load(Ordering::Relaxed),
        db.log().stats()
    );
    let failures = shared.failures.lock().unwrap().clone();
    assert_eq!(
        shared.corrupt.load(Ordering::Relaxed),
        0,
        "SQLITE_CORRUPT seen: {failures:#?}"
    );
    assert!(failures.is_empty(), "seed {seed}: {failures:#?}");
    assert_eq!(
        wstats.commits, txns,
        "the writer committed every transaction"
    );
    assert!(wstats.inserted > 0 && wstats.deleted > 0 && wstats.truncate > 0);
    for (i, r) in rstats.iter().enumerate() {
        assert!(
            r.snapshots > 0 && r.scans > 0,
            "reader {i} read nothing: {r:?}"
        );
    }
    assert!(
        db.durable_lsn() >= db.last_lsn(),
        "durable {} < last committed {}",
        db.durable_lsn(),
        db.last_lsn()
    );

    let (rows, last_txn) = check_quiet(&vfs, &path, &db, &dir.path().join("replayed.db"));
    assert_eq!(last_txn, txns as i64);
    let checksum = db.checksum();
    drop(db);

    // Reopen: every connection and the Database are gone, so this runs recovery.
    let db = vfs.open_database(&path).unwrap();
    eprintln!("{name}: reopened: {:?}", db.open_report());
    assert!(!db.open_report().created);
    assert_eq!(db.checksum(), checksum, "checksum after reopen");
    assert_eq!(
        check_quiet(&vfs, &path, &db, &dir.path().join("replayed.db")),
        (rows, last_txn),
        "content after reopen"
    );
}

#[test]
fn one_writer_four_readers_sync() {
    one_writer_four_readers(Durability::Sync, "concurrency-sync");
}

#[test]
fn one_writer_four_readers_gated() {
    one_writer_four_readers(Durability::Gated, "concurrency-gated");
}
