//! The S3 store against a real S3 protocol server: by default an in-process s3s + s3s-fs server
//! (`pagelog-s3-test-server`), or the external endpoint named by `PAGELOG_S3_TEST_ENDPOINT`
//! (CI runs these against moto). Tests that need the in-process server's fault injection or
//! counters check those only when they have it.
//!
//! Tests that need their own environment (variables the SDK reads) run this binary again as a
//! child process with that environment: see [`in_child`].
#![cfg(feature = "s3")]

use std::process::Command;
use std::time::{Duration, Instant};

use pagelog_s3_test_server::{Fault, S3Target};
use pagelog_snapshot::store::s3::S3Store;
use pagelog_snapshot::{ObjectStore, PutOutcome, StoreError, StoreOptions, open_store};

const MIB: usize = 1 << 20;

fn options(t: &S3Target) -> StoreOptions {
    StoreOptions {
        endpoint: Some(t.endpoint.clone()),
        region: Some(t.region.clone()),
        credentials: Some((t.access_key.clone(), t.secret_key.clone())),
        max_attempts: Some(3),
        attempt_timeout: Some(Duration::from_secs(30)),
        // A server without conditional writes (PAGELOG_S3_TEST_NO_CONDITIONAL=1) cannot fence;
        // the tests that need fencing skip there, the others write anyway.
        allow_unfenced_writes: !t.conditional_writes,
        ..StoreOptions::default()
    }
}

fn open(t: &S3Target, prefix: &str) -> S3Store {
    S3Store::open(&t.bucket, prefix, &options(t)).unwrap()
}

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

fn skip_without_conditional(t: &S3Target, test: &str) -> bool {
    if !t.conditional_writes {
        println!(
            "SKIPPED {test}: PAGELOG_S3_TEST_NO_CONDITIONAL=1 says {} does not honour If-None-Match",
            t.endpoint
        );
    }
    !t.conditional_writes
}

#[test]
fn put_get_range_list_delete_round_trip() {
    let t = S3Target::from_env_or_start();
    let prefix = t.unique_prefix("round-trip");
    let s = open(&t, &prefix);
    assert_eq!(
        s.describe(),
        format!("s3://{}/{prefix} ({})", t.bucket, t.endpoint)
    );

    let one = data(1000, 1);
    assert_eq!(s.put_if_absent("a/b/1", &one).unwrap(), PutOutcome::Created);
    assert_eq!(s.put_if_absent("a/c", b"x").unwrap(), PutOutcome::Created);
    assert_eq!(s.put_if_absent("z", b"").unwrap(), PutOutcome::Created);
    assert_eq!(s.get("a/b/1").unwrap(), one);
    assert_eq!(s.get("z").unwrap(), b"");

    assert_eq!(s.get_range("a/b/1", 10..20).unwrap(), &one[10..20]);
    assert_eq!(
        s.get_range("a/b/1", 990..5000).unwrap(),
        &one[990..],
        "clamped"
    );
    assert_eq!(s.get_range("a/b/1", 0..1000).unwrap(), one);
    assert!(
        s.get_range("a/b/1", 1000..1010).unwrap().is_empty(),
        "at the end"
    );
    assert!(
        s.get_range("a/b/1", 5000..6000).unwrap().is_empty(),
        "past the end"
    );
    assert!(
        s.get_range("a/b/1", 7..7).unwrap().is_empty(),
        "empty range"
    );
    assert!(s.get_range("z", 0..10).unwrap().is_empty(), "empty object");

    let keys = |p: &str| -> Vec<String> { s.list(p).unwrap().into_iter().map(|m| m.key).collect() };
    assert_eq!(keys("a/"), ["a/b/1", "a/c"]);
    assert_eq!(keys(""), ["a/b/1", "a/c", "z"]);
    assert_eq!(keys("a/b"), ["a/b/1"]);
    assert!(keys("nope/").is_empty());
    let listed = s.list("").unwrap();
    assert_eq!(listed[0].size, 1000);
    assert_eq!(listed[2].size, 0);

    // The objects live at {prefix}/{key}: a store on the bucket root sees them there.
    let root = open(&t, "");
    assert_eq!(
        root.describe(),
        format!("s3://{} ({})", t.bucket, t.endpoint)
    );
    let under: Vec<String> = root
        .list(&format!("{prefix}/"))
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        under,
        [
            format!("{prefix}/a/b/1"),
            format!("{prefix}/a/c"),
            format!("{prefix}/z")
        ]
    );
    assert_eq!(root.get(&format!("{prefix}/a/b/1")).unwrap(), one);
    // A store whose prefix is a string prefix of another's does not see the other's objects.
    let sibling = open(&t, &format!("{prefix}-sibling"));
    sibling.put_if_absent("q", b"q").unwrap();
    assert_eq!(keys(""), ["a/b/1", "a/c", "z"]);

    s.delete("a/b/1").unwrap();
    s.delete("a/b/1").unwrap();
    assert!(matches!(s.get("a/b/1"), Err(StoreError::NotFound { .. })));
    assert_eq!(keys(""), ["a/c", "z"]);
    assert!(matches!(
        s.put_if_absent("../escape", b"x"),
        Err(StoreError::Invalid { .. })
    ));

    // The same store through a URL.
    let via_url = open_store(&format!("s3://{}/{prefix}", t.bucket), &options(&t)).unwrap();
    assert_eq!(via_url.get("a/c").unwrap(), b"x");
}

