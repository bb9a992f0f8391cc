//! Shipping, snapshots, restore, fencing, timelines and retention against the local directory
//! store, checked against database images taken as the history was written (the oracle).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pagelog_snapshot::{
    Catalog, RestoreOptions, RestoreTarget, Shipper, ShipperOptions, SnapshotError, StoreError,
    StoreRef, restore,
};
use pagelog_vfs::Durability;
use rand::Rng;

const WAIT: Option<Duration> = Some(Duration::from_secs(30));

fn restore_to(
    store: &StoreRef,
    out: &std::path::Path,
    target: RestoreTarget,
) -> pagelog_snapshot::RestoreReport {
    // Every other restore downloads the next batch while applying one.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefetch = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 1;
    restore(
        &**store,
        out,
        &RestoreOptions {
            target,
            force: true,
            integrity_check: true,
            prefetch_batches: prefetch,
            ..RestoreOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("restore {target}: {e}"))
}

#[test]
fn restores_match_the_history_at_many_points() {
    let mut rng = rng("restores_match_the_history_at_many_points");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    let conn2 = vfs.connect(&path).unwrap();
    schema(&conn);
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let shipper = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        ShipperOptions {
            batch_bytes: 64 << 10,
            ..quick_opts()
        },
    )
    .unwrap();
    let mut images = BTreeMap::new();
    let mut times = Vec::new();
    for i in 0..160 {
        let c = if i % 2 == 0 { &conn } else { &conn2 };
        let lsn = step(c, &mut rng);
        images.insert(lsn, image(&vfs, &path));
        times.push((pagelog_snapshot::time::now_us(), lsn));
        if i == 50 || i == 110 {
            let s = shipper.snapshot_now().unwrap();
            assert!(
                s.lsn >= lsn,
                "snapshot at {} taken after commit {lsn}",
                s.lsn
            );
        }
        if i % 40 == 39 {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
        }
    }
    let last = *images.keys().last().unwrap();
    shipper.ship_now();
    shipper.wait_replicated(last, WAIT).unwrap();
    let status = shipper.status();
    assert_eq!(status.replicated_lsn, shipper.replicated_lsn());
    assert!(status.replicated_lsn >= last && status.snapshots_taken == 2);
    assert_eq!(check_contiguous(&*store_ref, 1), status.replicated_lsn);

    let out = dir.path().join("restored.db");
    // Latest.
    let r = restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert!(r.lsn >= status.replicated_lsn);
    assert!(file_bytes(&out) == images[&last]);
    // Many LSNs, before, at and after the snapshots.
    let lsns: Vec<u64> = images.keys().copied().collect();
    for _ in 0..25 {
        let lsn = lsns[rng.random_range(0..lsns.len())];
        let r = restore_to(&store_ref, &out, RestoreTarget::Lsn(lsn));
        assert_eq!(r.lsn, lsn);
        assert!(
            file_bytes(&out) == images[&lsn],
            "restore at LSN {lsn} differs"
        );
    }
    // Points in time: just after a commit returned, the restore holds that commit.
    for _ in 0..8 {
        let (at, lsn) = times[rng.random_range(0..times.len())];
        let r = restore_to(&store_ref, &out, RestoreTarget::TimeUs(at));
        let got = *images.range(..=r.lsn).next_back().unwrap().0;
        assert_eq!(got, lsn, "restore at time {at} gave LSN {}", r.lsn);
        assert!(file_bytes(&out) == images[&lsn]);
    }
    // Out of range: named with the range.
    let e = restore(
        &*store_ref,
        &out,
        &RestoreOptions {
            target: RestoreTarget::Lsn(last + 1000),
            force: true,
            ..RestoreOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, SnapshotError::OutOfRange { .. }), "{e}");
    assert!(e.to_string().contains("LSN 1..="), "{e}");
    // The whole store verifies, snapshots included.
    let v = pagelog_snapshot::verify(&*store_ref).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    assert_eq!(v.snapshots, 2);
    assert!(v.records >= last);
    assert!(v.incomplete_snapshots.is_empty());
    // An interrupted snapshot upload (a part, no manifest) is reported apart from problems,
    // and a restore never uses it.
    let stray = format!(
        "t{:010}/snap/{:020}/part-000000.pls",
        shipper.timeline(),
        last
    );
    store_ref.put_if_absent(&stray, b"half an upload").unwrap();
    let v = pagelog_snapshot::verify(&*store_ref).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    assert_eq!(v.incomplete_snapshots, vec![(shipper.timeline(), last)]);
    let r = restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert!(r.lsn >= last);
    assert!(file_bytes(&out) == images[&last]);
    // An existing file is not overwritten without force.
    let e = restore(&*store_ref, &out, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(e, SnapshotError::Exists { .. }), "{e}");
    shipper.close(Duration::from_secs(10)).unwrap();
}

#[test]
fn restart_resumes_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Gated);
    for round in 0..3 {
        let conn = vfs.connect(&path).unwrap();
        schema(&conn);
        let db = vfs.open_database(&path).unwrap();
        let shipper = Shipper::start(db.clone(), store_ref.clone(), quick_opts()).unwrap();
        let mut last = 0;
        for i in 0..20 {
            last = insert(&conn, 3, round * 100 + i);
        }
        db.wait_durable(last).unwrap();
        // Close waits for what is durable.
        shipper.close(Duration::from_secs(10)).unwrap();
        assert!(check_contiguous(&*store_ref, 1) >= last);
        let img = image(&vfs, &path);
        drop(conn);
        drop(db);
        let out = dir.path().join(format!("r{round}.db"));
        let r = restore_to(&store_ref, &out, RestoreTarget::Latest);
        assert!(r.lsn >= last);
        assert!(file_bytes(&out) == img, "round {round}");
    }
}

#[test]
fn store_outage_does_not_block_commits_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let shipper = Shipper::start(db.clone(), store_ref.clone(), quick_opts()).unwrap();
    let first = insert(&conn, 5, 0);
    shipper.wait_replicated(first, WAIT).unwrap();

    store.set_down(true);
    let mut last = first;
    for i in 0..40 {
        last = insert(&conn, 5, i);
        assert_eq!(db.durable_lsn(), db.last_lsn(), "commits stay durable");
    }
    std::thread::sleep(Duration::from_millis(300));
    let s = shipper.status();
    assert!(!s.store_available, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("unavailable"),
        "{s:?}"
    );
    assert!(s.lag_records > 0 && s.replicated_lsn < last, "{s:?}");
    assert!(s.lag_seconds > 0.0, "{s:?}");
    let e = shipper
        .wait_replicated(last, Some(Duration::from_millis(100)))
        .unwrap_err();
    assert!(matches!(e, SnapshotError::Timeout { .. }), "{e}");

    store.set_down(false);
    shipper.wait_replicated(last, WAIT).unwrap();
    let s = shipper.status();
    assert!(s.store_available && s.last_error.is_none(), "{s:?}");
    assert_eq!(check_contiguous(&*store_ref, 1), s.replicated_lsn);
    let out = dir.path().join("r.db");
    restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert!(file_bytes(&out) == image(&vfs, &path));
    shipper.close(Duration::from_secs(10)).unwrap();
}

