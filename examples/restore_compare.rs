//! The write side of `scripts/restore_compare.sh`, which compares pagelog's restore with
//! Litestream's: one deterministic workload, written either through pagelog (which ships it to
//! a store) or into a stock SQLite file in WAL mode (which Litestream, running beside it,
//! replicates).
//!
//! ```sh
//! restore_compare --mode pagelog --db DIR/pagelog.db --store-url s3://bucket/pagelog \
//!     --endpoint http://127.0.0.1:PORT [--mb 64] [--txns 5000] [--seed 1]
//! restore_compare --mode stock --db DIR/stock.db [--mb 64] [--txns 5000] [--seed 1]
//! ```
//!
//! The workload, the same in both modes (a seeded RNG, so the same seed gives the same rows):
//! a table `t(id INTEGER PRIMARY KEY, v BLOB)` with 1000-byte values (half random bytes, half
//! a repeated pattern, so they compress about 2:1); bulk inserts of `ROWS_PER_BULK_TXN` rows a
//! transaction until the table holds about `--mb` MiB of values; then `--txns` small
//! transactions, each updating one random row (80%) or inserting one row (20%). Both modes use
//! page size 4096, WAL mode and SQLite's default `synchronous=FULL`, one connection.
//!
//! The last lines printed (`key=value` words the script parses):
//!
//! ```text
//! transactions schema=1 bulk=N small=N total=N
//! size bytes=N pages=N page_size=4096
//! fingerprint rows=N value_bytes=N id_sum=N crc32=XXXXXXXX
//! ```
//!
//! The fingerprint: the row count, `sum(length(v))`, `sum(id)`, and the CRC-32 (IEEE, as
//! Python's `zlib.crc32`) of every row in id order, each row as its id (8 bytes big-endian),
//! the value's length (4 bytes big-endian) and the value. The script computes the same with
//! Python's `sqlite3` and `zlib` on each restored file.
//!
//! In pagelog mode the example asks for an upload of the rest of the log
//! ([`pagelog::Database::ship_now`]) and waits until the store holds the last commit
//! ([`pagelog::Database::wait_replicated`]) before closing, so a restore started after it exits
//! sees everything. Store credentials come from the AWS environment (`AWS_ACCESS_KEY_ID`, ...).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use pagelog::{Config, Database, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Rows per transaction of the bulk phase.
const ROWS_PER_BULK_TXN: u64 = 1000;
/// Bytes of each value.
const VALUE_BYTES: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Through pagelog, shipping to `--store-url`.
    Pagelog,
    /// A stock SQLite file in WAL mode (Litestream replicates it from outside).
    Stock,
}

/// Write the restore comparison's workload through pagelog or into a stock SQLite file.
#[derive(Debug, Parser)]
struct Args {
    /// Which engine writes the database.
    #[arg(long, value_enum)]
    mode: Mode,
    /// The database file (must not exist).
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// pagelog mode: the store (`s3://bucket/prefix`, or a local directory).
    #[arg(long, value_name = "URL")]
    store_url: Option<String>,
    /// pagelog mode: S3 endpoint URL.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// pagelog mode: S3 region.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// About this many MiB of values from the bulk phase.
    #[arg(long, default_value_t = 64)]
    mb: u64,
    /// Small transactions after the bulk phase.
    #[arg(long, default_value_t = 5000)]
    txns: u64,
    /// Seed of the workload's RNG.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// pagelog mode: take a snapshot once everything is replicated, so a restore reads the
    /// snapshot alone (the script's `FINAL_SNAPSHOT=1`).
    #[arg(long)]
    snapshot: bool,
}

/// A value: `VALUE_BYTES / 2` random bytes, then a pattern made from `tag` (compressible).
fn value(rng: &mut StdRng, tag: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_BYTES];
    let half = VALUE_BYTES / 2;
    rng.fill_bytes(&mut v[..half]);
    let pattern = format!("row-{tag:016x};");
    for (i, b) in v[half..].iter_mut().enumerate() {
        *b = pattern.as_bytes()[i % pattern.len()];
    }
    v
}

/// Counts of the transactions the workload committed.
struct Counts {
    bulk: u64,
    small: u64,
}

