//! One segment file: its header, a record-by-record scan that stops at the first invalid
//! record, a search for valid records beyond a damaged one, and read access (memory-mapped once
//! the segment is sealed).

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::{LogError, Result};
use crate::format::{
    RECORD_HEADER_LEN, RECORD_MAGIC, RecordHeader, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::fs::FileRef;
use crate::{Lsn, Record};

/// An open segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub path: PathBuf,
    pub file: FileRef,
    pub header: SegmentHeader,
    /// Memory map of a sealed segment, created on first read.
    map: OnceLock<Option<memmap2::Mmap>>,
}

/// Where a scan of a segment stopped.
#[derive(Debug, Clone)]
pub(crate) struct ScanEnd {
    /// LSN of the last valid record (first_lsn - 1 if none).
    pub last_lsn: Lsn,
    /// Offset just past the last valid record.
    pub end: u64,
    /// Why the scan stopped at `end` (None: clean end of file).
    pub stop_reason: Option<String>,
    /// Commit timestamp of the last valid record (0 if none).
    pub last_timestamp_us: u64,
}

/// A CRC-valid record found beyond the end of the valid prefix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StrayRecord {
    pub offset: u64,
    pub lsn: Lsn,
    pub synced_hint: Lsn,
    pub end: u64,
}

impl Segment {
    pub fn new(path: PathBuf, file: FileRef, header: SegmentHeader) -> Segment {
        Segment {
            path,
            file,
            header,
            map: OnceLock::new(),
        }
    }

    fn io_err(&self, what: &str, e: std::io::Error) -> LogError {
        LogError::io(format!("{what} {}", self.path.display()), e)
    }

    /// Read a record header at `offset`; None if there is no plausible one there.
    fn header_at(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Option<([u8; RECORD_HEADER_LEN], RecordHeader)>> {
        if offset + RECORD_HEADER_LEN as u64 > len {
            return Ok(None);
        }
        let mut hb = [0u8; RECORD_HEADER_LEN];
        self.file
            .read_exact_at(&mut hb, offset)
            .map_err(|e| self.io_err("reading", e))?;
        Ok(RecordHeader::decode(&hb).map(|h| (hb, h)))
    }

    fn is_zero_at(&self, offset: u64, len: u64) -> Result<bool> {
        let n = (len - offset).min(RECORD_HEADER_LEN as u64) as usize;
        let mut b = [0u8; RECORD_HEADER_LEN];
        self.file
            .read_exact_at(&mut b[..n], offset)
            .map_err(|e| self.io_err("reading", e))?;
        Ok(b[..n].iter().all(|x| *x == 0))
    }

    /// Walk records from the start; stop at the first one that is missing, torn, out of
    /// sequence or fails its CRC.
    pub fn scan(&self) -> Result<ScanEnd> {
        let len = self.file.len().map_err(|e| self.io_err("measuring", e))?;
        let mut offset = SEGMENT_HEADER_LEN as u64;
        let mut expected = self.header.first_lsn;
        let mut payload = Vec::new();
        let mut last_timestamp_us = 0;
        loop {
            let Some((hb, h)) = self.header_at(offset, len)? else {
                // End of file, or zeros (preallocated space): a clean end. Anything else
                // where a header should be is a torn or damaged record.
                let reason =
                    if offset + RECORD_HEADER_LEN as u64 > len || self.is_zero_at(offset, len)? {
                        None
                    } else {
                        Some("no valid record header".to_string())
                    };
                return Ok(ScanEnd {
                    last_lsn: expected - 1,
                    end: offset,
                    stop_reason: reason,
                    last_timestamp_us,
                });
            };
            let stop = |reason: String| {
                Ok(ScanEnd {
                    last_lsn: expected - 1,
                    end: offset,
                    stop_reason: Some(reason),
                    last_timestamp_us,
                })
            };
            if h.lsn != expected {
                return stop(format!(
                    "record has LSN {} where {} was expected",
                    h.lsn, expected
                ));
            }
            if offset + h.total_len() > len {
                return stop("record runs past the end of the file".into());
            }
            payload.resize(h.len as usize, 0);
            self.file
                .read_exact_at(&mut payload, offset + RECORD_HEADER_LEN as u64)
                .map_err(|e| self.io_err("reading", e))?;
            if !RecordHeader::check(&hb, &payload) {
                return stop(format!("CRC mismatch in record {expected}"));
            }
            offset += h.total_len();
            expected += 1;
            last_timestamp_us = h.timestamp_us;
        }
    }

    /// CRC-valid records with LSN >= `min_lsn` that start after `from` (records a torn write
    /// may have left behind a damaged one at `from`, whose LSN is `min_lsn`).
    ///
    /// Only records that could have been written after that one count: the records from
    /// `min_lsn` up to a stray's LSN take at least a header's length each, so a stray at LSN
    /// `l` starts at least `(l - min_lsn)` headers after `from`. A CRC-valid image placed
    /// closer (a copy of another log's record inside a payload, a recycled segment's stale
    /// record of a far higher LSN) is not evidence of anything.
    pub fn find_strays(&self, from: u64, min_lsn: Lsn) -> Result<Vec<StrayRecord>> {
        let could_follow = |off: u64, lsn: Lsn| {
            let least = (lsn - min_lsn).saturating_mul(RECORD_HEADER_LEN as u64);
            off >= from.saturating_add(least)
        };
        const CHUNK: u64 = 1 << 20;
        let len = self.file.len().map_err(|e| self.io_err("measuring", e))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; CHUNK as usize + RECORD_HEADER_LEN];
        let mut payload = Vec::new();
        let mut base = from + 1;
        while base + RECORD_HEADER_LEN as u64 <= len {
            let n = ((len - base).min(buf.len() as u64)) as usize;
            self.file
                .read_exact_at(&mut buf[..n], base)
                .map_err(|e| self.io_err("reading", e))?;
            let window = &buf[..n];
            let mut i = 0;
            while i + RECORD_HEADER_LEN <= n && (i as u64) < CHUNK {
                if window[i..i + 4] == RECORD_MAGIC {
                    let off = base + i as u64;
                    if let Some(h) = RecordHeader::decode(&window[i..i + RECORD_HEADER_LEN])
                        && h.lsn >= min_lsn
                        && could_follow(off, h.lsn)
                        && off + h.total_len() <= len
                    {
                        payload.resize(h.len as usize, 0);
                        self.file
                            .read_exact_at(&mut payload, off + RECORD_HEADER_LEN as u64)
                            .map_err(|e| self.io_err("reading", e))?;
                        if RecordHeader::check(&window[i..i + RECORD_HEADER_LEN], &payload) {
                            out.push(StrayRecord {
                                offset: off,
                                lsn: h.lsn,
                                synced_hint: h.synced_hint,
                                end: off + h.total_len(),
                            });
                        }
                    }
                }
                i += 1;
            }
            base += CHUNK;
        }
        Ok(out)
    }

