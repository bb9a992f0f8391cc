//! The S3 store's multipart uploads behind the fault proxy ([`FaultProxy`]), a fault aimed at
//! one request kind at a time: CreateMultipartUpload (`POST ?uploads`), UploadPart
//! (`PUT ?partNumber=`), CompleteMultipartUpload (`POST ?uploadId=`, with `If-None-Match: *`)
//! and AbortMultipartUpload (`DELETE ?uploadId=`). Against the in-process s3s server by
//! default, or the endpoint named by `PAGELOG_S3_TEST_ENDPOINT` (moto in CI).
//!
//! - A fault the SDK's retries absorb (one 500, 503 or reset before forwarding on any kind, a
//!   lost answer to an UploadPart) leaves the create successful, the object byte-identical, and
//!   no upload in progress.
//! - A part that fails every attempt fails the create with a transient error; the upload is
//!   aborted (none left in progress) and the next create succeeds.
//! - A refused completion (the key exists) is aborted even when the abort meets one fault.
//! - A completion applied by the server whose answer is lost (reset after forwarding, or slower
//!   than the attempt timeout): the SDK's retry finds the upload gone (`NoSuchUpload`; s3s-fs
//!   answers 403), yet the object is ours: the create must succeed, not fail with "not found"
//!   or "access denied".
//!
//! Deterministic (every rule fires with probability 1). Run:
//! `cargo test --release --workspace --test s3_multipart_faults -- --nocapture`.
#![cfg(feature = "s3")]

use std::time::Duration;

use pagelog_s3_test_server::{FaultProxy, FaultRule, ProxyFault, S3Target};
use pagelog_snapshot::retention::is_pagelog_key;
use pagelog_snapshot::upload::{is_transient, put_immutable};
use pagelog_snapshot::{StoreOptions, StoreRef, open_store};

const MIB: usize = 1 << 20;
/// The client's per-attempt timeout; `SLOW` is beyond it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const SLOW: Duration = Duration::from_secs(3);

/// Deterministic bytes that differ per seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A store through the proxy whose creates above 5 MiB are multipart uploads (parts of 5 MiB).
fn rig(test: &str) -> (S3Target, FaultProxy, StoreRef, String) {
    let t = S3Target::from_env_or_start();
    let proxy = FaultProxy::start(&t.endpoint, 0).unwrap();
    let prefix = t.unique_prefix(test);
    let store = open_store(
        &format!("s3://{}/{prefix}", t.bucket),
        &StoreOptions {
            endpoint: Some(proxy.endpoint().to_string()),
            region: Some(t.region.clone()),
            credentials: Some((t.access_key.clone(), t.secret_key.clone())),
            max_attempts: Some(3),
            attempt_timeout: Some(ATTEMPT_TIMEOUT),
            multipart_threshold: Some(5 * MIB),
            allow_unfenced_writes: !t.conditional_writes,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    // The fencing check's probe objects go up before any fault.
    store.check_conditional_writes().unwrap();
    (t, proxy, store, prefix)
}

/// An S3 client straight to the server (not through the proxy), for what the store does not
/// do itself.
fn raw_client(t: &S3Target) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(t.region.clone()))
        .endpoint_url(&t.endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            &t.access_key,
            &t.secret_key,
            None,
            None,
            "test",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Multipart uploads in progress under `prefix`: the in-process server's upload records
/// (s3s-fs keeps `.upload-ID.json` at its root for each), or ListMultipartUploads.
fn uploads_in_progress(t: &S3Target, prefix: &str) -> usize {
    if let Some(srv) = &t.server {
        return std::fs::read_dir(srv.root())
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with(".upload-") && n.ends_with(".json")
            })
            .count();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let out = raw_client(t)
            .list_multipart_uploads()
            .bucket(&t.bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        out.uploads().len()
    })
}

