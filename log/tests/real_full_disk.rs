//! A full disk on real file systems: a tmpfs and an ext4 image mounted for the test, filled by
//! 16 appenders through `StdFs` with the default options (64 MiB segments, preallocation,
//! spares, the background flusher). Every acknowledged record must be there after a reopen and
//! no refused one; after space is freed the log must take new records; no spare may sit on the
//! freed space.
//!
//! Mounting needs root, so these tests are ignored by default; `.ci/run` runs them when it
//! runs as root (`cargo test --release -p pagelog-log --test real_full_disk -- --ignored`).
//! A test that cannot mount fails: it never passes without having run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use pagelog_log::fs::{Fs, StdFs};
use pagelog_log::{Log, LogError, LogOptions, Lsn};

/// A file system mounted at a temporary directory for the test's lifetime.
struct Mounted {
    /// Holds the mount point (and an image): removed after the unmount in `drop`.
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl Mounted {
    fn tmpfs(size_mib: u64) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mib}m"))
            .arg("tmpfs")
            .arg(&mount));
        Mounted { _dir: dir, mount }
    }

    fn ext4(size_mib: u64) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("ext4.img");
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(size_mib << 20).unwrap();
        drop(file);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        Mounted { _dir: dir, mount }
    }

    fn free(&self) -> u64 {
        StdFs.free_space(&self.mount).unwrap().unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Before the temporary directory holding the mount point goes.
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (this test needs root and mount)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {} (this test needs root)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sixteen threads append 3,000-byte records (synced, or appended then waited for) until the
/// disk refuses them; returns the records acknowledged.
fn fill(log: &Arc<Log>) -> Vec<(Lsn, Vec<u8>)> {
    let handles: Vec<_> = (0..16u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0u64.. {
                    let mut p = vec![(t * 31 + i) as u8; 3000];
                    p[..8].copy_from_slice(&t.to_le_bytes());
                    p[8..16].copy_from_slice(&i.to_le_bytes());
                    let res = if i % 3 == 0 {
                        log.append(1, &p)
                            .and_then(|lsn| log.wait_durable(lsn).map(|()| lsn))
                    } else {
                        log.append_sync(1, &p)
                    };
                    match res {
                        Ok(lsn) => acked.push((lsn, p)),
                        Err(LogError::NoSpace { .. } | LogError::Latched { .. }) => break,
                        Err(e) => panic!("thread {t}: not a full disk: {e}"),
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    acked.sort();
    acked
}

/// Fill a log with options `opts` on `m`, then check (see the module doc).
fn check(fs_name: &str, m: &Mounted, opts: LogOptions) {
    let dir = m.mount.join("log");
    let log = Arc::new(
        Log::open(StdFs::shared(), &dir, opts.clone())
            .unwrap_or_else(|e| panic!("{fs_name}: opening a new log on a small disk: {e}")),
    );
    // Another file takes part of the disk too, as a database and its WAL would.
    let ballast = m.mount.join("ballast");
    std::fs::write(&ballast, vec![1u8; 1 << 20]).unwrap();
    let acked = fill(&log);
    assert!(acked.len() > 100, "{fs_name}: {} acknowledged", acked.len());
    assert!(log.failure().is_some(), "{fs_name}: the log latched");
    drop(log);

    let reopened = |what: &str| -> Vec<(Lsn, Vec<u8>)> {
        let log = Log::open(StdFs::shared(), &dir, opts.clone())
            .unwrap_or_else(|e| panic!("{fs_name}: reopening {what}: {e}"));
        let recs = log
            .reader(log.first_lsn())
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.lsn, r.payload)
            })
            .collect();
        drop(log);
        recs
    };
    let recs = reopened("on the full disk");
    for (lsn, p) in &acked {
        let got = recs.iter().find(|r| r.0 == *lsn);
        assert_eq!(
            got.map(|r| &r.1),
            Some(p),
            "{fs_name}: acknowledged record {lsn} lost or changed"
        );
    }
    // Every record attempted was acknowledged or refused: none refused may be found.
    assert_eq!(
        recs.len(),
        acked.len(),
        "{fs_name}: records found whose appends failed"
    );

    // Space again: the log takes records, and no spare sits on the freed space.
    std::fs::remove_file(&ballast).unwrap();
    let log = Log::open(StdFs::shared(), &dir, opts.clone())
        .unwrap_or_else(|e| panic!("{fs_name}: reopening after freeing 1 MiB: {e}"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    for i in 0..100 {
        log.append_sync(2, &[7u8; 3000])
            .unwrap_or_else(|e| panic!("{fs_name}: append {i} after freeing 1 MiB: {e}"));
    }
    assert_eq!(log.stats().spare_segments, 0, "{fs_name}");
    let spares: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("recycle-"))
        .collect();
    assert_eq!(spares, Vec::<String>::new(), "{fs_name}");
    assert!(m.free() < (64 << 20), "{fs_name}: a small disk");
    drop(log);
    assert_eq!(reopened("at the end").len(), acked.len() + 100, "{fs_name}");
}

/// 1 MiB segments: the disk fills across several rolls.
fn small_segments() -> LogOptions {
    LogOptions {
        segment_size: 1 << 20,
        ..LogOptions::default()
    }
}

#[test]
#[ignore = "needs root: mounts a tmpfs"]
fn a_full_tmpfs_loses_no_acknowledged_record_and_keeps_no_refused_one() {
    check("tmpfs", &Mounted::tmpfs(8), LogOptions::default());
    check(
        "tmpfs, 1 MiB segments",
        &Mounted::tmpfs(8),
        small_segments(),
    );
}

#[test]
#[ignore = "needs root and mkfs.ext4: mounts an ext4 image"]
fn a_full_ext4_loses_no_acknowledged_record_and_keeps_no_refused_one() {
    check("ext4", &Mounted::ext4(24), LogOptions::default());
    check("ext4, 1 MiB segments", &Mounted::ext4(24), small_segments());
}
