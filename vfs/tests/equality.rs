//! Log equality: for random workloads, the database rebuilt from nothing but the log equals,
//! byte for byte, the database SQLite sees through the VFS, and the whole-database checksums
//! (the VFS's incremental one, the one the log recorded, and one computed from scratch) agree.
//!
//! Workloads mix inserts with blobs from empty to ~100 KB (larger than any page, so overflow
//! chains), updates, deletes, big transactions that spill to the WAL before commit (the cache
//! is 10 pages in most cases), savepoints rolled back with `ROLLBACK TO`, full rollbacks,
//! `VACUUM` (the database shrinks), and checkpoints of every mode at random points, over every
//! SQLite page size and both durability modes. The log is checked at random points in the
//! workload, after every VACUUM and checkpoint (where the main database file itself must also
//! equal SQLite's image), at its end, and again after the database is closed and reopened
//! (recovery).
//!
//! `PROPTEST_CASES` sets the number of cases (default [`DEFAULT_CASES`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use pagelog_log::LogOptions;
use pagelog_log::fs::{Fs, OpenOptions, StdFs};
use pagelog_vfs::checksum::PageHashes;
use pagelog_vfs::replay::replay_log;
use pagelog_vfs::{Database, Durability, PagelogVfs, VfsOptions};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rusqlite::Connection;

/// Cases run when `PROPTEST_CASES` is not set (15 to 30 s in release mode on 2 cores, mostly
/// waiting for fsync).
const DEFAULT_CASES: u32 = 256;

const PAGE_SIZES: [u32; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/// One VFS per (page size, durability), registered once per process.
fn vfs(page_size: u32, durability: Durability) -> PagelogVfs {
    static VFSES: OnceLock<Mutex<HashMap<(u32, bool), PagelogVfs>>> = OnceLock::new();
    let gated = durability == Durability::Gated;
    let mut map = VFSES.get_or_init(Default::default).lock().unwrap();
    map.entry((page_size, gated))
        .or_insert_with(|| {
            let name = format!(
                "equality-{page_size}-{}",
                if gated { "gated" } else { "sync" }
            );
            let mut opts = VfsOptions::new(durability);
            opts.page_size = page_size;
            // Small segments: records span several segments, and big ones get their own.
            opts.log = LogOptions {
                segment_size: 1 << 20,
                ..LogOptions::default()
            };
            PagelogVfs::register(&name, opts).unwrap()
        })
        .clone()
}

#[derive(Debug, Clone, Copy)]
enum Checkpoint {
    Passive,
    Full,
    Restart,
    Truncate,
}

/// One step of a workload. Rows are picked by position (`pick` modulo the row count, in id
/// order), so a shrunk workload still means something.
#[derive(Debug, Clone)]
enum Op {
    Insert {
        size: usize,
    },
    Update {
        pick: u32,
        size: usize,
    },
    Delete {
        pick: u32,
    },
    /// Delete `n` consecutive rows.
    DeleteMany {
        pick: u32,
        n: u16,
    },
    /// One transaction inserting `rows` rows (and updating a few): spills with a small cache.
    BigTxn {
        rows: u16,
        size: usize,
    },
    /// BEGIN; insert `before`; SAVEPOINT; insert `inside`, update and delete; ROLLBACK TO;
    /// insert `after`; RELEASE; COMMIT.
    Savepoint {
        before: u16,
        inside: u16,
        size: usize,
        after: u16,
    },
    /// BEGIN; insert `rows`, delete `delete`; ROLLBACK.
    Rollback {
        rows: u16,
        size: usize,
        delete: u16,
    },
    Vacuum,
    Checkpoint(Checkpoint),
    /// Check the log against the database here.
    Verify,
}

#[derive(Debug, Clone)]
struct Case {
    page_size: u32,
    durability: Durability,
    /// `PRAGMA cache_size` in pages.
    cache_pages: i64,
    ops: Vec<Op>,
}

fn blob_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..600,
        3 => 600usize..6_000,
        2 => 6_000usize..100_001,
    ]
}

