//! Real-process tests on the real file system: a writer child is killed with SIGKILL at a
//! random moment and the parent checks what survived; a second process is refused while one
//! owns the database, and so is stock SQLite (a connection outside the pagelog VFS), in another
//! process or in this one.
//!
//! The children are this test binary re-executed to run one `#[ignore]`d test
//! (`child_writer`, `child_opener`, `child_stock_sqlite`), which does nothing unless its
//! environment variable is set.
//!
//! `sigkill_loop_sync_and_gated`: `PAGELOG_SIGKILL_CYCLES` sets the number of cycles (default
//! 40, alternating Sync and Gated); `PAGELOG_SIGKILL_SEED` replays a seed (every failure prints
//! it). Timing is not deterministic, so a seed fixes the choices (modes, kill delays, the
//! children's workloads) but not the exact kill point.
//!
//! Oracle, after each kill: every id the child acknowledged (printed `ACK <id>` once its commit
//! was durable) is in both tables; `a` holds exactly ids 1..=n and `b` the same ids (no half
//! transaction); every `b.h` is the hash of its `a.v` (updates of older rows are atomic too);
//! nothing the previous check saw is lost; `PRAGMA integrity_check` is ok.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pagelog_log::LogOptions;
use pagelog_vfs::{Durability, PagelogVfs, VfsError, VfsOptions};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

#[path = "support/child.rs"]
mod child;
use child::{SCHEMA, check_content, collect_stderr, fnv, real_tempdir, spawn_self, tail};

const ENV_WRITER_DB: &str = "PAGELOG_PROCESS_WRITER_DB";
const ENV_WRITER_MODE: &str = "PAGELOG_PROCESS_WRITER_MODE";
const ENV_WRITER_SEED: &str = "PAGELOG_PROCESS_WRITER_SEED";
const ENV_OPENER_DB: &str = "PAGELOG_PROCESS_OPENER_DB";
const ENV_STOCK_DB: &str = "PAGELOG_PROCESS_STOCK_DB";

/// How long a child may take to open the database before the test gives up on it.
const CHILD_START_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers shared by parent and children.

/// A VFS name unique in this process (tests of this binary run in parallel threads).
fn vfs_name(role: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "pagelog-process-{role}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn options(durability: Durability) -> VfsOptions {
    let mut opts = VfsOptions::new(durability);
    // Small segments, so that kills also land around segment rolls and spare preallocation.
    opts.log = LogOptions {
        segment_size: 1 << 20,
        ..LogOptions::default()
    };
    opts
}

fn mode_name(d: Durability) -> &'static str {
    match d {
        Durability::Sync => "sync",
        Durability::Gated => "gated",
    }
}

