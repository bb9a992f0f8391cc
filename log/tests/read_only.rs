//! A log opened with `LogOptions::read_only`: it reads what a read-write open would, writes
//! nothing (no mutating operation reaches the simulated disk, which counts them), leaves a torn
//! tail and a never-durable segment in place and reports them, refuses appends and truncation,
//! and takes the log's lock.

use std::path::{Path, PathBuf};

use pagelog_log::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, segment_file_name};
use pagelog_log::fs::{Fs, OpenOptions, SimFs, SimFsConfig};
use pagelog_log::{Log, LogError, LogOptions, Lsn};

const DIR: &str = "/data/app.db-pagelog";

fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

fn rw() -> LogOptions {
    LogOptions {
        background_flush: false,
        segment_size: 4096,
        ..LogOptions::default()
    }
}

fn ro() -> LogOptions {
    LogOptions {
        read_only: true,
        ..rw()
    }
}

fn payload(lsn: Lsn) -> Vec<u8> {
    vec![lsn as u8; 300 + (lsn as usize % 7) * 50]
}

/// Every record from the first, read through a reader.
fn records(log: &Log) -> Vec<(Lsn, Vec<u8>)> {
    log.reader(log.first_lsn())
        .unwrap()
        .map(|r| r.map(|r| (r.lsn, r.payload)).unwrap())
        .collect()
}

/// Each file in the log directory with its bytes.
fn files(disk: &SimFs) -> Vec<(String, Option<Vec<u8>>)> {
    let mut names = disk.list(&dir()).unwrap();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = disk.read_file(&dir().join(&n));
            (n, bytes)
        })
        .collect()
}

fn is_read_only(e: &LogError) -> bool {
    matches!(e, LogError::ReadOnly { dir } if dir == Path::new(DIR))
}

#[test]
fn a_read_only_open_reads_every_record_and_writes_nothing() {
    let disk = SimFs::new(SimFsConfig::default());
    let log = Log::open(disk.shared(), &dir(), rw()).unwrap();
    for lsn in 1..=40 {
        assert_eq!(log.append_sync(1, &payload(lsn)).unwrap(), lsn);
    }
    let written = records(&log);
    assert!(log.stats().segments > 2, "the records span segments");
    log.close().unwrap();

    let (ops, before) = (disk.op_count(), files(&disk));
    let log = Log::open(disk.shared(), &dir(), ro()).unwrap();
    assert_eq!(
        (log.first_lsn(), log.last_lsn(), log.durable_lsn()),
        (1, 40, 40)
    );
    assert_eq!(records(&log), written);
    assert!(is_read_only(&log.append(1, b"x").unwrap_err()));
    assert!(is_read_only(&log.append_sync(1, b"x").unwrap_err()));
    assert!(is_read_only(
        &log.append_sync(1, &vec![0; 1 << 20]).unwrap_err()
    ));
    assert!(is_read_only(&log.truncate_prefix(30).unwrap_err()));
    log.wait_durable(40).unwrap();
    log.flush().unwrap();
    log.close().unwrap();
    assert_eq!(
        disk.op_count(),
        ops,
        "a mutating operation reached the disk"
    );
    assert_eq!(files(&disk), before);

    // A read-write open afterwards finds the same log and goes on.
    let log = Log::open(disk.shared(), &dir(), rw()).unwrap();
    assert_eq!(records(&log), written);
    assert_eq!(log.append_sync(1, &payload(41)).unwrap(), 41);
}

