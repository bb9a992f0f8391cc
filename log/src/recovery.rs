//! Recovery on open: find the segments, validate every record, tell a torn tail (never synced,
//! safe to cut) from corruption of synced data (an error naming segment and offset), cut the
//! tail durably, and hand the writer a clean end to append at.
//!
//! Rules (see `log/FORMAT.md`, "Recovery"):
//! - a segment is only created after the previous one was synced, so any damage inside a
//!   segment that is followed by another segment with valid records is corruption;
//! - within the last segment, a damaged record at LSN `n` followed by a CRC-valid record whose
//!   `synced_hint >= n` means `n` had been synced before: corruption. Otherwise the damaged
//!   region was never synced: the valid records after it are erased (zeroed) and synced, so
//!   that they cannot reappear once new records are written at the same positions;
//! - a last segment whose header is invalid and that holds no valid record is a roll that
//!   crashed before it was durable: it is removed.
//!
//! - what it finds is durable before the log calls it so: the last segment is synced and its
//!   cached pages dropped before it is read (a killed process may have left unsynced records
//!   in the page cache; a failed sync, pages the disk never got), and the directory is synced
//!   at the end.
//!
//! Every step is idempotent, so a crash during recovery is recovered by recovering again.
//!
//! A read-only open (`LogOptions::read_only`) validates by the same rules and writes nothing:
//! the records end where they would, and what would be erased or removed is only counted.

use std::path::Path;
use std::sync::Arc;

use crate::error::{LogError, Result};
use crate::format::{
    SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_file_name, segment_file_name,
};
use crate::fs::{Fs, OpenOptions};
use crate::segment::Segment;
use crate::{LogOptions, Lsn};

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segments: usize,
    /// First LSN the log holds.
    pub first_lsn: Lsn,
    /// Last valid LSN (first_lsn - 1 when empty).
    pub last_lsn: Lsn,
    /// Bytes of torn tail erased.
    pub erased_bytes: u64,
    /// Never-durable segment files removed.
    pub removed_segments: usize,
    /// Why the scan of the last segment stopped before the segment's end other than at zeros
    /// (a torn record, or the stale bytes of a recycled segment, which a clean close leaves
    /// too), and whether never-synced records after that point were erased; None when the
    /// records end at zeros or at the end of the file and nothing was erased.
    pub tail_reason: Option<String>,
    /// Read-only opens: bytes of never-synced records after a torn tail that a read-write
    /// open would erase, left in place (0 otherwise).
    pub left_bytes: u64,
    /// Read-only opens: never-durable last segments that a read-write open would remove, left
    /// in place (0 otherwise).
    pub left_segments: usize,
}

/// The recovered log, ready for the writer.
pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    /// Offset in the last segment where the next record goes.
    pub end: u64,
    pub report: RecoveryReport,
    pub recycled: Vec<std::path::PathBuf>,
    /// The latest commit timestamp of the records found (0 if none): new records get none
    /// earlier.
    pub last_timestamp_us: u64,
}

/// Name prefix of segment files kept for reuse.
pub(crate) const RECYCLE_PREFIX: &str = "recycle-";

