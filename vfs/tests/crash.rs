//! Crash simulation through the VFS on the simulated disk: the main database, its WAL and its
//! log all live on a `SimFs` whose power is cut after the k-th mutating operation; the disk then
//! drops, tears or garbles every unsynced write, and the database is reopened (recovery).
//!
//! Oracle: the workload is a deterministic function of the seed; every transaction `i` inserts
//! known rows, deletes some, and sets a counter to `i`. After recovery the database must be
//! exactly the model state after transaction `c` for some `c` with
//! `acknowledged <= c <= attempted` (no half transaction, nothing beyond what was written),
//! with `integrity_check` = ok; a crash during recovery followed by recovery gives the same
//! state; and the log replayed into an empty file gives the same database. One seed in three
//! trims the log after every step (as a database without a store does), so that crashes also
//! hit truncations and recovery runs from a log whose beginning is gone.
//!
//! `PAGELOG_VFS_CRASH_CASES` sets the number of cases (default 1,200); a failure prints its
//! seed and crash point; `PAGELOG_SEED` + `PAGELOG_CRASH_POINT` replay one case.
//!
//! A second test kills the process at the crash point instead (the machine stays up, its
//! unsynced writes stay in the page cache), lets a second process open the database and run
//! the rest of the workload, then cuts the power: the state the second process read and every
//! acknowledged transaction must survive (`PAGELOG_VFS_KILL_CASES`, default 400).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use pagelog_log::LogOptions;
use pagelog_log::fs::{CrashPlan, Fs, OpenOptions, SimFs, SimFsConfig, run_crash_cases};
use pagelog_vfs::{Durability, PagelogVfs, VfsOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DB: &str = "/db/app.db";

#[derive(Debug, Clone)]
enum Step {
    /// Insert rows (id, blob length), delete ids, set the counter: one transaction.
    Txn {
        inserts: Vec<(i64, usize)>,
        deletes: Vec<i64>,
    },
    Checkpoint(&'static str),
}

struct Workload {
    durability: Durability,
    page_size: u32,
    log: LogOptions,
    cache_pages: i64,
    steps: Vec<Step>,
    /// Trim the log after every step, as a database without a store does
    /// ([`pagelog_vfs::Database::trim_log`]).
    trim: bool,
}

fn blob(id: i64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (id as usize * 7 + j * 13) as u8).collect()
}

fn workload(seed: u64) -> Workload {
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let durability = if seed.is_multiple_of(2) {
        Durability::Sync
    } else {
        Durability::Gated
    };
    let page_size = [512u32, 1024, 4096][rng.random_range(0..3)];
    let mut log = LogOptions {
        segment_size: [16u64 << 10, 64 << 10, 1 << 20][rng.random_range(0..3)],
        preallocate: rng.random_bool(0.5),
        background_flush: false,
        recycle: 1,
        ..Default::default()
    };
    let trim = seed % 3 == 1;
    if trim {
        // Small segments, so that trimming removes some.
        log.segment_size = 16 << 10;
    }
    let mut next_id = 1i64;
    let mut live: Vec<i64> = Vec::new();
    let mut steps = Vec::new();
    for _ in 0..rng.random_range(6..16) {
        if rng.random_bool(0.12) {
            steps.push(Step::Checkpoint(if rng.random_bool(0.5) {
                "TRUNCATE"
            } else {
                "PASSIVE"
            }));
            continue;
        }
        let mut inserts = Vec::new();
        for _ in 0..rng.random_range(1..6) {
            let len = match rng.random_range(0..6) {
                0 => rng.random_range(2000..9000), // overflow pages
                _ => rng.random_range(10..300),
            };
            inserts.push((next_id, len));
            live.push(next_id);
            next_id += 1;
        }
        let mut deletes = Vec::new();
        if !live.is_empty() && rng.random_bool(0.3) {
            let i = rng.random_range(0..live.len());
            deletes.push(live.swap_remove(i));
        }
        steps.push(Step::Txn { inserts, deletes });
    }
    Workload {
        durability,
        page_size,
        log,
        cache_pages: [5i64, 2000][rng.random_range(0..2)],
        steps,
        // From the seed, not the generator, so that the other draws stay as they were.
        trim,
    }
}

/// Model state after each transaction count: id -> blob length.
fn model(w: &Workload) -> Vec<BTreeMap<i64, usize>> {
    let mut states = vec![BTreeMap::new()];
    let mut cur = BTreeMap::new();
    for s in &w.steps {
        if let Step::Txn { inserts, deletes } = s {
            for (id, len) in inserts {
                cur.insert(*id, *len);
            }
            for id in deletes {
                cur.remove(id);
            }
            states.push(cur.clone());
        }
    }
    states
}

static NEXT_VFS: AtomicU64 = AtomicU64::new(0);

fn register(fs: &SimFs, w: &Workload) -> PagelogVfs {
    let n = NEXT_VFS.fetch_add(1, Ordering::Relaxed);
    PagelogVfs::register(
        &format!("crash-{n}"),
        VfsOptions {
            fs: fs.shared(),
            durability: w.durability,
            log: w.log.clone(),
            page_size: w.page_size,
        },
    )
    .expect("register VFS")
}

#[derive(Debug, Default)]
struct Outcome {
    acked: u64,
    attempted: u64,
}

/// Run the workload's steps after transaction `from` (0: all of them), until they end or the
/// disk fails.
fn run(vfs: &PagelogVfs, w: &Workload, from: u64) -> Outcome {
    let mut out = Outcome {
        acked: from,
        attempted: from,
    };
    let Ok(db) = vfs.open_database(Path::new(DB)) else {
        return out;
    };
    let Ok(conn) = vfs.connect(Path::new(DB)) else {
        return out;
    };
    let setup = format!(
        "PRAGMA cache_size={}; BEGIN; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB);
         CREATE TABLE IF NOT EXISTS c(k INTEGER PRIMARY KEY, n INTEGER);
         INSERT OR IGNORE INTO c VALUES (1, 0); COMMIT;",
        w.cache_pages
    );
    if conn.execute_batch(&setup).is_err() {
        return out;
    }
    let mut txn_no = 0u64;
    let mut unacked = false;
    let mut failed = false;
    for s in &w.steps {
        if let Step::Txn { .. } = s
            && txn_no < from
        {
            txn_no += 1;
            continue;
        }
        if txn_no < from {
            continue;
        }
        let r: rusqlite::Result<()> = match s {
            Step::Checkpoint(mode) => conn
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
                .map(|_| ()),
            Step::Txn { inserts, deletes } => {
                txn_no += 1;
                out.attempted = txn_no;
                let body = || -> rusqlite::Result<()> {
                    conn.execute_batch("BEGIN")?;
                    for (id, len) in inserts {
                        conn.execute("INSERT INTO t VALUES (?1, ?2)", (id, blob(*id, *len)))?;
                    }
                    for id in deletes {
                        conn.execute("DELETE FROM t WHERE id = ?1", [id])?;
                    }
                    conn.execute("UPDATE c SET n = ?1 WHERE k = 1", [txn_no as i64])?;
                    conn.execute_batch("COMMIT")
                };
                body().map(|_| match w.durability {
                    Durability::Sync => out.acked = txn_no,
                    Durability::Gated => unacked = true,
                })
            }
        };
        // A database without a store trims its log after checkpoints (here after every step,
        // to crash inside truncations too).
        let r = r.and_then(|_| {
            if w.trim {
                db.trim_log().map_err(|e| {
                    rusqlite::Error::ToSqlConversionFailure(format!("trim: {e}").into())
                })?;
            }
            Ok(())
        });
        if let Err(e) = &r {
            if std::env::var_os("PAGELOG_DEBUG").is_some() {
                eprintln!(
                    "workload stopped at transaction {txn_no}: {e} ({:?})",
                    pagelog_vfs::last_error()
                );
            }
            failed = true;
            break;
        }
        // Gated: output gating every third transaction (checkpoints may run in between).
        if unacked && txn_no.is_multiple_of(3) {
            if !gate(&db) {
                failed = true;
                break;
            }
            out.acked = txn_no;
            unacked = false;
        }
    }
    if unacked && !failed && gate(&db) {
        out.acked = txn_no;
    }
    drop(conn);
    drop(db);
    out
}

fn gate(db: &pagelog_vfs::Database) -> bool {
    let r = pagelog_vfs::last_commit_lsn().map(|lsn| db.wait_durable(lsn));
    if std::env::var_os("PAGELOG_DEBUG").is_some() {
        eprintln!("gate: {r:?}");
    }
    matches!(r, Some(Ok(())))
}

/// Open after a crash and read the state: (counter, rows id -> blob length).
fn recover(vfs: &PagelogVfs) -> Result<(u64, BTreeMap<i64, usize>), String> {
    let db = vfs
        .open_database(Path::new(DB))
        .map_err(|e| format!("recovery failed: {e}"))?;
    let conn = vfs
        .connect(Path::new(DB))
        .map_err(|e| format!("connect failed: {e}"))?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("integrity_check failed: {e}"))?;
    if check != "ok" {
        return Err(format!("integrity_check: {check}"));
    }
    let has_tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name IN ('t', 'c')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    if has_tables < 2 {
        return Ok((0, BTreeMap::new()));
    }
    let n: i64 = conn
        .query_row("SELECT n FROM c WHERE k = 1", [], |r| r.get(0))
        .map_err(|e| format!("reading counter: {e}"))?;
    let mut rows = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT id, v FROM t ORDER BY id")
        .map_err(|e| e.to_string())?;
    let iter = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .map_err(|e| e.to_string())?;
    for row in iter {
        let (id, v) = row.map_err(|e| e.to_string())?;
        if v != blob(id, v.len()) {
            return Err(format!("row {id} has wrong content"));
        }
        rows.insert(id, v.len());
    }
    drop(stmt);
    drop(conn);
    drop(db);
    Ok((n as u64, rows))
}