#[test]
fn faults_the_sdk_retries_absorb_leave_the_object_whole_and_no_upload_behind() {
    let (t, proxy, store, prefix) = rig("multipart-absorbed");
    let big = data(6 * MIB + 123, 1);
    let mut case = 0;
    for (kind, method, target) in [
        ("CreateMultipartUpload", "POST", "?uploads"),
        ("UploadPart", "PUT", "partNumber="),
        ("CompleteMultipartUpload", "POST", "uploadId="),
    ] {
        for fault in [
            ProxyFault::Status500,
            ProxyFault::Status503,
            ProxyFault::ResetBeforeForward,
        ] {
            case += 1;
            let key = format!("obj/{case}");
            proxy.add_rule(FaultRule::new(fault).method(method).key(target).times(1));
            let r = put_immutable(&*store, 1, &key, &big);
            let left = proxy.remaining();
            proxy.clear_rules();
            println!("{kind} {fault:?}: {r:?}");
            assert_eq!(left, [Some(0)], "{kind} {fault:?}: the fault was injected");
            r.unwrap_or_else(|e| panic!("{kind} {fault:?}: {e}"));
            assert!(
                store.get(&key).unwrap() == big,
                "{kind} {fault:?}: same bytes"
            );
        }
    }
    // A part's answer lost: the part is sent again.
    proxy.add_rule(
        FaultRule::new(ProxyFault::ResetAfterForward)
            .method("PUT")
            .key("partNumber=2&")
            .times(1),
    );
    put_immutable(&*store, 1, "obj/part-answer-lost", &big).unwrap();
    assert_eq!(proxy.remaining(), [Some(0)]);
    proxy.clear_rules();
    assert!(store.get("obj/part-answer-lost").unwrap() == big);
    assert_eq!(
        uploads_in_progress(&t, &prefix),
        0,
        "no upload left in progress"
    );
    println!("proxy: {}", proxy.stats());
}

#[test]
fn a_part_failing_every_attempt_is_transient_and_its_upload_aborted() {
    let (t, proxy, store, prefix) = rig("multipart-part-fails");
    let big = data(6 * MIB + 5, 2);
    for fault in [ProxyFault::Status503, ProxyFault::ResetBeforeForward] {
        let key = format!("obj/{fault:?}");
        // The SDK's three attempts at part 2 all fail.
        proxy.add_rule(
            FaultRule::new(fault)
                .method("PUT")
                .key("partNumber=2&")
                .times(3),
        );
        let e = put_immutable(&*store, 1, &key, &big).unwrap_err();
        proxy.clear_rules();
        println!("{fault:?}: {e}");
        assert!(is_transient(&e), "{fault:?}: {e}");
        assert_eq!(uploads_in_progress(&t, &prefix), 0, "{fault:?}: aborted");
        put_immutable(&*store, 1, &key, &big).unwrap();
        assert!(store.get(&key).unwrap() == big);
    }
}

#[test]
fn a_refused_completion_is_aborted_through_one_fault() {
    let (t, proxy, store, prefix) = rig("multipart-refused");
    if !t.conditional_writes {
        println!("SKIPPED: {} does not honour If-None-Match", t.endpoint);
        return;
    }
    let big = data(6 * MIB + 9, 3);
    put_immutable(&*store, 1, "obj", &big).unwrap();
    for fault in [
        ProxyFault::Status500,
        ProxyFault::Status503,
        ProxyFault::ResetBeforeForward,
        ProxyFault::ResetAfterForward,
    ] {
        proxy.add_rule(
            FaultRule::new(fault)
                .method("DELETE")
                .key("uploadId=")
                .times(1),
        );
        // The completion is refused (412): the object is read back, found the same, and the
        // refused upload is aborted.
        put_immutable(&*store, 1, "obj", &big).unwrap();
        assert_eq!(proxy.remaining(), [Some(0)], "{fault:?}: injected");
        proxy.clear_rules();
        assert_eq!(uploads_in_progress(&t, &prefix), 0, "{fault:?}: aborted");
    }
    assert!(store.get("obj").unwrap() == big);
}

#[test]
fn a_completion_whose_answer_is_lost_is_not_an_error() {
    let (t, proxy, store, _) = rig("multipart-complete-answer-lost");
    if !t.conditional_writes {
        println!("SKIPPED: {} does not honour If-None-Match", t.endpoint);
        return;
    }
    let big = data(6 * MIB + 77, 4);
    for fault in [ProxyFault::ResetAfterForward, ProxyFault::Delay(SLOW)] {
        let key = format!("obj/{}", matches!(fault, ProxyFault::Delay(_)));
        proxy.add_rule(
            FaultRule::new(fault)
                .method("POST")
                .key("uploadId=")
                .times(1),
        );
        let r = put_immutable(&*store, 1, &key, &big);
        proxy.clear_rules();
        println!("{fault:?}: {r:?}");
        // The object was created by the first attempt; the create must say so.
        r.unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert!(store.get(&key).unwrap() == big);
    }
}