#[test]
fn a_torn_tail_is_left_in_place_reported_and_cut_by_the_next_read_write_open() {
    let disk = SimFs::new(SimFsConfig::default());
    let opts = LogOptions {
        segment_size: 1 << 20,
        ..rw()
    };
    let log = Log::open(disk.shared(), &dir(), opts.clone()).unwrap();
    for lsn in 1..=10 {
        log.append_sync(1, &payload(lsn)).unwrap();
    }
    // Records 11..=15 in one batch: each says only record 10 was synced before it.
    for lsn in 11..=15 {
        log.append(1, &payload(lsn)).unwrap();
    }
    log.flush().unwrap();
    drop(log);
    // Damage record 11: the records after it were never synced before it, so this is a torn
    // tail, not corruption.
    let offset = SEGMENT_HEADER_LEN as u64
        + (1..=10)
            .map(|l| (RECORD_HEADER_LEN + payload(l).len()) as u64)
            .sum::<u64>();
    let segment = dir().join(segment_file_name(1));
    disk.corrupt(&segment, offset + RECORD_HEADER_LEN as u64 + 5, b"XX")
        .unwrap();

    let (ops, before) = (disk.op_count(), files(&disk));
    let log = Log::open(disk.shared(), &dir(), ro()).unwrap();
    let report = log.recovery_report().clone();
    assert_eq!(log.last_lsn(), 10);
    assert_eq!(records(&log).len(), 10);
    let tail: u64 = (11..=15)
        .map(|l| (RECORD_HEADER_LEN + payload(l).len()) as u64)
        .sum();
    // From the damaged record to the end of the last one after it.
    assert_eq!((report.left_bytes, report.erased_bytes), (tail, 0));
    let reason = report.tail_reason.unwrap_or_default();
    assert!(reason.contains("left in place (read-only)"), "{reason}");
    drop(log);
    assert_eq!(disk.op_count(), ops);
    assert_eq!(files(&disk), before);

    let log = Log::open(disk.shared(), &dir(), opts).unwrap();
    let report = log.recovery_report().clone();
    assert_eq!((report.erased_bytes, report.left_bytes), (tail, 0));
    assert_eq!(log.last_lsn(), 10);
}

#[test]
fn a_never_durable_last_segment_is_left_in_place() {
    let disk = SimFs::new(SimFsConfig::default());
    let log = Log::open(disk.shared(), &dir(), rw()).unwrap();
    for lsn in 1..=3 {
        log.append_sync(1, &payload(lsn)).unwrap();
    }
    log.close().unwrap();
    // A roll that crashed before its header was written.
    let torn = dir().join(segment_file_name(4));
    disk.open(&torn, OpenOptions::create_new())
        .unwrap()
        .write_all_at(&[0; 100], 0)
        .unwrap();

    let ops = disk.op_count();
    let log = Log::open(disk.shared(), &dir(), ro()).unwrap();
    assert_eq!(log.recovery_report().left_segments, 1);
    assert_eq!(log.recovery_report().removed_segments, 0);
    assert_eq!(log.last_lsn(), 3);
    assert_eq!(records(&log).len(), 3);
    drop(log);
    assert_eq!(disk.op_count(), ops);
    assert!(disk.exists(&torn).unwrap());

    let log = Log::open(disk.shared(), &dir(), rw()).unwrap();
    assert_eq!(log.recovery_report().removed_segments, 1);
    assert!(!disk.exists(&torn).unwrap());
}

#[test]
fn a_read_only_open_takes_the_lock_and_creates_no_log() {
    let disk = SimFs::new(SimFsConfig::default());
    // No directory, and a directory without a segment: no log, and nothing made.
    let missing = Log::open(disk.shared(), &dir(), ro()).unwrap_err();
    assert!(matches!(missing, LogError::NoLog { .. }), "{missing}");
    assert!(!disk.exists(&dir()).unwrap());
    disk.create_dir_all(&dir()).unwrap();
    let ops = disk.op_count();
    let ro_opts = LogOptions {
        create_if_missing: true,
        ..ro()
    };
    let empty = Log::open(disk.shared(), &dir(), ro_opts).unwrap_err();
    assert!(matches!(empty, LogError::NoLog { .. }), "{empty}");
    assert_eq!(disk.op_count(), ops);
    assert!(disk.list(&dir()).unwrap().is_empty());

    let log = Log::open(disk.shared(), &dir(), rw()).unwrap();
    log.append_sync(1, b"one").unwrap();
    let refused = Log::open(disk.shared(), &dir(), ro()).unwrap_err();
    assert!(
        matches!(&refused, LogError::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock),
        "{refused}"
    );
    log.close().unwrap();
    let reading = Log::open(disk.shared(), &dir(), ro()).unwrap();
    let refused = Log::open(disk.shared(), &dir(), rw()).unwrap_err();
    assert!(
        matches!(&refused, LogError::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock),
        "{refused}"
    );
    drop(reading);
    Log::open(disk.shared(), &dir(), rw()).unwrap();
}