fn small_size() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0usize..400, 1 => 400usize..5_000]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => blob_size().prop_map(|size| Op::Insert { size }),
        3 => (any::<u32>(), blob_size()).prop_map(|(pick, size)| Op::Update { pick, size }),
        2 => any::<u32>().prop_map(|pick| Op::Delete { pick }),
        1 => (any::<u32>(), 1u16..60).prop_map(|(pick, n)| Op::DeleteMany { pick, n }),
        2 => (10u16..400, small_size()).prop_map(|(rows, size)| Op::BigTxn { rows, size }),
        2 => (0u16..20, 0u16..300, small_size(), 0u16..20).prop_map(
            |(before, inside, size, after)| Op::Savepoint { before, inside, size, after }
        ),
        1 => (0u16..300, small_size(), 0u16..30)
            .prop_map(|(rows, size, delete)| Op::Rollback { rows, size, delete }),
        1 => Just(Op::Vacuum),
        2 => prop_oneof![
            Just(Checkpoint::Passive),
            Just(Checkpoint::Full),
            Just(Checkpoint::Restart),
            Just(Checkpoint::Truncate),
        ]
        .prop_map(Op::Checkpoint),
        1 => Just(Op::Verify),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(PAGE_SIZES.to_vec()),
        prop_oneof![Just(Durability::Sync), Just(Durability::Gated)],
        prop_oneof![3 => Just(10i64), 1 => Just(2000i64)],
        proptest::collection::vec(op(), 1..32),
    )
        .prop_map(|(page_size, durability, cache_pages, ops)| Case {
            page_size,
            durability,
            cache_pages,
            ops,
        })
}

