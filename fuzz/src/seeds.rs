//! The seed corpora: valid inputs for every fuzz target made by the real encoders (the log
//! writer on a simulated disk, the VFS record encoder, the snapshot object encoders), plus a few
//! edge cases. Deterministic: fixed ids, timestamps and pseudo-random bytes.
//!
//! The committed copies live in `fuzz/corpus/<target>/seed-<name>`. Regenerate them with
//! `cargo test --release --workspace --test fuzz_corpus -- --ignored write_seed_corpus`
//! (which writes every seed below); the non-ignored tests there check that each committed seed
//! is still accepted (or rejected) as listed here.

use std::path::Path;

use pagelog_log::fs::{Fs, SimFs};
use pagelog_log::{Log, LogOptions};
use pagelog_snapshot::bookmark::Bookmark;
use pagelog_snapshot::format::{
    BatchBuilder, Manifest, ManifestPart, TimelineInfo, batch_key, encode_gap_batch, encode_part,
    manifest_key, part_key, timeline_key,
};
use pagelog_snapshot::time::format_us;
use pagelog_vfs::record::{CheckpointMark, begin_txn, finish_txn, push_page};

use crate::targets::{FIX_BODY_CRC, FIX_HEADER_CRC, NAME_BY_INDEX, Outcome};

/// One seed input.
#[derive(Debug, Clone)]
pub struct Seed {
    /// Fuzz target it belongs to.
    pub target: &'static str,
    /// File name in `fuzz/corpus/<target>/` (without the `seed-` prefix).
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
    /// What the target must do with it.
    pub expect: Outcome,
}

const DB_ID: u128 = 0x5eed_0000_1111_2222_3333_4444_5555_6666;
const TS: u64 = 1_795_000_000_000_000;

/// Deterministic pseudo-random bytes (xorshift).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn txn_payload(page_size: u32, pages: &[(u32, u8)], db_pages: u32) -> Vec<u8> {
    let mut out = Vec::new();
    begin_txn(&mut out, page_size, db_pages);
    for &(pgno, fill) in pages {
        let mut page = vec![fill; page_size as usize];
        page[..8].copy_from_slice(&(pgno as u64).to_le_bytes());
        push_page(&mut out, pgno, &page);
    }
    finish_txn(&mut out, 0x0123_4567_89ab_cdef, pages.len() as u32);
    out
}

fn checkpoint_payload(lsn: u64) -> Vec<u8> {
    CheckpointMark {
        lsn,
        page_size: 512,
        db_pages: 3,
        checksum: 42,
    }
    .encode()
    .to_vec()
}

/// Segment files of a log holding `payloads`, written by the real log writer on a simulated
/// disk, in LSN order. The creation time in each header is pinned (and the header resealed) so
/// that the bytes do not depend on the clock.
fn log_segments(segment_size: u64, payloads: &[(u16, Vec<u8>)]) -> Vec<Vec<u8>> {
    let fs = SimFs::default();
    let dir = Path::new("/seed/log");
    let log = Log::open(
        fs.shared(),
        dir,
        LogOptions {
            segment_size,
            database_id: Some(DB_ID),
            preallocate: false,
            background_flush: false,
            ..LogOptions::default()
        },
    )
    .expect("open a log on the simulated disk");
    for (i, (kind, p)) in payloads.iter().enumerate() {
        log.append_with_timestamp(*kind, p, TS + i as u64 * 1000)
            .expect("append");
        // One sync per record, so that each record's synced hint names the one before it.
        log.flush().expect("flush");
    }
    log.close().expect("close");
    let mut names: Vec<String> = fs
        .list(dir)
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".seg") && !n.starts_with("recycle-"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let mut b = fs.read_file(&dir.join(n)).expect("segment bytes");
            b[48..56].copy_from_slice(&TS.to_le_bytes());
            let crc = crc32fast::hash(&b[..60]);
            b[60..64].copy_from_slice(&crc.to_le_bytes());
            b
        })
        .collect()
}

fn with_flags(flags: u8, obj: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(obj);
    v
}

