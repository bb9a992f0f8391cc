//! Commit-path benchmarks (`cargo bench --bench commit`): stock SQLite (the same bundled
//! version, default VFS, WAL) beside pagelog, in one run, same schema: a table with an integer
//! primary key and a 100-byte random blob.
//!
//! Group `commit`, one iteration = one committed transaction inserting one row:
//! - `sqlite_wal_full`: stock SQLite, `synchronous=FULL` (durable per commit);
//! - `sqlite_wal_normal`: stock SQLite, `synchronous=NORMAL` (not durable per commit);
//! - `pagelog_sync`: pagelog, Sync mode (durable when the commit returns);
//! - `pagelog_gated64`: pagelog, Gated mode, waiting for durability after every 64 commits.
//!
//! Variants: `*_10rows` (a 10-row transaction per iteration) and `*_1mib` (a transaction
//! inserting 1 MiB of blobs). Group `read`: `sqlite_point_select` vs `pagelog_point_select`.
//!
//! Before each function the disk is settled (`support::settle`): every function's files stay
//! until the end of the run, and the dirty pages one leaves behind (stock NORMAL leaves
//! unsynced WAL, closing a connection checkpoints) are written back before the next is
//! measured.

use std::path::Path;
use std::time::Duration;

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use pagelog::vfs::{Durability, PagelogVfs, VfsOptions};
use rand::{RngCore, SeedableRng, rngs::SmallRng};
use rusqlite::Connection;
use tempfile::TempDir;

mod support;
use support::{bench_dir, settle};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB NOT NULL)";

fn stock(dir: &Path, synchronous: &str) -> Connection {
    let conn = Connection::open(dir.join("stock.db")).expect("open stock");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("wal");
    assert_eq!(mode, "wal");
    conn.execute_batch(&format!("PRAGMA synchronous={synchronous}; {SCHEMA}"))
        .expect("schema");
    conn
}

fn vfs(durability: Durability) -> PagelogVfs {
    let name = format!("bench-{durability:?}");
    PagelogVfs::register(&name, VfsOptions::new(durability)).expect("register")
}

/// Insert `rows` rows of `len` random bytes in one transaction.
fn txn(conn: &Connection, rng: &mut SmallRng, buf: &mut [u8], rows: usize) {
    if rows == 1 {
        rng.fill_bytes(buf);
        conn.prepare_cached("INSERT INTO t(v) VALUES (?1)")
            .and_then(|mut s| s.execute([&*buf]))
            .expect("insert");
        return;
    }
    conn.execute_batch("BEGIN").expect("begin");
    {
        let mut s = conn
            .prepare_cached("INSERT INTO t(v) VALUES (?1)")
            .expect("prepare");
        for _ in 0..rows {
            rng.fill_bytes(buf);
            s.execute([&*buf]).expect("insert");
        }
    }
    conn.execute_batch("COMMIT").expect("commit");
}

struct Shape {
    suffix: &'static str,
    rows: usize,
    len: usize,
}

const SHAPES: [Shape; 3] = [
    Shape {
        suffix: "",
        rows: 1,
        len: 100,
    },
    Shape {
        suffix: "_10rows",
        rows: 10,
        len: 100,
    },
    Shape {
        suffix: "_1mib",
        rows: 16,
        len: 64 << 10,
    },
];

fn bench_stock(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    synchronous: &str,
    shape: &Shape,
) -> TempDir {
    let dir = bench_dir();
    let conn = stock(dir.path(), synchronous);
    let mut rng = SmallRng::seed_from_u64(1);
    let mut buf = vec![0u8; shape.len];
    settle();
    g.bench_function(format!("{name}{}", shape.suffix), |b| {
        b.iter(|| txn(&conn, &mut rng, &mut buf, shape.rows))
    });
    dir
}

fn bench_pagelog(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    vfs: &PagelogVfs,
    gate_every: u64,
    shape: &Shape,
) -> TempDir {
    let dir = bench_dir();
    let path = dir.path().join("pagelog.db");
    let db = vfs.open_database(&path).expect("open");
    let conn = vfs.connect(&path).expect("connect");
    conn.execute_batch(SCHEMA).expect("schema");
    let mut rng = SmallRng::seed_from_u64(1);
    let mut buf = vec![0u8; shape.len];
    let mut n = 0u64;
    settle();
    g.bench_function(format!("{name}{}", shape.suffix), |b| {
        b.iter(|| {
            txn(&conn, &mut rng, &mut buf, shape.rows);
            n += 1;
            if gate_every > 0 && n.is_multiple_of(gate_every) {
                let lsn = pagelog::vfs::last_commit_lsn().expect("commit LSN");
                db.wait_durable(lsn).expect("durable");
            }
            if n.is_multiple_of(64) {
                // As after shipping: checkpointed log segments are recycled (every 64
                // transactions: with 1 MiB ones a 64 MiB segment fills that fast, and without
                // recycling each new segment would be zero-filled during the measurement).
                let upto = db.checkpoint_lsn();
                db.log().truncate_prefix(upto).expect("truncate");
            }
        })
    });
    drop(conn);
    dir
}

fn commit(c: &mut Criterion) {
    let sync_vfs = vfs(Durability::Sync);
    let gated_vfs = vfs(Durability::Gated);
    let mut g = c.benchmark_group("commit");
    g.measurement_time(Duration::from_secs(6));
    let mut dirs = Vec::new();
    for shape in &SHAPES {
        if shape.len > 1000 {
            g.sample_size(20);
        }
        // Each goal's pair runs back to back: the disk's speed drifts during a run.
        dirs.push(bench_stock(&mut g, "sqlite_wal_full", "FULL", shape));
        dirs.push(bench_pagelog(&mut g, "pagelog_sync", &sync_vfs, 0, shape));
        dirs.push(bench_stock(&mut g, "sqlite_wal_normal", "NORMAL", shape));
        dirs.push(bench_pagelog(
            &mut g,
            "pagelog_gated64",
            &gated_vfs,
            64,
            shape,
        ));
    }
    g.finish();
    drop(dirs);
}

fn read(c: &mut Criterion) {
    const ROWS: i64 = 100_000;
    let sync_vfs =
        PagelogVfs::register("bench-read", VfsOptions::new(Durability::Sync)).expect("register");
    let mut g = c.benchmark_group("read");
    let fill = |conn: &Connection| {
        conn.execute_batch(SCHEMA).expect("schema");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        if n == 0 {
            conn.execute_batch(&format!(
                "BEGIN;
                 WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {ROWS})
                 INSERT INTO t(v) SELECT randomblob(100) FROM s;
                 COMMIT;"
            ))
            .expect("fill");
        }
    };
    let point = |conn: &Connection, rng: &mut SmallRng| {
        let id = (rng.next_u64() % ROWS as u64) as i64 + 1;
        let v: Vec<u8> = conn
            .prepare_cached("SELECT v FROM t WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .expect("select");
        assert_eq!(v.len(), 100);
    };
    let dir = bench_dir();
    let conn = stock(dir.path(), "NORMAL");
    fill(&conn);
    let mut rng = SmallRng::seed_from_u64(2);
    settle();
    g.bench_function("sqlite_point_select", |b| b.iter(|| point(&conn, &mut rng)));
    let path = dir.path().join("pagelog.db");
    let conn = sync_vfs.connect(&path).expect("connect");
    fill(&conn);
    let mut rng = SmallRng::seed_from_u64(2);
    settle();
    g.bench_function("pagelog_point_select", |b| {
        b.iter(|| point(&conn, &mut rng))
    });
    g.finish();
}

criterion_group!(benches, commit, read);
criterion_main!(benches);