#[test]
fn missing_key_is_not_found() {
    let t = S3Target::from_env_or_start();
    let prefix = t.unique_prefix("not-found");
    let s = open(&t, &prefix);
    for err in [
        s.get("no/such/key").unwrap_err(),
        s.get_range("no/such/key", 0..10).unwrap_err(),
        s.get_range("no/such/key", 3..3).unwrap_err(),
    ] {
        match &err {
            StoreError::NotFound { key, store } => {
                assert_eq!(key, "no/such/key");
                assert!(store.contains(&prefix), "{store}");
            }
            e => panic!("expected NotFound, got {e:?}"),
        }
        assert!(err.to_string().contains("no/such/key"), "{err}");
        assert!(!err.is_transient());
    }
    s.delete("no/such/key").unwrap();
}

#[test]
fn listing_crosses_pages() {
    // S3 pages listings at 1000 keys (moto and s3s-fs too), so 1100 keys need two pages.
    let t = S3Target::from_env_or_start();
    let prefix = t.unique_prefix("pages");
    let s = std::sync::Arc::new(open(&t, &prefix));
    let n = 1100;
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in (w..n).step_by(8) {
                    let key = format!("k/{i:05}");
                    assert_eq!(
                        s.put_if_absent(&key, i.to_string().as_bytes()).unwrap(),
                        PutOutcome::Created
                    );
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    s.put_if_absent("other", b"o").unwrap();
    let lists_before = t.server.as_ref().map(|srv| srv.stats().lists);
    let listed = s.list("k/").unwrap();
    let want: Vec<String> = (0..n).map(|i| format!("k/{i:05}")).collect();
    let got: Vec<String> = listed.iter().map(|m| m.key.clone()).collect();
    assert_eq!(got, want);
    assert!(
        listed
            .iter()
            .all(|m| m.size == m.key[2..].trim_start_matches('0').len().max(1) as u64)
    );
    if let (Some(srv), Some(before)) = (&t.server, lists_before) {
        assert_eq!(srv.stats().lists - before, 2, "two pages");
    }
    assert_eq!(s.list("").unwrap().len(), n + 1);
    assert_eq!(s.list("k/0100").unwrap().len(), 10);
}

#[test]
fn conditional_create_keeps_the_first_object() {
    let t = S3Target::from_env_or_start();
    if skip_without_conditional(&t, "conditional_create_keeps_the_first_object") {
        return;
    }
    let s = open(&t, &t.unique_prefix("conditional"));
    assert_eq!(s.put_if_absent("k", b"first").unwrap(), PutOutcome::Created);
    assert_eq!(
        s.put_if_absent("k", b"second, longer").unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(
        s.put_if_absent("k", b"").unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(s.get("k").unwrap(), b"first");
    if let Some(srv) = &t.server {
        // One more: the fencing check's second create of its probe, before the first create.
        assert_eq!(srv.stats().precondition_failures, 3);
    }
}

#[test]
fn racing_creates_have_one_winner() {
    let t = S3Target::from_env_or_start();
    if skip_without_conditional(&t, "racing_creates_have_one_winner") {
        return;
    }
    if !t.atomic_conditional_writes {
        println!(
            "SKIPPED racing_creates_have_one_winner: PAGELOG_S3_TEST_CONDITIONAL_NOT_ATOMIC=1 says \
             {} checks If-None-Match and then writes, so racing creates can both win",
            t.endpoint
        );
        return;
    }
    let s = std::sync::Arc::new(open(&t, &t.unique_prefix("race")));
    for round in 0..5 {
        let key = format!("race/{round}");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let (s, key, barrier) = (s.clone(), key.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    s.put_if_absent(&key, &[i; 1000]).unwrap()
                })
            })
            .collect();
        let created = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|o| *o == PutOutcome::Created)
            .count();
        assert_eq!(created, 1, "round {round}");
        let got = s.get(&key).unwrap();
        assert!(got.len() == 1000 && got.iter().all(|b| *b == got[0]));
    }
}