/// A value for `a.v`: mostly small, sometimes a few pages (overflow chains).
fn random_value(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.random_range(0..100) {
        0..90 => rng.random_range(0..=600),
        90..98 => rng.random_range(600..=4000),
        _ => rng.random_range(4000..=20_000),
    };
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// The number after `tag` in `line` (libtest may print `test name ... ` before it).
fn parse_tag(line: &str, tag: &str) -> Option<i64> {
    let at = line.find(tag)?;
    line[at + tag.len()..].trim().parse().ok()
}

// ---------------------------------------------------------------------------------------------
// 1. SIGKILL loop.

/// Child: write transactions forever (until killed), acknowledging ids once durable.
#[test]
#[ignore = "child process of sigkill_loop_sync_and_gated; does nothing on its own"]
fn child_writer() {
    let Ok(path) = std::env::var(ENV_WRITER_DB) else {
        return;
    };
    let path = PathBuf::from(path);
    let mode = match std::env::var(ENV_WRITER_MODE).as_deref() {
        Ok("sync") => Durability::Sync,
        Ok("gated") => Durability::Gated,
        other => panic!("bad {ENV_WRITER_MODE}: {other:?}"),
    };
    let seed: u64 = std::env::var(ENV_WRITER_SEED)
        .expect("seed")
        .parse()
        .expect("numeric seed");
    let mut rng = StdRng::seed_from_u64(seed);

    let vfs = PagelogVfs::register(&vfs_name("writer"), options(mode)).expect("register");
    let db = vfs.open_database(&path).expect("open_database");
    let mut conn = vfs.connect(&path).expect("connect");
    let start: i64 = conn
        .query_row("SELECT coalesce(max(id), 0) FROM a", [], |r| r.get(0))
        .expect("max id");
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nREADY {start}").expect("stdout");
    out.flush().expect("stdout");

    let mut next = start + 1;
    let mut acked = start;
    let mut batch: i64 = rng.random_range(1..=16);
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
        let lsn = pagelog_vfs::last_commit_lsn().expect("last_commit_lsn after a commit");

        match mode {
            Durability::Sync => {
                assert!(
                    db.durable_lsn() >= lsn,
                    "Sync commit returned before its record was durable: lsn {lsn}, durable {}",
                    db.durable_lsn()
                );
                // One write(2) per line: a kill cannot leave half of it in the pipe.
                out.write_all(format!("ACK {id}\n").as_bytes())
                    .expect("stdout");
                out.flush().expect("stdout");
            }
            Durability::Gated => {
                if id - acked >= batch {
                    db.wait_durable(lsn).expect("wait_durable");
                    assert!(
                        db.durable_lsn() >= lsn,
                        "wait_durable({lsn}) returned early"
                    );
                    let mut lines = String::new();
                    for a in acked + 1..=id {
                        lines.push_str(&format!("ACK {a}\n"));
                    }
                    out.write_all(lines.as_bytes()).expect("stdout");
                    out.flush().expect("stdout");
                    acked = id;
                    batch = rng.random_range(1..=16);
                }
            }
        }

        if rng.random_range(0..150) == 0 {
            let how = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"][rng.random_range(0..4)];
            conn.query_row(&format!("PRAGMA wal_checkpoint({how})"), [], |_| Ok(()))
                .expect("checkpoint");
        }
    }
}

/// What the parent's reader thread saw on a writer child's stdout.
struct ChildOutput {
    acks: Vec<i64>,
    ready: Option<i64>,
    other: Vec<String>,
}

/// Read a writer child's stdout: report READY at once, return the rest at EOF. Only complete
/// lines count (a kill may cut the last one).
fn read_writer_stdout(child: &mut Child, ready_tx: mpsc::Sender<i64>) -> JoinHandle<ChildOutput> {
    let stdout = child.stdout.take().expect("piped stdout");
    thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut out = ChildOutput {
            acks: Vec::new(),
            ready: None,
            other: Vec::new(),
        };
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
            if let Some(id) = parse_tag(&line, "ACK ") {
                out.acks.push(id);
            } else if let Some(start) = parse_tag(&line, "READY ") {
                out.ready = Some(start);
                let _ = ready_tx.send(start);
            } else if !line.trim().is_empty() {
                out.other.push(line.trim_end().to_string());
            }
        }
        out
    })
}

/// What the parent found in the database after a kill.
struct Found {
    rows: i64,
    replayed: u64,
    discarded_wal: bool,
}

/// Reopen the database (recovery) and check it; drops every handle before returning.
fn check_after_kill(
    vfs: &PagelogVfs,
    path: &Path,
    acks: &[i64],
    seen_before: i64,
) -> Result<Found, String> {
    let db = vfs
        .open_database(path)
        .map_err(|e| format!("reopening after the kill failed: {e}"))?;
    let report = db.open_report().clone();
    let conn = vfs
        .connect(path)
        .map_err(|e| format!("connecting after the kill failed: {e}"))?;
    let rows = check_content(&conn)?;
    if let Some(&lost) = acks.iter().find(|&&id| id > rows) {
        return Err(format!(
            "acknowledged id {lost} is lost: the tables end at id {rows} ({} acks, last {:?})",
            acks.len(),
            acks.last()
        ));
    }
    if rows < seen_before {
        return Err(format!(
            "rows the previous check saw are gone: {rows} rows now, {seen_before} before"
        ));
    }
    drop(conn);
    drop(db);
    Ok(Found {
        rows,
        replayed: report.replayed,
        discarded_wal: report.discarded_wal,
    })
}

