//! The bodies of the fuzz targets, one function per target. Each takes the raw fuzz input, feeds
//! it to a decoder, and checks what a decoder must guarantee: no panic, a typed error for bad
//! input, and — for input it accepts — that what it decoded survives a re-encode and decode.
//! A broken invariant is a panic, which libFuzzer reports as a crash.
//!
//! The same file is compiled into the `pagelog-fuzz` crate (the cargo-fuzz targets in
//! `fuzz/fuzz_targets/`) and into `snapshot/tests/fuzz_corpus.rs` (which replays the committed
//! corpora on stable Rust), so both run exactly this code.
//!
//! Checksummed formats: a random mutation almost never keeps a CRC32 valid, so most inputs of
//! those targets start with a flags byte that asks the target to recompute checksums before
//! decoding ([`FIX_HEADER_CRC`], [`FIX_BODY_CRC`]); with the flag clear the bytes are decoded as
//! they are, which fuzzes the checksum checks themselves.

use std::path::Path;

use pagelog_log::format::{
    RECORD_HEADER_LEN, RECORD_MAGIC, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, parse_segment_file_name,
    segment_file_name, u32_at, u64_at,
};
use pagelog_log::fs::{Fs, OpenOptions, SimFs};
use pagelog_log::{Log, LogOptions};
use pagelog_snapshot::bookmark::Bookmark;
use pagelog_snapshot::format::{
    BATCH_HEADER_LEN, BatchBuilder, BatchStream, KeyKind, Manifest, PART_HEADER_LEN, PartStream,
    TIMELINE_LEN, TimelineInfo, batch_key, decode_batch, decode_part, encode_gap_batch,
    encode_part, manifest_key, parse_key, part_key, timeline_key,
};
use pagelog_snapshot::store::{StoreUrl, validate_key};
use pagelog_snapshot::time::{format_us, parse_rfc3339};
use pagelog_vfs::record::{
    CheckpointMark, TXN_HEADER_LEN, TxnRecord, begin_txn, finish_txn, push_page,
};

/// Flags byte: recompute the header checksum(s) before decoding.
pub const FIX_HEADER_CRC: u8 = 1;
/// Flags byte: recompute the body / record checksums before decoding.
pub const FIX_BODY_CRC: u8 = 2;
/// Flags byte of `log_segment`: name each segment file by its position, not by the first LSN
/// in its header (so names and headers can disagree).
pub const NAME_BY_INDEX: u8 = 4;

/// What a target did with its input (used by the replay test to check that valid seeds are
/// accepted; the fuzzer ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The input decoded (and the round-trip checks passed).
    Accepted,
    /// The decoder refused the input with an error.
    Rejected,
}

fn outcome(accepted: bool) -> Outcome {
    if accepted {
        Outcome::Accepted
    } else {
        Outcome::Rejected
    }
}

/// CRC32 of `b` with the 4 bytes at 12..16 (the snapshot header CRC field) taken as zero,
/// stored at 12..16: how every snapshot object header is sealed.
fn seal_snapshot_header(b: &mut [u8]) {
    if b.len() < 16 {
        return;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..12]);
    h.update(&[0u8; 4]);
    h.update(&b[16..]);
    let crc = h.finalize();
    b[12..16].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// log_segment

/// At most this many segment files are made from one input.
const MAX_SEGMENTS: usize = 8;

/// Split `rest` into segment files: a new file starts at every occurrence of the segment magic
/// (bytes before the first one make a file too). Returns `(file name LSN, bytes)`.
pub fn split_segments(flags: u8, rest: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut starts: Vec<usize> = (0..rest.len().saturating_sub(SEGMENT_MAGIC.len() - 1))
        .filter(|&i| rest[i..i + SEGMENT_MAGIC.len()] == SEGMENT_MAGIC)
        .collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    for (i, &s) in starts.iter().enumerate().take(MAX_SEGMENTS) {
        let end = starts.get(i + 1).copied().unwrap_or(rest.len());
        let mut seg = rest[s..end].to_vec();
        if seg.is_empty() {
            continue;
        }
        if flags & FIX_HEADER_CRC != 0 && seg.len() >= SEGMENT_HEADER_LEN {
            let crc = crc32fast::hash(&seg[..60]);
            seg[60..64].copy_from_slice(&crc.to_le_bytes());
        }
        if flags & FIX_BODY_CRC != 0 {
            fix_record_crcs(&mut seg);
        }
        let name = if flags & NAME_BY_INDEX == 0 && seg.len() >= 48 {
            u64_at(&seg, 40)
        } else {
            i as u64 + 1
        };
        if out.iter().all(|(n, _)| *n != name) {
            out.push((name, seg));
        }
    }
    out
}

