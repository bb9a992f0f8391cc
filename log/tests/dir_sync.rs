//! A failed sync of the log directory during a truncation, while a leader rolls to a new segment.
//!
//! Found by review (2026-11-29): the roll had created its segment (or renamed a spare to the
//! segment's name), the truncation's directory sync failed — which, as on Linux, drops every
//! entry that was waiting for it, the roll's included — and the roll's own directory sync then
//! succeeded with nothing left to write. The leader acknowledged records in a segment whose name
//! a power cut then took away. Every sync of the log directory now goes through one guard: after
//! one has failed, a later one fails too, so the roll latches and acknowledges nothing.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use pagelog_log::fs::{FileRef, Fs, FsLock, FsRef, OpenOptions, SimFs, SimFsConfig};
use pagelog_log::{Log, LogOptions};

const DIR: &str = "/db/log";

/// Pauses the roll right after its segment gets its name, and fails the next directory sync
/// (the truncation's) while it waits.
#[derive(Debug)]
struct PauseRoll {
    inner: FsRef,
    sim: SimFs,
    armed: AtomicBool,
    paused: AtomicBool,
    /// The roll has named its segment; the truncation may go on.
    named: Barrier,
    /// The truncation's directory sync is done; the roll may go on.
    synced: Barrier,
}

impl PauseRoll {
    fn named_segment(&self, what: &str) {
        if self.armed.swap(false, Ordering::SeqCst) {
            eprintln!("roll: {what}; paused");
            self.paused.store(true, Ordering::SeqCst);
            self.named.wait();
            self.synced.wait();
        }
    }
}

fn name(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

impl Fs for PauseRoll {
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<FileRef> {
        let file = self.inner.open(path, opts)?;
        let n = name(path);
        if opts.create && n.ends_with(".seg") && !n.starts_with("recycle-") {
            self.named_segment(&format!("created {n}"));
        }
        Ok(file)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)?;
        let (f, t) = (name(from), name(to));
        if f.starts_with("recycle-") && !t.starts_with("recycle-") {
            self.named_segment(&format!("renamed {f} to {t}"));
        }
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.paused.swap(false, Ordering::SeqCst) {
            // The truncation's: it fails, dropping the roll's new entry with its own.
            self.sim.fail_sync_in(1);
            let r = self.inner.sync_dir(dir);
            eprintln!("truncation's directory sync: {r:?}");
            self.synced.wait();
            return r;
        }
        self.inner.sync_dir(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        self.inner.try_lock(path)
    }
    fn free_space(&self, dir: &Path) -> io::Result<Option<u64>> {
        self.inner.free_space(dir)
    }
}

fn case(recycle: usize) {
    let sim = SimFs::new(SimFsConfig {
        seed: 1,
        apply_probability: 1.0,
        ..Default::default()
    });
    let fs = Arc::new(PauseRoll {
        inner: sim.shared(),
        sim: sim.clone(),
        armed: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        named: Barrier::new(2),
        synced: Barrier::new(2),
    });
    let opts = LogOptions {
        segment_size: 4096,
        preallocate: false,
        recycle,
        background_flush: false,
        ..Default::default()
    };
    let log = Arc::new(Log::open(fs.clone(), Path::new(DIR), opts.clone()).unwrap());
    if recycle > 0 {
        // Spares, from a truncation, for the roll to rename.
        while log.stats().segments < 4 {
            log.append_sync(0, &[1; 1000]).unwrap();
        }
        log.truncate_prefix(log.durable_lsn()).unwrap();
        assert!(log.stats().spare_segments > 0);
    }
    while log.stats().segments < 2 {
        log.append_sync(0, &[1; 1000]).unwrap();
    }
    // Append until one append rolls: that one pauses in the roll, and a truncation runs then.
    let mut acknowledged = 0;
    for _ in 0..10 {
        fs.armed.store(true, Ordering::SeqCst);
        let appender = {
            let log = log.clone();
            std::thread::spawn(move || log.append_sync(0, &[2; 1000]))
        };
        while !appender.is_finished() && !fs.paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !fs.paused.load(Ordering::SeqCst) {
            fs.armed.store(false, Ordering::SeqCst);
            acknowledged = appender.join().unwrap().unwrap();
            continue;
        }
        fs.named.wait();
        let truncated = log.truncate_prefix(log.durable_lsn());
        assert!(
            truncated.is_err(),
            "the truncation's sync failed: {truncated:?}"
        );
        let rolled = appender.join().unwrap();
        eprintln!("the append that rolled: {rolled:?}");
        if let Ok(lsn) = rolled {
            acknowledged = lsn;
        }
        let durable = log.durable_lsn();
        drop(log);
        sim.crash();
        let log = Log::open(sim.shared(), Path::new(DIR), opts).unwrap();
        assert!(
            log.last_lsn() >= acknowledged.max(durable),
            "acknowledged record {acknowledged} (durable LSN {durable}) lost: the log ends at {}",
            log.last_lsn()
        );
        return;
    }
    panic!("no append rolled");
}

#[test]
fn a_roll_after_a_truncations_failed_directory_sync_acknowledges_nothing_it_could_lose() {
    case(0);
}

#[test]
fn a_roll_to_a_recycled_segment_after_a_truncations_failed_directory_sync_too() {
    case(2);
}
