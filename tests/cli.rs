//! The `pagelog` binary against a real history: a database written through the VFS, shipped
//! to a local directory store with a snapshot in the middle, and images of the database taken
//! after every commit (the oracle). Each test runs the built binary and checks its exit code,
//! its output and the bytes of what it restored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pagelog_log::fs::StdFs;
use pagelog_log::{Log, LogOptions};
use pagelog_snapshot::{Shipper, ShipperOptions, open_store};
use pagelog_vfs::record::{KIND_CHECKPOINT, KIND_TXN};
use pagelog_vfs::{Durability, PagelogVfs, VfsOptions};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pagelog");

/// The history every test reads (built once per test process).
struct History {
    db: PathBuf,
    store: PathBuf,
    /// Database image right after each transaction, by its LSN.
    images: BTreeMap<u64, Vec<u8>>,
    /// (time just after a commit returned, its LSN).
    times: Vec<(u64, u64)>,
    /// LSN of the one snapshot.
    snapshot_lsn: u64,
    /// Everything up to this LSN is in the store.
    replicated: u64,
}

impl History {
    /// The image of the state right after `lsn` (the last transaction at or before it).
    fn image_at(&self, lsn: u64) -> &[u8] {
        self.images.range(..=lsn).next_back().unwrap().1
    }
}

fn vfs() -> PagelogVfs {
    static VFS: OnceLock<PagelogVfs> = OnceLock::new();
    VFS.get_or_init(|| {
        let mut opts = VfsOptions::new(Durability::Sync);
        // Small segments: the log spans several.
        opts.log = LogOptions {
            segment_size: 64 << 10,
            ..LogOptions::default()
        };
        PagelogVfs::register("cli-test", opts).unwrap()
    })
    .clone()
}

fn image(path: &Path) -> Vec<u8> {
    let mut conn = vfs().connect(path).unwrap();
    conn.serialize(rusqlite::MAIN_DB).unwrap().to_vec()
}

fn history() -> &'static History {
    static H: OnceLock<History> = OnceLock::new();
    H.get_or_init(build_history)
}

fn build_history() -> History {
    // A directory per test process (a static is never dropped, so it outlives the tests);
    // those of earlier runs are removed once an hour old.
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for e in std::fs::read_dir(&tmp).unwrap().flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > Duration::from_secs(3600)));
        if stale && e.file_name().to_string_lossy().starts_with("cli-history-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let root = tmp.join(format!("cli-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let db = root.join("app.db");
    let store_dir = root.join("store");
    let vfs = vfs();
    let conn = vfs.connect(&db).unwrap();
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB)")
        .unwrap();
    let store = open_store(store_dir.to_str().unwrap(), &Default::default()).unwrap();
    let shipper = Shipper::start(
        vfs.open_database(&db).unwrap(),
        store,
        ShipperOptions {
            batch_bytes: 32 << 10,
            batch_delay: Duration::from_millis(20),
            auto_snapshot: false,
            retention: None,
            max_retry_delay: Duration::from_millis(200),
            ..ShipperOptions::default()
        },
    )
    .unwrap();
    let mut images = BTreeMap::new();
    let mut times = Vec::new();
    let mut snapshot_lsn = 0;
    for i in 0..60i64 {
        match i % 5 {
            0..=2 => {
                let tx = conn.unchecked_transaction().unwrap();
                for j in 0..(1 + i % 4) {
                    // Every seventh row is big (overflow pages).
                    let len = if (i + j) % 7 == 0 { 9000 } else { 50 + 10 * i };
                    tx.execute(
                        "INSERT INTO t(k, v) VALUES (?1, randomblob(?2))",
                        (i * 10 + j, len),
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
            }
            3 => {
                conn.execute("UPDATE t SET v = randomblob(120) WHERE k % 3 = ?1", [i % 3])
                    .unwrap();
            }
            _ => {
                conn.execute("DELETE FROM t WHERE k % 11 = ?1", [i % 11])
                    .unwrap();
            }
        }
        let lsn = pagelog_vfs::connection_last_lsn(&conn).unwrap();
        images.insert(lsn, image(&db));
        times.push((pagelog_snapshot::time::now_us(), lsn));
        if i == 30 {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
            snapshot_lsn = shipper.snapshot_now().unwrap().lsn;
            assert!(snapshot_lsn >= lsn);
        }
        if i == 45 {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
        }
    }
    let last = *images.keys().last().unwrap();
    shipper.ship_now();
    shipper
        .wait_replicated(last, Some(Duration::from_secs(30)))
        .unwrap();
    let replicated = shipper.replicated_lsn();
    shipper.close(Duration::from_secs(30)).unwrap();
    drop(conn);
    History {
        db,
        store: store_dir,
        images,
        times,
        snapshot_lsn,
        replicated,
    }
}

/// Run the binary (with a deadline: a hang fails the test instead of blocking it).
fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

/// [`run`] with environment variables set.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("pagelog {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited with a code")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Run and expect success; returns stdout.
fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(code(&o), 0, "pagelog {args:?}: {}", stderr(&o));
    stdout(&o)
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn files_with_suffix(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_with_suffix(&p, suffix, out);
        } else if p.to_str().unwrap().ends_with(suffix) {
            out.push(p);
        }
    }
    out.sort();
}