#[test]
fn second_writer_and_stale_copies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.db"),
        dir.path().join("b.db"),
        dir.path().join("c.db"),
    );
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    {
        let conn = vfs.connect(&a).unwrap();
        schema(&conn);
        insert(&conn, 5, 1);
        let sh = Shipper::start(
            vfs.open_database(&a).unwrap(),
            store_ref.clone(),
            quick_opts(),
        )
        .unwrap();
        sh.close(Duration::from_secs(10)).unwrap();
    }
    clone_db(&a, &b);
    clone_db(&a, &c);

    // A and B both attach at the same point, then write different histories: the first to
    // ship a key wins; the other is fenced when its conditional create finds the key taken.
    // (Opening each copy already logs a checkpoint mark, so they differ from the first record.)
    let (ca, cb) = (vfs.connect(&a).unwrap(), vfs.connect(&b).unwrap());
    let (da, dbb) = (
        vfs.open_database(&a).unwrap(),
        vfs.open_database(&b).unwrap(),
    );
    let sa = Shipper::start(da.clone(), store_ref.clone(), quick_opts()).unwrap();
    let sb = Shipper::start(dbb.clone(), store_ref.clone(), quick_opts()).unwrap();
    let la = insert(&ca, 3, 10);
    let lb = insert(&cb, 7, 20);
    sa.ship_now();
    sb.ship_now();
    let ra = sa.wait_replicated(la, WAIT);
    let rb = sb.wait_replicated(lb, WAIT);
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one writer wins: {ra:?} {rb:?}"
    );
    let (winner, wconn, wpath, loser, ldb, lconn, lpath) = if ra.is_ok() {
        (sa, &ca, &a, sb, dbb, &cb, &b)
    } else {
        (sb, &cb, &b, sa, da, &ca, &a)
    };
    let stopped = loser.status().stopped.unwrap_or_default();
    assert!(stopped.contains("another writer"), "{stopped}");
    // The winner goes on; the store holds the winner's history only.
    let lw = insert(wconn, 2, 11);
    winner.wait_replicated(lw, WAIT).unwrap();
    let out = dir.path().join("r.db");
    restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert!(
        file_bytes(&out) == image(&vfs, wpath),
        "the store holds the winner's history"
    );
    drop(loser);
    let _ = lpath;

    // The loser, now behind the store with a different history, cannot even attach.
    let e = Shipper::start(ldb.clone(), store_ref.clone(), quick_opts()).unwrap_err();
    assert!(
        matches!(
            e,
            SnapshotError::StaleLocal { .. } | SnapshotError::Diverged { .. }
        ),
        "{e}"
    );
    // A stale copy (C: the disk as it was before A's last writes) is refused, naming both LSNs.
    let cc = vfs.connect(&c).unwrap();
    let dc = vfs.open_database(&c).unwrap();
    let e = Shipper::start(dc.clone(), store_ref.clone(), quick_opts()).unwrap_err();
    match &e {
        SnapshotError::StaleLocal {
            local_lsn,
            remote_lsn,
            ..
        } => {
            assert_eq!(*local_lsn, dc.log().last_lsn());
            assert!(*remote_lsn >= lw);
            let msg = e.to_string();
            assert!(
                msg.contains(&local_lsn.to_string()) && msg.contains(&remote_lsn.to_string()),
                "{msg}"
            );
        }
        e => panic!("expected StaleLocal, got {e}"),
    }
    // The loser with more records than the store, but a different record at the store's
    // last LSN.
    for i in 0..10 {
        insert(lconn, 1, 30 + i);
    }
    let e = Shipper::start(ldb.clone(), store_ref.clone(), quick_opts()).unwrap_err();
    assert!(matches!(e, SnapshotError::Diverged { .. }), "{e}");
    drop((cc, dc));
    winner.close(Duration::from_secs(10)).unwrap();
}

