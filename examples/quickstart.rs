//! Quickstart — the project's main job: `cargo run --release --example quickstart [DIR]`
//! (DIR defaults to `./pagelog-quickstart`).
//!
//! Opens `DIR/app.db` with the local directory store `DIR/store`, in Gated mode: a small shop
//! workload runs on several threads, each with its own connection, and every "request" is
//! answered only once its writes are durable (output gating with bookmarks). It then waits for
//! replication, takes a snapshot, restores the latest state and an earlier bookmark from the
//! store into new files, verifies both (byte for byte against the live database, the recorded
//! contents at the bookmark, SQLite's integrity check, the whole-database checksum), and prints
//! a short report. Running it again continues the same history; the store it leaves can be
//! restored with `pagelog restore DIR/store -o OUT`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagelog::{Config, Database, Durability, RestoreOptions, RestoreTarget};

const THREADS: usize = 4;
const REQUESTS_PER_THREAD: usize = 300;

/// Row count and total of the orders table.
fn totals(conn: &rusqlite::Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(
        "SELECT count(*), coalesce(sum(total), 0) FROM orders",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// One phase of the workload: THREADS threads, each answering REQUESTS_PER_THREAD requests.
fn run_requests(db: &Arc<Database>, phase: usize) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let db = db.clone();
                s.spawn(move || -> Result<(), String> {
                    let conn = db.connect().map_err(|e| e.to_string())?;
                    for i in 0..REQUESTS_PER_THREAD {
                        let item = ((t * 7 + i) % 20) as i64;
                        let qty = 1 + (i % 3) as i64;
                        conn.execute_batch("BEGIN IMMEDIATE")
                            .map_err(|e| e.to_string())?;
                        conn.execute(
                            "INSERT INTO orders(item, qty, total, note) \
                             VALUES (?1, ?2, ?2 * (SELECT price FROM items WHERE id = ?1), ?3)",
                            rusqlite::params![
                                item,
                                qty,
                                format!("phase {phase} thread {t} request {i}")
                            ],
                        )
                        .map_err(|e| e.to_string())?;
                        conn.execute(
                            "UPDATE items SET stock = stock - ?2 WHERE id = ?1",
                            [item, qty],
                        )
                        .map_err(|e| e.to_string())?;
                        conn.execute_batch("COMMIT").map_err(|e| e.to_string())?;
                        // Output gating: the response leaves only once its writes are durable.
                        let mark = db.commit_bookmark(&conn).map_err(|e| e.to_string())?;
                        db.wait_durable(&mark).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })?;
    Ok(started.elapsed())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("pagelog-quickstart"));
    std::fs::create_dir_all(&dir)?;
    let db_path = dir.join("app.db");
    let store_dir = dir.join("store");
    let store_url = store_dir.to_str().ok_or("DIR must be valid UTF-8")?;

    let t0 = Instant::now();
    let db = Arc::new(Database::open(
        &db_path,
        Config::new()
            .durability(Durability::Gated)
            .store_url(store_url)
            .batch_delay(Duration::from_millis(200)),
    )?);
    let opened = db.stats();
    println!(
        "opened {} on timeline {} at LSN {} (store: {})",
        db.path().display(),
        opened.timeline,
        opened.current_lsn,
        store_dir.display()
    );
    {
        let conn = db.connect()?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT, price INTEGER, stock INTEGER);
             CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, item INTEGER, qty INTEGER, total INTEGER, note TEXT);
             CREATE INDEX IF NOT EXISTS orders_item ON orders(item);",
        )?;
        let tx = conn.unchecked_transaction()?;
        for id in 0..20i64 {
            tx.execute(
                "INSERT OR IGNORE INTO items VALUES (?1, 'item ' || ?1, 100 + ?1 * 5, 1000000)",
                [id],
            )?;
        }
        tx.commit()?;
    }

    // Phase 1, then a bookmark of the state in between, then phase 2.
    let phase1 = run_requests(&db, 1)?;
    let mid = db.bookmark();
    let mid_totals = totals(&db.connect()?)?;
    let phase2 = run_requests(&db, 2)?;
    let requests = 2 * THREADS * REQUESTS_PER_THREAD;
    let write_time = phase1 + phase2;
    println!(
        "answered {requests} requests on {THREADS} connections in {:.2} s ({:.0} durable requests/s); bookmark between the phases: {mid}",
        write_time.as_secs_f64(),
        requests as f64 / write_time.as_secs_f64()
    );

    // Replication, then a snapshot.
    let latest = db.bookmark();
    let t = Instant::now();
    db.ship_now()?;
    db.wait_replicated(&latest, Some(Duration::from_secs(60)))?;
    println!(
        "replicated up to LSN {} in {:.0} ms after the last commit",
        latest.lsn,
        t.elapsed().as_secs_f64() * 1000.0
    );
    let snap = db.snapshot_now()?;
    println!(
        "snapshot at LSN {}: {} pages in {} parts, {} bytes stored, checkpoints held {:.1} ms, {:.0} ms in all",
        snap.lsn,
        snap.db_pages,
        snap.parts,
        snap.stored_bytes,
        snap.copy_time.as_secs_f64() * 1000.0,
        snap.elapsed.as_secs_f64() * 1000.0
    );
    let live_totals = totals(&db.connect()?)?;
    let live_image = db.connect()?.serialize(rusqlite::MAIN_DB)?.to_vec();
    let stats = db.stats();

    // Restore the latest state and the bookmark into new files, and verify both.
    let store = db.store().ok_or("no store")?.clone();
    let latest_out = dir.join("restored-latest.db");
    let r1 = pagelog::restore(
        &*store,
        &latest_out,
        &RestoreOptions {
            target: RestoreTarget::Latest,
            force: true,
            integrity_check: true,
            ..RestoreOptions::default()
        },
    )?;
    if std::fs::read(&latest_out)? != live_image {
        return Err("the restored latest state differs from the live database".into());
    }
    let mid_out = dir.join("restored-bookmark.db");
    let r2 = pagelog::restore(
        &*store,
        &mid_out,
        &RestoreOptions {
            force: true,
            integrity_check: true,
            ..RestoreOptions::at_bookmark(mid)
        },
    )?;
    let restored_mid = totals(&rusqlite::Connection::open(&mid_out)?)?;
    if restored_mid != mid_totals {
        return Err(format!(
            "the restored bookmark holds {restored_mid:?}, the database held {mid_totals:?} at it"
        )
        .into());
    }
    for (what, r) in [("latest", &r1), ("bookmark", &r2)] {
        println!(
            "restored {what:8} -> {}: LSN {}, {} pages, {} transactions replayed on snapshot {:?}, {} bytes downloaded, {:.0} ms, checksum {:016x} verified",
            r.path.display(),
            r.lsn,
            r.db_pages,
            r.transactions,
            r.snapshot_lsn,
            r.bytes_downloaded,
            r.elapsed.as_secs_f64() * 1000.0,
            r.checksum
        );
    }
    println!(
        "verified: latest restore is byte-identical to the live database ({} orders, total {}); bookmark restore holds {} orders, total {}",
        live_totals.0, live_totals.1, restored_mid.0, restored_mid.1
    );
    println!(
        "LSNs: current {}, durable {}, replicated {:?}, snapshot {:?}, checkpoint {}; local log {} bytes; shipped {} batches, {} bytes",
        stats.current_lsn,
        stats.durable_lsn,
        stats.replicated_lsn,
        stats.snapshot_lsn,
        stats.checkpoint_lsn,
        stats.log_bytes,
        stats
            .shipper
            .as_ref()
            .map(|s| s.batches_shipped)
            .unwrap_or(0),
        stats.shipper.as_ref().map(|s| s.bytes_shipped).unwrap_or(0),
    );
    Arc::try_unwrap(db)
        .map_err(|_| "database still shared")?
        .close()?;
    println!(
        "done in {:.2} s; run again to continue the history",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