/// Deterministic pseudo-random bytes (a page that lands in the wrong place shows).
fn blob(salt: u64, len: usize) -> Vec<u8> {
    let mut x = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

type Res<T = ()> = Result<T, String>;

fn sql<T>(what: &str, r: rusqlite::Result<T>) -> Res<T> {
    r.map_err(|e| {
        format!(
            "{what}: {e} (last VFS error: {:?})",
            pagelog_vfs::last_error()
        )
    })
}

struct Runner {
    dir: PathBuf,
    path: PathBuf,
    vfs: PagelogVfs,
    page_size: u32,
    cache_pages: i64,
    db: Option<Arc<Database>>,
    conn: Option<Connection>,
    salt: u64,
    verifies: u32,
    /// Transactions (big, savepoint, rolled back) seen writing frames to the WAL before their
    /// commit or rollback (spilling).
    spills: u32,
    /// Largest database seen at a verification, in pages.
    max_pages: u32,
}

impl Runner {
    fn open(dir: &Path, case: &Case) -> Res<Runner> {
        let mut r = Runner {
            dir: dir.to_path_buf(),
            path: dir.join("eq.db"),
            vfs: vfs(case.page_size, case.durability),
            page_size: case.page_size,
            cache_pages: case.cache_pages,
            db: None,
            conn: None,
            salt: 0,
            verifies: 0,
            spills: 0,
            max_pages: 0,
        };
        r.connect()?;
        let ps: i64 = sql(
            "page_size",
            r.conn().query_row("PRAGMA page_size", [], |r| r.get(0)),
        )?;
        if ps != case.page_size as i64 {
            return Err(format!(
                "PRAGMA page_size = {ps}, expected {}",
                case.page_size
            ));
        }
        sql(
            "schema",
            r.conn().execute_batch(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, b BLOB NOT NULL);
                 CREATE INDEX t_k ON t(k);",
            ),
        )?;
        Ok(r)
    }

    fn connect(&mut self) -> Res {
        let db = self
            .vfs
            .open_database(&self.path)
            .map_err(|e| format!("open: {e}"))?;
        let conn = self
            .vfs
            .connect(&self.path)
            .map_err(|e| format!("connect: {e}"))?;
        sql(
            "cache_size",
            conn.execute_batch(&format!(
                "PRAGMA cache_size = {}; PRAGMA wal_autocheckpoint = 0;",
                self.cache_pages
            )),
        )?;
        self.db = Some(db);
        self.conn = Some(conn);
        Ok(())
    }

    /// Close every handle (the last close checkpoints and removes the WAL), then reopen, which
    /// runs recovery from the log.
    fn reopen(&mut self) -> Res {
        self.conn = None;
        self.db = None;
        self.connect()?;
        let report = self.db().open_report();
        if report.created {
            return Err(format!("reopen created a new database: {report:?}"));
        }
        Ok(())
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().unwrap()
    }

    fn db(&self) -> &Database {
        self.db.as_ref().unwrap()
    }

    fn next_blob(&mut self, size: usize) -> (i64, Vec<u8>) {
        self.salt += 1;
        ((self.salt % 997) as i64, blob(self.salt, size))
    }

    fn insert(&mut self, size: usize) -> Res {
        let (k, b) = self.next_blob(size);
        sql(
            "insert",
            self.conn()
                .execute("INSERT INTO t(k, b) VALUES (?1, ?2)", (k, b))
                .map(drop),
        )
    }

    fn count(&self) -> Res<i64> {
        sql(
            "count",
            self.conn()
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0)),
        )
    }

    fn update(&mut self, pick: u32, size: usize) -> Res {
        let n = self.count()?;
        if n == 0 {
            return Ok(());
        }
        let (k, b) = self.next_blob(size);
        sql(
            "update",
            self.conn()
                .execute(
                    "UPDATE t SET k = ?1, b = ?2
                     WHERE id = (SELECT id FROM t ORDER BY id LIMIT 1 OFFSET ?3)",
                    (k, b, pick as i64 % n),
                )
                .map(drop),
        )
    }

    fn delete(&mut self, pick: u32, rows: u16) -> Res {
        let n = self.count()?;
        if n == 0 {
            return Ok(());
        }
        sql(
            "delete",
            self.conn()
                .execute(
                    "DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT ?1 OFFSET ?2)",
                    (rows as i64, pick as i64 % n),
                )
                .map(drop),
        )
    }

    /// The WAL file's bytes: a transaction that changes them before it ends has spilled.
    fn wal_bytes(&self) -> Vec<u8> {
        std::fs::read(format!("{}-wal", self.path.display())).unwrap_or_default()
    }

    fn batch(&self, what: &str, s: &str) -> Res {
        sql(what, self.conn().execute_batch(s))
    }

    fn apply(&mut self, op: &Op) -> Res {
        match *op {
            Op::Insert { size } => self.insert(size),
            Op::Update { pick, size } => self.update(pick, size),
            Op::Delete { pick } => self.delete(pick, 1),
            Op::DeleteMany { pick, n } => self.delete(pick, n),
            Op::BigTxn { rows, size } => {
                self.batch("begin", "BEGIN")?;
                let wal_before = self.wal_bytes();
                for i in 0..rows {
                    self.insert(size)?;
                    if i % 16 == 15 {
                        self.update(i as u32 * 7919, size / 2)?;
                    }
                }
                if self.wal_bytes() != wal_before {
                    self.spills += 1;
                }
                self.batch("commit", "COMMIT")
            }
            Op::Savepoint {
                before,
                inside,
                size,
                after,
            } => {
                self.batch("begin", "BEGIN")?;
                for _ in 0..before {
                    self.insert(size)?;
                }
                self.batch("savepoint", "SAVEPOINT sp")?;
                let wal_before = self.wal_bytes();
                for i in 0..inside {
                    self.insert(size)?;
                    if i.is_multiple_of(8) {
                        self.update(i as u32, size)?;
                    }
                }
                self.delete(0, inside / 4)?;
                if self.wal_bytes() != wal_before {
                    self.spills += 1;
                }
                self.batch("rollback to", "ROLLBACK TO sp")?;
                for _ in 0..after {
                    self.insert(size)?;
                }
                self.update(after as u32, size)?;
                self.batch("release", "RELEASE sp")?;
                self.batch("commit", "COMMIT")
            }
            Op::Rollback { rows, size, delete } => {
                self.batch("begin", "BEGIN")?;
                let wal_before = self.wal_bytes();
                for _ in 0..rows {
                    self.insert(size)?;
                }
                self.delete(1, delete)?;
                if self.wal_bytes() != wal_before {
                    self.spills += 1;
                }
                self.batch("rollback", "ROLLBACK")
            }
            Op::Vacuum => {
                self.batch("vacuum", "VACUUM")?;
                self.verify("after VACUUM")
            }
            Op::Checkpoint(mode) => {
                let q = format!("PRAGMA wal_checkpoint({mode:?})");
                let (busy, log, done): (i64, i64, i64) = sql(
                    &q,
                    self.conn()
                        .query_row(&q, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))),
                )?;
                if busy != 0 || log != done {
                    return Err(format!(
                        "{q} with one connection: busy {busy}, {done} of {log} frames"
                    ));
                }
                self.check_main_file(&q)?;
                self.verify(&format!("after {q}"))
            }
            Op::Verify => self.verify("at a Verify op"),
        }
    }

    /// Replay the whole log into an empty file and compare it with what SQLite sees.
    fn verify(&mut self, when: &str) -> Res {
        self.verifies += 1;
        let ps = self.page_size as usize;
        let db = Arc::clone(self.db.as_ref().unwrap());
        let last = db.last_lsn();
        match db.durability() {
            Durability::Gated => db
                .wait_durable(last)
                .map_err(|e| format!("{when}: wait_durable: {e}"))?,
            Durability::Sync if db.durable_lsn() < last => {
                return Err(format!(
                    "{when}: Sync mode, yet the last commit ({last}) is not durable ({})",
                    db.durable_lsn()
                ));
            }
            Durability::Sync => {}
        }
        let file_path = self.dir.join(format!("replay-{}.db", self.verifies));
        let file = StdFs
            .open(&file_path, OpenOptions::create_new())
            .map_err(|e| format!("creating {}: {e}", file_path.display()))?;
        let replayed = replay_log(
            db.log(),
            db.log().first_lsn(),
            last,
            &*file,
            Some(self.page_size),
        )
        .map_err(|e| format!("{when}: replay: {e}"))?;
        let ctx = format!(
            "{when} (verify #{}, last LSN {last}, {replayed:?})",
            self.verifies
        );
        if replayed.last_lsn != last {
            return Err(format!(
                "{ctx}: replay stopped at LSN {}",
                replayed.last_lsn
            ));
        }
        let len = file.len().map_err(|e| e.to_string())? as usize;
        let mut rebuilt = vec![0u8; len];
        file.read_exact_at(&mut rebuilt, 0)
            .map_err(|e| e.to_string())?;
        drop(file);
        std::fs::remove_file(&file_path).map_err(|e| e.to_string())?;

        let image = sql(
            "serialize",
            self.conn.as_mut().unwrap().serialize(rusqlite::MAIN_DB),
        )?;
        if rebuilt.len() != image.len() {
            return Err(format!(
                "{ctx}: replayed file is {} bytes ({} pages), SQLite's image {} bytes ({} pages)",
                rebuilt.len(),
                rebuilt.len() / ps,
                image.len(),
                image.len() / ps
            ));
        }
        if !rebuilt.len().is_multiple_of(ps) {
            return Err(format!(
                "{ctx}: length {} is not a whole number of pages",
                rebuilt.len()
            ));
        }
        let differing: Vec<usize> = rebuilt
            .chunks_exact(ps)
            .zip(image.chunks_exact(ps))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i + 1)
            .collect();
        if let Some(&first) = differing.first() {
            let at = (first - 1) * ps;
            let offset = (0..ps)
                .find(|&o| rebuilt[at + o] != image[at + o])
                .unwrap_or(0);
            return Err(format!(
                "{ctx}: {} of {} pages differ, first page {first} at byte {offset} \
                 (replayed {:#04x}, SQLite {:#04x}); differing pages {:?}",
                differing.len(),
                rebuilt.len() / ps,
                rebuilt[at + offset],
                image[at + offset],
                &differing[..differing.len().min(20)]
            ));
        }
        drop(image);

        let pages = (rebuilt.len() / ps) as u32;
        self.max_pages = self.max_pages.max(pages);
        let mut scratch = PageHashes::new(self.page_size);
        scratch.resize(pages);
        for (i, page) in rebuilt.chunks_exact(ps).enumerate() {
            scratch.set(i as u32 + 1, page);
        }
        let (sum, db_pages) = db.checksum();
        if (sum, db_pages) != (replayed.checksum, replayed.db_pages)
            || (sum, db_pages) != (scratch.checksum(), pages)
        {
            return Err(format!(
                "{ctx}: checksums differ: VFS {sum:#018x} over {db_pages} pages, log \
                 {:#018x} over {} pages, from scratch {:#018x} over {pages} pages",
                replayed.checksum,
                replayed.db_pages,
                scratch.checksum()
            ));
        }
        Ok(())
    }

    /// After a complete checkpoint, the main database file itself equals SQLite's image.
    fn check_main_file(&mut self, when: &str) -> Res {
        let file = std::fs::read(&self.path).map_err(|e| e.to_string())?;
        let image = sql(
            "serialize",
            self.conn.as_mut().unwrap().serialize(rusqlite::MAIN_DB),
        )?;
        if file[..] != image[..] {
            let ps = self.page_size as usize;
            let first = (0..file.len().min(image.len()))
                .find(|&i| file[i] != image[i])
                .map(|i| format!("page {}, byte {}", i / ps + 1, i % ps));
            return Err(format!(
                "after {when}: the database file ({} bytes) differs from SQLite's image ({} \
                 bytes); first difference: {first:?}",
                file.len(),
                image.len()
            ));
        }
        Ok(())
    }

    fn integrity(&self) -> Res {
        let rows: Vec<String> = sql(
            "integrity_check",
            self.conn()
                .prepare("PRAGMA integrity_check")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect()),
        )?;
        if rows != ["ok"] {
            return Err(format!("integrity_check: {rows:?}"));
        }
        Ok(())
    }
}