#[test]
fn multipart_upload_with_conditional_complete() {
    let t = S3Target::from_env_or_start();
    let opts = StoreOptions {
        multipart_threshold: Some(5 * MIB),
        ..options(&t)
    };
    let s = S3Store::open(&t.bucket, &t.unique_prefix("multipart"), &opts).unwrap();
    let big = data(12 * MIB + 123, 7);
    let before = t.server.as_ref().map(|srv| srv.stats());
    assert_eq!(s.put_if_absent("big", &big).unwrap(), PutOutcome::Created);
    if let (Some(srv), Some(b)) = (&t.server, before) {
        let a = srv.stats();
        assert_eq!(a.upload_parts - b.upload_parts, 3, "5 + 5 + 2 MiB parts");
        assert_eq!(a.completes - b.completes, 1);
        assert_eq!(
            a.puts - b.puts,
            2,
            "no single PutObject but the fencing check's two (the store's first create)"
        );
    }
    assert_eq!(s.get("big").unwrap(), big);
    assert_eq!(s.list("").unwrap()[0].size, big.len() as u64);

    if !skip_without_conditional(
        &t,
        "multipart_upload_with_conditional_complete (second half)",
    ) {
        let other = data(11 * MIB, 8);
        let before = t.server.as_ref().map(|srv| srv.stats());
        assert_eq!(
            s.put_if_absent("big", &other).unwrap(),
            PutOutcome::AlreadyExists
        );
        if let (Some(srv), Some(b)) = (&t.server, before) {
            let a = srv.stats();
            assert_eq!(a.completes - b.completes, 1, "refused at completion");
            assert_eq!(a.precondition_failures - b.precondition_failures, 1);
            assert_eq!(a.aborts - b.aborts, 1, "the refused upload is aborted");
        }
        // A small put on the multipart object's key is refused too.
        assert_eq!(
            s.put_if_absent("big", b"small").unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(s.get("big").unwrap(), big, "content unchanged");
    }
}

#[test]
fn large_objects_come_back_whole_through_parallel_ranged_gets() {
    let t = S3Target::from_env_or_start();
    let opts = StoreOptions {
        download_concurrency: Some(4),
        ..options(&t)
    };
    let s = S3Store::open(&t.bucket, &t.unique_prefix("ranged"), &opts).unwrap();
    // Above the default 16 MiB threshold: a multipart upload, then 8 MiB ranged GETs.
    let big = data(40 * MIB + 7, 9);
    assert_eq!(s.put_if_absent("big", &big).unwrap(), PutOutcome::Created);
    let before = t.server.as_ref().map(|srv| srv.stats());
    let got = s.get("big").unwrap();
    assert!(got == big, "whole object differs");
    if let (Some(srv), Some(b)) = (&t.server, before) {
        let a = srv.stats();
        assert_eq!(
            a.ranged_gets - b.ranged_gets,
            6,
            "ceil(40 MiB + 7 / 8 MiB) GETs"
        );
        assert_eq!(a.gets - b.gets, 6);
    }
    let r = (7 * MIB as u64 + 3)..(25 * MIB as u64 + 11);
    assert!(s.get_range("big", r.clone()).unwrap() == big[r.start as usize..r.end as usize]);
    let tail = (39 * MIB as u64)..u64::MAX;
    assert!(s.get_range("big", tail).unwrap() == big[39 * MIB..]);
    assert_eq!(
        s.get_range("big", 40 * MIB as u64..41 * MIB as u64)
            .unwrap(),
        &big[40 * MIB..]
    );
}

/// Read a whole object through `get_reader`, in reads of odd sizes.
fn read_streamed(s: &S3Store, key: &str) -> Result<Vec<u8>, StoreError> {
    let mut r = s.get_reader(key)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_001];
    loop {
        match std::io::Read::read(&mut r, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return Err(StoreError::from_io(e).expect("a store error")),
        }
    }
}

#[test]
fn streamed_reads_return_the_whole_object_chunk_by_chunk() {
    let t = S3Target::from_env_or_start();
    let s = open(&t, &t.unique_prefix("stream"));
    // Empty, small, exactly one 1 MiB chunk, one byte more, and several chunks.
    for (i, len) in [0, 1, 1000, MIB, MIB + 1, 3 * MIB + MIB / 2]
        .into_iter()
        .enumerate()
    {
        let key = format!("o{i}");
        let v = data(len, i as u64);
        s.put_if_absent(&key, &v).unwrap();
        let before = t.server.as_ref().map(|srv| srv.stats());
        let got = read_streamed(&s, &key).unwrap();
        assert!(got == v, "object of {len} bytes differs when streamed");
        if let (Some(srv), Some(b)) = (&t.server, before) {
            let gets = srv.stats().gets - b.gets;
            let chunks = len.div_ceil(MIB).max(1) as u64;
            // The empty object takes a ranged GET (416) and a plain one.
            let want = if len == 0 { 2 } else { chunks };
            assert_eq!(gets, want, "GETs for {len} bytes");
        }
    }
    let err = s.get_reader("missing").err().expect("missing object");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    // Dropping a reader part way is fine (its downloads are cancelled).
    let mut r = s.get_reader("o5").unwrap();
    let mut buf = [0u8; 10];
    std::io::Read::read_exact(&mut r, &mut buf).unwrap();
    drop(r);
    assert!(read_streamed(&s, "o5").unwrap() == data(3 * MIB + MIB / 2, 5));
}

#[test]
fn streamed_reads_retry_short_chunks_and_fail_loudly() {
    let t = S3Target::from_env_or_start();
    let Some(srv) = &t.server else {
        println!(
            "SKIPPED streamed_reads_retry_short_chunks_and_fail_loudly: needs the in-process server's faults"
        );
        return;
    };
    let s = open(&t, &t.unique_prefix("stream-short")); // 3 attempts
    let v = data(2 * MIB + 5, 4);
    s.put_if_absent("k", &v).unwrap();
    // A chunk cut short once is fetched again: the reader sees the whole object.
    srv.inject(Fault::TruncateGets(1));
    assert!(read_streamed(&s, "k").unwrap() == v);
    // Every attempt cut short: an error naming the key, never a short object.
    srv.inject(Fault::TruncateGets(3));
    match read_streamed(&s, "k") {
        Err(StoreError::Unavailable { key, .. }) => assert_eq!(key, "k"),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    assert!(read_streamed(&s, "k").unwrap() == v);
}

#[test]
fn missing_bucket_is_no_such_bucket() {
    let t = S3Target::from_env_or_start();
    let bucket = "pagelog-no-such-bucket-4242";
    let s = S3Store::open(bucket, "p", &options(&t)).unwrap();
    let errors = [
        s.put_if_absent("k", b"x").unwrap_err(),
        s.get("k").unwrap_err(),
        s.list("").unwrap_err(),
    ];
    for err in errors {
        match &err {
            StoreError::NoSuchBucket {
                bucket: b,
                endpoint,
            } => {
                assert_eq!(b, bucket);
                assert_eq!(endpoint, &t.endpoint);
            }
            e => panic!("expected NoSuchBucket, got {e:?}"),
        }
        assert!(err.to_string().contains(bucket), "{err}");
        assert!(!err.is_transient());
    }
}

/// A server on a local port that gives every request (a head without a body) the same
/// `answer`. Returns its endpoint.
/// A server that answers each request head (the requests sent to it have no body) with what
/// `answer` makes of the head.
fn scripted_server(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let mut seen = Vec::new();
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_string();
                        seen.drain(..end + 4);
                        let _ = c.write_all(&answer(&head));
                    }
                }
            });
        }
    });
    endpoint
}