#[test]
fn restore_latest_with_integrity_check_and_json() {
    let h = history();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("latest.db");
    let text = ok(&["restore", s(&h.store), "-o", s(&out), "--integrity-check"]);
    assert_eq!(std::fs::read(&out).unwrap(), h.image_at(h.replicated));
    for field in [
        "restored",
        "LSN",
        "time",
        "timeline",
        "snapshot      LSN",
        "batches",
        "transactions",
        "downloaded",
        "size",
        "checksum",
        "integrity     ok",
        "elapsed",
    ] {
        assert!(text.contains(field), "{field} missing from:\n{text}");
    }
    assert!(
        text.contains(&format!("LSN           {}", h.replicated)),
        "{text}"
    );

    let out2 = dir.path().join("latest2.db");
    let r = json(&["restore", s(&h.store), "-o", s(&out2), "--json"]);
    assert_eq!(r["lsn"], h.replicated);
    assert_eq!(r["timeline"], 1);
    assert_eq!(r["snapshot_lsn"], h.snapshot_lsn);
    assert_eq!(
        r["bookmark"],
        format!("{:08x}-{:016x}", 1, h.replicated).as_str()
    );
    assert!(r["transactions"].as_u64().unwrap() > 0);
    assert!(r["bytes_downloaded"].as_u64().unwrap() > 0);
    assert_eq!(r["page_size"], 4096);
    assert_eq!(
        r["size_bytes"].as_u64().unwrap(),
        h.image_at(h.replicated).len() as u64
    );
    assert_eq!(r["checksum"].as_str().unwrap().len(), 16);
    assert_eq!(r["integrity_check"], Value::Null);
    assert_eq!(std::fs::read(&out2).unwrap(), h.image_at(h.replicated));
}

#[test]
fn restore_at_lsns_bookmarks_and_times_matches_the_images() {
    let h = history();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("at.db");
    let lsns: Vec<u64> = h.images.keys().copied().collect();
    // Before the snapshot (log only), at it, just after it, and the last.
    let before = *lsns.iter().rfind(|l| **l < h.snapshot_lsn).unwrap();
    let after = *lsns.iter().find(|l| **l > h.snapshot_lsn).unwrap();
    for lsn in [
        lsns[0],
        lsns[5],
        before,
        h.snapshot_lsn,
        after,
        lsns[lsns.len() - 1],
    ] {
        let r = json(&[
            "restore",
            s(&h.store),
            "-o",
            s(&out),
            "--lsn",
            &lsn.to_string(),
            "--force",
            "--json",
        ]);
        assert_eq!(r["lsn"], lsn);
        assert_eq!(
            r["snapshot_lsn"],
            if lsn >= h.snapshot_lsn {
                Value::from(h.snapshot_lsn)
            } else {
                Value::Null
            }
        );
        assert!(
            std::fs::read(&out).unwrap() == h.image_at(lsn),
            "restore at LSN {lsn} differs"
        );
    }
    // Bookmarks name a timeline and an LSN.
    for lsn in [lsns[3], after] {
        let bookmark = format!("{:08x}-{:016x}", 1, lsn);
        let r = json(&[
            "restore",
            s(&h.store),
            "-o",
            s(&out),
            "--bookmark",
            &bookmark,
            "--force",
            "--json",
        ]);
        assert_eq!(r["lsn"], lsn);
        assert_eq!(r["bookmark"], bookmark.as_str());
        assert!(std::fs::read(&out).unwrap() == h.image_at(lsn));
    }
    // A time just after a commit returned restores that commit.
    for &(at, lsn) in [h.times[2], h.times[31], h.times[50]].iter() {
        let t = pagelog_snapshot::time::format_us(at);
        let r = json(&[
            "restore",
            s(&h.store),
            "-o",
            s(&out),
            "--time",
            &t,
            "--force",
            "--json",
        ]);
        let got = r["lsn"].as_u64().unwrap();
        let next_txn = h.images.range(lsn + 1..).next().map(|(l, _)| *l);
        assert!(
            got >= lsn && next_txn.is_none_or(|n| got < n),
            "time {t} restored LSN {got}, expected the state of {lsn}"
        );
        assert!(std::fs::read(&out).unwrap() == h.images[&lsn]);
    }
}

