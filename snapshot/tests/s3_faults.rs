//! The S3 store, the shipper, restore and verify behind a fault-injecting proxy
//! ([`FaultProxy`]) in front of a real S3 server: the in-process s3s server by default, or the
//! endpoint named by `PAGELOG_S3_TEST_ENDPOINT` (CI runs this file against moto too).
//!
//! - Shipping through a seeded random mix of 500s, 503s, slow answers, connection resets
//!   (before forwarding, and after forwarding — the request applied, the answer lost) and a
//!   proxy that disappears and comes back, while a writer commits: commits never wait for the
//!   store; once the faults stop everything is replicated, `verify` finds no problem and no gap,
//!   and restores (latest and several LSNs) are byte-identical to the source.
//! - Restore with truncated and corrupted bodies on a chosen object (a log batch, a snapshot
//!   part, the manifest): a one-shot fault is survived with a byte-identical result, a
//!   persistent one fails with a typed error naming the object. Never a wrong database.
//! - `verify` through a corrupting or truncating proxy names exactly the damaged object.
//! - A conditional create whose answer is lost, followed by a damaged read-back of the object,
//!   does not fence the writer against its own object.
//!
//! Run: `cargo test --release -p pagelog-snapshot --test s3_faults -- --nocapture`.
//! Each test prints its seed (`PAGELOG_SEED=...`); set `PAGELOG_SEED` to replay a failure.
//! `PAGELOG_FAULT_SECS` sets how long the fault phase of the shipping test runs (default 20).
#![cfg(feature = "s3")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use pagelog_s3_test_server::{FaultProxy, FaultRule, ProxyFault, S3Target};
use pagelog_snapshot::format::part_key;
use pagelog_snapshot::{
    Catalog, RestoreOptions, RestoreTarget, Shipper, ShipperOptions, SnapshotError, StoreError,
    StoreOptions, StoreRef, open_store, restore,
};
use pagelog_vfs::Durability;
use rand::Rng;
use rand::rngs::StdRng;

/// Per-attempt timeout of the S3 client: a slow answer longer than this is a timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a hang lasts (a very slow answer, or the proxy gone).
const HANG: Duration = Duration::from_secs(4);
/// No commit may take this long, whatever the store does.
const MAX_COMMIT: Duration = Duration::from_secs(1);
const WAIT: Option<Duration> = Some(Duration::from_secs(120));

/// An S3 target and a proxy in front of it (seeded from `rng`).
fn rig(rng: &mut StdRng) -> (S3Target, FaultProxy) {
    let t = S3Target::from_env_or_start();
    let proxy = FaultProxy::start(&t.endpoint, rng.random()).unwrap();
    println!(
        "proxy {} -> {}{}",
        proxy.endpoint(),
        t.endpoint,
        if t.is_external() { " (external)" } else { "" }
    );
    (t, proxy)
}