fn fixed_answer_server(answer: &'static [u8]) -> String {
    scripted_server(move |_| answer.to_vec())
}

fn store_at(endpoint: &str, bucket: &str) -> S3Store {
    let opts = StoreOptions {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        credentials: Some(("AKIDFIXED".into(), "fixed-answer-secret".into())),
        max_attempts: Some(1),
        ..StoreOptions::default()
    };
    S3Store::open(bucket, "p", &opts).unwrap()
}

fn fixed_answer_store(answer: &'static [u8], bucket: &str) -> (S3Store, String) {
    let endpoint = fixed_answer_server(answer);
    (store_at(&endpoint, bucket), endpoint)
}

/// A server that answers every request with a bare 404 (no body, no error code), as some
/// answer for a missing bucket: a listing reports the bucket, a GET the key.
#[test]
fn a_bare_404_to_a_listing_is_no_such_bucket() {
    let (s, endpoint) = fixed_answer_store(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        "bare-bucket",
    );
    match s.list("") {
        Err(StoreError::NoSuchBucket {
            bucket,
            endpoint: e,
        }) => {
            assert_eq!(bucket, "bare-bucket");
            assert_eq!(e, endpoint);
        }
        other => panic!("expected NoSuchBucket, got {other:?}"),
    }
    assert!(matches!(s.get("k"), Err(StoreError::NotFound { .. })));
}

/// A bare 408 (the server gave up waiting) or 409 (a conflicting operation in progress) says
/// "try again": transient, so a shipper's first attach waits for the store instead of failing
/// the database's open.
#[test]
fn bare_408_and_409_are_transient() {
    for (answer, status) in [
        (
            &b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..],
            "408",
        ),
        (
            &b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n"[..],
            "409",
        ),
    ] {
        let (s, _) = fixed_answer_store(answer, "bare-bucket");
        for err in [s.get("k").unwrap_err(), s.list("").unwrap_err()] {
            assert!(err.is_transient(), "{status}: {err:?}");
            assert!(
                matches!(err, StoreError::Unavailable { .. }),
                "{status}: {err:?}"
            );
        }
    }
}

/// A 409 whose code says the bucket is in a state a retry does not change is not transient;
/// a conflicting operation in progress is.
#[test]
fn a_409_is_transient_only_for_a_conflict_in_progress() {
    for (code, transient) in [
        ("InvalidBucketState", false),
        ("BucketNotEmpty", false),
        ("OperationAborted", true),
        ("ConditionalRequestConflict", true),
    ] {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>test</Message></Error>"
        );
        let head = format!(
            "HTTP/1.1 409 Conflict\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // A HEAD is answered without the body.
        let endpoint = scripted_server(move |req| match req.starts_with("HEAD ") {
            true => head.clone().into_bytes(),
            false => format!("{head}{body}").into_bytes(),
        });
        let s = store_at(&endpoint, "conflict-bucket");
        for err in [s.get("k").unwrap_err(), s.list("").unwrap_err()] {
            assert_eq!(err.is_transient(), transient, "{code}: {err:?}");
            assert!(err.to_string().contains(code), "{code}: {err}");
        }
        // A conditional create too (its 409 is settled by a HEAD only when it is a conflict).
        let err = s.put_if_absent("k", b"x").unwrap_err();
        assert_eq!(err.is_transient(), transient, "{code}: put: {err:?}");
    }
}