#[test]
fn another_database_on_the_prefix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let ca = vfs.connect(&a).unwrap();
    schema(&ca);
    let sa = Shipper::start(
        vfs.open_database(&a).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .unwrap();
    let cb = vfs.connect(&b).unwrap();
    schema(&cb);
    let e = Shipper::start(
        vfs.open_database(&b).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .unwrap_err();
    assert!(matches!(e, SnapshotError::WrongDatabase { .. }), "{e}");
    assert!(e.to_string().contains("t0000000001/timeline.plt"), "{e}");
    sa.close(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_restored_database_continues_on_a_new_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .unwrap();
    let mut images = BTreeMap::new();
    for i in 0..20 {
        let l = insert(&conn, 4, i);
        images.insert(l, image(&vfs, &path));
    }
    let mid = *images.keys().nth(9).unwrap();
    sh.wait_replicated(*images.keys().last().unwrap(), WAIT)
        .unwrap();

    // Restore the middle of the history and continue from there, while the old database
    // goes on writing timeline 1.
    let branch = dir.path().join("branch.db");
    let r = restore(
        &*store_ref,
        &branch,
        &RestoreOptions {
            target: RestoreTarget::Lsn(mid),
            new_timeline: true,
            ..RestoreOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.new_timeline, Some(2));
    assert_eq!(
        r.new_timeline_base,
        Some(mid),
        "the branch point is the base"
    );
    let bconn = vfs.connect(&branch).unwrap();
    let n: i64 = bconn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 40, "10 transactions of 4 rows");
    let bdb = vfs.open_database(&branch).unwrap();
    assert_eq!(bdb.log().timeline(), 2);
    // Until the branch ships it holds only its branch point: the latest history is still
    // timeline 1, which moved on meanwhile.
    let l1 = insert(&conn, 4, 20);
    images.insert(l1, image(&vfs, &path));
    sh.wait_replicated(l1, WAIT).unwrap();
    let last = *images.keys().last().unwrap();
    sh.close(Duration::from_secs(10)).unwrap();
    let out = dir.path().join("out.db");
    let r = restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert_eq!(
        (r.timeline, r.lsn),
        (1, last),
        "an unshipped branch is not the latest"
    );
    assert!(file_bytes(&out) == images[&last]);
    let bsh = Shipper::start(bdb.clone(), store_ref.clone(), quick_opts()).unwrap();
    // Its first batch holds the restore's marker record: from then on it is the latest.
    let opened = bdb.log().last_lsn();
    bsh.wait_replicated(opened, WAIT).unwrap();
    let r = restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert_eq!(
        (r.timeline, r.lsn),
        (2, opened),
        "a shipping branch is the latest"
    );
    assert!(file_bytes(&out) == images[&mid]);
    let bl = insert(&bconn, 50, 99);
    bsh.wait_replicated(bl, WAIT).unwrap();
    assert_eq!(
        bsh.status().snapshots_taken,
        0,
        "the restore uploaded the branch's base: the shipper ships from the branch point"
    );
    let r = restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert_eq!((r.timeline, r.lsn), (2, bl));
    assert!(file_bytes(&out) == image(&vfs, &branch));
    // Every LSN of the branch from its branch point restores: the base, the marker record
    // after it, and the first commit; no gap is recorded.
    for (lsn, want) in [
        (mid, &images[&mid]),
        (mid + 1, &images[&mid]),
        (bl, &image(&vfs, &branch)),
    ] {
        let r = restore(
            &*store_ref,
            &out,
            &RestoreOptions {
                timeline: Some(2),
                target: RestoreTarget::Lsn(lsn),
                force: true,
                ..RestoreOptions::default()
            },
        )
        .unwrap();
        assert_eq!((r.timeline, r.lsn, r.snapshot_lsn), (2, lsn, Some(mid)));
        assert!(file_bytes(&out) == *want, "LSN {lsn}");
    }
    let v = pagelog_snapshot::verify(&*store_ref).unwrap();
    assert!(v.is_ok() && v.gaps.is_empty(), "{v:?}");
    // The old timeline stays restorable.
    let r = restore(
        &*store_ref,
        &out,
        &RestoreOptions {
            timeline: Some(1),
            force: true,
            ..RestoreOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.lsn, last);
    assert!(file_bytes(&out) == images[&last]);
    bsh.close(Duration::from_secs(10)).unwrap();
}

/// `restore --new-timeline` puts the database in place only with its log, complete: while the
/// base snapshot uploads, neither exists yet (a process killed then leaves no database that
/// cannot be opened). Replacing a database (`force`) works the same way.
#[test]
fn a_branch_appears_only_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let branch = dir.path().join("branch.db");
    let log_dir = dir
        .path()
        .join(format!("branch.db{}", pagelog_vfs::LOG_DIR_SUFFIX));
    let flaky = FlakyStore::new(&dir.path().join("store"));
    let store = Arc::new(NoSnapshots {
        watch: Some(branch.clone()),
        create: None,
        ..NoSnapshots::new(flaky.clone())
    });
    let store_ref: pagelog_snapshot::StoreRef = store.clone();
    let vfs = vfs(Durability::Sync);
    let last = one_shipped_commit(&vfs, &path, &store_ref);
    let seen_before = store.seen.lock().unwrap().len();

    let opts = RestoreOptions {
        new_timeline: true,
        ..RestoreOptions::default()
    };
    let r = restore(&*store_ref, &branch, &opts).unwrap();
    assert_eq!((r.new_timeline, r.new_timeline_base), (Some(2), Some(last)));
    let seen: Vec<bool> = store.seen.lock().unwrap()[seen_before..].to_vec();
    assert!(!seen.is_empty() && seen.iter().all(|e| !e), "{seen:?}");
    assert!(branch.exists() && log_dir.is_dir());
    // No temporary file or directory is left beside it.
    let names = names_beginning(dir.path(), "branch.db");
    assert_eq!(names, ["branch.db", "branch.db-pagelog"]);
    let bconn = vfs.connect(&branch).unwrap();
    let n: i64 = bconn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4);
    drop(bconn);

    // Again over it, with force: the old branch is replaced by a new one, and while the base
    // uploads the old database is still there (with its old log).
    let seen_before = store.seen.lock().unwrap().len();
    let r = restore(
        &*store_ref,
        &branch,
        &RestoreOptions {
            force: true,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(r.new_timeline, Some(3));
    let seen: Vec<bool> = store.seen.lock().unwrap()[seen_before..].to_vec();
    assert!(!seen.is_empty() && seen.iter().all(|e| *e), "{seen:?}");
    let bdb = vfs.open_database(&branch).unwrap();
    assert_eq!(bdb.log().timeline(), 3);
}

/// A file created at the output path while `restore --new-timeline` uploads its base (by
/// another program) is not replaced: the restore fails with `Exists`, deletes the base it
/// uploaded and leaves no temporary file.
#[test]
fn a_branch_does_not_replace_a_file_created_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let branch = dir.path().join("branch.db");
    let flaky = FlakyStore::new(&dir.path().join("store"));
    let store = Arc::new(NoSnapshots::new(flaky.clone()));
    let store_ref: pagelog_snapshot::StoreRef = store.clone();
    let vfs = vfs(Durability::Sync);
    one_shipped_commit(&vfs, &path, &store_ref);
    let racing = Arc::new(NoSnapshots {
        watch: None,
        create: Some(branch.clone()),
        ..NoSnapshots::new(flaky.clone())
    });
    let racing_ref: pagelog_snapshot::StoreRef = racing.clone();
    let r = branch_restore(&racing_ref, &branch);
    match r {
        Err(SnapshotError::Exists { path }) => assert_eq!(path, branch),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(std::fs::read(&branch).unwrap(), b"another program's file");
    let names = names_beginning(dir.path(), "branch.db");
    assert_eq!(names, ["branch.db"]);
    let t2 = Catalog::load_timeline(&*store_ref, 2).unwrap();
    assert!(t2.claimed);
    assert!(t2.snapshots.is_empty(), "{:?}", t2.snapshots);
}

/// A branch's shipper ships from the base snapshot the restore uploaded only if that snapshot
/// is the state its log starts from (same size and checksum as the restore's marker record);
/// a base that is not is a divergence, not a base to build on.
#[test]
fn a_branch_base_that_is_not_the_logs_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let last = one_shipped_commit(&vfs, &path, &store_ref);
    let branch = dir.path().join("branch.db");
    let r = branch_restore(&store_ref, &branch).unwrap();
    assert_eq!(r.new_timeline_base, Some(last));
    // The base's manifest, sealed again with another checksum.
    let key = pagelog_snapshot::format::manifest_key(2, last);
    let mut m =
        pagelog_snapshot::format::Manifest::decode(&key, &store_ref.get(&key).unwrap()).unwrap();
    m.checksum ^= 1;
    store_ref.delete(&key).unwrap();
    store_ref.put_if_absent(&key, &m.encode()).unwrap();
    match Shipper::start(
        vfs.open_database(&branch).unwrap(),
        store_ref.clone(),
        quick_opts(),
    ) {
        Err(SnapshotError::Diverged { timeline, lsn, .. }) => {
            assert_eq!((timeline, lsn), (2, last))
        }
        Err(e) => panic!("expected Diverged, got {e:?}"),
        Ok(_) => panic!("expected Diverged, the shipper started"),
    }
}

/// A database at `path` (a table and one transaction of 4 rows) shipped to `store`, its
/// shipper closed. Returns the transaction's LSN.
fn one_shipped_commit(
    vfs: &pagelog_vfs::PagelogVfs,
    path: &std::path::Path,
    store: &StoreRef,
) -> u64 {
    let conn = vfs.connect(path).unwrap();
    schema(&conn);
    let sh = Shipper::start(
        vfs.open_database(path).unwrap(),
        store.clone(),
        quick_opts(),
    )
    .unwrap();
    let last = insert(&conn, 4, 1);
    sh.wait_replicated(last, WAIT).unwrap();
    sh.close(Duration::from_secs(10)).unwrap();
    last
}

/// Two `restore --new-timeline` to one output at once: one succeeds and the other is refused
/// (another restore to it is running, or the output exists), without removing the winner's
/// temporary files; what is in place opens; no temporary file is left.
#[test]
fn two_restores_to_one_output_never_spoil_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    one_shipped_commit(&vfs, &path, &store_ref);
    for round in 0..8 {
        let branch = dir.path().join(format!("race-{round}.db"));
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let results: Vec<_> = (0..2)
            .map(|_| {
                let (store_ref, branch, barrier) =
                    (store_ref.clone(), branch.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    branch_restore(&store_ref, &branch)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(
                    r,
                    SnapshotError::Exists { .. }
                        | SnapshotError::Vfs(pagelog_vfs::VfsError::Owned { .. })
                ),
                "round {round}: {r:?}"
            );
        }
        let prefix = format!("race-{round}.db");
        let names = names_beginning(dir.path(), &prefix);
        assert_eq!(
            names,
            [prefix.clone(), format!("{prefix}-pagelog")],
            "round {round}"
        );
        let conn = vfs.connect(&branch).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 4);
    }
}

/// A branch's log whose database file is gone (a restore killed between putting the log in
/// place and the file): the open is refused on the checksum and creates no file.
#[test]
fn a_branch_log_without_its_database_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    one_shipped_commit(&vfs, &path, &store_ref);
    let branch = dir.path().join("branch.db");
    branch_restore(&store_ref, &branch).unwrap();
    std::fs::remove_file(&branch).unwrap();
    match vfs.open_database(&branch) {
        Err(pagelog_vfs::VfsError::ChecksumMismatch { .. }) => {}
        Err(e) => panic!("expected ChecksumMismatch, got {e:?}"),
        Ok(_) => panic!("opened a branch without its database"),
    }
    assert!(!branch.exists(), "the refused open left a file");
}