#[test]
fn restore_refuses_to_overwrite_without_force() {
    let h = history();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.db");
    std::fs::write(&out, b"precious").unwrap();
    let o = run(&["restore", s(&h.store), "-o", s(&out)]);
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    ok(&["restore", s(&h.store), "-o", s(&out), "--force"]);
    assert_eq!(std::fs::read(&out).unwrap(), h.image_at(h.replicated));
    // A directory is never replaced, --force or not.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("keep"), b"x").unwrap();
    let o = run(&["restore", s(&h.store), "-o", s(&sub), "--force"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
    assert!(sub.join("keep").exists());
}

/// The names and contents of the files under `dir` (the log's segments, LOCK, ...).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = Vec::new();
    files_with_suffix(dir, "", &mut files);
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn restore_force_refuses_a_database_that_is_open() {
    let h = history();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let conn = vfs().connect(&db).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let before = tree(dir.path());
    assert!(before.keys().any(|p| p.ends_with("LOCK")), "{before:?}");
    let o = run(&["restore", s(&h.store), "-o", s(&db), "--force"]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("is open elsewhere"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "the owner is named: {err}"
    );
    // Nothing touched: the same files with the same bytes, no temporary file left.
    assert_eq!(tree(dir.path()), before);
    // The owner keeps committing, and reopens its database afterwards.
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    drop(conn);
    let conn = vfs().connect(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    drop(conn);
    // Closed, it is replaced (its log directory with it).
    ok(&["restore", s(&h.store), "-o", s(&db), "--force"]);
    assert_eq!(std::fs::read(&db).unwrap(), h.image_at(h.replicated));
    assert!(!dir.path().join("live.db-pagelog").exists());
}

#[test]
fn rust_log_shows_the_library_events_on_stderr() {
    let h = history();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.db");
    // Default: warnings only, so a restore prints nothing on stderr.
    let o = run(&["restore", s(&h.store), "-o", s(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    // RUST_LOG=info: the library's "restored" event, on stderr, not stdout.
    let o = run_env(
        &["restore", s(&h.store), "-o", s(&out), "--force"],
        &[("RUST_LOG", "pagelog_snapshot=info")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("restored"), "{}", stderr(&o));
    assert!(stderr(&o).contains("INFO"), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("restored "), "{}", stdout(&o));
}

#[test]
fn restore_out_of_range_names_the_range() {
    let h = history();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.db");
    let too_far = (h.replicated + 1000).to_string();
    let o = run(&["restore", s(&h.store), "-o", s(&out), "--lsn", &too_far]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("LSN {too_far}")), "{err}");
    assert!(err.contains(&format!("LSN 1..={}", h.replicated)), "{err}");
    assert!(!out.exists());
    // A time before the history began.
    let o = run(&[
        "restore",
        s(&h.store),
        "-o",
        s(&out),
        "--time",
        "2001-01-01T00:00:00Z",
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    // Another timeline does not exist.
    let o = run(&["restore", s(&h.store), "-o", s(&out), "--timeline", "9"]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn restore_on_a_new_timeline_is_listed_as_a_branch() {
    let h = history();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    copy_dir(&h.store, &store);
    let out = dir.path().join("branch.db");
    let at = h.snapshot_lsn + 3;
    let r = json(&[
        "restore",
        s(&store),
        "-o",
        s(&out),
        "--lsn",
        &at.to_string(),
        "--new-timeline",
        "--json",
    ]);
    assert_eq!(r["new_timeline"], 2);
    assert_eq!(r["lsn"], at);
    assert!(std::fs::read(&out).unwrap() == h.image_at(at));
    assert!(PathBuf::from(format!("{}-pagelog", out.display())).is_dir());
    // Its local log continues the new timeline from the branch point.
    let v = json(&["log", "dump", s(&out), "--json"]);
    assert_eq!(v["log"]["timeline"], 2);
    assert_eq!(v["log"]["first_lsn"], at + 1);

    // The restore uploaded the restored state as the branch's base snapshot.
    assert_eq!(r["new_timeline_base_lsn"], at);
    let v = json(&["ls", s(&store), "--json"]);
    assert_eq!(v["timeline_count"], 2);
    assert_eq!(
        v["latest_timeline"], 1,
        "a branch that holds only its branch point is not the latest history"
    );
    let t2 = &v["timelines"][1];
    assert_eq!(t2["timeline"], 2);
    assert_eq!(t2["parent_timeline"], 1);
    assert_eq!(t2["parent_lsn"], at);
    assert_eq!(t2["first_lsn"], at + 1);
    assert_eq!(t2["snapshots"][0]["lsn"], at);
    assert_eq!(t2["restorable"]["first_lsn"], at);
    assert_eq!(t2["restorable"]["last_lsn"], at);
    assert_eq!(t2["batches"]["count"], 0);
    assert_eq!(t2["gaps"].as_array().unwrap().len(), 0);
    let text = ok(&["ls", s(&store)]);
    assert!(
        text.contains(&format!("timeline 2: branched from timeline 1 at LSN {at}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("restorable  LSN {at}..={at} ")),
        "{text}"
    );
    // The branch's state restores byte for byte from the new timeline, and verify is clean.
    let again = dir.path().join("again.db");
    let r = json(&[
        "restore",
        s(&store),
        "-o",
        s(&again),
        "--timeline",
        "2",
        "--json",
    ]);
    assert_eq!(
        (r["timeline"].as_u64(), r["lsn"].as_u64()),
        (Some(2), Some(at))
    );
    assert!(std::fs::read(&again).unwrap() == h.image_at(at));
    let o = run(&["verify", s(&store)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

/// `restore --new-timeline` killed (SIGKILL) at moments spread over its whole run, to a new
/// output and with `--force` over an existing branch: the database never appears without its
/// log (a database without one is refused on open), a replaced database is never missing, what
/// opens holds the old or the new content and nothing else, and running the restore again
/// with `--force` finishes the job.
#[test]
fn a_new_timeline_restore_killed_at_any_moment_leaves_no_database_without_its_log() {
    let h = history();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    copy_dir(&h.store, &store);
    let (lsn_a, lsn_b) = (h.snapshot_lsn + 3, h.snapshot_lsn + 1);
    let (want_a, want_b) = (h.image_at(lsn_a).to_vec(), h.image_at(lsn_b).to_vec());
    assert!(want_a != want_b);
    let args = |out: &Path, lsn: u64, force: bool| {
        let mut a = vec!["restore".to_string(), s(&store).into(), "-o".into()];
        a.extend([s(out).to_string(), "--lsn".into(), lsn.to_string()]);
        a.push("--new-timeline".into());
        if force {
            a.push("--force".into());
        }
        a
    };
    let run_args = |a: Vec<String>| run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let killed_at = |a: Vec<String>, delay: Duration| {
        let mut child = Command::new(BIN)
            .args(a)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();
    };
    let try_image = |path: &Path| -> Result<Vec<u8>, String> {
        let mut conn = vfs().connect(path).map_err(|e| e.to_string())?;
        let image = conn
            .serialize(rusqlite::MAIN_DB)
            .map_err(|e| e.to_string())?;
        Ok(image.to_vec())
    };
    // How long an uninterrupted one takes.
    let probe = dir.path().join("probe.db");
    let started = Instant::now();
    assert_eq!(code(&run_args(args(&probe, lsn_a, false))), 0);
    let full = started.elapsed();
    const KILLS: u32 = 24;
    let (mut placed, mut replaced, mut refused) = (0, 0, Vec::new());
    for i in 0..KILLS {
        // From at once to past the end of a run (the last one long past it).
        let delay = match i {
            i if i + 1 == KILLS => full * 4,
            i => full * i * 5 / (4 * KILLS),
        };
        let out = dir.path().join(format!("killed-{i}.db"));
        let log_dir = PathBuf::from(format!("{}{}", out.display(), pagelog_vfs::LOG_DIR_SUFFIX));
        killed_at(args(&out, lsn_a, false), delay);
        if out.exists() {
            placed += 1;
            assert!(
                log_dir.is_dir(),
                "killed after {delay:?}: {} is there without its log",
                out.display()
            );
            assert!(try_image(&out).unwrap() == want_a, "killed after {delay:?}");
        }
        // Again, with force: it completes whatever the kill left.
        let o = run_args(args(&out, lsn_a, true));
        assert_eq!(code(&o), 0, "after a kill at {delay:?}: {}", stderr(&o));
        assert!(
            try_image(&out).unwrap() == want_a,
            "after a kill at {delay:?}"
        );

        // Over that branch, with force, at another LSN.
        killed_at(args(&out, lsn_b, true), delay);
        assert!(
            out.exists(),
            "killed after {delay:?}: the replaced database is gone"
        );
        match try_image(&out) {
            Ok(img) if img == want_a => {}
            Ok(img) if img == want_b => replaced += 1,
            Ok(_) => panic!("killed after {delay:?}: neither the old nor the new content"),
            // Only between the log's swap and the file's rename: refused on the checksum,
            // never wrong; never a database left without its log.
            Err(e) => {
                assert!(!e.contains("no pagelog log"), "killed after {delay:?}: {e}");
                refused.push((delay, e));
            }
        }
        let o = run_args(args(&out, lsn_b, true));
        assert_eq!(code(&o), 0, "after a kill at {delay:?}: {}", stderr(&o));
        assert!(
            try_image(&out).unwrap() == want_b,
            "after a kill at {delay:?}"
        );
    }
    println!(
        "{KILLS} kills over {full:?}: {placed} new outputs in place, {replaced} replaced, \
         {} refused: {refused:?}",
        refused.len()
    );
    assert!(placed > 0 && placed < KILLS, "{placed} of {KILLS} placed");
    assert!(replaced > 0, "no forced restore finished");
}

#[test]
fn ls_reports_timelines_snapshots_batches_and_range() {
    let h = history();
    let v = json(&["ls", s(&h.store), "--json"]);
    assert_eq!(v["timeline_count"], 1);
    assert_eq!(v["latest_timeline"], 1);
    assert_eq!(v["foreign_objects"], 0);
    let t = &v["timelines"][0];
    assert_eq!(t["timeline"], 1);
    assert_eq!(t["claimed"], true);
    assert_eq!(t["parent_timeline"], Value::Null);
    assert_eq!(t["snapshot_count"], 1);
    assert_eq!(t["snapshots"][0]["lsn"], h.snapshot_lsn);
    assert_eq!(t["snapshots"][0]["complete"], true);
    assert_eq!(t["snapshots"][0]["page_size"], 4096);
    assert_eq!(t["restorable"]["first_lsn"], 1);
    assert_eq!(t["restorable"]["last_lsn"], h.replicated);
    assert_eq!(t["batches"]["first_lsn"], 1);
    assert_eq!(t["batches"]["last_lsn"], h.replicated);
    let mut plb = Vec::new();
    files_with_suffix(&h.store, ".plb", &mut plb);
    assert!(plb.len() > 1, "several batches expected");
    assert_eq!(t["batches"]["count"], plb.len());
    let on_disk: u64 = plb.iter().map(|p| p.metadata().unwrap().len()).sum();
    assert_eq!(t["batches"]["bytes"], on_disk);
    assert!(v["bytes"].as_u64().unwrap() > on_disk);
    assert_eq!(t["errors"].as_array().unwrap().len(), 0);

    let text = ok(&["ls", &format!("file://{}", h.store.display())]);
    assert!(text.contains("1 timeline,"), "{text}");
    assert!(text.contains("timeline 1: new database"), "{text}");
    assert!(
        text.contains(&format!("restorable  LSN 1..={}", h.replicated)),
        "{text}"
    );
    assert!(
        text.contains(&format!("log         {} batches", plb.len())),
        "{text}"
    );
    assert!(text.contains("snapshots   1 complete"), "{text}");
    assert!(
        text.contains(&format!("    LSN {:<10}", h.snapshot_lsn)),
        "{text}"
    );
}

#[test]
fn a_relative_store_is_named_by_a_url_that_works() {
    let h = history();
    let (parent, name) = (h.store.parent().unwrap(), h.store.file_name().unwrap());
    let o = Command::new(BIN)
        .args(["verify", name.to_str().unwrap(), "--json"])
        .current_dir(parent)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let named = v["store"].as_str().unwrap().to_string();
    assert_eq!(named, format!("file://{}", h.store.display()));
    // The name it printed is a URL the command takes back.
    let again = json(&["verify", &named, "--json"]);
    assert_eq!(again["ok"], true);
}

#[test]
fn verify_and_ls_report_a_recorded_gap() {
    use pagelog_snapshot::format::{BATCH_HEADER_LEN, BatchHeader, encode_gap_batch};
    let h = history();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    copy_dir(&h.store, &store);
    // Replace a batch before the snapshot by a gap batch over the same LSNs, as the shipper
    // writes one when the backlog bound dropped records before they shipped.
    let mut plb = Vec::new();
    files_with_suffix(&store, ".plb", &mut plb);
    let (path, hd) = plb
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let hd = BatchHeader::decode("k", &bytes[..BATCH_HEADER_LEN]).unwrap();
            (p.clone(), hd)
        })
        .find(|(_, hd)| hd.first_lsn > 1 && hd.last_lsn <= h.snapshot_lsn)
        .expect("a batch after the first and before the snapshot");
    let (a, b) = (hd.first_lsn, hd.last_lsn);
    std::fs::write(
        &path,
        encode_gap_batch(hd.database_id, 1, a, b, hd.first_ts_us),
    )
    .unwrap();

    // verify: not corruption, but not silent either: exit 4, the gap named.
    let o = run(&["verify", s(&store)]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("records {a}..={b} were never shipped")),
        "{text}"
    );
    assert!(text.contains("no problem, 1 recorded gap"), "{text}");
    assert!(stderr(&o).contains("1 recorded gap"), "{}", stderr(&o));
    let o = run(&["verify", s(&store), "--json"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["gaps"],
        serde_json::json!([{"timeline": 1, "first_lsn": a, "last_lsn": b}])
    );

    // ls: the restorable range is split by the gap, resuming at the snapshot after it.
    let v = json(&["ls", s(&store), "--json"]);
    let t = &v["timelines"][0];
    assert_eq!(
        t["restorable"]["ranges"],
        serde_json::json!([
            {"first_lsn": 1, "last_lsn": a - 1},
            {"first_lsn": h.snapshot_lsn, "last_lsn": h.replicated},
        ])
    );
    assert_eq!(
        t["gaps"],
        serde_json::json!([{"first_lsn": a, "last_lsn": b}])
    );
    let text = ok(&["ls", s(&store)]);
    assert!(
        text.contains(&format!(
            "restorable  LSN 1..={}, {}..={}",
            a - 1,
            h.snapshot_lsn,
            h.replicated
        )),
        "{text}"
    );
    // The gap's line names the LSNs it makes unrestorable: up to the snapshot after it.
    assert!(
        text.contains(&format!(
            "gap         LSN {a}..={b}: records never shipped, LSN {a}..={} not restorable",
            h.snapshot_lsn - 1
        )),
        "{text}"
    );
    // And restore refuses a target inside the gap with the same code.
    let out = dir.path().join("x.db");
    let o = run(&["restore", s(&store), "-o", s(&out), "--lsn", &a.to_string()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
}

#[test]
fn verify_passes_then_names_a_corrupt_batch() {
    let h = history();
    let text = ok(&["verify", s(&h.store)]);
    assert!(text.contains("no problem"), "{text}");
    let v = json(&["verify", s(&h.store), "--json"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["snapshots"], 1);
    assert!(v["records"].as_u64().unwrap() >= h.replicated);

    // A copy of the store with a flipped byte in the body of its last batch, and an object
    // that is not pagelog's.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("store");
    copy_dir(&h.store, &copy);
    std::fs::write(copy.join("README.txt"), b"not pagelog's").unwrap();
    let mut plb = Vec::new();
    files_with_suffix(&copy, ".plb", &mut plb);
    let victim = plb.last().unwrap().clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let key = victim
        .strip_prefix(&copy)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    let o = run(&["verify", s(&copy)]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{key}: ")),
        "{key} not named in:\n{out}"
    );
    assert!(out.contains("1 problem"), "{out}");
    assert!(stderr(&o).contains(&key), "{}", stderr(&o));
    let o = run(&["verify", s(&copy), "--json"]);
    assert_eq!(code(&o), 3);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["key"], key.as_str());

    // ls counts the foreign object; restoring through the bad batch fails naming it.
    let v = json(&["ls", s(&copy), "--json"]);
    assert_eq!(v["foreign_objects"], 1);
    let out = dir.path().join("r.db");
    let o = run(&["restore", s(&copy), "-o", s(&out)]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains(&key), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn log_dump_lists_the_records_of_the_log() {
    let h = history();
    // The log as the library sees it (the database is closed; nobody holds the lock).
    let log_dir = PathBuf::from(format!("{}-pagelog", h.db.display()));
    let (first, last, kinds) = {
        let log = Log::open(StdFs::shared(), &log_dir, LogOptions::default()).unwrap();
        let kinds: BTreeMap<u64, u16> = log
            .reader(log.first_lsn())
            .unwrap()
            .map(|r| r.map(|r| (r.lsn, r.kind)))
            .collect::<Result<_, _>>()
            .unwrap();
        let r = (log.first_lsn(), log.last_lsn(), kinds);
        log.close().unwrap();
        r
    };
    assert!(last >= h.replicated);

    let v = json(&["log", "dump", s(&h.db), "--json"]);
    assert_eq!(v["log"]["first_lsn"], first);
    assert_eq!(v["log"]["last_lsn"], last);
    assert!(v["log"]["segments"].as_u64().unwrap() >= 1);
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len() as u64, last - first + 1);
    assert_eq!(v["summary"]["records"], records.len());
    assert_eq!(v["summary"]["listed"], records.len());
    assert_eq!(v["summary"]["bad_records"], 0);
    let mut checkpoints = 0;
    for (r, (lsn, kind)) in records.iter().zip(&kinds) {
        assert_eq!(r["lsn"], *lsn);
        match *kind {
            KIND_TXN => {
                assert_eq!(r["kind"], "txn");
                assert_eq!(r["txn"]["page_size"], 4096);
                assert!(r["txn"]["db_pages"].as_u64().unwrap() >= 1);
            }
            KIND_CHECKPOINT => {
                assert_eq!(r["kind"], "checkpoint");
                assert!(r["checkpoint"]["lsn"].as_u64().unwrap() < *lsn);
                checkpoints += 1;
            }
            k => panic!("unexpected kind {k}"),
        }
        assert!(r["payload_bytes"].as_u64().unwrap() > 0);
    }
    assert!(checkpoints >= 2, "the history checkpointed twice");
    // Every commit the test saw (that the log still holds) is a transaction record, and the
    // last one carries the checksum a restore at that LSN verifies.
    for lsn in h.images.keys().filter(|l| **l >= first) {
        assert_eq!(kinds[lsn], KIND_TXN, "LSN {lsn}");
    }
    let last_txn = *h.images.keys().last().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = json(&[
        "restore",
        s(&h.store),
        "-o",
        s(&dir.path().join("c.db")),
        "--lsn",
        &last_txn.to_string(),
        "--json",
    ]);
    let rec = records.iter().find(|r| r["lsn"] == last_txn).unwrap();
    assert_eq!(rec["txn"]["checksum"], r["checksum"]);

    // A window, in text; the summary still covers the rest of the log.
    let from = first + 2;
    let text = ok(&[
        "log",
        "dump",
        s(&h.db),
        "--from",
        &from.to_string(),
        "--limit",
        "5",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("log "), "{text}");
    assert!(
        lines[0].contains(&format!("LSN {first}..={last}")),
        "{text}"
    );
    let rows: Vec<u64> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(rows, (from..from + 5).collect::<Vec<_>>());
    let summary = lines[lines.len() - 1];
    assert!(
        summary.starts_with(&format!(
            "summary: LSN {from}..={last}: {} records",
            last - from + 1
        )),
        "{summary}"
    );
    assert!(summary.ends_with("5 listed"), "{summary}");

    // Headers only: no payload details.
    let v = json(&[
        "log",
        "dump",
        s(&h.db),
        "--headers",
        "--json",
        "--limit",
        "3",
    ]);
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.get("txn").is_none()));
    assert_eq!(v["summary"]["records"], last - first + 1);

    // Outside the log.
    let o = run(&["log", "dump", s(&h.db), "--from", &(last + 5).to_string()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
}

#[test]
fn log_dump_refuses_a_database_that_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let conn = vfs().connect(&db).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    // This process holds the log's lock: the binary must not wait for it.
    let started = Instant::now();
    let o = run(&["log", "dump", s(&db)]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = stderr(&o);
    assert!(err.contains("owned by another process"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "the owner is named: {err}"
    );
    assert!(stdout(&o).is_empty());
    // Still usable by its owner.
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    drop(conn);
    // Closed: the dump works.
    let v = json(&["log", "dump", s(&db), "--json"]);
    assert!(v["summary"]["transactions"].as_u64().unwrap() >= 2);
}

/// Found by a probe (2026-11-29): on a log whose only segment was torn (an empty file, as a
/// crash right after creating it leaves), recovery removed it, and the dump, a read-only
/// command, then started a new log with a random database id and reported that one. The dump
/// now opens the log read-only: the torn segment stays for the database's next open.
#[test]
fn log_dump_creates_no_log_where_recovery_left_no_segment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("torn.db");
    let log_dir = dir
        .path()
        .join(format!("torn.db{}", pagelog_vfs::LOG_DIR_SUFFIX));
    std::fs::create_dir(&log_dir).unwrap();
    std::fs::write(log_dir.join("00000000000000000001.seg"), b"").unwrap();
    let o = run(&["log", "dump", s(&db)]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("holds no segment"), "{}", stderr(&o));
    let mut files: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, vec!["00000000000000000001.seg"]);
    assert_eq!(
        std::fs::read(log_dir.join("00000000000000000001.seg")).unwrap(),
        b""
    );
}

/// `log dump` reads and never writes: a torn tail a crash left is listed up to where the next
/// open would cut it, reported, and left in place, byte for byte (and the lock file is not
/// rewritten). The database's next open then cuts it.
#[test]
fn log_dump_reports_a_torn_tail_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let log_dir = dir
        .path()
        .join(format!("app.db{}", pagelog_vfs::LOG_DIR_SUFFIX));
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    {
        let log = pagelog_log::Log::open(
            pagelog_log::fs::StdFs::shared(),
            &log_dir,
            pagelog_log::LogOptions {
                preallocate: false,
                background_flush: false,
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..10u8 {
            log.append_sync(7, &[i; 1000]).unwrap();
        }
        // Three records in one batch; the first is then damaged: a torn tail.
        for i in 0..3u8 {
            log.append(7, &[i; 1000]).unwrap();
        }
        log.close().unwrap();
    }
    let segment = log_dir.join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = 64 + 10 * (40 + 1000) + 40 + 500;
    bytes[at] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let before = snapshot(&log_dir);

    let v = json(&["log", "dump", s(&db), "--json"]);
    assert_eq!(v["summary"]["records"], 10, "{v}");
    assert_eq!(v["log"]["last_lsn"], 10, "{v}");
    assert_eq!(v["log"]["recovery"]["torn_tail_bytes"], 3 * 1040, "{v}");
    let o = run(&["log", "dump", s(&db)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("torn tail"), "{}", stdout(&o));
    assert_eq!(
        snapshot(&log_dir),
        before,
        "the dump changed the log directory"
    );

    let log = pagelog_log::Log::open(
        pagelog_log::fs::StdFs::shared(),
        &log_dir,
        pagelog_log::LogOptions::default(),
    )
    .unwrap();
    assert_eq!(log.recovery_report().erased_bytes, 3 * 1040);
    assert_eq!(log.last_lsn(), 10);
}

#[test]
fn bad_inputs_get_the_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    // A store that does not exist is reported, not created.
    let o = run(&["ls", s(&missing)]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!missing.exists());
    // An empty store.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for cmd in ["ls", "verify"] {
        let o = run(&[cmd, s(&empty)]);
        assert_eq!(code(&o), 5, "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains("no pagelog history"), "{}", stderr(&o));
    }
    let o = run(&["restore", s(&empty), "-o", s(&dir.path().join("x.db"))]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    // Usage errors.
    for args in [
        &["restore", "x", "-o", "y", "--bookmark", "nope"][..],
        &["restore", "x", "-o", "y", "--time", "yesterday"],
        &[
            "restore",
            "x",
            "-o",
            "y",
            "--lsn",
            "1",
            "--time",
            "2026-01-01T00:00:00Z",
        ],
        &["restore", "x"],
        &["frobnicate"],
    ] {
        assert_eq!(code(&run(args)), 2, "{args:?}");
    }
    let o = run(&["ls", "gs://bucket/x"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // Credentials in a URL are refused and never echoed.
    let o = run(&["ls", "s3://AKIDEXAMPLE:s3cr3t@bucket/x"]);
    assert_eq!(code(&o), 2);
    assert!(!stderr(&o).contains("s3cr3t") && !stderr(&o).contains("AKIDEXAMPLE"));
    // No log next to the database.
    let o = run(&["log", "dump", s(&dir.path().join("nothing.db"))]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("no pagelog log"), "{}", stderr(&o));
    assert!(!dir.path().join("nothing.db-pagelog").exists());
}

/// A server that accepts connections and never answers: every command gives up after about
/// (timeout + backoff) × attempts with exit 1, naming the endpoint, instead of waiting for the
/// library's patient defaults (60 s × 5 attempts).
#[test]
fn a_silent_s3_server_fails_a_command_in_bounded_time() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDSILENT"),
        ("AWS_SECRET_ACCESS_KEY", "silent-secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.db");
    for args in [
        &["ls", "s3://bucket/p"][..],
        &["verify", "s3://bucket/p"],
        &["restore", "s3://bucket/p", "-o", s(&out)],
    ] {
        let mut args = args.to_vec();
        args.extend(["--endpoint", &endpoint, "--timeout", "1", "--attempts", "2"]);
        let started = Instant::now();
        let o = run_env(&args, &env);
        let took = started.elapsed();
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(&endpoint), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("silent-secret"));
        assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
        assert!(!out.exists());
    }
}

#[test]
fn help_documents_examples_and_exit_codes() {
    let top = ok(&["--help"]);
    assert!(top.contains("Exit codes:"), "{top}");
    for n in 0..=7 {
        assert!(
            top.contains(&format!("\n  {n}  ")),
            "exit code {n} in:\n{top}"
        );
    }
    for cmd in [&["restore"][..], &["ls"], &["verify"], &["log", "dump"]] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let text = ok(&args);
        assert!(text.contains("Examples:"), "{cmd:?}:\n{text}");
        assert!(text.contains("Exit codes:"), "{cmd:?}:\n{text}");
    }
    let restore = ok(&["restore", "--help"]);
    for flag in [
        "--lsn",
        "--time",
        "--bookmark",
        "--timeline",
        "--force",
        "--integrity-check",
        "--new-timeline",
        "--json",
        "--endpoint",
        "--region",
        "--path-style",
        "--timeout",
        "--attempts",
        "--quiet",
    ] {
        assert!(restore.contains(flag), "{flag}");
    }
}

/// Found by a docs check (2026-11-29): a snapshot whose manifest is there but damaged was
/// listed by `ls` as "unfinished (…, no manifest)", and counted as unfinished.
#[test]
fn ls_names_a_damaged_manifest_as_unreadable_not_missing() {
    let h = history();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("store");
    copy_dir(&h.store, &copy);
    let mut manifests = Vec::new();
    files_with_suffix(&copy, ".plm", &mut manifests);
    let victim = manifests.last().unwrap().clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let o = run(&["ls", s(&copy)]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("1 with an unreadable manifest"), "{out}");
    assert!(out.contains("manifest unreadable (see below)"), "{out}");
    assert!(
        !out.contains("no manifest") && !out.contains("unfinished"),
        "{out}"
    );
    assert!(out.contains("unreadable: corrupt object"), "{out}");
}
