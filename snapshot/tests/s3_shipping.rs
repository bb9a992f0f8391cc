//! Shipping, fencing and restore through the S3 store against a real S3 protocol server: the
//! in-process s3s server by default, or the endpoint named by `PAGELOG_S3_TEST_ENDPOINT` (CI
//! runs these against moto as well).
#![cfg(feature = "s3")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use pagelog_s3_test_server::{Fault, S3Target};
use pagelog_snapshot::{
    RestoreOptions, RestoreTarget, Shipper, ShipperOptions, SnapshotError, StoreError,
    StoreOptions, StoreRef, open_store, restore,
};
use pagelog_vfs::Durability;
use rand::Rng;

const WAIT: Option<Duration> = Some(Duration::from_secs(60));

fn s3_store(t: &S3Target, test: &str) -> StoreRef {
    s3_store_with(t, test, StoreOptions::default())
}

fn s3_store_with(t: &S3Target, test: &str, more: StoreOptions) -> StoreRef {
    let url = format!("s3://{}/{}", t.bucket, t.unique_prefix(test));
    open_store(
        &url,
        &StoreOptions {
            endpoint: Some(t.endpoint.clone()),
            region: Some(t.region.clone()),
            credentials: Some((t.access_key.clone(), t.secret_key.clone())),
            max_attempts: Some(3),
            attempt_timeout: Some(Duration::from_secs(30)),
            // A server without conditional writes (PAGELOG_S3_TEST_NO_CONDITIONAL=1) cannot
            // fence; the tests that need fencing skip there, the others write anyway.
            allow_unfenced_writes: more.allow_unfenced_writes || !t.conditional_writes,
            ..more
        },
    )
    .unwrap()
}

fn restore_at(store: &StoreRef, out: &std::path::Path, target: RestoreTarget) -> u64 {
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
    .unwrap_or_else(|e| panic!("restore {target}: {e}"))
    .lsn
}

#[test]
fn a_history_shipped_to_s3_restores_at_many_points() {
    let t = S3Target::from_env_or_start();
    let store = s3_store(&t, "history");
    let mut rng = rng("a_history_shipped_to_s3_restores_at_many_points");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let vfs = vfs(Durability::Gated);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(
        db.clone(),
        store.clone(),
        ShipperOptions {
            batch_bytes: 32 << 10,
            ..quick_opts()
        },
    )
    .unwrap();
    let mut images = BTreeMap::new();
    for i in 0..80 {
        let lsn = step(&conn, &mut rng);
        db.wait_durable(lsn).unwrap();
        images.insert(lsn, image(&vfs, &path));
        if i == 40 {
            sh.snapshot_now().unwrap();
        }
    }
    let last = *images.keys().last().unwrap();
    sh.ship_now();
    sh.wait_replicated(last, WAIT).unwrap();
    assert_eq!(check_contiguous(&*store, 1), sh.replicated_lsn());
    let out = dir.path().join("r.db");
    assert!(restore_at(&store, &out, RestoreTarget::Latest) >= last);
    assert!(file_bytes(&out) == images[&last]);
    let lsns: Vec<u64> = images.keys().copied().collect();
    for _ in 0..10 {
        let lsn = lsns[rng.random_range(0..lsns.len())];
        assert_eq!(restore_at(&store, &out, RestoreTarget::Lsn(lsn)), lsn);
        assert!(file_bytes(&out) == images[&lsn], "LSN {lsn}");
    }
    let v = pagelog_snapshot::verify(&*store).unwrap();
    assert!(v.is_ok() && v.snapshots == 1, "{:?}", v.problems);
    sh.close(Duration::from_secs(30)).unwrap();
}

