//! `pagelog restore` killed with SIGKILL at random moments: into a new file, and with
//! `--force` over an earlier restore. After each kill the output is absent, the old file
//! untouched, or the complete new one — never a partial database — and the next run succeeds
//! (or, where the killed run had finished, refuses to overwrite without `--force`) and leaves
//! no temporary file behind.
//!
//! `PAGELOG_RESTORE_KILL_CYCLES` sets the number of kills per mode (default 20);
//! `PAGELOG_SEED` replays a run's delays (printed at the start and on failure).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pagelog::{Config, Database, RestoreOptions, RestoreTarget};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_pagelog");

fn tmp_of(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pagelog-restore.tmp", out.display()))
}

/// A history worth interrupting: about 24 MiB of database, a snapshot in the middle, log
/// batches before and after it. Returns the LSN of an earlier state.
fn build(db: &Path, store: &Path) -> u64 {
    let d = Database::open(
        db,
        Config::new()
            .store_url(store.to_str().unwrap())
            .batch_delay(Duration::from_millis(20)),
    )
    .unwrap();
    let conn = d.connect().unwrap();
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    let mut early = 0;
    for round in 0..6 {
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..1000 {
            tx.execute("INSERT INTO t(v) VALUES (randomblob(4000))", [])
                .unwrap();
        }
        tx.commit().unwrap();
        if round == 1 {
            early = d.commit_bookmark(&conn).unwrap().lsn;
        }
        if round == 3 {
            d.snapshot_now().unwrap();
        }
    }
    let m = d.commit_bookmark(&conn).unwrap();
    d.wait_replicated(&m, Some(Duration::from_secs(60)))
        .unwrap();
    drop(conn);
    d.close().unwrap();
    early
}

fn restore_cmd(store: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "restore",
        store.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ])
    .args(extra)
    .env_remove("RUST_LOG")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

#[test]
fn restore_killed_at_random_moments_leaves_old_or_new_never_partial() {
    let seed: u64 = std::env::var("PAGELOG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let cycles: usize = std::env::var("PAGELOG_RESTORE_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("PAGELOG_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let early = build(&dir.path().join("src.db"), &store);

    // The expected bytes: the latest state, and the earlier one a `--force` run replaces.
    let restore_lib = |out: &Path, target| {
        pagelog::restore(
            &*pagelog::open_store(store.to_str().unwrap(), &Default::default()).unwrap(),
            out,
            &RestoreOptions {
                target,
                ..RestoreOptions::default()
            },
        )
        .unwrap();
        std::fs::read(out).unwrap()
    };
    let latest = restore_lib(&dir.path().join("latest.db"), RestoreTarget::Latest);
    let old = restore_lib(&dir.path().join("old.db"), RestoreTarget::Lsn(early));
    assert_ne!(latest, old);
    // How long a whole run of the binary takes: kills are spread over 1.2 × that.
    let started = Instant::now();
    let probe = dir.path().join("probe.db");
    assert!(restore_cmd(&store, &probe, &[]).status().unwrap().success());
    let whole = started.elapsed();
    assert_eq!(std::fs::read(&probe).unwrap(), latest);
    println!("a whole restore run takes {whole:?}");

    let (mut interrupted, mut finished) = (0, 0);
    for force in [false, true] {
        for cycle in 0..cycles {
            let ctx = format!("seed {seed}, force {force}, cycle {cycle}");
            let out = dir.path().join(format!("out-{force}-{cycle}.db"));
            if force {
                std::fs::write(&out, &old).unwrap();
            }
            let extra: &[&str] = if force { &["--force"] } else { &[] };
            let mut child = restore_cmd(&store, &out, extra).spawn().unwrap();
            let delay = whole.mul_f64(rng.random_range(0.0..1.2));
            std::thread::sleep(delay);
            child.kill().unwrap();
            let status = child.wait().unwrap();
            let done = status.success();
            if tmp_of(&out).exists() {
                interrupted += 1;
            }
            if done {
                finished += 1;
            }
            // Old, new, or (a fresh output) nothing; never anything else.
            match std::fs::read(&out) {
                Ok(b) if b == latest => {}
                Ok(b) if force && b == old => assert!(!done, "{ctx}: succeeded, old bytes"),
                Ok(b) => panic!("{ctx}: a partial output of {} bytes", b.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    assert!(!force && !done, "{ctx}: output missing")
                }
                Err(e) => panic!("{ctx}: {e}"),
            }
            // The next run completes the job (or refuses an existing output without --force).
            let exists = out.exists();
            let o = restore_cmd(&store, &out, extra).output().unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            if exists && !force {
                assert_eq!(o.status.code(), Some(6), "{ctx}: {stderr}");
            } else {
                assert!(o.status.success(), "{ctx}: {stderr}");
            }
            assert_eq!(std::fs::read(&out).unwrap(), latest, "{ctx}");
            assert!(!tmp_of(&out).exists(), "{ctx}: temporary file left behind");
            std::fs::remove_file(&out).unwrap();
        }
    }
    println!(
        "{} kills: {interrupted} left a temporary file (killed mid-restore), {finished} came after the run had finished",
        2 * cycles
    );
    // The kills must mostly land inside the restore, or the test shows nothing.
    assert!(
        interrupted * 2 >= cycles,
        "only {interrupted} of {} kills landed mid-restore (seed {seed})",
        2 * cycles
    );
}