/// A recovered state `(counter, rows)` holds every transaction up to `durable`, none beyond
/// `attempted`, and no half transaction.
fn check_state(
    states: &[BTreeMap<i64, usize>],
    (n, rows): (u64, &BTreeMap<i64, usize>),
    durable: u64,
    attempted: u64,
) -> Result<(), String> {
    if n < durable {
        return Err(format!(
            "transaction {durable} was durable and is lost: database is at {n}"
        ));
    }
    if n > attempted {
        return Err(format!(
            "database is at {n}, beyond the {attempted} attempted"
        ));
    }
    if *rows != states[n as usize] {
        return Err(format!(
            "database at counter {n} does not match the model (half transaction?)"
        ));
    }
    Ok(())
}

/// The mutating disk operations of the seed's workload run without faults (each of which
/// must be acknowledged).
fn workload_ops(seed: u64) -> u64 {
    let w = workload(seed);
    let probe = SimFs::new(SimFsConfig {
        seed,
        ..Default::default()
    });
    probe.create_dir_all(Path::new("/db")).expect("mkdir");
    let vfs = register(&probe, &w);
    let out = run(&vfs, &w, 0);
    assert_eq!(
        out.acked as usize,
        model(&w).len() - 1,
        "seed {seed}: a run without faults must acknowledge every transaction"
    );
    probe.op_count()
}