/// The names in `dir` that begin with `prefix`, sorted.
fn names_beginning(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// `restore --new-timeline` of the latest state into `out`.
fn branch_restore(
    store: &StoreRef,
    out: &std::path::Path,
) -> Result<pagelog_snapshot::RestoreReport, SnapshotError> {
    restore(
        &**store,
        out,
        &RestoreOptions {
            new_timeline: true,
            ..RestoreOptions::default()
        },
    )
}

/// A store that refuses every snapshot upload (keys under `snap/`) while `refuse` is set, and
/// records, at each snapshot upload, whether the file `watch` exists.
#[derive(Debug)]
struct NoSnapshots {
    inner: Arc<FlakyStore>,
    refuse: std::sync::atomic::AtomicBool,
    watch: Option<std::path::PathBuf>,
    seen: std::sync::Mutex<Vec<bool>>,
    /// A file to create (as another program would) at the first snapshot upload.
    create: Option<std::path::PathBuf>,
}

impl NoSnapshots {
    fn new(inner: Arc<FlakyStore>) -> NoSnapshots {
        NoSnapshots {
            inner,
            refuse: std::sync::atomic::AtomicBool::new(false),
            watch: None,
            seen: Default::default(),
            create: None,
        }
    }
}

impl pagelog_snapshot::ObjectStore for NoSnapshots {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn put_if_absent(
        &self,
        key: &str,
        data: &[u8],
    ) -> Result<pagelog_snapshot::PutOutcome, StoreError> {
        if let (true, Some(w)) = (key.contains("/snap/"), &self.watch) {
            self.seen.lock().unwrap().push(w.exists());
        }
        if let (true, Some(c)) = (key.contains("/snap/"), &self.create)
            && !c.exists()
        {
            std::fs::write(c, b"another program's file").unwrap();
        }
        if key.contains("/snap/") && self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::AccessDenied {
                endpoint: "test".into(),
                key: key.into(),
                message: "snapshots refused (test)".into(),
            });
        }
        self.inner.put_if_absent(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.inner.get_range(key, range)
    }
    fn list(&self, prefix: &str) -> Result<Vec<pagelog_snapshot::ObjectMeta>, StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key)
    }
}

/// When the branch's base snapshot cannot be uploaded, the restore still succeeds (the file,
/// the claim and the local log are in place) and says so; the shipper then takes a base
/// snapshot itself, and the records before it are a recorded gap — nothing acknowledged is
/// lost.
#[test]
fn a_branch_whose_base_upload_fails_gets_a_base_from_its_shipper() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let flaky = FlakyStore::new(&dir.path().join("store"));
    let store = Arc::new(NoSnapshots::new(flaky.clone()));
    let store_ref: pagelog_snapshot::StoreRef = store.clone();
    let vfs = vfs(Durability::Sync);
    one_shipped_commit(&vfs, &path, &store_ref);

    store
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let branch = dir.path().join("branch.db");
    let r = branch_restore(&store_ref, &branch).unwrap();
    assert_eq!((r.new_timeline, r.new_timeline_base), (Some(2), None));
    // No part of the failed upload is left behind.
    let t2 = pagelog_snapshot::Catalog::load_timeline(&*store_ref, 2).unwrap();
    assert!(t2.snapshots.is_empty(), "{:?}", t2.snapshots);
    store
        .refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);

    let bconn = vfs.connect(&branch).unwrap();
    let bsh = Shipper::start(
        vfs.open_database(&branch).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .unwrap();
    let bl = insert(&bconn, 3, 2);
    bsh.wait_replicated(bl, WAIT).unwrap();
    assert!(
        bsh.status().snapshots_taken >= 1,
        "the shipper took the base"
    );
    let out = dir.path().join("out.db");
    let r = restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert_eq!((r.timeline, r.lsn), (2, bl));
    assert!(file_bytes(&out) == image(&vfs, &branch));
    let v = pagelog_snapshot::verify(&*store_ref).unwrap();
    assert_eq!(v.gaps.len(), 1, "{v:?}");
    assert_eq!(v.gaps[0].0, 2);
    bsh.close(Duration::from_secs(10)).unwrap();
}