#[test]
fn sigkill_loop_sync_and_gated() {
    let cycles: u32 = std::env::var("PAGELOG_SIGKILL_CYCLES")
        .ok()
        .map(|s| s.parse().expect("PAGELOG_SIGKILL_CYCLES must be a number"))
        .unwrap_or(40);
    let seed: u64 = std::env::var("PAGELOG_SIGKILL_SEED")
        .ok()
        .map(|s| s.parse().expect("PAGELOG_SIGKILL_SEED must be a number"))
        .unwrap_or_else(rand::random);
    eprintln!("sigkill_loop_sync_and_gated: seed {seed}, {cycles} cycles");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = real_tempdir("pagelog-sigkill-");
    let path = dir.path().join("kill.db");
    let vfs = PagelogVfs::register(&vfs_name("parent"), options(Durability::Sync)).unwrap();
    vfs.connect(&path)
        .expect("creating the database")
        .execute_batch(SCHEMA)
        .expect("creating the tables");

    let started = Instant::now();
    let mut seen: i64 = 0;
    let mut acks_by_mode = [0usize; 2];
    for cycle in 0..cycles {
        let mode = if cycle % 2 == 0 {
            Durability::Sync
        } else {
            Durability::Gated
        };
        let child_seed: u64 = rng.random();
        // Mostly kill while writing; sometimes early, while the child may still be recovering.
        let early = rng.random_bool(0.15);
        let delay = Duration::from_millis(if early {
            rng.random_range(0..=100)
        } else {
            rng.random_range(20..=400)
        });
        let ctx = format!(
            "seed {seed} (PAGELOG_SIGKILL_SEED={seed}), cycle {cycle}, mode {}, child seed \
             {child_seed}, kill {} ms after {}, db {}",
            mode_name(mode),
            delay.as_millis(),
            if early { "spawn" } else { "READY" },
            path.display()
        );

        let mut child = spawn_self(
            "child_writer",
            &[
                (ENV_WRITER_DB, path.display().to_string()),
                (ENV_WRITER_MODE, mode_name(mode).to_string()),
                (ENV_WRITER_SEED, child_seed.to_string()),
            ],
        );
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = read_writer_stdout(&mut child, ready_tx);
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
        if !ready_ok {
            panic!(
                "{ctx}: the child did not open the database in time\n{}",
                child_log()
            );
        }
        if status.signal() != Some(libc::SIGKILL) {
            panic!(
                "{ctx}: the child ended by itself, not by SIGKILL\n{}",
                child_log()
            );
        }
        if let Some(start) = out.ready
            && start != seen
        {
            panic!(
                "{ctx}: the child opened the database with max id {start}, the parent had \
                 seen {seen}\n{}",
                child_log()
            );
        }
        if out.acks.windows(2).any(|w| w[1] != w[0] + 1)
            || out.acks.first().is_some_and(|&first| first != seen + 1)
        {
            let bad = out
                .acks
                .windows(2)
                .find(|w| w[1] != w[0] + 1)
                .map_or(String::new(), |w| format!(", {} then {}", w[0], w[1]));
            panic!(
                "{ctx}: the child acknowledged ids out of order ({} acks, first {:?}, \
                 expected {}{bad})",
                out.acks.len(),
                out.acks.first(),
                seen + 1
            );
        }
        acks_by_mode[usize::from(mode == Durability::Gated)] += out.acks.len();

        let found = check_after_kill(&vfs, &path, &out.acks, seen)
            .unwrap_or_else(|e| panic!("{ctx}: {e}\n{}", child_log()));
        eprintln!(
            "cycle {cycle:>3} {:<5} kill {:>3} ms after {:<5}: {:>5} acks, rows {:>6} -> \
             {:>6} (+{} unacknowledged), replayed {}, WAL discarded {}, child ready in {} ms",
            mode_name(mode),
            delay.as_millis(),
            if early { "spawn" } else { "READY" },
            out.acks.len(),
            seen,
            found.rows,
            found.rows - out.acks.last().copied().unwrap_or(seen),
            found.replayed,
            found.discarded_wal,
            if early { 0 } else { startup.as_millis() }
        );
        seen = found.rows;
    }
    eprintln!(
        "sigkill_loop_sync_and_gated: seed {seed}, {cycles} cycles in {:.1} s, {seen} rows, \
         acks: {} sync, {} gated",
        started.elapsed().as_secs_f64(),
        acks_by_mode[0],
        acks_by_mode[1]
    );
    if cycles >= 10 {
        assert!(
            acks_by_mode[0] > 0 && acks_by_mode[1] > 0,
            "seed {seed}: some mode never acknowledged a commit (sync {}, gated {})",
            acks_by_mode[0],
            acks_by_mode[1]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. One owner per database.

/// Child: try to open the database and say what happened.
#[test]
#[ignore = "child process of second_process_is_refused_with_the_owner_named; does nothing on its own"]
fn child_opener() {
    let Ok(path) = std::env::var(ENV_OPENER_DB) else {
        return;
    };
    let path = PathBuf::from(path);
    let vfs = PagelogVfs::register(&vfs_name("opener"), options(Durability::Sync)).unwrap();
    let line = match vfs.open_database(&path) {
        Ok(db) => {
            let conn = vfs.connect(&path).expect("connect after open_database");
            let n: i64 = conn
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("count");
            format!("OPENED rows={n} last_lsn={}", db.last_lsn())
        }
        Err(e @ VfsError::Owned { .. }) => format!("OWNED:{e}"),
        Err(e) => format!("ERROR:{e:?}"),
    };
    println!("\n{line}");
}

/// Run `child_opener` on `path` to the end; its result line.
fn run_opener(path: &Path) -> String {
    run_child(
        "child_opener",
        ENV_OPENER_DB,
        path,
        &["OWNED:", "OPENED ", "ERROR:"],
    )
}

/// Run the child test `name` on `path` (given in `env`) to the end; its line starting with one
/// of `tags`.
fn run_child(name: &str, env: &str, path: &Path, tags: &[&str]) -> String {
    let mut child = spawn_self(name, &[(env, path.display().to_string())]);
    let mut stdout = child.stdout.take().expect("piped stdout");
    let out_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_thread = collect_stderr(&mut child);
    let deadline = Instant::now() + CHILD_START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the {name} child did not finish in {CHILD_START_TIMEOUT:?} (blocked?)");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let out = out_thread.join().expect("stdout reader");
    let err = err_thread.join().expect("stderr reader");
    assert!(
        status.success(),
        "the {name} child failed: {status:?}\n--- stdout ---\n{out}\n--- stderr ---\n{}",
        tail(&err, 40)
    );
    out.lines()
        .find_map(|l| {
            tags.iter()
                .find_map(|tag| l.find(tag).map(|at| l[at..].to_string()))
        })
        .unwrap_or_else(|| panic!("the {name} child printed no result\n--- stdout ---\n{out}"))
}

#[test]
fn second_process_is_refused_with_the_owner_named() {
    let dir = real_tempdir("pagelog-owner-");
    let path = dir.path().join("owned.db");
    let vfs = PagelogVfs::register(&vfs_name("owner"), options(Durability::Sync)).unwrap();
    let pid = std::process::id();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();

    let conn = vfs.connect(&path).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();

    // While this process holds a connection, another process is refused, naming this one.
    let line = run_opener(&path);
    let msg = line
        .strip_prefix("OWNED:")
        .unwrap_or_else(|| panic!("expected VfsError::Owned while pid {pid} owns it, got {line}"));
    assert!(
        msg.contains(&format!("pid {pid} on host")),
        "the refusal does not name the owner (pid {pid}): {msg}"
    );
    if !host.is_empty() {
        assert!(
            msg.contains(&format!("on host {host}")),
            "the refusal does not name the owner's host {host:?}: {msg}"
        );
    }

    // The refusal did not disturb the owner.
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);

    // Once this process closes it, another process opens it and sees the data.
    drop(conn);
    let line = run_opener(&path);
    assert!(
        line.starts_with("OPENED rows=2 "),
        "expected the child to open the database after the owner closed it, got {line}"
    );

    // And this process can own it again afterwards.
    let conn = vfs.connect(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

// ---------------------------------------------------------------------------------------------
// 3. Stock SQLite is kept off an open database.
//
// The pagelog VFS keeps the WAL-index in its process's memory, so a connection through SQLite's
// own unix VFS cannot see it: before the main file was locked, such a connection (the `sqlite3`
// shell, say) built a WAL-index of its own, checkpointed and deleted the WAL when it closed,
// after which every new pagelog connection failed with "disk I/O error", and its own writes
// never reached the log. Now the open database holds a lock that SQLite's locks conflict with.

/// What a stock SQLite statement did: `busy`, `ok <value>`, or `error <message>`.
fn stock_outcome(r: rusqlite::Result<i64>) -> String {
    match r {
        Ok(v) => format!("ok {v}"),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            "busy".to_string()
        }
        Err(e) => format!("error {e}"),
    }
}

/// Try to read, and if that is refused also to write, `t` through stock SQLite (the default
/// VFS) on `path`; `read=… write=…`.
fn stock_read_then_write(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).expect("stock sqlite opens the file");
    // rusqlite waits 5 s on a busy database by default; a refusal is what is being tested.
    conn.busy_timeout(Duration::ZERO).unwrap();
    let read = stock_outcome(conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)));
    // Only try to write where the read was refused: a write that succeeded would bypass the
    // log (that is the point of refusing it).
    let write = if read == "busy" {
        stock_outcome(
            conn.execute("INSERT INTO t VALUES (99)", [])
                .map(|n| n as i64),
        )
    } else {
        "skipped".to_string()
    };
    format!("read={read} write={write}")
}

