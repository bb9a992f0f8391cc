//! SIGKILL loop through the `pagelog` facade with shipping to a local directory store: a writer
//! child process (Sync and Gated mode, alternating) is killed at a random moment, then the
//! parent reopens the database (recovery) and restores it from the store, and checks both.
//!
//! The child is this test binary re-executed to run the `#[ignore]`d test `child_facade_writer`,
//! which does nothing unless its environment variables are set. It opens the database with
//! [`pagelog::Database`] and a local directory store (a short batch delay, so that shipping
//! keeps up), writes transactions with checkable contents and reports on stdout (one `write(2)`
//! per report, only complete lines count):
//! - `ACK <id> <lsn>` once transaction `id` (commit LSN `lsn`) is durable (Sync: after the
//!   commit returns; Gated: after `wait_durable`);
//! - `REPL <id> <lsn>` after `wait_replicated` returned for it;
//! - `SNAP <lsn>` after a `snapshot_now`; it also checkpoints now and then.
//!
//! Oracle, after each kill:
//! 1. Restore the latest state from the store (before anything else touches it): SQLite's
//!    integrity check is ok; `a` holds exactly ids 1..=m, `b` the same ids, every `b.h` is the
//!    hash of its `a.v` (no half transaction); m is at least every id reported `REPL` (in any
//!    cycle) and everything the previous cycle saw replicated; and m agrees with the restored
//!    LSN: every acknowledged id whose LSN is at most the restored LSN is in, none above is.
//! 2. Reopen through `pagelog::Database` (recovery; the shipper starts again): integrity ok,
//!    the same content checks, every acknowledged id present, nothing the previous check saw
//!    lost, and the restore of step 1 is not ahead of it.
//! 3. Wait until the reopened database has shipped everything, restore the latest state into a
//!    fresh file: it is byte-identical to the reopened database's image.
//! 4. Sometimes: restore at the LSN of a random earlier acknowledged transaction, which must
//!    give exactly ids 1..=that id; every 10 cycles and at the end `pagelog::verify` must find
//!    the store sound: no gap, no problem but the parts of snapshot uploads a kill
//!    interrupted (no manifest: never used, removed by retention).
//!
//! The next cycle's child continues the same database and store, so the history grows.
//!
//! Run: `cargo test --release --test sigkill`. `PAGELOG_FACADE_SIGKILL_CYCLES` sets the number
//! of cycles (default 50); `PAGELOG_FACADE_SIGKILL_SEED` replays a seed (every failure prints
//! it). Timing is not deterministic, so a seed fixes the choices (modes, kill delays, the
//! children's workloads and settings, which restores are made) but not the exact kill point.
//! A failing run keeps its directory (database and store) and prints where it is.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pagelog::{Config, Database, Durability, RestoreOptions, RestoreTarget, StoreRef};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

#[path = "../vfs/tests/support/child.rs"]
mod child;
use child::{SCHEMA, check_content, collect_stderr, fnv, real_tempdir, spawn_self, tail};

const ENV_DB: &str = "PAGELOG_FACADE_KILL_DB";
const ENV_STORE: &str = "PAGELOG_FACADE_KILL_STORE";
const ENV_MODE: &str = "PAGELOG_FACADE_KILL_MODE";
const ENV_SEED: &str = "PAGELOG_FACADE_KILL_SEED";
const ENV_CYCLES: &str = "PAGELOG_FACADE_SIGKILL_CYCLES";
const ENV_LOOP_SEED: &str = "PAGELOG_FACADE_SIGKILL_SEED";

/// How long a child may take to open the database before the test gives up on it.
const CHILD_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the parent waits for the store to catch up with the reopened database.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers shared by parent and children.

fn mode_name(d: Durability) -> &'static str {
    match d {
        Durability::Sync => "sync",
        Durability::Gated => "gated",
    }
}

