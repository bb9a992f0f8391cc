//! Quickstart (for now, the log layer alone; it grows into the full VFS + store + restore demo
//! as those layers land).
//!
//! `cargo run --release --example quickstart [DIR]` (DIR defaults to `./pagelog-quickstart`):
//! appends records from several threads with group commit, reopens the log as after a restart,
//! reads everything back and verifies it. Running it twice continues the same log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use pagelog::log::fs::StdFs;
use pagelog::log::{Log, LogOptions};

fn payload(thread: usize, i: usize) -> Vec<u8> {
    format!("thread {thread} record {i}: {}", "x".repeat(i % 200)).into_bytes()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("pagelog-quickstart"));
    let log_dir = dir.join("log");
    let opts = LogOptions {
        segment_size: 4 << 20,
        ..Default::default()
    };
    let log = Arc::new(Log::open(StdFs::shared(), &log_dir, opts.clone())?);
    let start_lsn = log.last_lsn();
    println!("opened {} at LSN {start_lsn}", log_dir.display());

    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || -> Result<Vec<u64>, pagelog::log::LogError> {
                let mut mine = Vec::new();
                for i in 0..250 {
                    let lsn = log.append_sync(1, &payload(t, i))?;
                    mine.push(lsn);
                }
                Ok(mine)
            })
        })
        .collect();
    let mut written = 0;
    for t in threads {
        written += t.join().map_err(|_| "appender thread panicked")??.len();
    }
    let elapsed = started.elapsed();
    let stats = log.stats();
    println!(
        "appended {written} durable records in {elapsed:.2?} with {} fdatasync calls (group commit)",
        stats.syncs
    );
    Arc::into_inner(log).ok_or("log still shared")?.close()?;

    // Reopen as after a restart and verify every record's CRC and order.
    let log = Log::open(StdFs::shared(), &log_dir, opts)?;
    let mut count = 0u64;
    let mut prev = None;
    for rec in log.reader(log.first_lsn())? {
        let rec = rec?;
        if let Some(p) = prev
            && rec.lsn != p + 1
        {
            return Err(format!("gap after LSN {p}").into());
        }
        prev = Some(rec.lsn);
        count += 1;
    }
    if log.last_lsn() != start_lsn + written as u64 {
        return Err("records missing after reopen".into());
    }
    println!(
        "verified {count} records (LSN {}..={}) after reopening: OK",
        log.first_lsn(),
        log.last_lsn()
    );
    Ok(())
}
