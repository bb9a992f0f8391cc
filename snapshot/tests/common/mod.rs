//! Shared test support: registering the VFS, a mixed SQL workload, database images as the
//! oracle, and a store wrapper that fails on command (fault injection in front of a real
//! local directory store).
#![allow(dead_code)]

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pagelog_log::LogOptions;
use pagelog_snapshot::store::local::LocalStore;
use pagelog_snapshot::{ObjectMeta, ObjectStore, PutOutcome, ShipperOptions, StoreError, StoreRef};
use pagelog_vfs::{Durability, PagelogVfs, VfsOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::Connection;

/// One VFS per durability mode (and segment size), registered once per process.
pub fn vfs(durability: Durability) -> PagelogVfs {
    static VFSES: OnceLock<Mutex<HashMap<bool, PagelogVfs>>> = OnceLock::new();
    let gated = durability == Durability::Gated;
    VFSES
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(gated)
        .or_insert_with(|| {
            let mut opts = VfsOptions::new(durability);
            // Small segments so that prefix truncation has whole segments to drop.
            opts.log = LogOptions {
                segment_size: 256 << 10,
                ..LogOptions::default()
            };
            PagelogVfs::register(if gated { "snap-gated" } else { "snap-sync" }, opts).unwrap()
        })
        .clone()
}

/// Shipper options for tests: quick batches, no retention, no automatic snapshots.
pub fn quick_opts() -> ShipperOptions {
    ShipperOptions {
        batch_delay: Duration::from_millis(20),
        auto_snapshot: false,
        retention: None,
        max_retry_delay: Duration::from_millis(200),
        ..ShipperOptions::default()
    }
}

/// Create the test table.
pub fn schema(conn: &Connection) {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);
         CREATE INDEX IF NOT EXISTS t_k ON t(k);",
    )
    .unwrap();
}

/// One random transaction: inserts, updates, deletes, sometimes big blobs (overflow pages),
/// sometimes a VACUUM (the database shrinks). Returns the LSN it committed.
pub fn step(conn: &Connection, rng: &mut StdRng) -> u64 {
    match rng.random_range(0..100) {
        0..=59 => {
            let tx = conn.unchecked_transaction().unwrap();
            for _ in 0..rng.random_range(1..6) {
                let len = if rng.random_bool(0.1) {
                    rng.random_range(5_000..40_000)
                } else {
                    rng.random_range(10..300)
                };
                let blob: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                tx.execute(
                    "INSERT INTO t(k, v) VALUES (?1, ?2)",
                    rusqlite::params![rng.random_range(0..1000i64), blob],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        60..=79 => {
            conn.execute(
                "UPDATE t SET v = randomblob(?1) WHERE k % 7 = ?2",
                rusqlite::params![rng.random_range(10..200i64), rng.random_range(0..7i64)],
            )
            .unwrap();
        }
        80..=96 => {
            conn.execute(
                "DELETE FROM t WHERE k % 11 = ?1",
                [rng.random_range(0..11i64)],
            )
            .unwrap();
        }
        _ => {
            conn.execute_batch("VACUUM").unwrap();
        }
    }
    pagelog_vfs::connection_last_lsn(conn).unwrap()
}

/// Insert `n` rows in one transaction.
pub fn insert(conn: &Connection, n: usize, tag: i64) -> u64 {
    let tx = conn.unchecked_transaction().unwrap();
    for _ in 0..n {
        tx.execute("INSERT INTO t(k, v) VALUES (?1, randomblob(100))", [tag])
            .unwrap();
    }
    tx.commit().unwrap();
    pagelog_vfs::connection_last_lsn(conn).unwrap()
}

/// The database image SQLite sees (every page, as in the file), read through a new
/// connection of the VFS.
pub fn image(vfs: &PagelogVfs, path: &Path) -> Vec<u8> {
    let mut conn = vfs.connect(path).unwrap();
    conn.serialize(rusqlite::MAIN_DB).unwrap().to_vec()
}

/// A file's bytes.
pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Seeded RNG; prints the seed so that a failure can be replayed with `PAGELOG_SEED`.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("PAGELOG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: PAGELOG_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Path helpers.
pub fn db_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// A real local store behind a switch: while `down`, every call fails as an unreachable
/// endpoint would. Counts calls.
#[derive(Debug)]
pub struct FlakyStore {
    pub inner: LocalStore,
    pub down: AtomicBool,
    /// While set, uploads hang (a store that accepts connections but never answers).
    pub hang: AtomicBool,
    pub puts: AtomicU64,
    pub lists: AtomicU64,
    pub gets: AtomicU64,
}

impl FlakyStore {
    pub fn new(root: &Path) -> Arc<FlakyStore> {
        Arc::new(FlakyStore {
            inner: LocalStore::open(root).unwrap(),
            down: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            puts: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            gets: AtomicU64::new(0),
        })
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self, key: &str) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                endpoint: "flaky".into(),
                key: key.into(),
                message: "connection refused (test)".into(),
            });
        }
        Ok(())
    }
}

impl ObjectStore for FlakyStore {
    fn describe(&self) -> String {
        format!("flaky {}", self.inner.describe())
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<PutOutcome, StoreError> {
        while self.hang.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.check(key)?;
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_if_absent(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.check(key)?;
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.check(key)?;
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_range(key, range)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.check(prefix)?;
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.delete(key)
    }
}

/// Shared handle of a flaky store.
pub fn store_ref(s: &Arc<FlakyStore>) -> StoreRef {
    s.clone()
}

/// Check that a timeline's batches are contiguous and do not overlap; returns the last LSN.
pub fn check_contiguous(store: &dyn ObjectStore, timeline: u64) -> u64 {
    let t = pagelog_snapshot::Catalog::load_timeline(store, timeline).unwrap();
    let mut expect = None;
    let mut last = 0;
    for i in 0..t.batches.len() {
        let h = t.batch_header(store, i).unwrap();
        if let Some(e) = expect {
            assert_eq!(
                h.first_lsn, e,
                "batch {} is not contiguous",
                t.batches[i].key
            );
        }
        expect = Some(h.last_lsn + 1);
        last = h.last_lsn;
    }
    last
}

/// Copy a closed database (file and log) to a new path: a cloned disk.
pub fn clone_db(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from, to).unwrap();
    let (fl, tl) = (
        format!("{}-pagelog", from.display()),
        format!("{}-pagelog", to.display()),
    );
    std::fs::create_dir_all(&tl).unwrap();
    for e in std::fs::read_dir(&fl).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), std::path::Path::new(&tl).join(e.file_name())).unwrap();
    }
}