/// A value for `a.v`: mostly small, sometimes a page or two (overflow chains). Kept small so
/// that the database, and the restores of every cycle, stay cheap.
fn random_value(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.random_range(0..100) {
        0..92 => rng.random_range(0..=300),
        _ => rng.random_range(300..=6000),
    };
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// The numbers after `tag` in `line` (libtest may print `test name ... ` before it).
fn parse_tag(line: &str, tag: &str) -> Option<Vec<i64>> {
    let at = line.find(tag)?;
    line[at + tag.len()..]
        .split_whitespace()
        .map(|w| w.parse().ok())
        .collect()
}

fn config(store: &str, durability: Durability, batch_delay: Duration) -> Config {
    Config::new()
        .durability(durability)
        .store_url(store)
        .batch_delay(batch_delay)
}

// ---------------------------------------------------------------------------------------------
// The child.

/// One `write(2)` per report: a kill cannot leave half of a line in the pipe except at its end.
fn report(out: &mut impl Write, lines: &str) {
    out.write_all(lines.as_bytes()).expect("stdout");
    out.flush().expect("stdout");
}

/// Child: write transactions forever (until killed), reporting what is durable and replicated.
#[test]
#[ignore = "child process of facade_sigkill_loop_with_shipping_and_restore; does nothing on its own"]
fn child_facade_writer() {
    let Ok(path) = std::env::var(ENV_DB) else {
        return;
    };
    let path = PathBuf::from(path);
    let store = std::env::var(ENV_STORE).expect("store");
    let mode = match std::env::var(ENV_MODE).as_deref() {
        Ok("sync") => Durability::Sync,
        Ok("gated") => Durability::Gated,
        other => panic!("bad {ENV_MODE}: {other:?}"),
    };
    let seed: u64 = std::env::var(ENV_SEED)
        .expect("seed")
        .parse()
        .expect("numeric seed");
    let mut rng = StdRng::seed_from_u64(seed);

    let batch_delay = Duration::from_millis(rng.random_range(2..=40));
    let auto_checkpoint = [50, 200, 1000][rng.random_range(0..3)];
    let db = Database::open(
        &path,
        config(&store, mode, batch_delay).auto_checkpoint_pages(auto_checkpoint),
    )
    .expect("Database::open");
    let mut conn = db.connect().expect("connect");
    let start: i64 = conn
        .query_row("SELECT coalesce(max(id), 0) FROM a", [], |r| r.get(0))
        .expect("max id");
    let mut out = std::io::stdout().lock();
    report(
        &mut out,
        &format!("\nREADY {start} {}\n", db.stats().current_lsn),
    );

    // Per-cycle odds of the occasional operations (per transaction).
    let p_repl = rng.random_range(0.01..0.1);
    let p_checkpoint = rng.random_range(0.0..0.03);
    let p_snapshot = rng.random_range(0.0..0.02);

    let mut next = start + 1;
    // Committed, not yet reported durable (Gated): (id, lsn).
    let mut pending: Vec<(i64, u64)> = Vec::new();
    let mut batch: usize = rng.random_range(1..=16);
    loop {
        let id = next;
        let v = random_value(&mut rng);
        let tx = conn.transaction().expect("begin");
        tx.prepare_cached("INSERT INTO a(id, v) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute((id, &v)))
            .expect("insert a");
        tx.prepare_cached("INSERT INTO b(id, h) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute((id, fnv(&v))))
            .expect("insert b");
        if id > 1 && rng.random_bool(0.2) {
            // Rewrite an older row: its a.v and b.h change together or not at all.
            let old = rng.random_range(1..id);
            let w = random_value(&mut rng);
            tx.prepare_cached("UPDATE a SET v = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute((old, &w)))
                .expect("update a");
            tx.prepare_cached("UPDATE b SET h = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute((old, fnv(&w))))
                .expect("update b");
        }
        tx.commit().expect("commit");
        next += 1;
        let mark = db.commit_bookmark(&conn).expect("commit_bookmark");
        pending.push((id, mark.lsn));

        let repl = rng.random_bool(p_repl);
        let ack_now = match mode {
            Durability::Sync => {
                assert!(
                    db.is_durable(&mark),
                    "Sync commit returned before it was durable: {mark}, durable {}",
                    db.stats().durable_lsn
                );
                true
            }
            Durability::Gated => repl || pending.len() >= batch,
        };
        if ack_now {
            db.wait_durable(&mark).expect("wait_durable");
            assert!(db.is_durable(&mark), "wait_durable({mark}) returned early");
            let lines: String = pending
                .drain(..)
                .map(|(i, l)| format!("ACK {i} {l}\n"))
                .collect();
            report(&mut out, &lines);
            batch = rng.random_range(1..=16);
        }
        if repl {
            if rng.random_bool(0.5) {
                db.ship_now().expect("ship_now");
            }
            db.wait_replicated(&mark, Some(Duration::from_secs(30)))
                .expect("wait_replicated");
            report(&mut out, &format!("REPL {id} {}\n", mark.lsn));
        }
        if rng.random_bool(p_checkpoint) {
            let how = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"][rng.random_range(0..4)];
            conn.query_row(&format!("PRAGMA wal_checkpoint({how})"), [], |_| Ok(()))
                .expect("checkpoint");
        }
        if rng.random_bool(p_snapshot) {
            let snap = db.snapshot_now().expect("snapshot_now");
            report(&mut out, &format!("SNAP {}\n", snap.lsn));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// What the parent's reader thread saw on a writer child's stdout.
#[derive(Default)]
struct ChildOutput {
    ready: Option<(i64, u64)>,
    /// (id, lsn), in report order.
    acks: Vec<(i64, u64)>,
    /// (id, lsn), in report order.
    repls: Vec<(i64, u64)>,
    snaps: Vec<u64>,
    other: Vec<String>,
}

/// Read a writer child's stdout: report READY at once, return the rest at EOF. Only complete
/// lines count (a kill may cut the last one).
fn read_child_stdout(child: &mut Child, ready_tx: mpsc::Sender<()>) -> JoinHandle<ChildOutput> {
    let stdout = child.stdout.take().expect("piped stdout");
    thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut out = ChildOutput::default();
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if !line.ends_with('\n') {
                out.other.push(format!("(cut line) {line}"));
                break;
            }
            let pair = |v: Vec<i64>| match v[..] {
                [a, b] => Some((a, b as u64)),
                _ => None,
            };
            if let Some(p) = parse_tag(&line, "ACK ").and_then(pair) {
                out.acks.push(p);
            } else if let Some(p) = parse_tag(&line, "REPL ").and_then(pair) {
                out.repls.push(p);
            } else if let Some(v) = parse_tag(&line, "SNAP ") {
                out.snaps.extend(v.iter().map(|&l| l as u64));
            } else if let Some(p) = parse_tag(&line, "READY ").and_then(pair) {
                out.ready = Some(p);
                let _ = ready_tx.send(());
            } else if !line.trim().is_empty() {
                out.other.push(line.trim_end().to_string());
            }
        }
        out
    })
}

/// Every acknowledged transaction so far, (id, lsn) in id order (LSNs rise with ids).
#[derive(Default)]
struct AckHistory(Vec<(i64, u64)>);

impl AckHistory {
    /// The ids a state right after `lsn` must hold: at least `low` (every acknowledged id at or
    /// below `lsn`), less than `high` (the first acknowledged id above it, if any).
    fn bracket(&self, lsn: u64) -> (i64, Option<i64>) {
        let k = self.0.partition_point(|&(_, l)| l <= lsn);
        let low = if k == 0 { 0 } else { self.0[k - 1].0 };
        (low, self.0.get(k).map(|&(id, _)| id))
    }

    fn check(&self, what: &str, rows: i64, lsn: u64) -> Result<(), String> {
        let (low, high) = self.bracket(lsn);
        if rows < low {
            return Err(format!(
                "{what} at LSN {lsn} ends at id {rows}, but id {low} was acknowledged at an LSN \
                 at or below it"
            ));
        }
        if let Some(high) = high
            && rows >= high
        {
            return Err(format!(
                "{what} at LSN {lsn} holds id {rows}, but id {high} was acknowledged at an LSN \
                 above it"
            ));
        }
        Ok(())
    }
}

/// Restore `target` from `store` into `out` (replacing it), with the integrity check.
fn restore(
    store: &StoreRef,
    out: &Path,
    target: RestoreTarget,
) -> Result<pagelog::RestoreReport, String> {
    pagelog::restore(
        &**store,
        out,
        &RestoreOptions {
            target,
            force: true,
            integrity_check: true,
            ..RestoreOptions::default()
        },
    )
    .map_err(|e| format!("restore of {target} failed: {e}"))
}

/// Open a restored file with plain SQLite and check its content; remove it afterwards.
fn check_restored(out: &Path) -> Result<i64, String> {
    let rows = {
        let conn = rusqlite::Connection::open(out)
            .map_err(|e| format!("opening the restored file {}: {e}", out.display()))?;
        check_content(&conn)?
    };
    remove_db_files(out);
    Ok(rows)
}

fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

#[derive(Default)]
struct Totals {
    kills: u32,
    early_kills: u32,
    acks: [usize; 2],
    repls: usize,
    snaps: usize,
    restores_latest: usize,
    restores_identical: usize,
    restores_earlier: usize,
    verifies: usize,
    interrupted_snapshots: usize,
    replayed: u64,
}

#[test]
fn facade_sigkill_loop_with_shipping_and_restore() {
    let cycles: u32 = std::env::var(ENV_CYCLES)
        .ok()
        .map(|s| {
            s.parse()
                .expect("PAGELOG_FACADE_SIGKILL_CYCLES must be a number")
        })
        .unwrap_or(50);
    let seed: u64 = std::env::var(ENV_LOOP_SEED)
        .ok()
        .map(|s| {
            s.parse()
                .expect("PAGELOG_FACADE_SIGKILL_SEED must be a number")
        })
        .unwrap_or_else(rand::random);
    eprintln!("facade_sigkill_loop_with_shipping_and_restore: seed {seed}, {cycles} cycles");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = real_tempdir("pagelog-facade-sigkill-");
    let path = dir.path().join("kill.db");
    let store_dir = dir.path().join("store");
    let store_url = store_dir.to_str().expect("UTF-8 path").to_string();
    let restored = dir.path().join("restored.db");
    let parent_config = || config(&store_url, Durability::Sync, Duration::from_millis(5));

    // The schema, shipped (with the first snapshot) before the first child starts.
    {
        let db = Database::open(&path, parent_config()).expect("creating the database");
        let conn = db.connect().expect("connect");
        conn.execute_batch(SCHEMA).expect("creating the tables");
        db.wait_replicated(&db.bookmark(), Some(REPLICATION_TIMEOUT))
            .expect("shipping the schema");
        drop(conn);
        db.close().expect("close");
    }
    let store = pagelog::open_store(&store_url, &Default::default()).expect("open_store");

    let started = Instant::now();
    let mut history = AckHistory::default();
    // Rows the last check saw in the reopened database, all of them replicated.
    let mut seen: i64 = 0;
    // The highest id reported replicated, in any cycle.
    let mut max_repl: i64 = 0;
    let mut t = Totals::default();
    for cycle in 0..cycles {
        let mode = if cycle % 2 == 0 {
            Durability::Sync
        } else {
            Durability::Gated
        };
        let child_seed: u64 = rng.random();
        // Mostly kill while writing; sometimes early, counted from the spawn: the child may
        // still be starting or opening (recovery, the shipper's attach to the store), which
        // takes some 100-400 ms here.
        let early = rng.random_bool(0.15);
        let delay = Duration::from_millis(if early {
            rng.random_range(0..=400)
        } else {
            rng.random_range(5..=300)
        });
        let restore_earlier = rng.random_bool(0.3);
        let earlier_pick: u64 = rng.random();
        let ctx = format!(
            "seed {seed} ({ENV_LOOP_SEED}={seed}), cycle {cycle}, mode {}, child seed \
             {child_seed}, kill {} ms after {}, dir {}",
            mode_name(mode),
            delay.as_millis(),
            if early { "spawn" } else { "READY" },
            dir.path().display()
        );

        // 0. Run the child and kill it.
        let mut child = spawn_self(
            "child_facade_writer",
            &[
                (ENV_DB, path.display().to_string()),
                (ENV_STORE, store_url.clone()),
                (ENV_MODE, mode_name(mode).to_string()),
                (ENV_SEED, child_seed.to_string()),
            ],
        );
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = read_child_stdout(&mut child, ready_tx);
        let stderr = collect_stderr(&mut child);
        let spawned = Instant::now();
        let ready_ok = early || ready_rx.recv_timeout(CHILD_START_TIMEOUT).is_ok();
        let startup = spawned.elapsed();
        if ready_ok {
            thread::sleep(delay);
        }
        let _ = child.kill();
        let status: ExitStatus = child.wait().expect("waiting for the child");
        let out = stdout.join().expect("stdout reader");
        let err = stderr.join().expect("stderr reader");
        let child_log = || {
            format!(
                "child status {status:?}\n--- child stdout (other lines) ---\n{}\n\
                 --- child stderr (tail) ---\n{}",
                tail(&out.other.join("\n"), 20),
                tail(&err, 40)
            )
        };
        let fail = |msg: String| -> ! { panic!("{ctx}: {msg}\n{}", child_log()) };
        if !ready_ok {
            fail("the child did not open the database in time".into());
        }
        if status.signal() != Some(libc::SIGKILL) {
            fail("the child ended by itself, not by SIGKILL".into());
        }
        t.kills += 1;
        t.early_kills += u32::from(early);
        if let Some((start, _)) = out.ready
            && start != seen
        {
            fail(format!(
                "the child opened the database with max id {start}, the parent had seen {seen}"
            ));
        }
        // Acknowledgements: consecutive ids from seen + 1, rising LSNs above every earlier one.
        let mut prev = (seen, history.0.last().map_or(0, |&(_, l)| l));
        for &(id, lsn) in &out.acks {
            if id != prev.0 + 1 || lsn <= prev.1 {
                fail(format!(
                    "acknowledgement ACK {id} {lsn} out of order after id {} at LSN {} ({} acks)",
                    prev.0,
                    prev.1,
                    out.acks.len()
                ));
            }
            prev = (id, lsn);
        }
        for &(id, lsn) in &out.repls {
            if !out.acks.contains(&(id, lsn)) {
                fail(format!(
                    "REPL {id} {lsn} was not acknowledged as durable first"
                ));
            }
            max_repl = max_repl.max(id);
        }
        history.0.extend_from_slice(&out.acks);
        t.acks[usize::from(mode == Durability::Gated)] += out.acks.len();
        t.repls += out.repls.len();
        t.snaps += out.snaps.len();

        // 1. The store as the child left it.
        let r = restore(&store, &restored, RestoreTarget::Latest).unwrap_or_else(|e| fail(e));
        let store_rows = check_restored(&restored)
            .unwrap_or_else(|e| fail(format!("the latest restore after the kill: {e}")));
        t.restores_latest += 1;
        if store_rows < max_repl || store_rows < seen {
            fail(format!(
                "the latest restore (LSN {}) ends at id {store_rows}, but id {max_repl} was \
                 reported replicated and the previous cycle saw {seen} rows replicated",
                r.lsn
            ));
        }
        history
            .check("the latest restore after the kill", store_rows, r.lsn)
            .unwrap_or_else(|e| fail(e));

        // 2. Reopen (recovery) and check.
        let db = Database::open(&path, parent_config())
            .unwrap_or_else(|e| fail(format!("reopening after the kill failed: {e}")));
        let report = db.inner().open_report().clone();
        let mut conn = db
            .connect()
            .unwrap_or_else(|e| fail(format!("connecting after the kill failed: {e}")));
        let rows =
            check_content(&conn).unwrap_or_else(|e| fail(format!("the reopened database: {e}")));
        if let Some(&(lost, lsn)) = out.acks.iter().find(|&&(id, _)| id > rows) {
            fail(format!(
                "acknowledged id {lost} (LSN {lsn}) is lost: the tables end at id {rows} \
                 ({} acks, last {:?})",
                out.acks.len(),
                out.acks.last()
            ));
        }
        if rows < seen {
            fail(format!(
                "rows the previous check saw are gone: {rows} rows now, {seen} before"
            ));
        }
        if store_rows > rows {
            fail(format!(
                "the store was ahead of the recovered database: restored id {store_rows} at \
                 LSN {}, recovered {rows} rows up to LSN {}",
                r.lsn, report.last_lsn
            ));
        }
        history
            .check("the reopened database", rows, report.last_lsn)
            .unwrap_or_else(|e| fail(e));

        // 3. Ship everything, restore the latest state: byte-identical to the local database.
        let mark = db.bookmark();
        db.wait_replicated(&mark, Some(REPLICATION_TIMEOUT))
            .unwrap_or_else(|e| fail(format!("waiting for replication of {mark}: {e}")));
        let image = conn
            .serialize(rusqlite::MAIN_DB)
            .unwrap_or_else(|e| fail(format!("serialize: {e}")))
            .to_vec();
        let r2 = restore(&store, &restored, RestoreTarget::Latest).unwrap_or_else(|e| fail(e));
        if r2.lsn < mark.lsn {
            fail(format!(
                "after replication of {mark} the latest restore is at LSN {}",
                r2.lsn
            ));
        }
        let bytes = std::fs::read(&restored).expect("reading the restored file");
        if bytes != image {
            let first_diff = bytes.iter().zip(&image).position(|(x, y)| x != y);
            fail(format!(
                "the latest restore (LSN {}, {} bytes) differs from the reopened database \
                 ({} bytes, {rows} rows, at {mark}); first difference at byte {first_diff:?}",
                r2.lsn,
                bytes.len(),
                image.len()
            ));
        }
        remove_db_files(&restored);
        t.restores_identical += 1;

        // 4. Sometimes an earlier point: exactly the ids up to an acknowledged transaction.
        let mut earlier = String::new();
        if restore_earlier && !history.0.is_empty() {
            let (id, lsn) = history.0[(earlier_pick % history.0.len() as u64) as usize];
            let r3 =
                restore(&store, &restored, RestoreTarget::Lsn(lsn)).unwrap_or_else(|e| fail(e));
            let n = check_restored(&restored)
                .unwrap_or_else(|e| fail(format!("the restore at LSN {lsn} (id {id}): {e}")));
            if n != id || r3.lsn != lsn {
                fail(format!(
                    "the restore at LSN {lsn} gave ids 1..={n} at LSN {}, expected 1..={id}",
                    r3.lsn
                ));
            }
            t.restores_earlier += 1;
            earlier = format!(", earlier restore id {id} ok");
        }
        if cycle % 10 == 9 || cycle + 1 == cycles {
            let v = pagelog::verify(&*store).unwrap_or_else(|e| fail(format!("verify: {e}")));
            // A kill during a snapshot's upload leaves its parts without a manifest: never
            // used by restore, removed by retention (snapshot/FORMAT.md), and reported apart
            // from problems. Anything else is a fault.
            if !v.problems.is_empty() || !v.gaps.is_empty() {
                fail(format!(
                    "verify found problems {:?} and gaps {:?}",
                    v.problems, v.gaps
                ));
            }
            t.verifies += 1;
            t.interrupted_snapshots = v.incomplete_snapshots.len();
        }
        drop(conn);
        db.close()
            .unwrap_or_else(|e| fail(format!("closing the reopened database: {e}")));

        eprintln!(
            "cycle {cycle:>3} {:<5} kill {:>3} ms after {:<5}: {:>4} acks, {:>2} repl, {} snap, \
             rows {:>6} -> {:>6} (store had {:>6}), replayed {}, WAL discarded {}, child \
             ready in {} ms{earlier}",
            mode_name(mode),
            delay.as_millis(),
            if early { "spawn" } else { "READY" },
            out.acks.len(),
            out.repls.len(),
            out.snaps.len(),
            seen,
            rows,
            store_rows,
            report.replayed,
            report.discarded_wal,
            if early { 0 } else { startup.as_millis() }
        );
        t.replayed += report.replayed;
        seen = rows;
    }
    eprintln!(
        "facade_sigkill_loop_with_shipping_and_restore: seed {seed}, {cycles} cycles, {} kills \
         ({} early) in {:.1} s; {seen} rows; acks checked: {} sync, {} gated; {} replicated \
         reports, {} child snapshots; restores checked: {} latest after a kill, {} \
         byte-identical after shipping, {} at an earlier LSN; {} verifies ({} interrupted \
         snapshot uploads in the store); {} transactions replayed by recovery",
        t.kills,
        t.early_kills,
        started.elapsed().as_secs_f64(),
        t.acks[0],
        t.acks[1],
        t.repls,
        t.snaps,
        t.restores_latest,
        t.restores_identical,
        t.restores_earlier,
        t.verifies,
        t.interrupted_snapshots,
        t.replayed
    );
    if cycles >= 10 {
        assert!(
            t.acks[0] > 0 && t.acks[1] > 0,
            "seed {seed}: some mode never acknowledged a commit (sync {}, gated {})",
            t.acks[0],
            t.acks[1]
        );
    }
}
