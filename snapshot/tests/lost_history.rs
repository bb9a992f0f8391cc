//! A store that loses what the shipper put there while it runs (a wiped prefix, deleted
//! directories, another database's claim put in their place), and snapshot uploads that fail
//! part way: against the local directory store, checked by restoring.

mod common;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use pagelog_snapshot::format::{KeyKind, TimelineInfo, parse_key, timeline_key};
use pagelog_snapshot::store::local::LocalStore;
use pagelog_snapshot::{
    Catalog, ObjectMeta, ObjectStore, PutOutcome, RestoreOptions, Shipper, ShipperOptions,
    SnapshotOptions, StoreError, StoreRef, restore,
};
use pagelog_vfs::Durability;

const WAIT: Option<Duration> = Some(Duration::from_secs(30));
/// How long a shipper may take to notice a loss and make the store restorable again.
const RECOVERY: Duration = Duration::from_secs(30);

fn checking_opts() -> ShipperOptions {
    ShipperOptions {
        store_check_interval: Some(Duration::from_millis(50)),
        ..quick_opts()
    }
}

/// Delete everything in the directory `under` of the store (`""`: the whole store, as
/// `aws s3 rm --recursive` on the prefix would), but timeline claims.
fn wipe(root: &Path, under: &str) {
    let dir = root.join(under);
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if !under.is_empty() && p.file_name().is_some_and(|n| n == "timeline.plt") {
            continue;
        }
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
}