/// Run a workload and its checks; returns how many transactions spilled.
fn run(case: &Case) -> Res<u32> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut r = Runner::open(dir.path(), case)?;
    r.verify("after creating the schema")?;
    for (i, op) in case.ops.iter().enumerate() {
        r.apply(op).map_err(|e| format!("op {i} {op:?}: {e}"))?;
    }
    r.verify("at the end")?;
    r.integrity()?;
    let before = sql(
        "serialize",
        r.conn.as_mut().unwrap().serialize(rusqlite::MAIN_DB),
    )?
    .to_vec();
    let sum = r.db().checksum();
    r.reopen()?;
    let after = sql(
        "serialize",
        r.conn.as_mut().unwrap().serialize(rusqlite::MAIN_DB),
    )?
    .to_vec();
    if before != after {
        return Err(format!(
            "database changed across close and reopen: {} bytes before, {} after",
            before.len(),
            after.len()
        ));
    }
    if r.db().checksum() != sum {
        return Err(format!(
            "checksum {:?} before close, {:?} after reopen",
            sum,
            r.db().checksum()
        ));
    }
    r.verify("after reopen")?;
    // The reopened database keeps capturing.
    r.insert(70_000)?;
    r.apply(&Op::Checkpoint(Checkpoint::Truncate))?;
    r.insert(10)?;
    r.verify("after reopen and more writes")?;
    r.integrity()?;
    eprintln!(
        "page size {}, {:?}, cache {}: {} ops, {} verifications, up to {} pages, {} spilled \
         transactions, log {:?}",
        case.page_size,
        case.durability,
        case.cache_pages,
        case.ops.len(),
        r.verifies,
        r.max_pages,
        r.spills,
        r.db().log().stats()
    );
    Ok(r.spills)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Do not write regression files into the source tree; a failure prints the shrunk
        // case, which a test below can pin.
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases())
    })]

    #[test]
    fn log_replay_equals_database(case in case()) {
        run(&case).map_err(TestCaseError::fail)?;
    }
}