/// The store at `prefix`, reached through the proxy.
fn store_via(t: &S3Target, proxy: &FaultProxy, prefix: &str) -> StoreRef {
    open_store(
        &format!("s3://{}/{prefix}", t.bucket),
        &StoreOptions {
            endpoint: Some(proxy.endpoint().to_string()),
            region: Some(t.region.clone()),
            credentials: Some((t.access_key.clone(), t.secret_key.clone())),
            max_attempts: Some(3),
            attempt_timeout: Some(ATTEMPT_TIMEOUT),
            // Objects above 128 KiB (most snapshot parts, big batches) go up as multipart
            // uploads, so that faults hit those requests too.
            multipart_threshold: Some(128 << 10),
            // A server without conditional writes (PAGELOG_S3_TEST_NO_CONDITIONAL=1) cannot
            // fence; the tests that need fencing skip there, the others write anyway.
            allow_unfenced_writes: !t.conditional_writes,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn restore_to(
    store: &StoreRef,
    out: &Path,
    target: RestoreTarget,
) -> pagelog_snapshot::Result<u64> {
    restore(
        &**store,
        out,
        &RestoreOptions {
            target,
            force: true,
            integrity_check: true,
            ..RestoreOptions::default()
        },
    )
    .map(|r| r.lsn)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[test]
fn shipping_through_a_failing_store_never_blocks_commits_nor_leaves_a_gap() {
    let mut rng = rng("shipping_through_a_failing_store_never_blocks_commits_nor_leaves_a_gap");
    let (t, proxy) = rig(&mut rng);
    let prefix = t.unique_prefix("faulty-shipping");
    let store = store_via(&t, &proxy, &prefix);
    let fault_secs: u64 = std::env::var("PAGELOG_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(
        db.clone(),
        store.clone(),
        ShipperOptions {
            batch_bytes: 64 << 10,
            // Snapshots as the log grows: their parts and manifests go through the faults too.
            auto_snapshot: true,
            ..quick_opts()
        },
    )
    .unwrap();

    // Every kind of fault at least once (the first matching rule wins), then a random mix.
    for f in [
        ProxyFault::Status500,
        ProxyFault::Status503,
        ProxyFault::ResetBeforeForward,
        ProxyFault::ResetAfterForward,
        ProxyFault::Delay(HANG),
    ] {
        proxy.add_rule(FaultRule::new(f).method("PUT").times(1));
    }
    proxy.add_rule(
        FaultRule::new(ProxyFault::ResetAfterForward)
            .method("POST")
            .times(2),
    );
    for (f, p) in [
        (ProxyFault::Status500, 0.04),
        (ProxyFault::Status503, 0.04),
        (ProxyFault::ResetBeforeForward, 0.03),
        (ProxyFault::ResetAfterForward, 0.05),
        (ProxyFault::Delay(Duration::from_millis(300)), 0.05),
        (ProxyFault::Delay(HANG), 0.01),
    ] {
        proxy.add_rule(FaultRule::new(f).probability(p));
    }

    let mut images = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut gone_latencies = Vec::new();
    let mut slowest = (Duration::ZERO, 0u64);
    let started = Instant::now();
    let mut gone_until: Option<Instant> = None;
    let mut next_disappear = started + Duration::from_millis(rng.random_range(1_000..4_000));
    let mut last = 0;
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(fault_secs) {
        let now = Instant::now();
        match gone_until {
            Some(until) if now >= until => {
                proxy.reappear().unwrap();
                gone_until = None;
                next_disappear = now + Duration::from_millis(rng.random_range(2_000..6_000));
            }
            None if now >= next_disappear => {
                proxy.disappear();
                gone_until = Some(now + HANG);
            }
            _ => {}
        }
        let t0 = Instant::now();
        last = step(&conn, &mut rng);
        let took = t0.elapsed();
        assert!(db.durable_lsn() >= last, "a Sync commit returned durable");
        if took > slowest.0 {
            slowest = (took, last);
        }
        latencies.push(took);
        if gone_until.is_some() {
            gone_latencies.push(took);
        }
        if i.is_multiple_of(25) {
            images.insert(last, image(&vfs, &path));
        }
        i += 1;
        // A writer at a modest pace: the faults get many requests to bite on.
        std::thread::sleep(Duration::from_millis(rng.random_range(0..20)));
    }
    images.insert(last, image(&vfs, &path));
    let during = sh.status();
    proxy.clear_rules();
    proxy.reappear().unwrap();
    latencies.sort();
    gone_latencies.sort();
    println!(
        "{} commits in {:.1} s; commit latency p50 {:?}, p99 {:?}, max {:?} (LSN {}); \
         {} commits while the store was gone (max {:?}); replicated {} of {} when faults stopped",
        latencies.len(),
        started.elapsed().as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        slowest.0,
        slowest.1,
        gone_latencies.len(),
        gone_latencies.last().copied().unwrap_or_default(),
        during.replicated_lsn,
        last,
    );
    assert!(
        slowest.0 < MAX_COMMIT,
        "commit at LSN {} took {:?}: commits waited for the store",
        slowest.1,
        slowest.0
    );
    assert!(
        !gone_latencies.is_empty(),
        "commits ran while the store was gone"
    );

    let caught_up = Instant::now();
    sh.ship_now();
    sh.wait_replicated(last, WAIT)
        .unwrap_or_else(|e| panic!("after the faults stopped: {e}; {:?}", sh.status()));
    let stats = proxy.stats();
    println!(
        "caught up in {:.1} s; shipper: {:?}",
        caught_up.elapsed().as_secs_f64(),
        sh.status()
    );
    println!("proxy: {stats}");
    assert!(stats.status_500 >= 1 && stats.status_503 >= 1, "{stats}");
    assert!(
        stats.resets_before >= 1 && stats.resets_after >= 1,
        "{stats}"
    );
    assert!(stats.delays >= 1 && stats.disappearances >= 1, "{stats}");
    assert!(
        sh.status().stopped.is_none(),
        "the shipper never gives up on transient faults"
    );

    // A snapshot can move replicated_lsn past the log batches; the batches follow. Wait for
    // the log itself to reach the last commit (point-in-time restore needs every record).
    let log_wait = Instant::now();
    let mut log_end = check_contiguous(&*store, 1);
    while log_end < last && log_wait.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        log_end = check_contiguous(&*store, 1);
    }
    println!(
        "log batches reach LSN {log_end} of {last} after {:.1} s more",
        log_wait.elapsed().as_secs_f64()
    );
    let v = pagelog_snapshot::verify(&*store).unwrap();
    let tl = Catalog::load_timeline(&*store, 1).unwrap();
    println!(
        "store: {} batches ({:?} .. {:?}), snapshots at {:?}",
        tl.batches.len(),
        tl.batches.first().map(|b| &b.key),
        tl.batches.last().map(|b| &b.key),
        tl.snapshots.iter().map(|s| s.lsn).collect::<Vec<_>>()
    );
    assert_eq!(check_contiguous(&*store, 1), sh.replicated_lsn());
    println!(
        "verify: {} objects, {} records, {} snapshots, gaps {:?}",
        v.objects, v.records, v.snapshots, v.gaps
    );
    assert!(v.is_ok(), "verify: {:#?}", v.problems);
    assert!(v.gaps.is_empty(), "no gap: {:?}", v.gaps);
    assert!(v.snapshots >= 1, "snapshots were taken through the faults");

    let out = dir.path().join("r.db");
    assert_eq!(
        restore_to(&store, &out, RestoreTarget::Latest).unwrap(),
        last
    );
    assert!(file_bytes(&out) == images[&last], "latest restore differs");
    let lsns: Vec<u64> = images.keys().copied().collect();
    for _ in 0..4 {
        let lsn = lsns[rng.random_range(0..lsns.len())];
        assert_eq!(
            restore_to(&store, &out, RestoreTarget::Lsn(lsn)).unwrap(),
            lsn
        );
        assert!(
            file_bytes(&out) == images[&lsn],
            "restore at LSN {lsn} differs"
        );
    }
    sh.close(Duration::from_secs(30)).unwrap();
}

/// A history in the store: a snapshot in the middle, batches around it. Returns the store (via
/// the proxy), the last LSN and its image.
fn shipped_history(
    t: &S3Target,
    proxy: &FaultProxy,
    rng: &mut StdRng,
    dir: &Path,
    test: &str,
) -> (StoreRef, u64, Vec<u8>) {
    let store = store_via(t, proxy, &t.unique_prefix(test));
    let path = dir.join("src.db");
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(
        db,
        store.clone(),
        ShipperOptions {
            batch_bytes: 32 << 10,
            ..quick_opts()
        },
    )
    .unwrap();
    let mut last = 0;
    for i in 0..60 {
        last = step(&conn, rng);
        if i == 30 {
            sh.snapshot_now().unwrap();
        }
    }
    sh.close(Duration::from_secs(60)).unwrap();
    let img = image(&vfs, &path);
    (store, last, img)
}

/// The objects to damage: the last log batch (restore of the latest state reads it), the
/// snapshot's first part and its manifest.
fn victims(store: &StoreRef) -> Vec<(&'static str, String)> {
    let cat = Catalog::load(&**store).unwrap();
    let tl = &cat.timelines[&1];
    let snap = tl.complete_snapshots().next().expect("a snapshot");
    let batch = tl.batches.last().expect("batches").key.clone();
    assert!(
        tl.batches.last().unwrap().first_lsn > snap.lsn,
        "the last batch is applied over the snapshot"
    );
    vec![
        ("log batch", batch),
        ("snapshot part", part_key(1, snap.lsn, 0)),
        ("manifest", snap.manifest_key.clone().unwrap()),
    ]
}

/// The key a restore error names, if it is one of the errors that name an object.
fn named_key(e: &SnapshotError) -> Option<&str> {
    match e {
        SnapshotError::Corrupt { key, .. } => Some(key),
        SnapshotError::Store(
            StoreError::Unavailable { key, .. }
            | StoreError::NotFound { key, .. }
            | StoreError::Other { key, .. },
        ) => Some(key),
        _ => None,
    }
}

#[test]
fn restore_survives_one_shot_damage_and_names_the_object_of_persistent_damage() {
    let mut rng = rng("restore_survives_one_shot_damage_and_names_the_object_of_persistent_damage");
    let (t, proxy) = rig(&mut rng);
    let dir = tempfile::tempdir().unwrap();
    let (store, last, img) = shipped_history(&t, &proxy, &mut rng, dir.path(), "restore-damage");
    let victims = victims(&store);
    let out = dir.path().join("r.db");
    // A good database already in place: a failed restore must leave it untouched.
    assert_eq!(
        restore_to(&store, &out, RestoreTarget::Latest).unwrap(),
        last
    );
    assert!(file_bytes(&out) == img);
    // (fault, persistent). One-shot damage is survived: a short body is fetched again by the
    // S3 store; a corrupt one is caught by the S3 client's checksum (when the server sent one)
    // or by the object's own checksums, and fetched again. Persistent damage fails the restore
    // with an error naming the object: a short body as the store unavailable for that key
    // (its attempts spent), bytes that fail the object's checksums as `Corrupt`.
    let faults = [
        (ProxyFault::TruncateBody, false),
        (ProxyFault::TruncateBody, true),
        (ProxyFault::CorruptBody, false),
        (ProxyFault::CorruptStoredBody, false),
        (ProxyFault::CorruptStoredBody, true),
    ];
    let mut cases = 0;
    for (what, key) in &victims {
        for (fault, persistent) in faults {
            cases += 1;
            let label = format!(
                "{fault:?} {} on the {what} {key}",
                if persistent { "every time" } else { "once" }
            );
            let rule = FaultRule::new(fault).method("GET").key(key);
            proxy.add_rule(if persistent { rule } else { rule.times(1) });
            let before = proxy.stats();
            let r = restore_to(&store, &out, RestoreTarget::Latest);
            let after = proxy.stats();
            proxy.clear_rules();
            let injected =
                (after.truncated + after.corrupted) - (before.truncated + before.corrupted);
            println!("{label}: {injected} injected; restore: {r:?}");
            assert!(injected >= 1, "{label}: the fault was never injected");
            if persistent {
                let e = r.expect_err(&label);
                assert_eq!(named_key(&e), Some(key.as_str()), "{label}: {e}");
                match fault {
                    ProxyFault::TruncateBody => assert!(
                        matches!(e, SnapshotError::Store(StoreError::Unavailable { .. })),
                        "{label}: {e}"
                    ),
                    _ => assert!(matches!(e, SnapshotError::Corrupt { .. }), "{label}: {e}"),
                }
            } else {
                assert_eq!(r.unwrap_or_else(|e| panic!("{label}: {e}")), last);
            }
            // Success or failure, the database in place is the source's, byte for byte.
            assert!(
                file_bytes(&out) == img,
                "{label}: the database in place differs"
            );
            assert!(
                !Path::new(&format!("{}.pagelog-restore.tmp", out.display())).exists(),
                "{label}: the temporary file is left behind"
            );
        }
    }
    println!("{cases} cases; proxy: {}", proxy.stats());
}

#[test]
fn verify_through_a_damaging_proxy_names_the_damaged_objects() {
    let mut rng = rng("verify_through_a_damaging_proxy_names_the_damaged_objects");
    let (t, proxy) = rig(&mut rng);
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = shipped_history(&t, &proxy, &mut rng, dir.path(), "verify-damage");
    let clean = pagelog_snapshot::verify(&*store).unwrap();
    assert!(clean.is_ok(), "{:?}", clean.problems);
    // Verify reads the parts only through a readable manifest: one victim at a time.
    for (what, key) in victims(&store) {
        for fault in [
            ProxyFault::CorruptBody,
            ProxyFault::CorruptStoredBody,
            ProxyFault::TruncateBody,
        ] {
            proxy.add_rule(FaultRule::new(fault).method("GET").key(&key));
            let before = proxy.stats();
            let v = pagelog_snapshot::verify(&*store).unwrap();
            let after = proxy.stats();
            proxy.clear_rules();
            let injected =
                (after.truncated + after.corrupted) - (before.truncated + before.corrupted);
            let label = format!("{fault:?} on the {what} {key} ({injected} injected)");
            println!("{label}: {:?}", v.problems);
            assert!(injected >= 1, "{label}: never injected");
            let named: Vec<&str> = v.problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(named, [key.as_str()], "{label}: {:#?}", v.problems);
        }
    }
    let again = pagelog_snapshot::verify(&*store).unwrap();
    assert!(
        again.is_ok(),
        "without the proxy's damage: {:?}",
        again.problems
    );
}

#[test]
fn a_damaged_read_back_after_a_lost_answer_does_not_fence_the_writer() {
    let mut rng = rng("a_damaged_read_back_after_a_lost_answer_does_not_fence_the_writer");
    let (t, proxy) = rig(&mut rng);
    if !t.conditional_writes {
        println!(
            "SKIPPED a_damaged_read_back_after_a_lost_answer_does_not_fence_the_writer: \
             PAGELOG_S3_TEST_NO_CONDITIONAL=1 says {} does not honour If-None-Match, so a retried \
             create never finds its own object there",
            t.endpoint
        );
        return;
    }
    let store = store_via(&t, &proxy, &t.unique_prefix("read-back"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(db, store.clone(), quick_opts()).unwrap();
    let first = insert(&conn, 2, 0);
    sh.wait_replicated(first, WAIT).unwrap();
    // The next batch's create is applied but its answer is lost; the retry finds the key taken
    // and reads the object back, and that read comes back damaged (no checksum header to catch
    // it). Only the object's bytes can tell, and they are ours.
    proxy.add_rule(
        FaultRule::new(ProxyFault::ResetAfterForward)
            .method("PUT")
            .key("/log/")
            .times(1),
    );
    proxy.add_rule(
        FaultRule::new(ProxyFault::CorruptStoredBody)
            .method("GET")
            .key("/log/")
            .times(1),
    );
    let mut last = first;
    for i in 1..=5 {
        last = insert(&conn, 2, i);
    }
    sh.ship_now();
    let r = sh.wait_replicated(last, WAIT);
    let stats = proxy.stats();
    println!("{r:?}; {:?}; proxy: {stats}", sh.status());
    assert_eq!(
        (stats.resets_after, stats.corrupted),
        (1, 1),
        "both faults were injected"
    );
    r.unwrap();
    assert!(sh.status().stopped.is_none());
    assert_eq!(check_contiguous(&*store, 1), sh.replicated_lsn());
    let out = dir.path().join("r.db");
    assert_eq!(
        restore_to(&store, &out, RestoreTarget::Latest).unwrap(),
        last
    );
    assert!(file_bytes(&out) == image(&vfs, &path));
    sh.close(Duration::from_secs(30)).unwrap();
}