pub(crate) fn recover(fs: &dyn Fs, dir: &Path, opts: &LogOptions) -> Result<Recovered> {
    let names = fs
        .list(dir)
        .map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
    let mut firsts: Vec<Lsn> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    firsts.sort_unstable();
    let mut recycled: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with(RECYCLE_PREFIX))
        .map(|n| dir.join(n))
        .collect();
    recycled.sort();

    let read_only = opts.read_only;
    let open_opts = if read_only {
        OpenOptions::read_only()
    } else {
        OpenOptions::existing()
    };
    let mut report = RecoveryReport::default();
    let mut segments: Vec<Arc<Segment>> = Vec::new();
    let mut database_id = opts.database_id;
    for (i, first) in firsts.iter().enumerate() {
        let path = dir.join(segment_file_name(*first));
        let file = fs
            .open(&path, open_opts)
            .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
        if i + 1 == firsts.len() {
            // What the last segment shows may not be on the disk. A process killed between a
            // write and its sync left data in the page cache: sync it (not in a read-only
            // open, which writes nothing and reads that tail as it shows). A sync that failed
            // left pages the disk never got, shown as written and no longer waiting to be
            // (Linux marks them clean): drop them, so that what follows reads what the disk
            // holds (dropping clean pages writes nothing). (A segment followed by another was
            // synced before that one was created.)
            if !read_only {
                file.sync_data()
                    .map_err(|e| LogError::io(format!("syncing {}", path.display()), e))?;
            }
            if let Err(e) = file.drop_cache() {
                tracing::warn!(segment = %path.display(), error = %e, "could not drop cached pages; reading them");
            }
        }
        let mut hb = [0u8; SEGMENT_HEADER_LEN];
        let header = match file.read_exact_at(&mut hb, 0) {
            Ok(()) => SegmentHeader::decode(&hb),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(crate::format::HeaderProblem::Short)
            }
            Err(e) => return Err(LogError::io(format!("reading {}", path.display()), e)),
        };
        let header = match header {
            Ok(h) if h.first_lsn == *first => h,
            Ok(_) | Err(_) => {
                let problem = match header {
                    Ok(h) => crate::format::HeaderProblem::NameMismatch(h.first_lsn),
                    Err(p) => p,
                };
                let is_last = i + 1 == firsts.len();
                // A roll that crashed before its header and directory entry were durable.
                // Never acknowledged anything, unless records in it check out.
                let probe = Segment::new(
                    path.clone(),
                    file.clone(),
                    SegmentHeader {
                        database_id: 0,
                        timeline: 0,
                        first_lsn: *first,
                        created_us: 0,
                    },
                );
                if is_last
                    && probe
                        .find_strays(SEGMENT_HEADER_LEN as u64 - 1, *first)?
                        .is_empty()
                {
                    if read_only {
                        tracing::warn!(segment = %path.display(), ?problem,
                            "skipping a never-durable segment (left in place: read-only)");
                        report.left_segments += 1;
                        continue;
                    }
                    tracing::warn!(segment = %path.display(), ?problem, "removing never-durable segment");
                    fs.remove(&path)
                        .map_err(|e| LogError::io(format!("removing {}", path.display()), e))?;
                    fs.sync_dir(dir)
                        .map_err(|e| LogError::io(format!("syncing {}", dir.display()), e))?;
                    report.removed_segments += 1;
                    continue;
                }
                return Err(LogError::BadSegmentHeader {
                    segment: path,
                    problem,
                });
            }
        };
        match database_id {
            Some(id) if id != header.database_id => {
                return Err(LogError::WrongDatabase {
                    dir: dir.to_path_buf(),
                    expected: id,
                    found: header.database_id,
                });
            }
            _ => database_id = Some(header.database_id),
        }
        segments.push(Arc::new(Segment::new(path, file, header)));
    }

    // Validate every segment; only the last may end in a torn tail.
    let mut end = SEGMENT_HEADER_LEN as u64;
    let mut last_timestamp_us = 0;
    for i in 0..segments.len() {
        let seg = &segments[i];
        let scan = seg.scan()?;
        last_timestamp_us = last_timestamp_us.max(scan.last_timestamp_us);
        if let Some(next) = segments.get(i + 1) {
            if next.header.first_lsn != scan.last_lsn + 1 {
                return Err(LogError::Corrupt {
                    segment: seg.path.clone(),
                    offset: scan.end,
                    reason: format!(
                        "{}; the next segment starts at LSN {}, so records {}..{} are lost",
                        scan.stop_reason.as_deref().unwrap_or("segment ends early"),
                        next.header.first_lsn,
                        scan.last_lsn + 1,
                        next.header.first_lsn - 1
                    ),
                });
            }
            continue;
        }
        // The last segment.
        let damaged_lsn = scan.last_lsn + 1;
        let strays = seg.find_strays(scan.end, damaged_lsn)?;
        if let Some(s) = strays.iter().find(|s| s.synced_hint >= damaged_lsn) {
            return Err(LogError::Corrupt {
                segment: seg.path.clone(),
                offset: scan.end,
                reason: format!(
                    "{}; record {} at offset {} shows record {} had been synced",
                    scan.stop_reason.as_deref().unwrap_or("damaged record"),
                    s.lsn,
                    s.offset,
                    damaged_lsn
                ),
            });
        }
        if let Some(stray_end) = strays.iter().map(|s| s.end).max() {
            let n = stray_end - scan.end;
            tracing::warn!(
                segment = %seg.path.display(),
                offset = scan.end,
                bytes = n,
                read_only,
                "never-synced records after a torn tail: {}",
                if read_only { "left in place" } else { "erasing them" }
            );
            if read_only {
                report.left_bytes += n;
            } else {
                let zeros = vec![0u8; n as usize];
                seg.file
                    .write_all_at(&zeros, scan.end)
                    .and_then(|_| seg.file.sync_data())
                    .map_err(|e| {
                        LogError::io(format!("erasing torn tail of {}", seg.path.display()), e)
                    })?;
                report.erased_bytes += n;
            }
        }
        let done = if read_only {
            "left in place (read-only)"
        } else {
            "erased"
        };
        report.tail_reason = match (
            &scan.stop_reason,
            report.erased_bytes + report.left_bytes > 0,
        ) {
            (Some(why), true) => Some(format!("{why}; never-synced records after it {done}")),
            (Some(why), false) => Some(why.clone()),
            (None, true) => Some(format!("never-synced records after zeros {done}")),
            (None, false) => None,
        };
        end = scan.end;
        report.last_lsn = scan.last_lsn;
    }
    // The log is about to call every record found durable: the last segment's data was synced
    // before it was read; a process killed before a roll's directory sync leaves the new
    // segment's entry in the page cache only, so sync the directory too.
    if !read_only {
        fs.sync_dir(dir)
            .map_err(|e| LogError::io(format!("syncing {}", dir.display()), e))?;
    }
    report.segments = segments.len();
    report.first_lsn = segments
        .first()
        .map(|s| s.header.first_lsn)
        .unwrap_or(opts.first_lsn);
    if segments.is_empty() {
        report.last_lsn = opts.first_lsn - 1;
    }
    Ok(Recovered {
        segments,
        end,
        report,
        recycled,
        last_timestamp_us,
    })
}