/// The real file system: the lock is taken without writing the lock file, and a log open to
/// write elsewhere is refused naming its owner.
#[test]
fn on_the_real_file_system_the_lock_file_is_not_written() {
    use pagelog_log::fs::StdFs;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db-pagelog");
    let log = Log::open(StdFs::shared(), &dir, rw()).unwrap();
    log.append_sync(1, b"one").unwrap();
    let refused = Log::open(StdFs::shared(), &dir, ro()).unwrap_err();
    assert!(refused.to_string().contains("pid"), "{refused}");
    log.close().unwrap();
    let lock = dir.join(pagelog_log::LOCK_FILE);
    let owner = std::fs::read(&lock).unwrap();
    let modified = std::fs::metadata(&lock).unwrap().modified().unwrap();
    let log = Log::open(StdFs::shared(), &dir, ro()).unwrap();
    assert_eq!(records(&log), vec![(1, b"one".to_vec())]);
    assert!(Log::open(StdFs::shared(), &dir, rw()).is_err());
    drop(log);
    assert_eq!(std::fs::read(&lock).unwrap(), owner);
    assert_eq!(
        std::fs::metadata(&lock).unwrap().modified().unwrap(),
        modified
    );

    // The lock file still names the last writer, long gone: a refused opener is not sent to
    // it while a reader holds the lock.
    if cfg!(target_os = "linux") {
        let owner = String::from_utf8(owner).unwrap();
        let me = format!("pid {} ", std::process::id());
        assert!(owner.starts_with(&me), "{owner}");
        std::fs::write(&lock, owner.replacen(&me, "pid 999999999 ", 1)).unwrap();
        let reading = Log::open(StdFs::shared(), &dir, ro()).unwrap();
        let refused = Log::open(StdFs::shared(), &dir, rw())
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("does not record itself")
                && refused.contains("pid 999999999 on host")
                && refused.contains("is not running"),
            "{refused}"
        );
        drop(reading);
    }
}

/// Found by review: a batch whose sync failed and whose cut-back failed too (the power went
/// as it was being cut), the process then gone. The page cache still shows the batch, which
/// the disk never got; a read-write open drops those pages before reading, and the read-only
/// open listed the batch as durable records until it dropped them too.
#[test]
fn a_batch_whose_sync_and_cut_failed_is_not_read_as_records() {
    let disk = SimFs::new(SimFsConfig::default());
    let log = Log::open(disk.shared(), &dir(), rw()).unwrap();
    for lsn in 1..=3 {
        log.append_sync(1, &payload(lsn)).unwrap();
    }
    // The batch's write, its sync (fails), then the cut (the power is off by then).
    disk.fail_sync_in(1);
    disk.set_power_cut_after(Some(2));
    log.append_sync(1, &payload(4)).unwrap_err();
    drop(log);
    disk.kill_process();

    let log = Log::open(disk.shared(), &dir(), ro()).unwrap();
    assert_eq!((log.last_lsn(), log.durable_lsn()), (3, 3));
    assert_eq!(records(&log).len(), 3);
    drop(log);
    let log = Log::open(disk.shared(), &dir(), rw()).unwrap();
    assert_eq!(log.last_lsn(), 3);
}