/// Restore the latest state until it is `want` at `lsn`, or give up after `RECOVERY`; the
/// last outcome either way.
fn restores_within(store: &StoreRef, out: &Path, lsn: u64, want: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let outcome = match restore(
            &**store,
            out,
            &RestoreOptions {
                force: true,
                integrity_check: true,
                ..RestoreOptions::default()
            },
        ) {
            Ok(r) if r.lsn == lsn && file_bytes(out) == want => return Ok(()),
            Ok(r) => format!("restored LSN {} (want {lsn}) or other bytes", r.lsn),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(outcome);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ship, snapshot, ship more; delete `under` (the whole store, or a directory in it) while
/// the shipper runs; commit more. The shipper must notice, say so, and make the store restore
/// the latest state again.
fn loses_history_and_recovers(under: &str, trim_local_log: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let root = dir.path().join("store");
    let store = FlakyStore::new(&root);
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(
        db.clone(),
        store_ref.clone(),
        ShipperOptions {
            truncate_local_log: trim_local_log,
            ..checking_opts()
        },
    )
    .unwrap();
    let mut last = 0;
    for i in 0..20 {
        last = insert(&conn, 40, i);
    }
    sh.snapshot_now().unwrap();
    for i in 0..20 {
        last = insert(&conn, 40, i);
        if trim_local_log && i % 5 == 4 {
            sh.wait_replicated(last, WAIT).unwrap();
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
        }
    }
    sh.ship_now();
    sh.wait_replicated(last, WAIT).unwrap();
    let out = dir.path().join("restored.db");
    restores_within(&store_ref, &out, last, &image(&vfs, &path)).unwrap();
    if trim_local_log {
        // The local log no longer starts at 1: a store that lost everything needs a base
        // snapshot.
        let deadline = Instant::now() + Duration::from_secs(10);
        while db.log().first_lsn() == 1 && Instant::now() < deadline {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
            last = insert(&conn, 40, 99);
            sh.ship_now();
            sh.wait_replicated(last, WAIT).unwrap();
        }
        assert!(db.log().first_lsn() > 1, "the local log was not trimmed");
    }
    assert_eq!(sh.status().history_losses, 0);

    wipe(&root, under);
    for i in 0..10 {
        last = insert(&conn, 40, 100 + i);
    }
    sh.ship_now();
    let r = restores_within(&store_ref, &out, last, &image(&vfs, &path));
    let status = sh.status();
    r.unwrap_or_else(|e| {
        panic!("the store did not restore the latest state again: {e}; {status:?}")
    });
    assert!(status.history_losses >= 1, "{status:?}");
    assert!(status.stopped.is_none(), "{status:?}");
    assert!(status.snapshots_taken >= 2, "{status:?}");
    // The watermarks are honest again, and keep moving.
    last = insert(&conn, 40, 200);
    sh.ship_now();
    sh.wait_replicated(last, WAIT).unwrap();
    restores_within(&store_ref, &out, last, &image(&vfs, &path)).unwrap();
    sh.close(Duration::from_secs(10)).unwrap();
    let v = pagelog_snapshot::verify(&*store_ref).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
}

#[test]
fn a_wiped_store_is_noticed_and_restores_the_latest_state_again() {
    loses_history_and_recovers("", false);
}

#[test]
fn a_wiped_store_behind_a_trimmed_local_log_gets_a_base_snapshot() {
    loses_history_and_recovers("", true);
}

#[test]
fn a_store_that_lost_its_batches_and_snapshots_but_kept_the_claim_recovers() {
    loses_history_and_recovers("t0000000001", false);
}

#[test]
fn after_a_wipe_another_databases_claim_still_stops_the_shipper() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let root = dir.path().join("store");
    let store = FlakyStore::new(&root);
    let store_ref = store_ref(&store);
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(db.clone(), store_ref.clone(), checking_opts()).unwrap();
    let last = insert(&conn, 10, 1);
    sh.ship_now();
    sh.wait_replicated(last, WAIT).unwrap();
    // Another database's claim replaces this one's (at once, so that the shipper never sees
    // the timeline unclaimed), then the history goes.
    let other = TimelineInfo {
        database_id: db.log().database_id() ^ 1,
        timeline: sh.timeline(),
        parent_timeline: 0,
        parent_lsn: 0,
        created_us: pagelog_snapshot::time::now_us(),
        first_lsn: 1,
    };
    let claim = root.join(timeline_key(sh.timeline()));
    let tmp = root.join("claim.tmp");
    std::fs::write(&tmp, other.encode()).unwrap();
    std::fs::rename(&tmp, &claim).unwrap();
    wipe(&root, &format!("t{:010}", sh.timeline()));
    insert(&conn, 10, 2);
    sh.ship_now();
    let deadline = Instant::now() + RECOVERY;
    while sh.status().stopped.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = sh.status();
    let why = status.stopped.clone().unwrap_or_default();
    assert!(why.contains("belongs to database"), "{status:?}");
    assert_eq!(status.history_losses, 1, "{status:?}");
    // The other database's claim is untouched.
    assert_eq!(
        store_ref.get(&timeline_key(sh.timeline())).unwrap(),
        other.encode()
    );
}

/// A local store whose part uploads fail from part `fail_from` on (every attempt), and whose
/// deletes fail while `fail_deletes` is set.
#[derive(Debug)]
struct PartFaults {
    inner: LocalStore,
    fail_from: AtomicU32,
    fail_deletes: AtomicBool,
}

impl PartFaults {
    fn unavailable(key: &str) -> StoreError {
        StoreError::Unavailable {
            endpoint: "test".into(),
            key: key.into(),
            message: "injected failure".into(),
        }
    }
}

impl ObjectStore for PartFaults {
    fn describe(&self) -> String {
        format!("part-faults {}", self.inner.describe())
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<PutOutcome, StoreError> {
        if let Some(KeyKind::Part { index, .. }) = parse_key(key)
            && index >= self.fail_from.load(Ordering::SeqCst)
        {
            return Err(Self::unavailable(key));
        }
        self.inner.put_if_absent(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.inner.get_range(key, range)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        if self.fail_deletes.load(Ordering::SeqCst) {
            return Err(Self::unavailable(key));
        }
        self.inner.delete(key)
    }
}

/// Parts in the store that no manifest makes part of a snapshot.
fn unreferenced_parts(store: &dyn ObjectStore) -> usize {
    Catalog::load(store)
        .unwrap()
        .timelines
        .values()
        .flat_map(|t| t.snapshots.iter())
        .filter(|s| !s.is_complete())
        .map(|s| s.parts.len())
        .sum()
}

#[test]
fn failed_snapshot_attempts_do_not_fill_the_store_with_orphan_parts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = Arc::new(PartFaults {
        inner: LocalStore::open(&dir.path().join("store")).unwrap(),
        fail_from: AtomicU32::new(u32::MAX),
        fail_deletes: AtomicBool::new(false),
    });
    let store_ref: StoreRef = store.clone();
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    for i in 0..10 {
        insert(&conn, 40, i);
    }
    // One page per part, a single try per part; no retention (it would hide what the shipper
    // leaves behind).
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store_ref.clone(),
        ShipperOptions {
            snapshot: SnapshotOptions {
                part_bytes: 4096,
                concurrency: 2,
                attempts: 1,
            },
            ..quick_opts()
        },
    )
    .unwrap();
    const GOOD_PARTS: u32 = 3;
    store.fail_from.store(GOOD_PARTS, Ordering::SeqCst);
    // Each attempt is at a new LSN (a commit in between), so its parts have new keys.
    for i in 0..4 {
        insert(&conn, 5, 100 + i);
        let e = sh.snapshot_now().unwrap_err();
        assert!(e.to_string().contains("injected failure"), "{e}");
        let left = unreferenced_parts(&*store_ref);
        assert_eq!(
            left, 0,
            "attempt {i} left {left} parts no manifest references"
        );
    }
    // Deletes fail too: the parts of one attempt stay, and no attempt adds more.
    store.fail_deletes.store(true, Ordering::SeqCst);
    for i in 0..4 {
        insert(&conn, 5, 200 + i);
        sh.snapshot_now().unwrap_err();
        let left = unreferenced_parts(&*store_ref);
        assert!(
            left <= GOOD_PARTS as usize,
            "after {} failed attempts with failing deletes, {left} parts no manifest references",
            i + 1
        );
    }
    // The store works again: the leftovers go, the snapshot is complete and restores.
    store.fail_deletes.store(false, Ordering::SeqCst);
    store.fail_from.store(u32::MAX, Ordering::SeqCst);
    let last = insert(&conn, 5, 300);
    let info = sh.snapshot_now().unwrap();
    assert!(
        info.lsn >= last && info.parts > GOOD_PARTS as usize,
        "{info:?}"
    );
    assert_eq!(unreferenced_parts(&*store_ref), 0);
    sh.ship_now();
    sh.wait_replicated(last, WAIT).unwrap();
    let out = dir.path().join("restored.db");
    restores_within(&store_ref, &out, last, &image(&vfs, &path)).unwrap();
    sh.close(Duration::from_secs(10)).unwrap();
    let v = pagelog_snapshot::verify(&*store_ref).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    assert!(v.incomplete_snapshots.is_empty(), "{v:?}");
}

#[test]
fn retention_deletes_unfinished_uploads_below_the_newest_snapshot_only() {
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
    insert(&conn, 10, 1);
    let s1 = sh.snapshot_now().unwrap();
    for i in 0..3 {
        insert(&conn, 10, 2 + i);
    }
    let s2 = sh.snapshot_now().unwrap();
    assert!(s2.lsn - 1 > s1.lsn);
    sh.close(Duration::from_secs(10)).unwrap();
    let tl = s2.timeline;
    // Interrupted uploads (a crash between parts and manifest): one below the newest
    // snapshot, between the two, and one above it (it could be an upload in progress).
    let stray = |lsn: u64| format!("t{tl:010}/snap/{lsn:020}/part-000000.pls");
    for lsn in [s1.lsn - 1, s2.lsn - 1, s2.lsn + 1] {
        store_ref
            .put_if_absent(&stray(lsn), b"half an upload")
            .unwrap();
    }
    // A week-long window: no complete snapshot is old enough to delete anything else.
    let rep = pagelog_snapshot::apply_retention(
        &*store_ref,
        Duration::from_secs(7 * 86400),
        pagelog_snapshot::time::now_us(),
    )
    .unwrap();
    assert_eq!((rep.unfinished, rep.snapshots, rep.batches), (2, 2, 0));
    let cat = Catalog::load(&*store_ref).unwrap();
    let t = &cat.timelines[&tl];
    let unfinished: Vec<u64> = t
        .snapshots
        .iter()
        .filter(|s| !s.is_complete())
        .map(|s| s.lsn)
        .collect();
    assert_eq!(unfinished, vec![s2.lsn + 1]);
    let complete: Vec<u64> = t.complete_snapshots().map(|s| s.lsn).collect();
    assert_eq!(complete, vec![s1.lsn, s2.lsn]);
}

#[test]
fn a_base_snapshot_that_failed_after_its_gap_batch_is_retried_without_fencing_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = Arc::new(PartFaults {
        inner: LocalStore::open(&dir.path().join("store")).unwrap(),
        fail_from: AtomicU32::new(0),
        fail_deletes: AtomicBool::new(false),
    });
    let store_ref: StoreRef = store.clone();
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    for i in 0..40 {
        insert(&conn, 40, i);
    }
    // A local log that no longer starts at 1 (as after the backlog limit): the empty store
    // needs a base snapshot, after a gap batch.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let db = vfs.open_database(&path).unwrap();
    db.log()
        .truncate_prefix(db.checkpoint_lsn().saturating_sub(1))
        .unwrap();
    assert!(db.log().first_lsn() > 1);
    let sh = Shipper::start(
        db.clone(),
        store_ref.clone(),
        ShipperOptions {
            snapshot: SnapshotOptions {
                part_bytes: 4096,
                concurrency: 2,
                attempts: 1,
            },
            ..quick_opts()
        },
    )
    .unwrap();
    // The base snapshot fails on its parts, again and again, while commits go on.
    let mut last = 0;
    for i in 0..5 {
        last = insert(&conn, 5, 100 + i);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sh.status().stopped.is_none(), "{:?}", sh.status());
    store.fail_from.store(u32::MAX, Ordering::SeqCst);
    sh.ship_now();
    sh.wait_replicated(last, WAIT)
        .unwrap_or_else(|e| panic!("{e}: {:?}", sh.status()));
    let out = dir.path().join("restored.db");
    restores_within(&store_ref, &out, last, &image(&vfs, &path)).unwrap();
    assert_eq!(unreferenced_parts(&*store_ref), 0);
    sh.close(Duration::from_secs(10)).unwrap();
    let v = pagelog_snapshot::verify(&*store_ref).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
}