#[test]
fn two_writers_on_one_s3_prefix_one_is_fenced() {
    let t = S3Target::from_env_or_start();
    if !t.conditional_writes {
        println!(
            "SKIPPED two_writers_on_one_s3_prefix_one_is_fenced: PAGELOG_S3_TEST_NO_CONDITIONAL=1 \
             says {} does not honour If-None-Match, so nothing can fence a second writer there",
            t.endpoint
        );
        return;
    }
    if !t.atomic_conditional_writes {
        println!(
            "SKIPPED two_writers_on_one_s3_prefix_one_is_fenced: {} checks If-None-Match and then \
             writes without a lock (PAGELOG_S3_TEST_CONDITIONAL_NOT_ATOMIC=1), so racing writers \
             could both win there",
            t.endpoint
        );
        return;
    }
    let store = s3_store(&t, "fencing");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let vfs = vfs(Durability::Sync);
    {
        let conn = vfs.connect(&a).unwrap();
        schema(&conn);
        insert(&conn, 3, 1);
        let sh =
            Shipper::start(vfs.open_database(&a).unwrap(), store.clone(), quick_opts()).unwrap();
        sh.close(Duration::from_secs(30)).unwrap();
    }
    // A cloned disk: the same database twice.
    clone_db(&a, &b);
    let (ca, cb) = (vfs.connect(&a).unwrap(), vfs.connect(&b).unwrap());
    let sa = Shipper::start(vfs.open_database(&a).unwrap(), store.clone(), quick_opts()).unwrap();
    let sb = Shipper::start(vfs.open_database(&b).unwrap(), store.clone(), quick_opts()).unwrap();
    let la = insert(&ca, 2, 10);
    let lb = insert(&cb, 5, 20);
    sa.ship_now();
    sb.ship_now();
    let (ra, rb) = (sa.wait_replicated(la, WAIT), sb.wait_replicated(lb, WAIT));
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one writer wins: {ra:?} {rb:?}"
    );
    let (loser, winner_path) = if ra.is_ok() { (&sb, &a) } else { (&sa, &b) };
    let stopped = loser.status().stopped.unwrap_or_default();
    assert!(stopped.contains("another writer"), "{stopped}");
    let out = dir.path().join("r.db");
    restore_at(&store, &out, RestoreTarget::Latest);
    assert!(
        file_bytes(&out) == image(&vfs, winner_path),
        "one history in the bucket"
    );
}