/// A server that answers ranges without the object's size (`bytes 0-9/*`) cannot be read in
/// ranges: a clear error that is not worth retrying (the answer will not change).
#[test]
fn a_content_range_without_a_size_is_a_lasting_error() {
    let (s, _) = fixed_answer_store(
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-4/*\r\nContent-Length: 5\r\n\r\nhello",
        "star-bucket",
    );
    for err in [s.get("k").unwrap_err(), read_streamed(&s, "k").unwrap_err()] {
        assert!(!err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("size"), "{err}");
    }
}

/// A server that gives weak ETags (`W/"…"`), which never match under `If-Match`: the later
/// ranges of a large object are read without the check, instead of failing (412) on every
/// try forever.
#[test]
fn an_object_with_a_weak_etag_reads_in_ranges() {
    let total: usize = (8 << 20) + 100;
    let content = |i: usize| (i % 251) as u8;
    let endpoint = scripted_server(move |head| {
        let lower = head.to_ascii_lowercase();
        if lower.contains("\r\nif-match:") {
            return b"HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\n\r\n".to_vec();
        }
        let (a, b) = lower
            .lines()
            .find_map(|l| l.strip_prefix("range: bytes="))
            .and_then(|r| r.trim().split_once('-'))
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .unwrap_or((0, total - 1));
        let b = b.min(total - 1);
        let mut out = format!(
            "HTTP/1.1 206 Partial Content\r\nETag: W/\"weak-1\"\r\n\
             Content-Range: bytes {a}-{b}/{total}\r\nContent-Length: {}\r\n\r\n",
            b - a + 1
        )
        .into_bytes();
        out.extend((a..=b).map(content));
        out
    });
    let s = store_at(&endpoint, "weak-bucket");
    let want: Vec<u8> = (0..total).map(content).collect();
    assert!(s.get("k").unwrap() == want, "whole read");
    assert!(read_streamed(&s, "k").unwrap() == want, "streamed read");
}

/// A server (or a proxy) that answers a ranged GET with another range than the one asked for:
/// an error naming the key, never the wrong bytes, and a transient one (the next try may get
/// the right answer).
#[test]
fn a_range_other_than_asked_for_is_transient() {
    let (s, _) = fixed_answer_store(
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 5-9/100\r\nContent-Length: 5\r\n\r\nhello",
        "range-bucket",
    );
    let errors = [
        s.get("k").unwrap_err(),
        s.get_range("k", 0..10).unwrap_err(),
        read_streamed(&s, "k").unwrap_err(),
    ];
    for err in errors {
        match &err {
            StoreError::Unavailable { key, message, .. } => {
                assert_eq!(key, "k");
                assert!(message.contains("asked for bytes 0-"), "{err}");
            }
            e => panic!("expected Unavailable, got {e:?}"),
        }
        assert!(err.is_transient());
    }
}

#[test]
fn wrong_credentials_are_access_denied_and_never_printed() {
    let t = S3Target::from_env_or_start();
    if t.is_external() && std::env::var("PAGELOG_S3_TEST_NO_AUTH").as_deref() == Ok("1") {
        println!(
            "SKIPPED wrong_credentials_are_access_denied_and_never_printed: \
             PAGELOG_S3_TEST_NO_AUTH=1 says {} accepts any credentials",
            t.endpoint
        );
        return;
    }
    let wrong_secret = "wrong-secret-DO-NOT-PRINT-31337";
    let cases = [
        (t.access_key.clone(), wrong_secret.to_string()),
        ("AKIDNOSUCHKEY0000000".to_string(), wrong_secret.to_string()),
    ];
    for creds in cases {
        let opts = StoreOptions {
            credentials: Some(creds.clone()),
            ..options(&t)
        };
        let s = S3Store::open(&t.bucket, "denied", &opts).unwrap();
        assert!(!format!("{s:?}").contains(wrong_secret));
        let started = Instant::now();
        for err in [
            s.put_if_absent("k", b"x").unwrap_err(),
            s.get("k").unwrap_err(),
            s.list("").unwrap_err(),
        ] {
            assert!(
                matches!(err, StoreError::AccessDenied { .. }),
                "expected AccessDenied, got {err:?}"
            );
            let (display, debug) = (err.to_string(), format!("{err:?}"));
            for text in [&display, &debug] {
                assert!(!text.contains(wrong_secret), "secret in {text}");
                assert!(!text.contains(&t.secret_key), "secret in {text}");
            }
            assert!(display.contains(&t.endpoint), "{display}");
            assert!(!err.is_transient());
        }
        // Refusals are not retried.
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

/// A port that nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn unreachable_endpoint_is_unavailable_quickly() {
    let warnings = captured_warnings();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let opts = StoreOptions {
        endpoint: Some(endpoint.clone()),
        region: Some("us-east-1".into()),
        credentials: Some(("id".into(), "secret".into())),
        max_attempts: Some(2),
        attempt_timeout: Some(Duration::from_secs(2)),
        ..StoreOptions::default()
    };
    let s = S3Store::open("some-bucket", "p", &opts).unwrap();
    let started = Instant::now();
    for err in [
        s.get("k").unwrap_err(),
        s.put_if_absent("k", b"x").unwrap_err(),
    ] {
        match &err {
            StoreError::Unavailable {
                endpoint: e, key, ..
            } => {
                assert_eq!(e, &endpoint);
                // A create first runs the fencing check, which names its probe object.
                assert!(key == "k" || key.starts_with("pagelog-probe/"), "{key}");
            }
            e => panic!("expected Unavailable, got {e:?}"),
        }
        assert!(err.is_transient());
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The fencing check's probe was never created (the connection was refused): no warning
    // that it could not be deleted.
    let port = endpoint.rsplit(':').next().unwrap().to_string();
    let probe_warnings: Vec<String> = warnings
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.contains("probe") && w.contains(&port))
        .cloned()
        .collect();
    assert!(probe_warnings.is_empty(), "{probe_warnings:?}");
}

#[test]
fn a_server_that_never_answers_times_out() {
    // Connections are accepted (by the kernel's backlog) but never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let opts = StoreOptions {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        credentials: Some(("id".into(), "secret".into())),
        max_attempts: Some(2),
        attempt_timeout: Some(Duration::from_secs(1)),
        ..StoreOptions::default()
    };
    let s = S3Store::open("some-bucket", "", &opts).unwrap();
    let started = Instant::now();
    let err = s.get("k").unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn transient_server_errors_are_retried() {
    let t = S3Target::from_env_or_start();
    let Some(srv) = &t.server else {
        println!(
            "SKIPPED transient_server_errors_are_retried: needs the in-process server's faults"
        );
        return;
    };
    let s = open(&t, &t.unique_prefix("retries")); // 3 attempts
    srv.inject(Fault::Unavailable(2));
    assert_eq!(s.put_if_absent("k", b"v").unwrap(), PutOutcome::Created);
    srv.inject(Fault::Unavailable(2));
    assert_eq!(s.get("k").unwrap(), b"v");
    assert_eq!(srv.stats().faults, 4);
    srv.inject(Fault::Unavailable(3));
    let err = s.get("k").unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("SlowDown"), "{err}");
    assert!(err.is_transient());
    assert_eq!(s.get("k").unwrap(), b"v");
}

#[test]
fn a_short_body_is_never_returned() {
    let t = S3Target::from_env_or_start();
    let Some(srv) = &t.server else {
        println!("SKIPPED a_short_body_is_never_returned: needs the in-process server's faults");
        return;
    };
    let s = open(&t, &t.unique_prefix("short")); // 3 attempts
    let v = data(300_000, 3);
    s.put_if_absent("k", &v).unwrap();
    // One cut-short body: fetched again, and the caller gets the whole object.
    srv.inject(Fault::TruncateGets(1));
    assert!(s.get("k").unwrap() == v);
    srv.inject(Fault::TruncateGets(1));
    assert!(s.get_range("k", 1000..200_000).unwrap() == v[1000..200_000]);
    // Every attempt cut short: an error, not half the object.
    srv.inject(Fault::TruncateGets(3));
    let err = s.get("k").unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert_eq!(srv.stats().faults, 5);
    assert!(s.get("k").unwrap() == v);
}

#[test]
fn runs_on_a_callers_runtime_and_drops_anywhere() {
    let t = S3Target::from_env_or_start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let opts = StoreOptions {
        runtime: Some(rt.handle().clone()),
        ..options(&t)
    };
    let prefix = t.unique_prefix("runtime");
    let s = std::sync::Arc::new(S3Store::open(&t.bucket, &prefix, &opts).unwrap());
    s.put_if_absent("a", b"1").unwrap();
    // From spawn_blocking inside the caller's runtime.
    let s2 = s.clone();
    let got = rt
        .block_on(async move { tokio::task::spawn_blocking(move || s2.get("a")).await })
        .unwrap()
        .unwrap();
    assert_eq!(got, b"1");
    drop(s);
    // A store with its own runtime can be dropped inside an async context.
    let own = S3Store::open(&t.bucket, &prefix, &options(&t)).unwrap();
    let own = rt
        .block_on(async move {
            tokio::task::spawn_blocking(move || {
                assert_eq!(own.get("a").unwrap(), b"1");
                own
            })
            .await
        })
        .unwrap();
    rt.block_on(async move { drop(own) });
}

#[test]
fn a_current_thread_runtime_is_refused() {
    let t = S3Target::from_env_or_start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = StoreOptions {
        runtime: Some(rt.handle().clone()),
        ..options(&t)
    };
    match S3Store::open(&t.bucket, &t.unique_prefix("current-thread"), &opts) {
        Err(e @ StoreError::Invalid { .. }) => {
            assert!(e.to_string().contains("current-thread"), "{e}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// A store method called from an async task on the store's own one-worker runtime: without
/// `block_in_place` the task holds the only worker while it waits for a request that needs
/// that worker to run, and never returns. Run on a thread, so that a hang fails the test.
#[test]
fn called_from_an_async_task_on_its_own_runtime_it_returns() {
    let t = S3Target::from_env_or_start();
    let prefix = t.unique_prefix("async-caller");
    let (tx, rx) = std::sync::mpsc::channel();
    let opts = options(&t);
    let bucket = t.bucket.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let opts = StoreOptions {
            runtime: Some(rt.handle().clone()),
            ..opts
        };
        let r = rt.block_on(async move {
            tokio::spawn(async move {
                let s = S3Store::open(&bucket, &prefix, &opts)?;
                s.put_if_absent("k", b"v")?;
                let mut all = s.get("k")?;
                // A streamed read waits chunk by chunk on the same runtime.
                let mut r = s.get_reader("k")?;
                std::io::Read::read_to_end(&mut r, &mut all).map_err(|e| StoreError::Other {
                    store: String::new(),
                    key: "k".into(),
                    message: e.to_string(),
                })?;
                Ok::<_, StoreError>(all)
            })
            .await
        });
        let _ = tx.send(r);
        rt.shutdown_background();
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(Ok(all))) => assert_eq!(all, b"vv"),
        Ok(other) => panic!("{other:?}"),
        Err(_) => panic!("a store call from an async task on its own runtime hung"),
    }
}

/// A caller inside a current-thread runtime that entered a multi-thread runtime's handle:
/// `block_in_place` refuses that thread, and the store waits plainly instead of panicking.
/// Outside any task the refusal goes through the panic hook once for the thread, not on every
/// call; inside a task it is asked again each time, since a thread that polls tasks may be a
/// multi-thread runtime's worker later (run in a child process, whose panic hook this test
/// may replace).
#[test]
fn a_call_from_a_current_thread_runtime_with_another_handle_entered_works() {
    if !in_child(
        "a_call_from_a_current_thread_runtime_with_another_handle_entered_works",
        &[],
        &[],
    ) {
        return;
    }
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    std::panic::set_hook(Box::new(|_| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    let t = S3Target::from_env_or_start();
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let opts = StoreOptions {
        runtime: Some(mt.handle().clone()),
        ..options(&t)
    };
    let s =
        std::sync::Arc::new(S3Store::open(&t.bucket, &t.unique_prefix("entered"), &opts).unwrap());
    s.put_if_absent("k", b"v").unwrap();
    let ct = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let panics = || PANICS.load(std::sync::atomic::Ordering::SeqCst);
    let got = ct.block_on(async {
        let _entered = mt.handle().enter();
        (0..3).map(|_| s.get("k")).collect::<Vec<_>>()
    });
    assert_eq!(panics(), 1, "outside a task: refused once, then remembered");
    // A task of the current-thread runtime, on the same thread.
    let (s2, h) = (s.clone(), mt.handle().clone());
    let in_task = ct
        .block_on(async move {
            tokio::spawn(async move {
                let _entered = h.enter();
                (0..2).map(|_| s2.get("k")).collect::<Vec<_>>()
            })
            .await
        })
        .unwrap();
    assert_eq!(panics(), 3, "inside a task: asked each time");
    for g in got.into_iter().chain(in_task) {
        assert_eq!(g.unwrap(), b"v");
    }
    let _ = std::panic::take_hook();
}

/// With an endpoint of its own and no region anywhere, the store does not ask EC2's instance
/// metadata service for one (a timeout and a screen of warnings off EC2): no warning at all
/// while it opens and works.
#[test]
fn a_custom_endpoint_without_a_region_asks_no_instance_metadata() {
    // A home without AWS config files (a missing file named by AWS_CONFIG_FILE is a warning).
    let home = tempfile::tempdir().unwrap();
    if !in_child(
        "a_custom_endpoint_without_a_region_asks_no_instance_metadata",
        &[("HOME", home.path().to_str().unwrap())],
        &[
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_PROFILE",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_EC2_METADATA_DISABLED",
        ],
    ) {
        return;
    }
    let warnings = captured_warnings();
    let t = S3Target::from_env_or_start();
    let opts = StoreOptions {
        region: None,
        ..options(&t)
    };
    let started = Instant::now();
    let s = S3Store::open(&t.bucket, &t.unique_prefix("no-region"), &opts).unwrap();
    assert_eq!(s.put_if_absent("k", b"v").unwrap(), PutOutcome::Created);
    let took = started.elapsed();
    let w = warnings.lock().unwrap();
    assert!(w.is_empty(), "warnings: {w:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn bad_endpoint_is_invalid() {
    let opts = StoreOptions {
        endpoint: Some("ftp://127.0.0.1:1".into()),
        ..StoreOptions::default()
    };
    assert!(matches!(
        S3Store::open("bucket", "", &opts),
        Err(StoreError::Invalid { .. })
    ));
}

// ---- tests that need their own environment ----

/// In the parent: run this test binary again, only `test`, with `set` added to and `remove`
/// removed from the environment, and require that it passed. In that child: return true, and
/// the caller runs the test's body.
fn in_child(test: &str, set: &[(&str, &str)], remove: &[&str]) -> bool {
    if std::env::var("PAGELOG_S3_TEST_CHILD").as_deref() == Ok(test) {
        return true;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("PAGELOG_S3_TEST_CHILD", test);
    for (k, v) in set {
        cmd.env(k, v);
    }
    for k in remove {
        cmd.env_remove(k);
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {test} failed:\n{stdout}\n{stderr}"
    );
    false
}

#[test]
fn plain_http_works_with_a_missing_ca_bundle() {
    if !in_child(
        "plain_http_works_with_a_missing_ca_bundle",
        &[
            ("AWS_CA_BUNDLE", "/nonexistent/ca-bundle.pem"),
            ("SSL_CERT_FILE", "/nonexistent/cert.pem"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
        &[],
    ) {
        return;
    }
    let t = S3Target::from_env_or_start();
    let s = open(&t, &t.unique_prefix("ca-bundle"));
    assert_eq!(s.put_if_absent("k", b"v").unwrap(), PutOutcome::Created);
    assert_eq!(s.get("k").unwrap(), b"v");
}

#[test]
fn endpoint_from_aws_endpoint_url_s3_uses_path_style() {
    // The child reads the endpoint from the environment: the target is started (or named) in
    // the parent and handed down.
    if std::env::var("PAGELOG_S3_TEST_CHILD").is_err() {
        let t = S3Target::from_env_or_start();
        let prefix = t.unique_prefix("env-endpoint");
        let parent = open(&t, &prefix);
        parent.put_if_absent("from-parent", b"p").unwrap();
        in_child(
            "endpoint_from_aws_endpoint_url_s3_uses_path_style",
            &[
                ("AWS_ENDPOINT_URL_S3", t.endpoint.as_str()),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
                // A plain http endpoint from the environment needs no CA either.
                ("AWS_CA_BUNDLE", "/nonexistent/ca-bundle.pem"),
                ("SSL_CERT_FILE", "/nonexistent/cert.pem"),
                ("SSL_CERT_DIR", "/nonexistent"),
                ("PAGELOG_CHILD_BUCKET", t.bucket.as_str()),
                ("PAGELOG_CHILD_PREFIX", prefix.as_str()),
                ("PAGELOG_CHILD_KEY_ID", t.access_key.as_str()),
                ("PAGELOG_CHILD_SECRET", t.secret_key.as_str()),
            ],
            &["PAGELOG_S3_TEST_ENDPOINT"],
        );
        assert_eq!(parent.get("from-child").unwrap(), b"c");
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap();
    let opts = StoreOptions {
        region: Some("us-east-1".into()),
        credentials: Some((var("PAGELOG_CHILD_KEY_ID"), var("PAGELOG_CHILD_SECRET"))),
        max_attempts: Some(2),
        ..StoreOptions::default()
    };
    let s = S3Store::open(
        &var("PAGELOG_CHILD_BUCKET"),
        &var("PAGELOG_CHILD_PREFIX"),
        &opts,
    )
    .unwrap();
    assert!(
        s.describe().contains(&var("AWS_ENDPOINT_URL_S3")),
        "{}",
        s.describe()
    );
    assert_eq!(s.get("from-parent").unwrap(), b"p");
    s.put_if_absent("from-child", b"c").unwrap();
}

#[test]
fn missing_credentials_are_access_denied() {
    if !in_child(
        "missing_credentials_are_access_denied",
        &[
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent/config"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ],
        &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ],
    ) {
        return;
    }
    let t = S3Target::from_env_or_start();
    let opts = StoreOptions {
        credentials: None,
        ..options(&t)
    };
    let s = S3Store::open(&t.bucket, "p", &opts).unwrap();
    let started = Instant::now();
    let err = s.get("k").unwrap_err();
    assert!(matches!(err, StoreError::AccessDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("credentials"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// WARN events logged anywhere in this process (the store logs on its runtime's threads), as
/// text: installed once as the global subscriber.
fn captured_warnings() -> &'static std::sync::Mutex<Vec<String>> {
    use std::sync::{Mutex, OnceLock};
    use tracing::field::{Field, Visit};

    static WARNINGS: OnceLock<&'static Mutex<Vec<String>>> = OnceLock::new();
    struct Capture(&'static Mutex<Vec<String>>);
    struct Text(String);
    impl Visit for Text {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }
    impl tracing::Subscriber for Capture {
        fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
            *m.level() <= tracing::Level::WARN
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &tracing::Event<'_>) {
            let mut t = Text(String::new());
            e.record(&mut t);
            self.0.lock().unwrap().push(t.0);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    WARNINGS.get_or_init(|| {
        let w: &'static Mutex<Vec<String>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        tracing::subscriber::set_global_default(Capture(w)).expect("no other global subscriber");
        w
    })
}

/// An in-process server that ignores `If-None-Match` (as s3rver does), or `None` against an
/// external server (it cannot be told to).
fn ignoring_server(test: &str) -> Option<S3Target> {
    let t = S3Target::from_env_or_start();
    match &t.server {
        Some(s) => s.ignore_if_none_match(true),
        None => {
            println!("SKIPPED {test}: needs the in-process server");
            return None;
        }
    }
    Some(t)
}

#[test]
fn a_server_ignoring_if_none_match_is_refused_before_any_write() {
    let Some(t) = ignoring_server("a_server_ignoring_if_none_match_is_refused_before_any_write")
    else {
        return;
    };
    let s = open(&t, &t.unique_prefix("no-conditional"));
    for _ in 0..2 {
        match s.put_if_absent("t0000000001/timeline.plt", b"claim") {
            Err(e @ StoreError::ConditionalWritesUnsupported { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("does not honour If-None-Match")
                        && msg.contains("could not be fenced")
                        && msg.contains(&t.endpoint),
                    "{msg}"
                );
                assert!(!e.is_transient());
            }
            other => panic!("expected ConditionalWritesUnsupported, got {other:?}"),
        }
    }
    // Nothing written, the probe deleted; the verdict kept (one probe: 2 PUTs).
    assert_eq!(s.list("").unwrap(), vec![]);
    let st = t.server.as_ref().unwrap().stats();
    assert_eq!(st.puts, 2, "{st:?}");
}

#[test]
fn allow_unfenced_writes_writes_to_an_ignoring_server_with_a_warning() {
    let warnings = captured_warnings();
    let Some(t) =
        ignoring_server("allow_unfenced_writes_writes_to_an_ignoring_server_with_a_warning")
    else {
        return;
    };
    let prefix = t.unique_prefix("unfenced-allowed");
    let opts = StoreOptions {
        allow_unfenced_writes: true,
        ..options(&t)
    };
    let s = S3Store::open(&t.bucket, &prefix, &opts).unwrap();
    assert_eq!(s.put_if_absent("a", b"one").unwrap(), PutOutcome::Created);
    // Without fencing a second create overwrites: the very thing the check is about.
    assert_eq!(s.put_if_absent("a", b"two").unwrap(), PutOutcome::Created);
    assert_eq!(s.get("a").unwrap(), b"two");
    // One probe (2 PUTs) for the store, then one PUT per create.
    assert_eq!(t.server.as_ref().unwrap().stats().puts, 4);
    let w = warnings.lock().unwrap();
    assert!(
        w.iter()
            .any(|m| m.contains("does not honour If-None-Match") && m.contains(&prefix)),
        "no warning naming {prefix}: {w:?}"
    );
}

#[test]
fn a_server_honouring_if_none_match_passes_the_fencing_check_once() {
    let t = S3Target::from_env_or_start();
    if skip_without_conditional(
        &t,
        "a_server_honouring_if_none_match_passes_the_fencing_check_once",
    ) {
        return;
    }
    let s = open(&t, &t.unique_prefix("fencing-check"));
    assert_eq!(s.put_if_absent("a", b"one").unwrap(), PutOutcome::Created);
    assert_eq!(s.put_if_absent("b", b"two").unwrap(), PutOutcome::Created);
    assert_eq!(
        s.put_if_absent("a", b"three").unwrap(),
        PutOutcome::AlreadyExists
    );
    // The probe is gone: only our objects are listed.
    let keys: Vec<String> = s.list("").unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(keys, ["a", "b"]);
    if let Some(server) = &t.server {
        let st = server.stats();
        // Two PUTs of the probe (the second refused with 412), then three creates.
        assert_eq!((st.puts, st.precondition_failures), (5, 2), "{st:?}");
    }
}

#[test]
fn a_refused_listing_names_the_bucket_and_prefix() {
    let t = S3Target::from_env_or_start();
    let prefix = t.unique_prefix("refused-listing");
    let opts = StoreOptions {
        credentials: Some((t.access_key.clone(), "not-the-secret".into())),
        ..options(&t)
    };
    let s = S3Store::open(&t.bucket, &prefix, &opts).unwrap();
    match s.list("") {
        Err(e @ StoreError::AccessDenied { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("s3://{}/{prefix}/", t.bucket)),
                "{msg}"
            );
        }
        // An external server that accepts any credentials.
        Err(e) => panic!("expected AccessDenied, got {e:?}"),
        Ok(_) => println!(
            "SKIPPED a_refused_listing_names_the_bucket_and_prefix: {} accepts any credentials",
            t.endpoint
        ),
    }
}