/// A workload run on a disk whose power was cut after `crash_point` operations.
struct Ran {
    w: Workload,
    /// The model state after each transaction count.
    states: Vec<BTreeMap<i64, usize>>,
    fs: SimFs,
    vfs: PagelogVfs,
    out: Outcome,
}

/// Run the seed's workload on a disk whose power is cut after `crash_point` operations.
fn run_until(seed: u64, crash_point: u64) -> Result<Ran, String> {
    let w = workload(seed);
    let states = model(&w);
    let fs = SimFs::new(SimFsConfig {
        seed,
        power_cut_after_ops: Some(crash_point),
        ..Default::default()
    });
    fs.create_dir_all(Path::new("/db"))
        .map_err(|e| e.to_string())?;
    let vfs = register(&fs, &w);
    let out = run(&vfs, &w, 0);
    Ok(Ran {
        w,
        states,
        fs,
        vfs,
        out,
    })
}

fn check_case(seed: u64, crash_point: u64) -> Result<(), String> {
    let Ran {
        states,
        fs,
        vfs,
        out,
        ..
    } = run_until(seed, crash_point)?;
    fs.crash();

    let (n, rows) = recover(&vfs)?;
    check_state(&states, (n, &rows), out.acked, out.attempted)
        .map_err(|e| format!("{e} (acknowledged {})", out.acked))?;

    // Crash during recovery, then recover again: the same state.
    let before = fs.op_count();
    let again = recover(&vfs)?;
    let recovery_ops = fs.op_count() - before;
    let mut rng = SmallRng::seed_from_u64(seed ^ crash_point.rotate_left(17));
    fs.set_power_cut_after(Some(rng.random_range(0..=recovery_ops.max(1))));
    let _ = recover(&vfs);
    fs.crash();
    let after = recover(&vfs)?;
    if again != (n, rows.clone()) || after != (n, rows) {
        return Err("recovery is not idempotent under a crash during recovery".into());
    }

    // The log alone rebuilds the same database (unless trimming dropped its beginning).
    let db = vfs
        .open_database(Path::new(DB))
        .map_err(|e| format!("reopen: {e}"))?;
    if db.log().first_lsn() > 1 {
        return Ok(());
    }
    let target = fs
        .open(Path::new("/db/replayed"), OpenOptions::create())
        .map_err(|e| e.to_string())?;
    target.set_len(0).map_err(|e| e.to_string())?;
    let replayed = pagelog_vfs::replay::replay_log(
        db.log(),
        db.log().first_lsn(),
        db.last_lsn(),
        &*target,
        None,
    )
    .map_err(|e| format!("replay: {e}"))?;
    let (sum, pages) = db.checksum();
    if replayed.checksum != sum || replayed.db_pages != pages {
        return Err("the replayed log disagrees with the database's checksum".into());
    }
    let live = fs.read_file(Path::new(DB)).unwrap_or_default();
    let rebuilt = fs.read_file(Path::new("/db/replayed")).unwrap_or_default();
    if live != rebuilt {
        return Err(
            "the main file (fully checkpointed at open) differs from the replayed log".into(),
        );
    }
    Ok(())
}