#[test]
fn retention_deletes_only_what_no_restore_point_needs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    // A zero window: only the newest snapshot and what follows it are needed.
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        ShipperOptions {
            retention: Some(Duration::ZERO),
            ..quick_opts()
        },
    )
    .unwrap();
    let mut before = 0;
    for i in 0..10 {
        before = insert(&conn, 20, i);
    }
    sh.snapshot_now().unwrap();
    for i in 0..10 {
        insert(&conn, 20, i);
    }
    let s2 = sh.snapshot_now().unwrap();
    let mut last = 0;
    for i in 0..5 {
        last = insert(&conn, 20, i);
    }
    sh.wait_replicated(last, WAIT).unwrap();
    let cat = Catalog::load(&*store_ref).unwrap();
    let t = &cat.timelines[&1];
    let snaps: Vec<u64> = t.complete_snapshots().map(|s| s.lsn).collect();
    assert_eq!(snaps, vec![s2.lsn], "older snapshot deleted");
    assert!(
        t.batches
            .iter()
            .all(|b| b.first_lsn <= s2.lsn + 1 || b.first_lsn > s2.lsn)
    );
    assert!(
        t.batches[0].first_lsn <= s2.lsn + 1,
        "the batch after the snapshot is kept"
    );
    let out = dir.path().join("r.db");
    restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert!(file_bytes(&out) == image(&vfs, &path));
    let e = restore(
        &*store_ref,
        &out,
        &RestoreOptions {
            target: RestoreTarget::Lsn(before),
            force: true,
            ..RestoreOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, SnapshotError::OutOfRange { .. }), "{e}");
    sh.close(Duration::from_secs(10)).unwrap();

    // A week-long window deletes nothing.
    let before = Catalog::load(&*store_ref).unwrap().bytes();
    let rep = pagelog_snapshot::apply_retention(
        &*store_ref,
        Duration::from_secs(7 * 86400),
        pagelog_snapshot::time::now_us(),
    )
    .unwrap();
    assert_eq!(rep, Default::default());
    assert_eq!(Catalog::load(&*store_ref).unwrap().bytes(), before);
}