/// Every page size, one fixed workload touching each kind of op (runs even with few cases).
#[test]
fn every_page_size_fixed_workload() {
    let ops = vec![
        Op::Insert { size: 100_000 },
        Op::Insert { size: 10 },
        Op::BigTxn {
            rows: 400,
            size: 3_000,
        },
        Op::Verify,
        Op::Savepoint {
            before: 5,
            inside: 200,
            size: 900,
            after: 5,
        },
        Op::Checkpoint(Checkpoint::Passive),
        Op::Update {
            pick: 3,
            size: 50_000,
        },
        Op::Rollback {
            rows: 200,
            size: 1_000,
            delete: 20,
        },
        Op::Verify,
        Op::DeleteMany { pick: 0, n: 200 },
        Op::Vacuum,
        Op::Verify,
        Op::Checkpoint(Checkpoint::Truncate),
        Op::Delete { pick: 1 },
        Op::Insert { size: 3_000 },
    ];
    for page_size in PAGE_SIZES {
        for durability in [Durability::Sync, Durability::Gated] {
            let case = Case {
                page_size,
                durability,
                cache_pages: 10,
                ops: ops.clone(),
            };
            match run(&case) {
                // Cache of 10 pages: the big transaction spills at every page size; the savepoint
                // and the rolled-back transaction (about 200 KB each) up to 16 KB pages.
                Ok(spills) => assert!(
                    spills >= if page_size <= 16384 { 3 } else { 1 },
                    "page size {page_size}: only {spills} transactions spilled"
                ),
                Err(e) => panic!("page size {page_size}, {durability:?}: {e}"),
            }
        }
    }
}