/// Recompute the CRC of every record in the chain that starts after the segment header.
fn fix_record_crcs(seg: &mut [u8]) {
    let mut at = SEGMENT_HEADER_LEN;
    while at + RECORD_HEADER_LEN <= seg.len() && seg[at..at + 4] == RECORD_MAGIC {
        let len = u32_at(seg, at + 8) as usize;
        let Some(end) = (at + RECORD_HEADER_LEN).checked_add(len) else {
            return;
        };
        if end > seg.len() {
            return;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&seg[at + 8..at + RECORD_HEADER_LEN]);
        h.update(&seg[at + RECORD_HEADER_LEN..end]);
        let crc = h.finalize();
        seg[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

fn log_options() -> LogOptions {
    LogOptions {
        segment_size: 1 << 16,
        preallocate: false,
        recycle: 1,
        background_flush: false,
        ..LogOptions::default()
    }
}

/// `log_segment`: input = flags byte, then the bytes of one or more segment files (split at
/// each segment magic, see [`split_segments`]). The files are written to a simulated disk and
/// the log is opened, which runs recovery over them. If it opens: every record it reports must
/// read back (payload and header-only iteration agree), a new record must append, and after a
/// reopen the log must hold exactly the old records plus the new one.
pub fn log_segment(data: &[u8]) -> Outcome {
    let Some((&flags, rest)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let fs = SimFs::default();
    let dir = Path::new("/db/log");
    fs.create_dir_all(dir).expect("mkdir on the simulated disk");
    for (name, bytes) in split_segments(flags, rest) {
        let path = dir.join(segment_file_name(name));
        let f = fs
            .open(&path, OpenOptions::create())
            .expect("create on the simulated disk");
        f.write_all_at(&bytes, 0).expect("write");
        f.sync_data().expect("sync");
    }
    fs.sync_dir(dir).expect("sync dir");

    let log = match Log::open(fs.shared(), dir, log_options()) {
        Ok(log) => log,
        Err(_) => return Outcome::Rejected,
    };
    let (first, last) = (log.first_lsn(), log.durable_lsn());
    assert!(
        last.checked_add(1).is_some_and(|next| next >= first),
        "recovered range {first}..={last}"
    );
    let report = log.recovery_report().clone();
    assert_eq!((report.first_lsn, report.last_lsn), (first, last));

    let records: Vec<_> = log
        .reader(first)
        .expect("a reader at the first LSN")
        .map(|r| r.expect("every recovered record reads back"))
        .collect();
    assert_eq!(
        records.len() as u128,
        last as u128 + 1 - first as u128,
        "record count"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.lsn, first + i as u64);
    }
    let mut infos = log.reader(first).expect("a reader at the first LSN");
    for r in &records {
        let info = infos
            .next_info()
            .expect("one header per record")
            .expect("header reads back");
        assert_eq!(
            (info.lsn, info.kind, info.timestamp_us, info.len as usize),
            (r.lsn, r.kind, r.timestamp_us, r.payload.len())
        );
    }
    assert!(infos.next_info().is_none());
    // A reader keeps the log (and its directory lock) alive.
    drop(infos);

    // The recovered end is a clean place to append: the new record survives a reopen, and
    // nothing left behind the old end shows up after it.
    let payload = b"appended after recovery";
    let lsn = match log.append_sync(7, payload) {
        Ok(lsn) => lsn,
        // No record may have an LSN above 2^63 (no segment could start there).
        Err(pagelog_log::LogError::LsnExhausted { .. })
            if last >= pagelog_log::format::MAX_FIRST_LSN =>
        {
            return Outcome::Accepted;
        }
        Err(e) => panic!("append after recovery failed: {e}"),
    };
    assert_eq!(lsn, last + 1);
    log.close().expect("close");
    let log = Log::open(fs.shared(), dir, log_options()).expect("reopen after the append");
    assert_eq!(
        (log.first_lsn(), log.durable_lsn()),
        (first, lsn),
        "reopened log"
    );
    let back: Vec<_> = log
        .reader(first)
        .expect("reader after reopen")
        .map(|r| r.expect("record reads back after reopen"))
        .collect();
    assert_eq!(back.len(), records.len() + 1);
    assert_eq!(&back[..records.len()], &records[..]);
    let new = &back[records.len()];
    assert_eq!(
        (new.lsn, new.kind, &new.payload[..]),
        (lsn, 7, &payload[..])
    );
    Outcome::Accepted
}

// ---------------------------------------------------------------------------------------------
// vfs_record

/// `vfs_record`: input = a log record payload of the VFS, decoded as a transaction record and
/// as a checkpoint mark. What decodes must re-encode to the same bytes (reserved fields
/// aside) and list its pages in ascending order within the database size.
pub fn vfs_record(data: &[u8]) -> Outcome {
    let mut accepted = false;
    if let Ok(txn) = TxnRecord::decode(data) {
        accepted = true;
        let mut out = Vec::new();
        begin_txn(&mut out, txn.page_size, txn.db_pages);
        let mut prev = 0;
        let mut n = 0u32;
        for (pgno, page) in txn.pages() {
            assert!(
                pgno > prev && pgno <= txn.db_pages,
                "page {pgno} after {prev}"
            );
            assert_eq!(page.len(), txn.page_size as usize);
            push_page(&mut out, pgno, page);
            prev = pgno;
            n += 1;
        }
        assert_eq!(n, txn.page_count);
        finish_txn(&mut out, txn.checksum, n);
        let mut expect = data.to_vec();
        // Reserved bytes (flags, padding) are not checked by the decoder; the encoder writes 0.
        expect[6..8].fill(0);
        expect[28..TXN_HEADER_LEN].fill(0);
        assert_eq!(out, expect, "transaction record re-encodes differently");
    }
    if let Ok(mark) = CheckpointMark::decode(data) {
        accepted = true;
        assert_eq!(CheckpointMark::decode(&mark.encode()).ok(), Some(mark));
    }
    outcome(accepted)
}

// ---------------------------------------------------------------------------------------------
// snapshot_batch

/// `snapshot_batch`: input = flags byte, then a log batch object. Decoded with `decode_batch`
/// (which reads through `BatchStream`). What decodes must rebuild, with `BatchBuilder` (or as a
/// gap batch), into an object that decodes to the same records and header.
pub fn snapshot_batch(data: &[u8]) -> Outcome {
    let Some((&flags, obj)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let mut obj = obj.to_vec();
    if obj.len() >= BATCH_HEADER_LEN {
        if flags & FIX_BODY_CRC != 0 {
            let crc = crc32fast::hash(&obj[BATCH_HEADER_LEN..]);
            obj[76..80].copy_from_slice(&crc.to_le_bytes());
        }
        if flags & FIX_HEADER_CRC != 0 {
            seal_snapshot_header(&mut obj[..BATCH_HEADER_LEN]);
        }
    }
    // Restore reads batches as streams: the streamed decoder must accept exactly what the
    // whole-object one accepts, with the same records.
    let streamed = streamed_batch(&obj);
    let compressed = obj.len() >= 12 && u16::from_le_bytes([obj[10], obj[11]]) == 1;
    let d = match decode_batch("fuzz/batch", obj) {
        Ok(d) => d,
        Err(e) => {
            assert!(
                streamed.is_err() || zstd_one_pass_stricter(&e.to_string(), compressed),
                "the streamed decoder accepts a rejected batch: {e}"
            );
            return Outcome::Rejected;
        }
    };
    let streamed = streamed.expect("the streamed decoder rejects an accepted batch");
    assert!(
        streamed
            .iter()
            .map(|(l, t, k, p)| (*l, *t, *k, &p[..]))
            .eq(d
                .records()
                .map(|r| (r.lsn, r.timestamp_us, r.kind, r.payload))),
        "streamed records differ"
    );
    let h = d.header;
    assert!(h.first_lsn >= 1 && h.last_lsn >= h.first_lsn);
    if h.is_gap() {
        assert!(d.is_empty());
        let gap = encode_gap_batch(
            h.database_id,
            h.timeline,
            h.first_lsn,
            h.last_lsn,
            h.first_ts_us,
        );
        let again = decode_batch("fuzz/gap", gap).expect("re-encoded gap batch decodes");
        assert!(again.header.is_gap() && again.is_empty());
        assert_eq!(
            (again.header.first_lsn, again.header.last_lsn),
            (h.first_lsn, h.last_lsn)
        );
        return Outcome::Accepted;
    }
    assert_eq!(d.len() as u64, h.last_lsn - h.first_lsn + 1);
    let mut b = BatchBuilder::new();
    for (i, r) in d.records().enumerate() {
        assert_eq!(r.lsn, h.first_lsn + i as u64);
        b.push(r.lsn, r.timestamp_us, r.kind, r.payload)
            .expect("decoded records are consecutive");
    }
    let (h2, obj2) = b
        .finish(h.database_id, h.timeline)
        .expect("a non-gap batch has records");
    let again = decode_batch("fuzz/again", obj2).expect("re-encoded batch decodes");
    assert_eq!(again.header, h2);
    let strip = |mut x: pagelog_snapshot::format::BatchHeader| {
        x.compression = 0;
        x.body_crc = 0;
        x
    };
    assert_eq!(strip(h2), strip(h), "re-encoded batch header");
    assert!(again.records().eq(d.records()), "re-encoded batch records");
    Outcome::Accepted
}

/// A record as read: LSN, timestamp, kind, payload.
type OwnedRecord = (u64, u64, u16, Vec<u8>);

/// A batch's records as `BatchStream::from_reader` reads them (restore's path), fed a few
/// bytes at a time.
fn streamed_batch(obj: &[u8]) -> Result<Vec<OwnedRecord>, String> {
    let reader = Box::new(Dribble(std::io::Cursor::new(obj.to_vec())));
    let mut st = BatchStream::from_reader("fuzz/batch", reader).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(r) = st.next_record().map_err(|e| e.to_string())? {
        out.push((r.lsn, r.timestamp_us, r.kind, r.payload.to_vec()));
    }
    Ok(out)
}

/// A part's pages as `PartStream::from_reader` reads them (restore's path).
fn streamed_part(obj: &[u8]) -> Result<Vec<u8>, String> {
    let reader = Box::new(Dribble(std::io::Cursor::new(obj.to_vec())));
    let mut st = PartStream::from_reader("fuzz/part", reader).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 3 * st.header.page_size as usize];
    loop {
        let n = st.read_pages(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Whether the whole-object decoder's refusal `err` of a compressed body may stand beside the
/// streamed decoder's acceptance. libzstd decodes a frame in one pass when the whole frame and
/// room for its output are at hand, and block by block otherwise; the one-pass mode refuses
/// some malformed frames that the block-by-block mode steps over (an empty compressed block,
/// found by `snapshot_part`). The whole-object decoder may take either mode and a stream read
/// a little at a time the second, so on such a frame they disagree. Only zstd's own
/// corruption error is tolerated. What the streamed decoder accepted still passed the stored
/// body's CRC and holds exactly the length its header says, and a restore checks the whole
/// database's checksum.
fn zstd_one_pass_stricter(err: &str, compressed: bool) -> bool {
    compressed && err.contains("Data corruption detected")
}

/// A reader that returns at most 97 bytes per call, as a network stream may.
struct Dribble(std::io::Cursor<Vec<u8>>);

impl std::io::Read for Dribble {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(97);
        self.0.read(&mut buf[..n])
    }
}

// ---------------------------------------------------------------------------------------------
// snapshot_part

/// `snapshot_part`: input = flags byte, then a snapshot part object. What decodes must hold
/// exactly `pages * page_size` bytes and re-encode into a part with the same header and pages.
pub fn snapshot_part(data: &[u8]) -> Outcome {
    let Some((&flags, obj)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let mut obj = obj.to_vec();
    if obj.len() >= PART_HEADER_LEN {
        if flags & FIX_BODY_CRC != 0 {
            let crc = crc32fast::hash(&obj[PART_HEADER_LEN..]);
            obj[52..56].copy_from_slice(&crc.to_le_bytes());
        }
        if flags & FIX_HEADER_CRC != 0 {
            seal_snapshot_header(&mut obj[..PART_HEADER_LEN]);
        }
    }
    let streamed = streamed_part(&obj);
    let compressed = obj.len() >= 12 && u16::from_le_bytes([obj[10], obj[11]]) == 1;
    let claimed = (obj.len() >= PART_HEADER_LEN).then(|| {
        let u32_at =
            |at: usize| u32::from_le_bytes([obj[at], obj[at + 1], obj[at + 2], obj[at + 3]]);
        u32_at(48) as usize * u32_at(40) as usize
    });
    let p = match decode_part("fuzz/part", obj) {
        Ok(p) => p,
        Err(e) => {
            if let Ok(pages) = &streamed {
                assert!(
                    zstd_one_pass_stricter(&e.to_string(), compressed),
                    "the streamed decoder accepts a rejected part: {e}"
                );
                assert_eq!(Some(pages.len()), claimed, "streamed part body length");
            }
            return Outcome::Rejected;
        }
    };
    let streamed = streamed.expect("the streamed decoder rejects an accepted part");
    assert!(streamed == p.pages(), "streamed pages differ");
    let h = p.header;
    assert_eq!(
        p.pages().len() as u64,
        h.pages as u64 * h.page_size as u64,
        "part body length"
    );
    let again = encode_part(
        h.database_id,
        h.timeline,
        h.lsn,
        h.page_size,
        h.first_pgno,
        p.pages(),
    )
    .expect("encode a decoded part");
    let p2 = decode_part("fuzz/part-again", again).expect("re-encoded part decodes");
    let strip = |mut x: pagelog_snapshot::format::PartHeader| {
        x.compression = 0;
        x.body_crc = 0;
        x
    };
    assert_eq!(strip(p2.header), strip(h), "re-encoded part header");
    assert_eq!(p2.pages(), p.pages(), "re-encoded part pages");
    Outcome::Accepted
}

// ---------------------------------------------------------------------------------------------
// snapshot_manifest

/// `snapshot_manifest`: input = flags byte, then an object decoded both as a snapshot manifest
/// and as a timeline claim (the magic decides which, if any, accepts it). A decoded manifest
/// must round-trip and its part page ranges must tile `1..=db_pages`; a decoded timeline claim
/// must round-trip byte for byte.
pub fn snapshot_manifest(data: &[u8]) -> Outcome {
    let Some((&flags, obj)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let mut accepted = false;
    let mut m_obj = obj.to_vec();
    if flags & FIX_HEADER_CRC != 0 {
        seal_snapshot_header(&mut m_obj);
    }
    if let Ok(m) = Manifest::decode("fuzz/manifest", &m_obj) {
        accepted = true;
        assert_eq!(
            Manifest::decode("fuzz/again", &m.encode()).ok(),
            Some(m.clone())
        );
        let mut next = 1u64;
        for i in 0..m.parts.len() {
            let (first, n) = m.part_pages(i as u32);
            assert_eq!(first as u64, next, "part {i} starts where the last ended");
            assert!(n >= 1 && n <= m.pages_per_part, "part {i} holds {n} pages");
            next += n as u64;
        }
        assert_eq!(next - 1, m.db_pages as u64, "parts cover the database");
        let _ = m.stored_bytes();
    }
    let mut t_obj = obj.to_vec();
    if flags & FIX_HEADER_CRC != 0 && t_obj.len() >= TIMELINE_LEN {
        seal_snapshot_header(&mut t_obj[..TIMELINE_LEN]);
    }
    if let Ok(t) = TimelineInfo::decode("fuzz/timeline", &t_obj) {
        accepted = true;
        let enc = t.encode();
        assert_eq!(TimelineInfo::decode("fuzz/again", &enc).ok(), Some(t));
        // The encoder writes zeros in the reserved bytes (10..12); the rest must match.
        let mut expect = t_obj[..TIMELINE_LEN].to_vec();
        expect[10..12].fill(0);
        seal_snapshot_header(&mut expect);
        assert_eq!(enc, expect, "timeline claim re-encodes differently");
    }
    outcome(accepted)
}

// ---------------------------------------------------------------------------------------------
// parse_text

/// `parse_text`: input = UTF-8 text given to every text parser: bookmarks, RFC 3339 times,
/// store URLs, object keys (validation and the bucket key parser) and segment file names.
/// Whatever parses must print back to the same text (the formats are canonical) or, for times
/// and URLs, parse again to the same value. The first 8 bytes also make a microsecond
/// timestamp for `format_us`, which must parse back when it is in range.
pub fn parse_text(data: &[u8]) -> Outcome {
    let mut accepted = false;
    if data.len() >= 8 {
        let us = u64_at(data, 0);
        let text = format_us(us);
        if let Some(back) = parse_rfc3339(&text) {
            assert_eq!(back, us, "{text}");
        }
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return Outcome::Rejected;
    };
    if let Ok(b) = s.parse::<Bookmark>() {
        accepted = true;
        assert_eq!(b.to_string(), s, "bookmarks are canonical");
    }
    if let Some(us) = parse_rfc3339(s) {
        accepted = true;
        assert_eq!(parse_rfc3339(&format_us(us)), Some(us), "{s}");
    }
    if let Ok(url) = StoreUrl::parse(s) {
        accepted = true;
        let again = match &url {
            StoreUrl::S3 { bucket, prefix } => {
                assert!(!prefix.starts_with('/') && !prefix.ends_with('/'));
                if !prefix.is_empty() {
                    assert!(validate_key(prefix).is_ok(), "{prefix:?}");
                }
                StoreUrl::parse(&format!("s3://{bucket}/{prefix}"))
            }
            StoreUrl::Local(path) => match path.to_str() {
                Some(p) if p.starts_with('/') => StoreUrl::parse(&format!("file://{p}")),
                Some(p) => StoreUrl::parse(p),
                None => panic!("a path from a str is a str"),
            },
        };
        assert_eq!(again.ok(), Some(url), "{s:?}");
    }
    if validate_key(s).is_ok() {
        accepted = true;
    }
    if let Some(kind) = parse_key(s) {
        accepted = true;
        let key = match kind {
            KeyKind::Timeline { timeline } => timeline_key(timeline),
            KeyKind::Batch {
                timeline,
                first_lsn,
            } => batch_key(timeline, first_lsn),
            KeyKind::Manifest { timeline, lsn } => manifest_key(timeline, lsn),
            KeyKind::Part {
                timeline,
                lsn,
                index,
            } => part_key(timeline, lsn, index),
        };
        assert_eq!(key, s, "object keys are canonical");
        assert!(validate_key(&key).is_ok(), "{key:?}");
    }
    if let Some(lsn) = parse_segment_file_name(s) {
        accepted = true;
        assert_eq!(segment_file_name(lsn), s, "segment names are canonical");
    }
    outcome(accepted)
}

/// A target body.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target by name, for the replay test and the corpus generator.
pub const TARGETS: &[(&str, Target)] = &[
    ("log_segment", log_segment),
    ("vfs_record", vfs_record),
    ("snapshot_batch", snapshot_batch),
    ("snapshot_part", snapshot_part),
    ("snapshot_manifest", snapshot_manifest),
    ("parse_text", parse_text),
];