#[test]
fn local_log_is_dropped_once_checkpointed_and_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(db.clone(), store_ref.clone(), quick_opts()).unwrap();
    store.set_down(true);
    let mut last = 0;
    for i in 0..60 {
        last = insert(&conn, 30, i);
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    insert(&conn, 1, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(db.log().first_lsn(), 1, "not shipped: kept");
    store.set_down(false);
    sh.wait_replicated(last, WAIT).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while db.log().first_lsn() == 1 && std::time::Instant::now() < deadline {
        insert(&conn, 1, 0);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        db.log().first_lsn() > 1,
        "shipped and checkpointed: dropped"
    );
    assert!(db.log().first_lsn() <= db.checkpoint_lsn());
    sh.close(Duration::from_secs(10)).unwrap();
    // Recovery still works on the truncated log.
    let img = image(&vfs, &path);
    drop(conn);
    drop(db);
    let _conn = vfs.connect(&path).unwrap();
    assert!(image(&vfs, &path) == img);
}

#[test]
fn a_requested_snapshot_keeps_unshipped_records_for_their_batches() {
    // Records checkpointed but not yet in a batch when a snapshot is taken: the snapshot
    // covers their state, but point-in-time restore needs them in batches, so the local log
    // must keep them until they ship (no gap, no bridging snapshot).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(
        db.clone(),
        store_ref.clone(),
        ShipperOptions {
            batch_bytes: 64 << 10,
            ..quick_opts()
        },
    )
    .unwrap();
    store.set_down(true);
    let mut images = BTreeMap::new();
    // Several segments of records wait while the store is down.
    for i in 0..60 {
        let lsn = insert(&conn, 30, i);
        images.insert(lsn, image(&vfs, &path));
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    store.set_down(false);
    let snap = sh.snapshot_now().unwrap();
    let mut last = 0;
    for i in 0..5 {
        last = insert(&conn, 1, i);
        images.insert(last, image(&vfs, &path));
    }
    sh.ship_now();
    sh.wait_replicated(last, WAIT).unwrap();
    assert_eq!(sh.status().snapshots_taken, 1, "no bridging snapshot");
    assert!(check_contiguous(&*store_ref, 1) >= last);
    assert!(
        db.log().first_lsn() > 1,
        "shipped and checkpointed: dropped"
    );
    sh.close(Duration::from_secs(10)).unwrap();
    let out = dir.path().join("restored.db");
    let before_snapshot: Vec<u64> = images.keys().copied().filter(|l| *l < snap.lsn).collect();
    for lsn in [
        before_snapshot[0],
        before_snapshot[30],
        *before_snapshot.last().unwrap(),
        last,
    ] {
        restore_to(&store_ref, &out, RestoreTarget::Lsn(lsn));
        assert!(
            file_bytes(&out) == images[&lsn],
            "restore at LSN {lsn} differs"
        );
    }
}

#[test]
fn a_restart_ships_the_records_a_snapshot_ran_ahead_of() {
    // A snapshot can reach the store before the batches holding the records it covers (records
    // became durable between the shipper gathering a batch and cutting the snapshot, or a
    // snapshot taken while batches wait). If the process dies then, the next shipper must
    // resume after the last *batch*, not after the snapshot: the records in between are still
    // in the local log and point-in-time restore needs them. Found by tests/sigkill.rs (a
    // SIGKILL right after `snapshot_now`): the restarted shipper continued after the snapshot,
    // `verify` reported "records 250..=252 are missing" and restores at those LSNs failed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let mut images = BTreeMap::new();
    let sh = Shipper::start(db.clone(), store_ref.clone(), quick_opts()).unwrap();
    let mut shipped = 0;
    for i in 0..5 {
        shipped = insert(&conn, 2, i);
        images.insert(shipped, image(&vfs, &path));
    }
    sh.wait_replicated(shipped, WAIT).unwrap();
    // The process dies: the shipper stops without shipping anything more.
    drop(sh);
    assert_eq!(check_contiguous(&*store_ref, 1), shipped);
    // Records committed after the last batch, then a snapshot covering them, uploaded before
    // any batch of theirs (the state the race leaves behind).
    let mut last = shipped;
    for i in 0..4 {
        last = insert(&conn, 2, 10 + i);
        images.insert(last, image(&vfs, &path));
    }
    let snap = pagelog_snapshot::take_snapshot(&db, &*store_ref, &Default::default()).unwrap();
    assert_eq!(snap.lsn, last);
    // Restart: the records between the last batch and the snapshot are shipped. The latest
    // state is restorable at once (the snapshot), point-in-time restore of those records only
    // once their batch is in; close() waits for that, not just for the snapshot.
    let sh = Shipper::start(db.clone(), store_ref.clone(), quick_opts()).unwrap();
    assert_eq!(sh.replicated_lsn(), last);
    assert!(sh.logged_lsn() <= last);
    sh.close(Duration::from_secs(10)).unwrap();
    assert_eq!(
        check_contiguous(&*store_ref, 1),
        last,
        "close() shipped the records the snapshot ran ahead of"
    );
    let sh = Shipper::start(db.clone(), store_ref.clone(), quick_opts()).unwrap();
    assert_eq!(sh.logged_lsn(), last);
    let after = insert(&conn, 2, 20);
    images.insert(after, image(&vfs, &path));
    sh.wait_replicated(after, WAIT).unwrap();
    sh.close(Duration::from_secs(10)).unwrap();
    assert_eq!(
        check_contiguous(&*store_ref, 1),
        after,
        "no gap in the batches"
    );
    let v = pagelog_snapshot::verify(&*store_ref).unwrap();
    assert!(
        v.is_ok() && v.gaps.is_empty(),
        "{:?} {:?}",
        v.problems,
        v.gaps
    );
    let out = dir.path().join("restored.db");
    for (&lsn, img) in images.range(shipped..) {
        restore_to(&store_ref, &out, RestoreTarget::Lsn(lsn));
        assert!(file_bytes(&out) == *img, "restore at LSN {lsn} differs");
    }
}

#[test]
fn backlog_limit_drops_unshipped_log_and_bridges_with_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(
        db.clone(),
        store_ref.clone(),
        ShipperOptions {
            max_backlog_bytes: 600 << 10,
            ..quick_opts()
        },
    )
    .unwrap();
    let first = insert(&conn, 5, 0);
    sh.wait_replicated(first, WAIT).unwrap();
    store.set_down(true);
    let mut lost_from = 0;
    for i in 0..200 {
        let l = insert(&conn, 30, i);
        if lost_from == 0 {
            lost_from = l;
        }
        if i % 20 == 19 {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while db.log().first_lsn() <= lost_from && std::time::Instant::now() < deadline {
        insert(&conn, 1, 0);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        db.log().first_lsn() > lost_from,
        "over the limit, unshipped records are dropped at checkpoints"
    );
    let last = insert(&conn, 1, 1);
    store.set_down(false);
    sh.wait_replicated(last, WAIT).unwrap();
    assert!(
        sh.status().snapshots_taken >= 1,
        "a snapshot bridged the gap"
    );
    // Shipping goes on after the snapshot.
    let after = insert(&conn, 1, 2);
    sh.wait_replicated(after, WAIT).unwrap();
    let out = dir.path().join("r.db");
    restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert!(file_bytes(&out) == image(&vfs, &path));
    // The store's history records a gap where records were dropped unshipped (a gap batch,
    // which fences the range like any batch); a restore inside it names the missing LSNs.
    assert_eq!(check_contiguous(&*store_ref, 1), sh.replicated_lsn());
    let t = Catalog::load_timeline(&*store_ref, 1).unwrap();
    let mut gap = None;
    for i in 0..t.batches.len() {
        let h = t.batch_header(&*store_ref, i).unwrap();
        if h.is_gap() {
            gap = Some((h.first_lsn, h.last_lsn));
        }
    }
    let v = pagelog_snapshot::verify(&*store_ref).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    assert_eq!(v.gaps.len(), 1);
    let (from, to) = gap.expect("a gap in the shipped log");
    assert!(from >= lost_from);
    let snap = t.complete_snapshots().last().unwrap().lsn;
    assert!(
        snap >= to,
        "the snapshot at {snap} covers the gap {from}..={to}"
    );
    let e = restore(
        &*store_ref,
        &out,
        &RestoreOptions {
            target: RestoreTarget::Lsn(from),
            force: true,
            ..RestoreOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, SnapshotError::Gap { .. }), "{e}");
    assert!(e.to_string().contains(&from.to_string()), "{e}");
    sh.close(Duration::from_secs(10)).unwrap();
}

#[test]
fn corrupt_truncated_and_missing_objects_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let root = dir.path().join("store");
    let store = FlakyStore::new(&root);
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .unwrap();
    let mut last = 0;
    for i in 0..6 {
        last = insert(&conn, 10, i);
        sh.ship_now();
        sh.wait_replicated(last, WAIT).unwrap();
    }
    sh.close(Duration::from_secs(10)).unwrap();
    let t = Catalog::load_timeline(&*store_ref, 1).unwrap();
    assert!(t.batches.len() >= 4, "{} batches", t.batches.len());
    let victim = t.batches[2].key.clone();
    let file = root.join(&victim);
    let good = std::fs::read(&file).unwrap();
    let out = dir.path().join("r.db");
    let attempt = || {
        restore(
            &*store_ref,
            &out,
            &RestoreOptions {
                target: RestoreTarget::Lsn(last),
                force: true,
                ..RestoreOptions::default()
            },
        )
    };
    // A flipped byte in the body.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x55;
    std::fs::write(&file, &bad).unwrap();
    let e = attempt().unwrap_err();
    assert!(
        matches!(e, SnapshotError::Corrupt { .. }) && e.to_string().contains(&victim),
        "{e}"
    );
    // Truncated.
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    let e = attempt().unwrap_err();
    assert!(e.to_string().contains(&victim), "{e}");
    // Missing: a gap named by LSNs.
    std::fs::remove_file(&file).unwrap();
    let e = attempt().unwrap_err();
    assert!(matches!(e, SnapshotError::Gap { .. }), "{e}");
    assert!(!out.exists(), "a failed restore leaves no file");
    let v = pagelog_snapshot::verify(&*store_ref).unwrap();
    assert!(
        v.problems.len() == 1 && v.problems[0].message.contains("gap"),
        "{:?}",
        v.problems
    );
    std::fs::write(&file, &good).unwrap();
    attempt().unwrap();
}

#[test]
fn snapshots_by_policy_and_async_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Gated);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        ShipperOptions {
            auto_snapshot: true,
            ..quick_opts()
        },
    )
    .unwrap();
    // Rewrite the same rows: the log grows, the database does not.
    insert(&conn, 200, 1);
    let mut last = 0;
    for _ in 0..60 {
        conn.execute("UPDATE t SET v = randomblob(100)", [])
            .unwrap();
        last = pagelog_vfs::connection_last_lsn(&conn).unwrap();
    }
    block_on(sh.wait_replicated_async(last)).unwrap();
    assert!(sh.replicated_lsn() >= last);
    // The policy's snapshot follows the batch that crossed the threshold (the watermark moves
    // first): give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sh.status().snapshots_taken == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sh.status().snapshots_taken >= 1, "{:?}", sh.status());
    let puts_before = store.puts.load(std::sync::atomic::Ordering::SeqCst);
    let lists_before = store.lists.load(std::sync::atomic::Ordering::SeqCst);
    // Steady-state shipping makes no LIST request (retention is off here).
    for i in 0..5 {
        let l = insert(&conn, 1, i);
        sh.wait_replicated(l, WAIT).unwrap();
    }
    assert!(store.puts.load(std::sync::atomic::Ordering::SeqCst) > puts_before);
    assert_eq!(
        store.lists.load(std::sync::atomic::Ordering::SeqCst),
        lists_before
    );
    // Beyond the last LSN: an error, not a hang.
    assert!(block_on(sh.wait_replicated_async(last + 10_000)).is_err());
    sh.close(Duration::from_secs(10)).unwrap();
}

