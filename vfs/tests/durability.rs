//! Durability modes, the write-ahead rule and "the log's fsync replaces SQLite's", proven with
//! the simulated disk's sync counters and crashes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use pagelog_log::LogOptions;
use pagelog_log::fs::{Fs, SimFs, SimFsConfig};
use pagelog_vfs::{Durability, PagelogVfs, VfsOptions};

static N: AtomicU64 = AtomicU64::new(0);

fn sim_vfs(fs: &SimFs, durability: Durability) -> PagelogVfs {
    fs.create_dir_all(Path::new("/db")).unwrap();
    PagelogVfs::register(
        &format!("durability-{}", N.fetch_add(1, Ordering::Relaxed)),
        VfsOptions {
            fs: fs.shared(),
            durability,
            log: LogOptions {
                background_flush: false,
                preallocate: false,
                ..Default::default()
            },
            page_size: 4096,
        },
    )
    .unwrap()
}

const DB: &str = "/db/app.db";

#[test]
fn sync_mode_commits_cost_one_log_fsync_and_no_wal_fsync() {
    let fs = SimFs::new(SimFsConfig::default());
    let vfs = sim_vfs(&fs, Durability::Sync);
    let db = vfs.open_database(Path::new(DB)).unwrap();
    let conn = vfs.connect(Path::new(DB)).unwrap();
    // synchronous=FULL: stock SQLite would fsync the WAL at every commit.
    conn.execute_batch("PRAGMA synchronous=FULL; CREATE TABLE t(x)")
        .unwrap();
    fs.reset_sync_counts();
    for i in 0..50 {
        conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        assert_eq!(
            db.durable_lsn(),
            db.last_lsn(),
            "Sync: durable when the commit returns"
        );
    }
    let counts = fs.sync_counts();
    assert_eq!(counts.file_syncs_ending_with("-wal"), 0, "{counts:?}");
    assert_eq!(counts.file_syncs_ending_with(".seg"), 50, "{counts:?}");
    assert_eq!(counts.file_syncs_ending_with("app.db"), 0, "{counts:?}");
}

#[test]
fn gated_mode_shares_one_fsync_between_many_commits() {
    let fs = SimFs::new(SimFsConfig::default());
    let vfs = sim_vfs(&fs, Durability::Gated);
    let db = vfs.open_database(Path::new(DB)).unwrap();
    let conn = vfs.connect(Path::new(DB)).unwrap();
    conn.execute_batch("CREATE TABLE t(x)").unwrap();
    db.wait_durable(db.last_lsn()).unwrap();
    fs.reset_sync_counts();
    let mut lsns = Vec::new();
    for i in 0..64 {
        conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        lsns.push(pagelog_vfs::last_commit_lsn().unwrap());
    }
    assert!(
        db.durable_lsn() < db.last_lsn(),
        "Gated: commits return before durability"
    );
    assert!(
        lsns.windows(2).all(|w| w[1] == w[0] + 1),
        "one LSN per commit"
    );
    db.wait_durable(*lsns.last().unwrap()).unwrap();
    let counts = fs.sync_counts();
    assert_eq!(
        counts.file_syncs_ending_with(".seg"),
        1,
        "64 commits, one fsync: {counts:?}"
    );
    assert_eq!(counts.file_syncs_ending_with("-wal"), 0, "{counts:?}");
}

#[test]
fn a_checkpoint_waits_for_the_log_before_touching_the_database_file() {
    for seed in 0..20 {
        let fs = SimFs::new(SimFsConfig {
            seed,
            ..Default::default()
        });
        let vfs = sim_vfs(&fs, Durability::Gated);
        let db = vfs.open_database(Path::new(DB)).unwrap();
        let conn = vfs.connect(Path::new(DB)).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(5000))")
            .unwrap();
        let lsn = pagelog_vfs::last_commit_lsn().unwrap();
        assert!(db.durable_lsn() < lsn);
        // The checkpoint copies the WAL into the main file: the log must be durable first.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
        assert!(
            db.durable_lsn() >= lsn,
            "seed {seed}: pages reached the main file before their transaction was durable"
        );
        // And after power loss right now the database opens, consistent with its log.
        std::mem::forget(conn);
        std::mem::forget(db);
        fs.crash();
        let vfs2 = PagelogVfs::register(
            &format!("durability-{}", N.fetch_add(1, Ordering::Relaxed)),
            VfsOptions {
                fs: fs.shared(),
                durability: Durability::Gated,
                log: LogOptions {
                    background_flush: false,
                    ..Default::default()
                },
                page_size: 4096,
            },
        )
        .unwrap();
        let conn = vfs2
            .connect(Path::new(DB))
            .unwrap_or_else(|e| panic!("seed {seed}: reopen after crash: {e}"));
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "seed {seed}");
    }
}

/// Bytes the files on `fs` take (its capacity lifted for the measurement, then set to `cap`).
fn used(fs: &SimFs, cap: Option<u64>) -> u64 {
    fs.set_capacity(Some(u64::MAX));
    let free = fs.free_space(Path::new("/db")).unwrap().unwrap();
    fs.set_capacity(cap);
    u64::MAX - free
}

/// Found by a probe on real small file systems (tmpfs, ext4; 2026-11-29): a database whose
/// disk had filled could not be opened again, not even to read: recovery replays the log onto
/// the main file, which must grow, before it discarded the WAL, whose space would have let it.
/// Recovery now discards the WAL first (it only holds frames the log has).
#[test]
fn a_database_whose_disk_filled_opens_again_on_the_full_disk() {
    let fs = SimFs::new(SimFsConfig {
        seed: 11,
        ..Default::default()
    });
    let vfs = sim_vfs(&fs, Durability::Sync);
    let conn = vfs.connect(Path::new(DB)).unwrap();
    conn.execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x INTEGER, b BLOB);")
        .unwrap();
    let cap = used(&fs, None) + (2 << 20);
    fs.set_capacity(Some(cap));
    let mut acked = 0i64;
    for i in 1..=10_000i64 {
        match conn.execute("INSERT INTO t VALUES (?1, randomblob(3000))", [i]) {
            Ok(_) => acked = i,
            Err(_) => break,
        }
    }
    assert!(acked > 20, "{acked} commits before the disk filled");
    drop(conn);
    let conn = vfs
        .connect(Path::new(DB))
        .unwrap_or_else(|e| panic!("reopening on the full disk: {e}"));
    let (n, max): (i64, i64) = conn
        .query_row("SELECT count(*), max(x) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(
        n == max && max >= acked,
        "{n} rows, max {max}, {acked} acknowledged"
    );
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