#[test]
fn crash_points_through_the_vfs() {
    let plan = CrashPlan {
        cases_env: "PAGELOG_VFS_CRASH_CASES",
        cases: 1200,
        points_per_seed: 30,
    };
    run_crash_cases(plan, workload_ops, check_case);
}

/// Found by the whole-system simulation (snapshot/tests/system_sim.rs, seed 3776 crash point
/// 42): the sync of the main file before a checkpoint mark failed (the disk drops the pages it
/// could not write) after SQLite had counted the frames as checkpointed; the next mark's sync
/// succeeded and told recovery that the file held every transaction, so after a crash recovery
/// refused the database ("does not match its log"). A failed sync of the main file must never
/// be trusted: the database is poisoned until reopened.
#[test]
fn a_failed_sync_of_the_main_file_is_never_trusted_by_a_later_checkpoint() {
    for fail_at in 1..=30u64 {
        let fs = SimFs::new(SimFsConfig {
            seed: fail_at,
            ..Default::default()
        });
        fs.create_dir_all(Path::new("/db")).unwrap();
        let n = NEXT_VFS.fetch_add(1, Ordering::Relaxed);
        let vfs = PagelogVfs::register(
            &format!("crash-{n}"),
            VfsOptions {
                fs: fs.shared(),
                durability: Durability::Sync,
                log: LogOptions {
                    background_flush: false,
                    preallocate: false,
                    ..Default::default()
                },
                page_size: 1024,
            },
        )
        .unwrap();
        fs.fail_sync_in(fail_at);
        let mut acked = 0;
        if let Ok(conn) = vfs.connect(Path::new(DB)) {
            // The pages reach the main file without SQLite syncing it: the sync that makes
            // them durable is the one before the checkpoint mark.
            let _ = conn.execute_batch("PRAGMA synchronous=OFF");
            for i in 1..=8i64 {
                let sql = format!(
                    "BEGIN; CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES ({i}), (randomblob(3000)); COMMIT;"
                );
                if conn.execute_batch(&sql).is_ok() {
                    acked = i;
                }
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            }
        }
        fs.crash();
        let conn = vfs
            .connect(Path::new(DB))
            .unwrap_or_else(|e| panic!("sync {fail_at} failed: recovery: {e}"));
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "sync {fail_at} failed");
        if acked > 0 {
            let max: i64 = conn
                .query_row(
                    "SELECT max(x) FROM t WHERE typeof(x) = 'integer'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(
                max >= acked,
                "sync {fail_at} failed: {max} < acknowledged {acked}"
            );
        }
    }
}

/// One kill case: the workload's process stops at disk operation `crash_point` and is killed
/// with the machine up (`SimFs::kill_process`: its unsynced writes stay in the page cache); a
/// second process opens the database, reads it, and runs the rest of the workload from there;
/// the power fails at a random point of its life; the database recovers.
///
/// The state the second process read at open (a reader may release it, after a wait for its
/// LSN that returns at once) and every transaction either process saw acknowledged must
/// survive the power cut, with the usual model check.
fn check_kill_case(seed: u64, crash_point: u64) -> Result<(), String> {
    let Ran {
        w,
        states,
        fs,
        vfs,
        out: first,
    } = run_until(seed, crash_point)?;
    fs.kill_process();

    let mut rng = SmallRng::seed_from_u64(seed ^ crash_point.rotate_left(29) ^ 0x6b11);
    fs.set_power_cut_after(Some(rng.random_range(0..400)));
    let mut durable = first.acked;
    let mut attempted = first.attempted;
    let seen = recover(&vfs).ok();
    if let Some((n2, rows2)) = &seen {
        if *n2 < first.acked || *n2 > first.attempted || *rows2 != states[*n2 as usize] {
            return Err(format!(
                "after the kill the second process read state {n2} (acknowledged {}, attempted {}, model match {})",
                first.acked,
                first.attempted,
                *rows2 == states[*n2 as usize]
            ));
        }
        durable = durable.max(*n2);
        let second = run(&vfs, &w, *n2);
        durable = durable.max(second.acked);
        attempted = attempted.max(second.attempted);
    }
    fs.crash();

    let (n, rows) = recover(&vfs)?;
    check_state(&states, (n, &rows), durable, attempted).map_err(|e| {
        format!(
            "after the power cut: {e} (the second process read {:?})",
            seen.map(|s| s.0)
        )
    })
}

#[test]
fn a_killed_process_then_a_power_cut_through_the_vfs() {
    let plan = CrashPlan {
        cases_env: "PAGELOG_VFS_KILL_CASES",
        cases: 400,
        points_per_seed: 20,
    };
    run_crash_cases(plan, workload_ops, check_kill_case);
}