/// Every seed, for every target.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>, expect: Outcome| {
        out.push(Seed {
            target,
            name: name.to_string(),
            bytes,
            expect,
        })
    };
    use Outcome::{Accepted, Rejected};
    let both = FIX_HEADER_CRC | FIX_BODY_CRC;

    // log_segment
    let payloads: Vec<(u16, Vec<u8>)> = vec![
        (1, txn_payload(512, &[(1, 0xaa), (3, 0x55)], 3)),
        (2, checkpoint_payload(1)),
        (9, b"tiny".to_vec()),
    ];
    let one = log_segments(1 << 20, &payloads);
    assert_eq!(one.len(), 1, "one segment");
    let seg = &one[0];
    add("log_segment", "three-records", with_flags(0, seg), Accepted);
    add(
        "log_segment",
        "three-records-fixcrc",
        with_flags(both, seg),
        Accepted,
    );
    add(
        "log_segment",
        "header-only",
        with_flags(0, &seg[..64]),
        Accepted,
    );
    let cut = seg.len() - 3;
    add(
        "log_segment",
        "torn-tail",
        with_flags(0, &seg[..cut]),
        Accepted,
    );
    let mut zero_tail = seg.clone();
    zero_tail.extend_from_slice(&[0u8; 100]);
    add(
        "log_segment",
        "zero-tail",
        with_flags(0, &zero_tail),
        Accepted,
    );
    let mut flipped = seg.clone();
    flipped[64 + 40 + 10] ^= 0xff; // inside the first payload: synced data damaged
    add(
        "log_segment",
        "damaged-first-record",
        with_flags(0, &flipped),
        Rejected,
    );
    let many: Vec<(u16, Vec<u8>)> = (0..6)
        .map(|i| (1, txn_payload(512, &[(i + 1, i as u8)], 6)))
        .collect();
    let segs = log_segments(1500, &many);
    assert!(segs.len() >= 2, "several segments");
    add(
        "log_segment",
        "several-segments",
        with_flags(both, &segs.concat()),
        Accepted,
    );
    add(
        "log_segment",
        "several-segments-by-index",
        with_flags(both | NAME_BY_INDEX, &segs.concat()),
        Rejected,
    );
    add("log_segment", "empty", vec![0], Accepted);
    add(
        "log_segment",
        "garbage",
        with_flags(0, b"PGLOGSEG not a header"),
        Accepted,
    );

    // vfs_record
    let txn = txn_payload(512, &[(1, 1), (2, 2)], 4);
    add("vfs_record", "txn-two-pages", txn.clone(), Accepted);
    add(
        "vfs_record",
        "txn-no-pages",
        txn_payload(1024, &[], 0),
        Accepted,
    );
    add(
        "vfs_record",
        "txn-4k-page",
        txn_payload(4096, &[(7, 9)], 7),
        Accepted,
    );
    add("vfs_record", "checkpoint", checkpoint_payload(77), Accepted);
    add(
        "vfs_record",
        "txn-truncated",
        txn[..txn.len() - 1].to_vec(),
        Rejected,
    );

    // snapshot_batch
    let mut b = BatchBuilder::new();
    for (i, (kind, p)) in payloads.iter().enumerate() {
        b.push(10 + i as u64, TS + i as u64, *kind, p)
            .expect("push");
    }
    let (_, batch) = b.finish(DB_ID, 1).expect("finish");
    add("snapshot_batch", "zstd", with_flags(0, &batch), Accepted);
    add(
        "snapshot_batch",
        "zstd-fixcrc",
        with_flags(both, &batch),
        Accepted,
    );
    let mut b = BatchBuilder::new();
    b.push(5, TS, 1, &noise(1, 300)).expect("push");
    b.push(6, TS + 1, 1, &noise(2, 40)).expect("push");
    let (h, raw) = b.finish(DB_ID, 2).expect("finish");
    assert_eq!(h.compression, 0, "random payloads are stored raw");
    add("snapshot_batch", "raw", with_flags(0, &raw), Accepted);
    add(
        "snapshot_batch",
        "raw-fixcrc",
        with_flags(both, &raw),
        Accepted,
    );
    let gap = encode_gap_batch(DB_ID, 1, 20, 30, TS);
    add("snapshot_batch", "gap", with_flags(0, &gap), Accepted);
    add(
        "snapshot_batch",
        "truncated",
        with_flags(0, &batch[..batch.len() - 5]),
        Rejected,
    );

    // snapshot_part
    let pages: Vec<u8> = (0..3 * 512).map(|i| (i % 251) as u8).collect();
    let part = encode_part(DB_ID, 1, 50, 512, 4, &pages).expect("part");
    add("snapshot_part", "zstd", with_flags(0, &part), Accepted);
    add(
        "snapshot_part",
        "zstd-fixcrc",
        with_flags(both, &part),
        Accepted,
    );
    let part = encode_part(DB_ID, 1, 50, 512, 1, &noise(3, 1024)).expect("part");
    add("snapshot_part", "raw", with_flags(0, &part), Accepted);
    add(
        "snapshot_part",
        "raw-fixcrc",
        with_flags(both, &part),
        Accepted,
    );
    add(
        "snapshot_part",
        "empty",
        with_flags(0, &encode_part(DB_ID, 1, 50, 65536, 1, &[]).expect("part")),
        Accepted,
    );

    // snapshot_manifest
    let m = Manifest {
        database_id: DB_ID,
        timeline: 1,
        lsn: 50,
        timestamp_us: TS,
        page_size: 512,
        db_pages: 7,
        checksum: 0xfeed,
        pages_per_part: 3,
        parts: (0..3)
            .map(|i| ManifestPart {
                size: 100 + i,
                body_crc: i as u32,
            })
            .collect(),
    };
    add(
        "snapshot_manifest",
        "manifest",
        with_flags(0, &m.encode()),
        Accepted,
    );
    add(
        "snapshot_manifest",
        "manifest-fixcrc",
        with_flags(FIX_HEADER_CRC, &m.encode()),
        Accepted,
    );
    let empty = Manifest {
        db_pages: 0,
        parts: Vec::new(),
        ..m.clone()
    };
    add(
        "snapshot_manifest",
        "manifest-empty-db",
        with_flags(FIX_HEADER_CRC, &empty.encode()),
        Accepted,
    );
    let t = TimelineInfo {
        database_id: DB_ID,
        timeline: 2,
        parent_timeline: 1,
        parent_lsn: 40,
        created_us: TS,
        first_lsn: 41,
    };
    add(
        "snapshot_manifest",
        "timeline",
        with_flags(0, &t.encode()),
        Accepted,
    );
    add(
        "snapshot_manifest",
        "timeline-fixcrc",
        with_flags(FIX_HEADER_CRC, &t.encode()),
        Accepted,
    );

    // parse_text
    let texts: &[(&str, String, Outcome)] = &[
        ("bookmark", Bookmark::new(1, 1234).to_string(), Accepted),
        (
            "bookmark-max",
            Bookmark::new(u32::MAX as u64, u64::MAX).to_string(),
            Accepted,
        ),
        ("time", format_us(TS + 123_456), Accepted),
        (
            "time-offset",
            "2026-11-27T08:18:31.5+01:00".into(),
            Accepted,
        ),
        // Not a time (before 1970), but still a plain path for a local store.
        ("time-before-1970", "1969-12-31T23:59:59Z".into(), Accepted),
        ("url-s3", "s3://my-bucket/some/prefix".into(), Accepted),
        ("url-file", "file:///var/lib/pagelog".into(), Accepted),
        ("url-path", "rel/dir".into(), Accepted),
        ("url-bad-scheme", "gs://bucket".into(), Rejected),
        ("key-timeline", timeline_key(3), Accepted),
        ("key-batch", batch_key(1, 42), Accepted),
        ("key-manifest", manifest_key(1, 9), Accepted),
        ("key-part", part_key(1, 9, 2), Accepted),
        ("segment-name", "00000000000000000005.seg".into(), Accepted),
        ("empty", String::new(), Rejected),
    ];
    for (name, text, expect) in texts {
        add("parse_text", name, text.as_bytes().to_vec(), *expect);
    }
    out
}
