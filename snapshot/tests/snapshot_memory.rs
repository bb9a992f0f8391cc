//! Snapshot memory and writer impact on a large database: taking and uploading a snapshot
//! streams the image, so peak RSS grows by a bounded amount whatever the database size
//! (goal: a 1 GiB database raises peak RSS by no more than 64 MiB), and commits go on while it
//! runs. Database size: `PAGELOG_SNAPSHOT_TEST_MB` (default 128; the figure is 1024).
//! Run it in release mode: `cargo test --release -p pagelog-snapshot --test snapshot_memory`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use pagelog_snapshot::{Catalog, RestoreOptions, Shipper, restore};
use pagelog_vfs::Durability;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

#[test]
fn snapshot_of_a_large_database_has_bounded_memory_and_does_not_stop_writers() {
    let mb: u64 = std::env::var("PAGELOG_SNAPSHOT_TEST_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    conn.execute_batch("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB); CREATE TABLE w(x);")
        .unwrap();
    // 64 KiB random blobs, 128 per transaction (8 MiB).
    let rows = mb * 16;
    for chunk in 0..rows.div_ceil(128) {
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..128.min(rows - chunk * 128) {
            tx.execute("INSERT INTO big(v) VALUES (randomblob(65536))", [])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let db = vfs.open_database(&path).unwrap();
    let db_bytes = db.checksum().1 as u64 * db.page_size() as u64;
    assert!(db_bytes >= mb << 20, "database is {db_bytes} bytes");
    let shipper = Shipper::start(db.clone(), store_ref.clone(), quick_opts()).unwrap();
    shipper
        .wait_replicated(db.last_lsn(), Some(Duration::from_secs(600)))
        .unwrap();

    // Measure from here: reset the peak (Linux: "5" to clear_refs resets VmHWM).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let rss_before = status_kib("VmRSS:");
    let stop = AtomicBool::new(false);
    let commits_during = AtomicU64::new(0);
    let info = std::thread::scope(|s| {
        s.spawn(|| {
            let w = vfs.connect(&path).unwrap();
            while !stop.load(Ordering::SeqCst) {
                w.execute("INSERT INTO w VALUES (randomblob(100))", [])
                    .unwrap();
                commits_during.fetch_add(1, Ordering::SeqCst);
            }
        });
        let info = shipper.snapshot_now();
        stop.store(true, Ordering::SeqCst);
        info.unwrap()
    });
    let peak = status_kib("VmHWM:");
    let grew_mib = peak.saturating_sub(rss_before) as f64 / 1024.0;
    eprintln!(
        "database {} MiB: snapshot of {} pages in {} parts, {:.1} s (checkpoints held {:.0} ms); \
         RSS before {} MiB, peak {} MiB, grew {grew_mib:.1} MiB; {} commits during the snapshot",
        db_bytes >> 20,
        info.db_pages,
        info.parts,
        info.elapsed.as_secs_f64(),
        info.copy_time.as_secs_f64() * 1000.0,
        rss_before / 1024,
        peak / 1024,
        commits_during.load(Ordering::SeqCst)
    );
    assert!(
        grew_mib <= 64.0,
        "peak RSS grew by {grew_mib:.1} MiB during the snapshot of a {} MiB database",
        db_bytes >> 20
    );
    assert!(
        commits_during.load(Ordering::SeqCst) > 0,
        "writers committed while the snapshot ran"
    );

    // The snapshot restores to the database as of its LSN.
    let cat = Catalog::load(&*store_ref).unwrap();
    assert!(
        cat.timelines[&1]
            .complete_snapshots()
            .any(|s| s.lsn == info.lsn)
    );
    let out = dir.path().join("restored.db");
    let r = restore(
        &*store_ref,
        &out,
        &RestoreOptions {
            target: pagelog_snapshot::RestoreTarget::Lsn(info.lsn),
            ..RestoreOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        (r.snapshot_lsn, r.checksum),
        (Some(info.lsn), info.checksum)
    );
    shipper.close(Duration::from_secs(60)).unwrap();
}