    /// Map the segment for reading, where the fs allows it. Only called for sealed segments.
    fn mapped(&self) -> Option<&memmap2::Mmap> {
        self.map
            .get_or_init(|| {
                let file = self.file.as_std_file()?;
                map_sealed(file).ok()
            })
            .as_ref()
    }

    /// Read the record at `offset`, expecting `lsn`; validates the CRC.
    pub fn read_record(&self, offset: u64, lsn: Lsn, sealed: bool) -> Result<Record> {
        let corrupt = |reason: String| LogError::Corrupt {
            segment: self.path.clone(),
            offset,
            reason,
        };
        if sealed && let Some(map) = self.mapped() {
            let start = offset as usize;
            let hb = map
                .get(start..start + RECORD_HEADER_LEN)
                .ok_or_else(|| corrupt("record header past end of segment".into()))?;
            let h = RecordHeader::decode(hb).ok_or_else(|| corrupt("no record header".into()))?;
            let pstart = start + RECORD_HEADER_LEN;
            let payload = map
                .get(pstart..pstart + h.len as usize)
                .ok_or_else(|| corrupt("payload past end of segment".into()))?;
            return finish_record(hb, h, payload.to_vec(), lsn, corrupt);
        }
        let mut hb = [0u8; RECORD_HEADER_LEN];
        self.file
            .read_exact_at(&mut hb, offset)
            .map_err(|e| self.io_err("reading", e))?;
        let h = RecordHeader::decode(&hb).ok_or_else(|| corrupt("no record header".into()))?;
        let mut payload = vec![0u8; h.len as usize];
        self.file
            .read_exact_at(&mut payload, offset + RECORD_HEADER_LEN as u64)
            .map_err(|e| self.io_err("reading", e))?;
        finish_record(&hb, h, payload, lsn, corrupt)
    }
}

fn finish_record(
    hb: &[u8],
    h: RecordHeader,
    payload: Vec<u8>,
    lsn: Lsn,
    corrupt: impl Fn(String) -> LogError,
) -> Result<Record> {
    if h.lsn != lsn {
        return Err(corrupt(format!(
            "record has LSN {} where {lsn} was expected",
            h.lsn
        )));
    }
    if !RecordHeader::check(hb, &payload) {
        return Err(corrupt(format!("CRC mismatch in record {lsn}")));
    }
    Ok(Record {
        lsn,
        timestamp_us: h.timestamp_us,
        kind: h.kind,
        payload,
    })
}

/// Memory-map a sealed segment.
///
/// The only `unsafe` in this crate. It is sound because the log never writes to a sealed
/// segment again, and only recycles (overwrites) a segment file once no [`Segment`] handle —
/// and so no map — refers to it any more (the log first takes the segment off its list, where
/// readers find segments, then checks that its own `Arc` is the only one left); removal merely
/// unlinks the name, which leaves an existing map valid. Another process modifying the file
/// would break this, which the log's directory lock (taken by its owner) rules out.
#[allow(unsafe_code)]
fn map_sealed(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: see the function's documentation: the mapped file is immutable while mapped.
    unsafe { memmap2::Mmap::map(file) }
}