/// The workload, on any connection (pagelog's or a plain one).
fn workload(conn: &rusqlite::Connection, args: &Args) -> rusqlite::Result<Counts> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB NOT NULL);")?;
    let rows = (args.mb * 1024 * 1024).div_ceil(VALUE_BYTES as u64).max(1);
    let mut bulk = 0;
    let mut next_id = 1u64;
    let started = Instant::now();
    while next_id <= rows {
        let tx = conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO t(id, v) VALUES (?1, ?2)")?;
            let end = (next_id + ROWS_PER_BULK_TXN).min(rows + 1);
            for id in next_id..end {
                insert.execute(rusqlite::params![id as i64, value(&mut rng, id)])?;
            }
            next_id = end;
        }
        tx.commit()?;
        bulk += 1;
    }
    eprintln!(
        "bulk: {rows} rows in {bulk} transactions, {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    for _ in 0..args.txns {
        if rng.random_range(0..10u32) < 8 {
            let id = rng.random_range(1..next_id);
            conn.execute(
                "UPDATE t SET v = ?2 WHERE id = ?1",
                rusqlite::params![id as i64, value(&mut rng, id ^ 0xffff)],
            )?;
        } else {
            conn.execute(
                "INSERT INTO t(id, v) VALUES (?1, ?2)",
                rusqlite::params![next_id as i64, value(&mut rng, next_id)],
            )?;
            next_id += 1;
        }
    }
    eprintln!(
        "small: {} transactions, {:.2} s",
        args.txns,
        started.elapsed().as_secs_f64()
    );
    Ok(Counts {
        bulk,
        small: args.txns,
    })
}

/// `size ...` and `fingerprint ...` lines of a connection's database.
fn describe(conn: &rusqlite::Connection) -> rusqlite::Result<String> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let mut hasher = crc32fast::Hasher::new();
    let (mut rows, mut value_bytes, mut id_sum) = (0u64, 0u64, 0i128);
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id")?;
    let mut it = stmt.query([])?;
    while let Some(row) = it.next()? {
        let id: i64 = row.get(0)?;
        let v = row.get_ref(1)?.as_blob()?;
        hasher.update(&id.to_be_bytes());
        hasher.update(&(v.len() as u32).to_be_bytes());
        hasher.update(v);
        rows += 1;
        value_bytes += v.len() as u64;
        id_sum += i128::from(id);
    }
    Ok(format!(
        "size bytes={} pages={pages} page_size={page_size}\nfingerprint rows={rows} value_bytes={value_bytes} id_sum={id_sum} crc32={:08x}",
        pages * page_size,
        hasher.finalize()
    ))
}

fn refuse_existing(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if path.exists() {
        return Err(format!(
            "{} exists; the workload starts from nothing",
            path.display()
        )
        .into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let db_path = args.db.as_path();
    refuse_existing(db_path)?;
    let started = Instant::now();
    let (counts, description) = match args.mode {
        Mode::Stock => {
            let conn = rusqlite::Connection::open(db_path)?;
            conn.pragma_update(None, "page_size", 4096)?;
            let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            if mode != "wal" {
                return Err(format!("journal_mode is {mode}, not wal").into());
            }
            // Litestream takes over checkpoints while it runs; the app's own automatic
            // checkpoints stay at SQLite's default, as in an untouched application.
            conn.busy_timeout(Duration::from_secs(30))?;
            let counts = workload(&conn, &args)?;
            let description = describe(&conn)?;
            conn.close().map_err(|(_, e)| e)?;
            (counts, description)
        }
        Mode::Pagelog => {
            let url = args
                .store_url
                .as_deref()
                .ok_or("--mode pagelog needs --store-url")?;
            let options = StoreOptions {
                endpoint: args.endpoint.clone(),
                region: Some(args.region.clone()),
                force_path_style: args.endpoint.as_ref().map(|_| true),
                ..StoreOptions::default()
            };
            let db = Database::open(
                db_path,
                Config::new()
                    .page_size(4096)
                    .store_url(url)
                    .store_options(options),
            )?;
            let conn = db.connect()?;
            let counts = workload(&conn, &args)?;
            let description = describe(&conn)?;
            drop(conn);
            let last = db.bookmark();
            let t = Instant::now();
            db.ship_now()?;
            db.wait_replicated(&last, Some(Duration::from_secs(600)))?;
            eprintln!(
                "replicated up to {last} {:.2} s after the last commit",
                t.elapsed().as_secs_f64()
            );
            if args.snapshot {
                let snap = db.snapshot_now()?;
                eprintln!(
                    "snapshot at LSN {}: {} pages, {} bytes stored",
                    snap.lsn, snap.db_pages, snap.stored_bytes
                );
            }
            db.close()?;
            (counts, description)
        }
    };
    eprintln!("workload done in {:.2} s", started.elapsed().as_secs_f64());
    println!(
        "transactions schema=1 bulk={} small={} total={}",
        counts.bulk,
        counts.small,
        1 + counts.bulk + counts.small
    );
    println!("{description}");
    Ok(())
}