/// Child: open the database with stock SQLite and say what it could do.
#[test]
#[ignore = "child process of stock_sqlite_in_another_process_is_locked_out; does nothing on its own"]
fn child_stock_sqlite() {
    let Ok(path) = std::env::var(ENV_STOCK_DB) else {
        return;
    };
    println!("\nSTOCK {}", stock_read_then_write(Path::new(&path)));
}

fn run_stock(path: &Path) -> String {
    run_child("child_stock_sqlite", ENV_STOCK_DB, path, &["STOCK "])
}

fn count(conn: &rusqlite::Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn stock_sqlite_in_another_process_is_locked_out() {
    let dir = real_tempdir("pagelog-stock-");
    let path = dir.path().join("app.db");
    let wal = dir.path().join("app.db-wal");
    let vfs = PagelogVfs::register(&vfs_name("stock"), options(Durability::Sync)).unwrap();
    let conn = vfs.connect(&path).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();

    let line = run_stock(&path);
    assert_eq!(
        line, "STOCK read=busy write=busy",
        "stock SQLite in another process must be refused while the database is open"
    );
    // Nothing was disturbed: the WAL is still there, and the open connection and a new one
    // (the one that failed with "disk I/O error" before) both work.
    assert!(wal.exists(), "the WAL was removed under the open database");
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let fresh = vfs.connect(&path).unwrap();
    assert_eq!(count(&fresh), 2);
    drop(fresh);
    drop(conn);

    // Closed, the database is a plain SQLite file again: the lock went with it.
    let line = run_stock(&path);
    assert_eq!(line, "STOCK read=ok 2 write=skipped");
    let conn = vfs.connect(&path).unwrap();
    assert_eq!(count(&conn), 2);
}

#[test]
fn stock_sqlite_in_this_process_is_locked_out_and_locks_pagelog_out() {
    let dir = real_tempdir("pagelog-stock-self-");
    let path = dir.path().join("app.db");
    let vfs = PagelogVfs::register(&vfs_name("stock-self"), options(Durability::Sync)).unwrap();
    let conn = vfs.connect(&path).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();

    // A connection through the default VFS in this very process is refused as well, and so is
    // an ATTACH of the database through it.
    assert_eq!(stock_read_then_write(&path), "read=busy write=busy");
    let other = rusqlite::Connection::open_in_memory().unwrap();
    other.busy_timeout(Duration::ZERO).unwrap();
    let attached = other
        .execute(
            "ATTACH ?1 AS live",
            [format!("file:{}?vfs=unix", path.display())],
        )
        .and_then(|_| other.query_row("SELECT count(*) FROM live.t", [], |r| r.get(0)));
    assert_eq!(stock_outcome(attached), "busy");
    drop(other);
    let fresh = vfs.connect(&path).unwrap();
    assert_eq!(count(&fresh), 1);
    drop(fresh);
    drop(conn);

    // The other way round: while a stock connection holds SQLite's lock (a WAL-mode connection
    // holds a shared lock on the main file as long as it is open), pagelog refuses to open the
    // database, naming this process, instead of writing it under the stock connection.
    let stock = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(count(&stock), 1);
    let err = vfs.open_database(&path).unwrap_err();
    assert!(
        matches!(&err, VfsError::Owned { .. }),
        "expected VfsError::Owned, got {err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("pid {} (this process)", std::process::id())),
        "the refusal does not name this process: {msg}"
    );
    drop(stock);
    let conn = vfs.connect(&path).unwrap();
    assert_eq!(count(&conn), 1);
}