/// Start a multipart upload of `key` (under the test's prefix) and leave it in progress.
fn start_upload(t: &S3Target, key: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        raw_client(t)
            .create_multipart_upload()
            .bucket(&t.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    });
}

/// A lost answer to CreateMultipartUpload leaves an upload that pagelog never learns of (the
/// SDK's retry starts another): `abort_stale_uploads`, which retention runs with a day's age,
/// aborts it, and leaves other programs' uploads in the bucket alone.
#[test]
fn uploads_left_in_progress_are_aborted_and_only_pagelogs() {
    let (t, proxy, store, prefix) = rig("multipart-stale");
    let big = data(6 * MIB + 1, 5);
    proxy.add_rule(
        FaultRule::new(ProxyFault::ResetAfterForward)
            .method("POST")
            .key("?uploads")
            .times(1),
    );
    let key = "t0000000001/snap/00000000000000000007/part-000000.pls";
    put_immutable(&*store, 1, key, &big).unwrap();
    assert_eq!(proxy.remaining(), [Some(0)], "the fault was injected");
    proxy.clear_rules();
    assert_eq!(
        uploads_in_progress(&t, &prefix),
        1,
        "the first upload was left"
    );
    start_upload(&t, &format!("{prefix}/other-program/file"));
    assert_eq!(uploads_in_progress(&t, &prefix), 2);
    // Younger than the age asked for: kept, also where the server says every upload began
    // long ago (moto 5.2.5 gives 2010-11-10; the in-process server's upload records are
    // made as old here): the age runs from when this store first saw the upload.
    if let Some(srv) = &t.server {
        for e in std::fs::read_dir(srv.root()).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().ends_with(".metadata.json") {
                std::fs::File::options()
                    .write(true)
                    .open(e.path())
                    .unwrap()
                    .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_289_421_713))
                    .unwrap();
            }
        }
    }
    assert_eq!(
        store
            .abort_stale_uploads(Duration::from_secs(3600), is_pagelog_key)
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .abort_stale_uploads(Duration::ZERO, is_pagelog_key)
            .unwrap(),
        1
    );
    assert_eq!(
        uploads_in_progress(&t, &prefix),
        1,
        "the other program's upload stays"
    );
    assert!(store.get(key).unwrap() == big);
}

/// Found by review: an upload aborted while it was in progress (by a lifecycle rule, or by
/// another process's clean-up) failed the create with "object … not found", a lasting error.
/// It is transient: the next create, a new upload, succeeds.
#[test]
fn an_upload_aborted_under_the_uploader_is_a_transient_failure() {
    let (t, proxy, store, prefix) = rig("multipart-aborted-under");
    let big = data(6 * MIB + 3, 6);
    // Part 2 is held longer than an attempt: the SDK sends it again, by when the upload is
    // gone.
    proxy.add_rule(
        FaultRule::new(ProxyFault::Delay(SLOW))
            .method("PUT")
            .key("partNumber=2&")
            .times(1),
    );
    let key = "t0000000001/snap/00000000000000000009/part-000000.pls";
    let uploader = {
        let store = store.clone();
        let big = big.clone();
        std::thread::spawn(move || put_immutable(&*store, 1, key, &big))
    };
    // Another process's clean-up, straight to the server.
    let other = open_store(
        &format!("s3://{}/{prefix}", t.bucket),
        &StoreOptions {
            endpoint: Some(t.endpoint.clone()),
            region: Some(t.region.clone()),
            credentials: Some((t.access_key.clone(), t.secret_key.clone())),
            allow_unfenced_writes: !t.conditional_writes,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut aborted = 0;
    while aborted == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        aborted = other
            .abort_stale_uploads(Duration::ZERO, is_pagelog_key)
            .unwrap();
    }
    assert_eq!(aborted, 1, "the upload was aborted under the uploader");
    let e = uploader.join().unwrap().unwrap_err();
    proxy.clear_rules();
    println!("{e}");
    assert!(is_transient(&e), "{e}");
    put_immutable(&*store, 1, key, &big).unwrap();
    assert!(store.get(key).unwrap() == big);
}