/// A minimal executor: park the thread until the waker fires.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn two_copies_of_a_branch_cannot_both_continue_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    {
        let conn = vfs.connect(&path).unwrap();
        schema(&conn);
        insert(&conn, 10, 1);
        let sh = Shipper::start(
            vfs.open_database(&path).unwrap(),
            store_ref.clone(),
            quick_opts(),
        )
        .unwrap();
        sh.close(Duration::from_secs(10)).unwrap();
    }
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    restore(
        &*store_ref,
        &a,
        &RestoreOptions {
            new_timeline: true,
            ..RestoreOptions::default()
        },
    )
    .unwrap();
    clone_db(&a, &b);
    let (ca, cb) = (vfs.connect(&a).unwrap(), vfs.connect(&b).unwrap());
    let la = insert(&ca, 1, 100);
    let lb = insert(&cb, 2, 200);
    // Both copies continue the new timeline from its first LSN (the restore uploaded the
    // base): their first batches share the timeline's first key and differ, so the
    // conditional create lets only one proceed.
    let sa = Shipper::start(
        vfs.open_database(&a).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .unwrap();
    let sb = Shipper::start(
        vfs.open_database(&b).unwrap(),
        store_ref.clone(),
        quick_opts(),
    );
    let ra = sa.wait_replicated(la, WAIT);
    let winner_path = match sb {
        Err(e) => {
            eprintln!("the second copy was refused at attach: {e}");
            assert!(
                matches!(
                    e,
                    SnapshotError::Diverged { .. } | SnapshotError::StaleLocal { .. }
                ),
                "{e}"
            );
            ra.unwrap();
            &a
        }
        Ok(sb) => {
            let rb = sb.wait_replicated(lb, WAIT);
            assert!(
                ra.is_ok() != rb.is_ok(),
                "exactly one copy continues: {ra:?} {rb:?}"
            );
            let loser = if ra.is_ok() { &sb } else { &sa };
            eprintln!("fenced: {:?}", loser.status().stopped);
            assert!(
                loser
                    .status()
                    .stopped
                    .unwrap_or_default()
                    .contains("another writer")
            );
            if ra.is_ok() { &a } else { &b }
        }
    };
    let out = dir.path().join("r.db");
    let r = restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert_eq!(r.timeline, 2);
    assert!(
        file_bytes(&out) == image(&vfs, winner_path),
        "the store holds one copy's history"
    );
}

#[test]
fn a_store_down_at_start_does_not_stop_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    store.set_down(true);
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .unwrap();
    let s = sh.status();
    assert!(!s.store_available && s.last_error.is_some(), "{s:?}");
    let mut last = 0;
    for i in 0..10 {
        last = insert(&conn, 2, i);
    }
    assert_eq!(sh.replicated_lsn(), 0);
    store.set_down(false);
    sh.wait_replicated(last, WAIT).unwrap();
    assert_eq!(check_contiguous(&*store_ref, 1), sh.replicated_lsn());
    let out = dir.path().join("r.db");
    restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert!(file_bytes(&out) == image(&vfs, &path));
    sh.close(Duration::from_secs(10)).unwrap();
}

/// A damaged object in the store (here the last batch, whose header the attach reads) is no
/// reason to refuse a healthy local database: the open goes on, the status names the object,
/// commits go on locally, nothing is shipped past it, and once it is mended the shipper
/// attaches and ships everything.
#[test]
fn a_damaged_object_at_start_does_not_stop_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let root = dir.path().join("store");
    let store = FlakyStore::new(&root);
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .unwrap();
    let mut last = 0;
    for i in 0..4 {
        last = insert(&conn, 5, i);
        sh.ship_now();
        sh.wait_replicated(last, WAIT).unwrap();
    }
    sh.close(Duration::from_secs(10)).unwrap();
    let t = Catalog::load_timeline(&*store_ref, 1).unwrap();
    let victim = t.batches.last().unwrap().key.clone();
    let file = root.join(&victim);
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..3]).unwrap();

    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .expect("a damaged object must not fail the start");
    let s = sh.status();
    assert!(!s.store_available, "{s:?}");
    assert!(
        s.last_error.as_deref().is_some_and(|e| e.contains(&victim)),
        "the status names the damaged object: {s:?}"
    );
    for i in 10..14 {
        last = insert(&conn, 5, i);
    }
    // Still refused after a few retries, and nothing shipped over the damage.
    let batches_before = Catalog::load_timeline(&*store_ref, 1)
        .unwrap()
        .batches
        .len();
    std::thread::sleep(Duration::from_millis(600));
    let s = sh.status();
    assert!(!s.store_available && s.last_error.is_some(), "{s:?}");
    assert_eq!(
        sh.replicated_lsn(),
        0,
        "nothing replicated before an attach"
    );
    assert_eq!(
        Catalog::load_timeline(&*store_ref, 1)
            .unwrap()
            .batches
            .len(),
        batches_before
    );
    // Mended: the shipper attaches and catches up.
    std::fs::write(&file, &good).unwrap();
    sh.wait_replicated(last, WAIT).unwrap();
    assert_eq!(check_contiguous(&*store_ref, 1), sh.replicated_lsn());
    let out = dir.path().join("r.db");
    restore_to(&store_ref, &out, RestoreTarget::Latest);
    assert!(file_bytes(&out) == image(&vfs, &path));
    sh.close(Duration::from_secs(10)).unwrap();
}

