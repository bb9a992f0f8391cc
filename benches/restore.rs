//! Restore benchmark (`cargo bench --bench restore`), group `restore`:
//! - `pagelog_restore_64m`: restore a 64 MiB database from the local directory store, built
//!   from a snapshot plus thousands of logged transactions after it (download, decompress,
//!   write pages, apply the log, verify the whole-database checksum, fsync, rename);
//! - `copy_64m`: a plain copy of the same database file, fsynced (the physical limit for a
//!   durable result);
//! - `copy_64m_nosync`: the same copy without fsync (`std::fs::copy`, in-kernel).
//!
//! Goal: `pagelog_restore_64m` within 2× `copy_64m`. The store is built once and kept under
//! `target/bench-tmp/restore-64m/` (delete it to rebuild).

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pagelog::{Config, Database, Durability, RestoreOptions};

const TARGET_BYTES: u64 = 64 << 20;
const LOGGED_TRANSACTIONS: usize = 5000;

fn bench_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-tmp")
        .join("restore-64m")
}

/// Build (once) a 64 MiB database: bulk rows, a snapshot, then thousands of small logged
/// transactions. Returns (store dir, database path).
fn fixture() -> (PathBuf, PathBuf) {
    let root = bench_root();
    let (store, db_path, done) = (root.join("store"), root.join("src.db"), root.join("READY"));
    if done.exists() {
        return (store, db_path);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench dir");
    let db = Database::open(
        &db_path,
        Config::new()
            .durability(Durability::Gated)
            .store_url(store.to_str().expect("utf-8 path"))
            .auto_snapshot(false)
            .retention(None),
    )
    .expect("open");
    let conn = db.connect().expect("connect");
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB); CREATE INDEX t_k ON t(k);",
    )
    .expect("schema");
    // Bulk: ~60 MiB of 1000-byte rows.
    let rows = (TARGET_BYTES - (4 << 20)) / 1100;
    let mut id = 0u64;
    while id < rows {
        let tx = conn.unchecked_transaction().expect("tx");
        for _ in 0..5000.min(rows - id) {
            tx.execute(
                "INSERT INTO t(k, v) VALUES (?1, randomblob(1000))",
                [id as i64 % 977],
            )
            .expect("insert");
            id += 1;
        }
        tx.commit().expect("commit");
    }
    db.snapshot_now().expect("snapshot");
    // Thousands of small transactions after the snapshot: updates and inserts.
    for i in 0..LOGGED_TRANSACTIONS {
        conn.execute(
            "UPDATE t SET v = randomblob(1000) WHERE id = ?1",
            [(i as i64 * 7919) % rows as i64 + 1],
        )
        .expect("update");
        if i % 5 == 0 {
            conn.execute(
                "INSERT INTO t(k, v) VALUES (?1, randomblob(900))",
                [i as i64],
            )
            .expect("insert");
        }
    }
    let mark = db.bookmark();
    db.wait_durable(&mark).expect("durable");
    db.ship_now().expect("ship");
    db.wait_replicated(&mark, Some(Duration::from_secs(120)))
        .expect("replicated");
    drop(conn);
    db.close().expect("close");
    std::fs::write(&done, b"ok").expect("marker");
    (store, db_path)
}

fn restore_group(c: &mut Criterion) {
    let (store_dir, db_path) = fixture();
    let store = pagelog::open_store(store_dir.to_str().expect("utf-8"), &Default::default())
        .expect("store");
    let out_dir = bench_root().join("out");
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let size = std::fs::metadata(&db_path).expect("db").len();
    eprintln!("database: {} MiB", size >> 20);

    let mut g = c.benchmark_group("restore");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(criterion::Throughput::Bytes(size));
    let out = out_dir.join("restored.db");
    g.bench_function("pagelog_restore_64m", |b| {
        b.iter(|| {
            pagelog::restore(
                &*store,
                &out,
                &RestoreOptions {
                    force: true,
                    ..RestoreOptions::default()
                },
            )
            .expect("restore")
        })
    });
    let copy = out_dir.join("copy.db");
    g.bench_function("copy_64m", |b| {
        b.iter(|| {
            let _ = std::fs::remove_file(&copy);
            std::fs::copy(&db_path, &copy).expect("copy");
            std::fs::File::open(&copy)
                .and_then(|f| f.sync_all())
                .expect("sync");
        })
    });
    g.bench_function("copy_64m_nosync", |b| {
        b.iter(|| {
            let _ = std::fs::remove_file(&copy);
            std::fs::copy(&db_path, &copy).expect("copy")
        })
    });
    g.finish();
}

criterion_group!(benches, restore_group);
criterion_main!(benches);
