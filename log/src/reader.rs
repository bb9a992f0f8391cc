//! [`LogReader`]: iterate durable records from any LSN, across segments. Sealed segments are
//! read through a memory map, the active one with positional reads; a reader never goes past
//! the durable LSN, so it never sees a record that is still being written.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::Lsn;
use crate::error::{LogError, Result};
use crate::format::{RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN};
use crate::segment::Segment;
use crate::writer::{Record, Shared};

/// A record's header, read without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// LSN.
    pub lsn: Lsn,
    /// Caller-defined kind.
    pub kind: u16,
    /// Commit timestamp, µs since the Unix epoch.
    pub timestamp_us: u64,
    /// Payload length.
    pub len: u32,
}

/// An iterator over durable records, in LSN order, starting at a chosen LSN.
///
/// Once [`crate::Log::truncate_prefix`] has dropped the record it would return next (or is
/// dropping it: its segment is off the log's list while the file is removed), it yields
/// [`LogError::LsnOutOfRange`] and stops (open a new reader at [`crate::Log::first_lsn`] to go
/// on).
pub struct LogReader {
    shared: Arc<Shared>,
    next_lsn: Lsn,
    /// Segment holding `next_lsn`, and the offset of that record in it.
    pos: Option<(Arc<Segment>, u64)>,
    failed: bool,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("next_lsn", &self.next_lsn)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, from: Lsn) -> Result<LogReader> {
        let first = shared
            .segments
            .lock()
            .first()
            .map(|s| s.header.first_lsn)
            .unwrap_or(1);
        // Read after `first`: both only grow, and a truncation never passes the durable LSN,
        // so the range an error names is never empty.
        let durable = shared.durable.load(Ordering::Acquire);
        if from < first || from > durable + 1 {
            return Err(LogError::LsnOutOfRange {
                lsn: from,
                first,
                last: durable,
            });
        }
        Ok(LogReader {
            shared,
            next_lsn: from,
            pos: None,
            failed: false,
        })
    }

    /// The LSN the next call to `next` will return.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Find the segment holding `lsn` and the offset of its record (walking headers).
    fn seek(&self, lsn: Lsn) -> Result<(Arc<Segment>, u64)> {
        let seg = {
            let segs = self.shared.segments.lock();
            let idx = segs.partition_point(|s| s.header.first_lsn <= lsn);
            if idx == 0 {
                return Err(LogError::LsnOutOfRange {
                    lsn,
                    first: segs.first().map(|s| s.header.first_lsn).unwrap_or(1),
                    last: self.shared.durable.load(Ordering::Acquire),
                });
            }
            segs[idx - 1].clone()
        };
        let mut offset = SEGMENT_HEADER_LEN as u64;
        let mut at = seg.header.first_lsn;
        let mut hb = [0u8; RECORD_HEADER_LEN];
        while at < lsn {
            seg.file
                .read_exact_at(&mut hb, offset)
                .map_err(|e| LogError::io(format!("reading {}", seg.path.display()), e))?;
            let h = RecordHeader::decode(&hb)
                .filter(|h| h.lsn == at)
                .ok_or_else(|| LogError::Corrupt {
                    segment: seg.path.clone(),
                    offset,
                    reason: format!("expected the header of record {at}"),
                })?;
            offset += h.total_len();
            at += 1;
        }
        Ok((seg, offset))
    }

    fn is_sealed(&self, seg: &Arc<Segment>) -> bool {
        let segs = self.shared.segments.lock();
        segs.last().is_some_and(|last| !Arc::ptr_eq(last, seg))
    }

    /// The next record's header only (LSN, kind, timestamp, length), without reading or
    /// checking its payload: a cheap way to find records of a kind. Shares the position with
    /// the iterator.
    pub fn next_info(&mut self) -> Option<Result<RecordInfo>> {
        if self.failed || self.next_lsn > self.shared.durable.load(Ordering::Acquire) {
            return None;
        }
        let r = self.position().and_then(|(seg, offset)| {
            let mut hb = [0u8; RECORD_HEADER_LEN];
            seg.file
                .read_exact_at(&mut hb, offset)
                .map_err(|e| LogError::io(format!("reading {}", seg.path.display()), e))?;
            let h = RecordHeader::decode(&hb)
                .filter(|h| h.lsn == self.next_lsn)
                .ok_or_else(|| LogError::Corrupt {
                    segment: seg.path.clone(),
                    offset,
                    reason: format!("expected the header of record {}", self.next_lsn),
                })?;
            self.pos = Some((seg, offset + h.total_len()));
            self.next_lsn += 1;
            Ok(RecordInfo {
                lsn: h.lsn,
                kind: h.kind,
                timestamp_us: h.timestamp_us,
                len: h.len,
            })
        });
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }

    /// The segment and offset of the next record, switching segments where one starts.
    /// Fails with [`LogError::LsnOutOfRange`] once [`crate::Log::truncate_prefix`] has dropped
    /// the record: its segment may be gone from the list, and the end of the segment this
    /// reader holds is not a place to look for it (past it lie unwritten bytes).
    fn position(&mut self) -> Result<(Arc<Segment>, u64)> {
        let lsn = self.next_lsn;
        let switch = {
            let segs = self.shared.segments.lock();
            let first = segs.first().map(|s| s.header.first_lsn).unwrap_or(1);
            if lsn < first {
                return Err(LogError::LsnOutOfRange {
                    lsn,
                    first,
                    last: self.shared.durable.load(Ordering::Acquire),
                });
            }
            match &self.pos {
                None => true,
                Some((seg, _)) => segs
                    .iter()
                    .any(|s| s.header.first_lsn == lsn && !Arc::ptr_eq(s, seg)),
            }
        };
        if switch {
            self.pos = Some(self.seek(lsn)?);
        }
        self.pos.clone().ok_or(LogError::Closed)
    }

    fn read_next(&mut self) -> Result<Record> {
        let lsn = self.next_lsn;
        let (seg, offset) = self.position()?;
        let sealed = self.is_sealed(&seg);
        let rec = seg.read_record(offset, lsn, sealed)?;
        self.pos = Some((
            seg,
            offset + RECORD_HEADER_LEN as u64 + rec.payload.len() as u64,
        ));
        self.next_lsn += 1;
        Ok(rec)
    }
}

impl Iterator for LogReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next_lsn > self.shared.durable.load(Ordering::Acquire) {
            return None;
        }
        let r = self.read_next();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}