/// An object of a newer format version (as a newer pagelog would write) is no damage: the
/// start fails, naming the object and both versions.
#[test]
fn an_object_of_a_newer_format_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let root = dir.path().join("store");
    let store = FlakyStore::new(&root);
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .unwrap();
    let last = insert(&conn, 5, 1);
    sh.ship_now();
    sh.wait_replicated(last, WAIT).unwrap();
    sh.close(Duration::from_secs(10)).unwrap();
    let t = Catalog::load_timeline(&*store_ref, 1).unwrap();
    let victim = t.batches.last().unwrap().key.clone();
    let file = root.join(&victim);
    let mut b = std::fs::read(&file).unwrap();
    // As a newer pagelog would write it: version 2, its header sealed with its own checksum
    // (CRC32 of the 96-byte header with the checksum field as zero). A version field damaged
    // alone is damage instead (see format.rs's tests).
    b[8..10].copy_from_slice(&2u16.to_le_bytes());
    b[12..16].fill(0);
    let crc = crc32fast::hash(&b[..96]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&file, &b).unwrap();
    match Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        quick_opts(),
    ) {
        Err(e @ SnapshotError::UnsupportedVersion { .. }) => {
            let m = e.to_string();
            assert!(m.contains(&victim) && m.contains("version 2"), "{m}");
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

/// A store in which retention runs between a restore's listing and its reads: the first
/// listing does not show the newest snapshot (it is taken "after" the listing), and the
/// first read of an object that snapshot makes obsolete runs retention with a zero window
/// first, which deletes that object.
#[derive(Debug)]
struct RetentionRacingRestore {
    inner: StoreRef,
    /// The newest snapshot's objects, hidden from the first listing.
    newest: Vec<String>,
    /// Objects retention deletes once the newest snapshot exists.
    obsolete: Vec<String>,
    lists: std::sync::atomic::AtomicU64,
    fired: std::sync::atomic::AtomicBool,
}

impl RetentionRacingRestore {
    fn before_read(&self, key: &str) {
        use std::sync::atomic::Ordering;
        if self.obsolete.iter().any(|k| k == key) && !self.fired.swap(true, Ordering::SeqCst) {
            let r = pagelog_snapshot::apply_retention(&*self.inner, Duration::ZERO, u64::MAX / 2)
                .unwrap();
            assert!(r.batches + r.snapshots > 0, "{r:?}");
        }
    }
}

impl pagelog_snapshot::ObjectStore for RetentionRacingRestore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn put_if_absent(
        &self,
        key: &str,
        data: &[u8],
    ) -> Result<pagelog_snapshot::PutOutcome, pagelog_snapshot::StoreError> {
        self.inner.put_if_absent(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, pagelog_snapshot::StoreError> {
        self.before_read(key);
        self.inner.get(key)
    }
    fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, pagelog_snapshot::StoreError> {
        self.before_read(key);
        self.inner.get_range(key, range)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<pagelog_snapshot::ObjectMeta>, pagelog_snapshot::StoreError> {
        let mut all = self.inner.list(prefix)?;
        if self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            all.retain(|o| !self.newest.contains(&o.key));
        }
        Ok(all)
    }
    fn delete(&self, key: &str) -> Result<(), pagelog_snapshot::StoreError> {
        self.inner.delete(key)
    }
}

#[test]
fn a_latest_restore_racing_retention_lists_again_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        quick_opts(),
    )
    .unwrap();
    let mut last = 0;
    for round in 0..3 {
        for i in 0..4 {
            last = insert(&conn, 5, round * 10 + i);
            sh.ship_now();
        }
        if round < 2 {
            sh.snapshot_now().unwrap();
        }
    }
    sh.wait_replicated(last, WAIT).unwrap();
    sh.close(Duration::from_secs(10)).unwrap();
    let t = Catalog::load_timeline(&*store_ref, 1).unwrap();
    let snaps: Vec<_> = t.complete_snapshots().collect();
    assert_eq!(snaps.len(), 2);
    let (older, newest) = (snaps[0], snaps[1]);
    let newest_keys: Vec<String> = newest
        .parts
        .iter()
        .map(|p| p.key.clone())
        .chain(newest.manifest_key.clone())
        .collect();
    let mut obsolete: Vec<String> = older
        .parts
        .iter()
        .map(|p| p.key.clone())
        .chain(older.manifest_key.clone())
        .collect();
    for (i, b) in t.batches.iter().enumerate() {
        if t.batches
            .get(i + 1)
            .is_some_and(|n| n.first_lsn <= newest.lsn + 1)
        {
            obsolete.push(b.key.clone());
        }
    }
    let racing = Arc::new(RetentionRacingRestore {
        inner: store_ref.clone(),
        newest: newest_keys,
        obsolete,
        lists: Default::default(),
        fired: Default::default(),
    });
    let racing_ref: StoreRef = racing.clone();
    let out = dir.path().join("r.db");
    let report = restore_to(&racing_ref, &out, RestoreTarget::Latest);
    assert!(racing.fired.load(std::sync::atomic::Ordering::SeqCst));
    assert!(racing.lists.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert_eq!(report.lsn, last);
    assert_eq!(report.snapshot_lsn, Some(newest.lsn));
    assert!(file_bytes(&out) == image(&vfs, &path));
    assert!(
        Catalog::load_timeline(&*store_ref, 1)
            .unwrap()
            .snapshot_at_or_before(older.lsn)
            .is_none_or(|s| s.lsn != older.lsn)
    );
}

/// `close` on a shipper whose first attach hangs on the store waits `close_timeout`, then the
/// stop wait (2 s) once — not twice (once in `close`, again in `Drop`).
#[test]
fn close_while_the_attach_hangs_waits_the_stop_wait_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    // A fresh store: the attach creates the timeline claim, and that upload hangs.
    store.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref(&store),
        ShipperOptions {
            attach_wait: Duration::from_millis(100),
            ..quick_opts()
        },
    )
    .unwrap();
    insert(&conn, 2, 1);
    let started = std::time::Instant::now();
    assert!(sh.close(Duration::from_millis(200)).is_err());
    let took = started.elapsed();
    store.hang.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        took >= Duration::from_millis(2100) && took < Duration::from_millis(3500),
        "close took {took:?}"
    );
}

#[test]
fn a_hanging_store_does_not_block_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(db.clone(), store_ref.clone(), quick_opts()).unwrap();
    store.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    // The shipper is stuck inside an upload; commits (durable on return) go on regardless.
    let mut last = 0;
    for i in 0..50 {
        last = insert(&conn, 2, i);
        assert!(db.durable_lsn() >= last);
    }
    assert!(sh.replicated_lsn() < last);
    store.hang.store(false, std::sync::atomic::Ordering::SeqCst);
    sh.wait_replicated(last, WAIT).unwrap();
    assert_eq!(check_contiguous(&*store_ref, 1), sh.replicated_lsn());
    sh.close(Duration::from_secs(10)).unwrap();
}

/// Found by a probe (2026-11-29): `snapshot_now` reported every failed snapshot as
/// `Stopped` ("the shipper stopped: …") although the shipper went on, and `is_transient` was
/// false for a store that was only down. It is `SnapshotFailed`, transient when the store's
/// error was, and the shipper takes the next snapshot once the store is back.
#[test]
fn a_snapshot_failing_on_a_store_that_is_down_is_transient_and_the_shipper_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let store = FlakyStore::new(&dir.path().join("store"));
    let store_ref = store_ref(&store);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(db.clone(), store_ref.clone(), quick_opts()).unwrap();
    let last = insert(&conn, 1, 1);
    sh.wait_replicated(last, Some(Duration::from_secs(10)))
        .unwrap();
    store.set_down(true);
    let e = sh.snapshot_now().unwrap_err();
    assert!(
        matches!(
            e,
            SnapshotError::SnapshotFailed {
                transient: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(pagelog_snapshot::upload::is_transient(&e), "{e}");
    assert!(sh.status().stopped.is_none(), "{:?}", sh.status().stopped);
    store.set_down(false);
    let snap = sh.snapshot_now().unwrap();
    assert!(snap.lsn >= last);
}