#[test]
fn s3_errors_are_retried_and_shipping_catches_up() {
    let t = S3Target::from_env_or_start();
    let Some(server) = &t.server else {
        println!(
            "SKIPPED s3_errors_are_retried_and_shipping_catches_up: needs the in-process server's fault injection"
        );
        return;
    };
    let store = s3_store(&t, "faults");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let db = vfs.open_database(&path).unwrap();
    let sh = Shipper::start(db.clone(), store.clone(), quick_opts()).unwrap();
    let first = insert(&conn, 2, 0);
    sh.wait_replicated(first, WAIT).unwrap();
    // A burst of 503s, more than the client's own retries: the shipper backs off and retries.
    server.inject(Fault::Unavailable(40));
    let mut last = first;
    for i in 0..30 {
        last = insert(&conn, 2, i);
        assert!(
            db.durable_lsn() >= last,
            "commits are not held up by the store"
        );
    }
    sh.wait_replicated(last, WAIT).unwrap();
    assert_eq!(check_contiguous(&*store, 1), sh.replicated_lsn());
    assert!(server.stats().faults >= 40, "the 503s were served");
    // Bodies cut short during the restore are fetched again, never used.
    server.inject(Fault::TruncateGets(2));
    let out = dir.path().join("r.db");
    restore_at(&store, &out, RestoreTarget::Latest);
    assert!(file_bytes(&out) == image(&vfs, &path));
    sh.close(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_shipper_refuses_a_server_that_ignores_if_none_match() {
    let t = S3Target::from_env_or_start();
    let Some(server) = &t.server else {
        println!(
            "SKIPPED a_shipper_refuses_a_server_that_ignores_if_none_match: needs the in-process server"
        );
        return;
    };
    server.ignore_if_none_match(true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let lsn = insert(&conn, 2, 1);

    // Refused at once, before it claims its timeline: it could not be fenced.
    let store = s3_store(&t, "unfenced-refused");
    let started = std::time::Instant::now();
    match Shipper::start(
        vfs.open_database(&path).unwrap(),
        store.clone(),
        quick_opts(),
    ) {
        Err(SnapshotError::Store(StoreError::ConditionalWritesUnsupported { .. })) => {}
        other => panic!("expected ConditionalWritesUnsupported, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(store.list("").unwrap(), vec![], "nothing written");

    // With the opt-out it ships.
    let store = s3_store_with(
        &t,
        "unfenced-allowed",
        StoreOptions {
            allow_unfenced_writes: true,
            ..StoreOptions::default()
        },
    );
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store.clone(),
        quick_opts(),
    )
    .unwrap();
    sh.ship_now();
    sh.wait_replicated(lsn, WAIT).unwrap();
    sh.close(Duration::from_secs(30)).unwrap();
}

/// A TCP endpoint that accepts connections and never answers; the listener thread ends with the
/// process.
fn silent_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    format!("http://{addr}")
}

#[test]
fn start_does_not_wait_for_a_store_that_never_answers() {
    let endpoint = silent_endpoint();
    // The store's defaults: 5 attempts of up to 60 s each.
    let store = open_store(
        "s3://silent-bucket/app",
        &StoreOptions {
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
            credentials: Some(("id".into(), "secret".into())),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let lsn = insert(&conn, 2, 1);
    let opts = ShipperOptions {
        attach_wait: Duration::from_secs(2),
        ..quick_opts()
    };
    let started = std::time::Instant::now();
    let sh = Shipper::start(vfs.open_database(&path).unwrap(), store, opts).unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "start took {took:?}"
    );
    // Commits go on; the lag counts from the oldest record not in the store, attached or not.
    insert(&conn, 1, 2);
    let st = sh.status();
    assert!(!st.store_available, "{st:?}");
    assert!(st.replicated_lsn < lsn);
    assert!(st.lag_seconds >= 2.0, "{st:?}");
    // Dropping it does not wait for the attach's request in flight.
    let stopping = std::time::Instant::now();
    drop(sh);
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        stopping.elapsed()
    );
}

#[test]
fn a_store_failing_for_good_is_not_available() {
    let t = S3Target::from_env_or_start();
    let Some(server) = &t.server else {
        println!("SKIPPED a_store_failing_for_good_is_not_available: needs the in-process server");
        return;
    };
    let store = s3_store(&t, "bucket-gone");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let sh = Shipper::start(vfs.open_database(&path).unwrap(), store, quick_opts()).unwrap();
    let first = insert(&conn, 1, 1);
    sh.wait_replicated(first, WAIT).unwrap();
    assert!(sh.status().store_available);
    // The bucket goes away: every upload now fails with NoSuchBucket, which retrying cannot fix.
    std::fs::remove_dir_all(server.root().join(&t.bucket)).unwrap();
    insert(&conn, 1, 2);
    sh.ship_now();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = sh.status();
        if st.last_error.is_some() || std::time::Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = st.last_error.clone().unwrap_or_default();
    assert!(err.contains("does not exist"), "{st:?}");
    assert!(!st.store_available, "{st:?}");
}

#[test]
fn a_wiped_s3_prefix_is_noticed_and_restores_the_latest_state_again() {
    let t = S3Target::from_env_or_start();
    let store = s3_store(&t, "wiped");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let vfs = vfs(Durability::Sync);
    let conn = vfs.connect(&path).unwrap();
    schema(&conn);
    let sh = Shipper::start(
        vfs.open_database(&path).unwrap(),
        store.clone(),
        ShipperOptions {
            store_check_interval: Some(Duration::from_millis(100)),
            ..quick_opts()
        },
    )
    .unwrap();
    for i in 0..10 {
        insert(&conn, 20, i);
    }
    sh.snapshot_now().unwrap();
    let mut last = insert(&conn, 20, 10);
    sh.ship_now();
    sh.wait_replicated(last, WAIT).unwrap();
    // Everything under the prefix goes, as `aws s3 rm --recursive` would do.
    for o in store.list("").unwrap() {
        store.delete(&o.key).unwrap();
    }
    for i in 0..5 {
        last = insert(&conn, 20, 100 + i);
    }
    sh.ship_now();
    let want = image(&vfs, &path);
    let out = dir.path().join("r.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = restore(
            &*store,
            &out,
            &RestoreOptions {
                force: true,
                integrity_check: true,
                ..RestoreOptions::default()
            },
        );
        match r {
            Ok(r) if r.lsn == last && file_bytes(&out) == want => break,
            r => assert!(
                std::time::Instant::now() < deadline,
                "the store did not restore the latest state again: {:?}; {:?}",
                r.map(|r| r.lsn),
                sh.status()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sh.status().history_losses >= 1, "{:?}", sh.status());
    sh.close(Duration::from_secs(30)).unwrap();
    let v = pagelog_snapshot::verify(&*store).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
}
