//! `pagelog log dump`: list the records of a database's local log (`DB-PATH-pagelog/`) —
//! LSN, commit time, kind, payload size and, for the VFS's records, what they carry (a
//! transaction's page size, database size, page count and checksum; a checkpoint mark's LSN,
//! size and checksum) — and a summary of the whole range.
//!
//! The log is opened read-only ([`LogOptions::read_only`]): nothing in its directory is
//! created, written, synced or removed, so the dump also works on a read-only mount (a disk
//! image being examined, say) or without write permission. It takes the log's `LOCK` (an
//! exclusive `flock`, per open file description, taken on a read-only descriptor: it conflicts
//! with a database open in any process, this one included). A database that is open elsewhere
//! is reported with exit code 7 at once, never waited for and never touched. The records are
//! validated as the database's next open would, and end where that open's recovery would end
//! them; a torn tail a crash left (or a segment a crashed roll left without a header) is
//! reported and left for that open to cut. A directory without segments, also one whose only
//! segment is such a torn one, is reported as holding none (exit 5).
//!
//! Records past `--limit`, and every record with `--headers`, are read header-only
//! ([`pagelog_log::LogReader::next_info`]): their payloads are neither read nor checked.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use clap::Args;
use pagelog_log::format::parse_segment_file_name;
use pagelog_log::fs::StdFs;
use pagelog_log::{Log, LogError, LogOptions, Lsn, RecordInfo};
use pagelog_vfs::record::{CheckpointMark, KIND_CHECKPOINT, KIND_TXN, TxnRecord};
use serde_json::{Value, json};

use super::Context;
use super::exit::{CliError, Exit};
use super::output::{self, Out};

const AFTER_HELP: &str = "\
The database must not be open: the log belongs to the process that has the database open,
and this command refuses (exit 7) rather than wait or interfere. Inspect a live database's
history in its store with `pagelog ls` instead. The log is only read, never changed (also on a
read-only mount): a torn tail a crash left is reported, and cut by the database's next open.

Examples:
  pagelog log dump app.db
  pagelog log dump app.db --from 1200 --limit 50
  pagelog log dump app.db --headers --json | jq '.records[].lsn'

Exit codes: 0 listed; 3 a record could not be read or decoded; 4 --from outside the log;
5 no log next to DB-PATH; 7 the database is owned by another process; 1 other errors.";

/// Arguments of `pagelog log dump`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct DumpArgs {
    /// The database file; its log is the directory `DB-PATH-pagelog`.
    #[arg(value_name = "DB-PATH")]
    db: PathBuf,
    /// First LSN to list. Default: the first the log holds.
    #[arg(long, value_name = "LSN")]
    from: Option<Lsn>,
    /// List at most N records (the summary still covers the rest of the log).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Headers only: LSN, time, kind and payload size, without reading payloads.
    #[arg(long)]
    headers: bool,
    /// Print one JSON object instead of the listing.
    #[arg(long)]
    json: bool,
}

/// What a record's payload says.
enum Detail {
    Txn {
        page_size: u32,
        db_pages: u32,
        page_count: u32,
        checksum: u64,
    },
    Checkpoint(CheckpointMark),
    /// Not read (header-only).
    NotRead,
    /// A kind the VFS does not write.
    Unknown,
    /// The payload does not decode.
    Bad(String),
}

struct Row {
    info: RecordInfo,
    detail: Detail,
}

fn kind_name(kind: u16) -> String {
    match kind {
        KIND_TXN => "txn".to_string(),
        KIND_CHECKPOINT => "checkpoint".to_string(),
        k => format!("kind-{k}"),
    }
}

fn decode(kind: u16, payload: &[u8]) -> Detail {
    match kind {
        KIND_TXN => match TxnRecord::decode(payload) {
            Ok(t) => Detail::Txn {
                page_size: t.page_size,
                db_pages: t.db_pages,
                page_count: t.page_count,
                checksum: t.checksum,
            },
            Err(e) => Detail::Bad(e.to_string()),
        },
        KIND_CHECKPOINT => match CheckpointMark::decode(payload) {
            Ok(m) => Detail::Checkpoint(m),
            Err(e) => Detail::Bad(e.to_string()),
        },
        _ => Detail::Unknown,
    }
}

impl Row {
    fn line(&self) -> String {
        let i = &self.info;
        let detail = match &self.detail {
            Detail::Txn {
                page_size,
                db_pages,
                page_count,
                checksum,
            } => format!(
                "{} of {page_size} B, database {}, checksum {}",
                output::count(*page_count, "page"),
                output::count(*db_pages, "page"),
                output::checksum(*checksum)
            ),
            Detail::Checkpoint(m) => format!(
                "file holds LSN {}, {} of {} B, checksum {}",
                m.lsn,
                output::count(m.db_pages, "page"),
                m.page_size,
                output::checksum(m.checksum)
            ),
            Detail::NotRead => String::new(),
            Detail::Unknown => "(not a VFS record)".to_string(),
            Detail::Bad(e) => format!("BAD: {e}"),
        };
        format!(
            "{:>10}  {}  {:<10}  {:>9} B  {detail}",
            i.lsn,
            output::time(i.timestamp_us),
            kind_name(i.kind),
            i.len
        )
        .trim_end()
        .to_string()
    }

    fn json(&self) -> Value {
        let i = &self.info;
        let mut v = json!({
            "lsn": i.lsn,
            "time": output::json_time(i.timestamp_us),
            "timestamp_us": i.timestamp_us,
            "kind": kind_name(i.kind),
            "payload_bytes": i.len,
        });
        let extra = match &self.detail {
            Detail::Txn {
                page_size,
                db_pages,
                page_count,
                checksum,
            } => json!({"txn": {
                "page_size": page_size,
                "db_pages": db_pages,
                "page_count": page_count,
                "checksum": output::checksum(*checksum),
            }}),
            Detail::Checkpoint(m) => json!({"checkpoint": {
                "lsn": m.lsn,
                "page_size": m.page_size,
                "db_pages": m.db_pages,
                "checksum": output::checksum(m.checksum),
            }}),
            Detail::Bad(e) => json!({"error": e}),
            Detail::NotRead | Detail::Unknown => json!({}),
        };
        if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        v
    }
}

/// Counts over the records from `--from` to the end of the log.
#[derive(Default)]
struct Summary {
    records: u64,
    listed: u64,
    transactions: u64,
    checkpoints: u64,
    other: u64,
    payload_bytes: u64,
    first_lsn: Option<Lsn>,
    last_lsn: Option<Lsn>,
    bad: u64,
}

impl Summary {
    fn add(&mut self, i: &RecordInfo) {
        self.records += 1;
        self.payload_bytes += i.len as u64;
        match i.kind {
            KIND_TXN => self.transactions += 1,
            KIND_CHECKPOINT => self.checkpoints += 1,
            _ => self.other += 1,
        }
        self.first_lsn.get_or_insert(i.lsn);
        self.last_lsn = Some(i.lsn);
    }
}

/// The log directory of a database.
fn log_dir(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}{}", db.display(), pagelog_vfs::LOG_DIR_SUFFIX))
}

/// Whether `dir` holds at least one segment file (without opening the log).
fn has_segments(dir: &Path) -> Result<bool, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        CliError::new(
            Exit::Error,
            format!("cannot list log directory {}: {e}", dir.display()),
        )
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| {
            CliError::new(
                Exit::Error,
                format!("cannot list log directory {}: {e}", dir.display()),
            )
        })?;
        if entry
            .file_name()
            .to_str()
            .and_then(parse_segment_file_name)
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn open_log(db: &Path, dir: &Path) -> Result<Log, CliError> {
    let opts = LogOptions {
        // Nothing written: no recovery cut, no flusher thread, no spare segment, no new log.
        read_only: true,
        background_flush: false,
        preallocate: false,
        create_if_missing: false,
        ..LogOptions::default()
    };
    Log::open(StdFs::shared(), dir, opts).map_err(|e| match e {
        LogError::NoLog { dir } => CliError::new(
            Exit::NotFound,
            format!(
                "the log in {} holds no segment but a torn one (a crash while it was being \
                 created), which holds no durable record; the database's next open removes it",
                dir.display()
            ),
        ),
        LogError::Io { source, .. } if source.kind() == ErrorKind::WouldBlock => CliError::new(
            Exit::Owned,
            format!(
                "database {} is owned by another process ({source}); stop it to dump its log, \
                 or inspect its store with `pagelog ls`",
                db.display()
            ),
        ),
        e => e.into(),
    })
}

/// Run `pagelog log dump`.
pub fn run(_ctx: &Context, args: DumpArgs) -> Result<(), CliError> {
    let dir = log_dir(&args.db);
    if !dir.is_dir() {
        return Err(CliError::new(
            Exit::NotFound,
            format!(
                "no pagelog log at {} (a pagelog database keeps its log in DB-PATH{}/)",
                dir.display(),
                pagelog_vfs::LOG_DIR_SUFFIX
            ),
        ));
    }
    if !has_segments(&dir)? {
        return Err(CliError::new(
            Exit::NotFound,
            format!("the log in {} holds no segment", dir.display()),
        ));
    }
    let log = open_log(&args.db, &dir)?;
    let stats = log.stats();
    let recovery = log.recovery_report().clone();
    let (first, last) = (log.first_lsn(), log.last_lsn());
    let from = args.from.unwrap_or(first);
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut reader = log.reader(from)?;

    let log_json = json!({
        "dir": dir.display().to_string(),
        "database_id": output::database_id(log.database_id()),
        "timeline": log.timeline(),
        "first_lsn": first,
        "last_lsn": last,
        "segments": stats.segments,
        "disk_bytes": stats.disk_bytes,
        "recovery": {
            "torn_tail_bytes": recovery.left_bytes,
            "torn_segments": recovery.left_segments,
            "tail_reason": recovery.tail_reason,
        },
    });
    let mut out = Out::new();
    if !args.json {
        out.line(format!(
            "log {}: database {}, timeline {}, LSN {first}..={last}, {}, {} on disk",
            dir.display(),
            output::database_id(log.database_id()),
            log.timeline(),
            output::count(stats.segments as u64, "segment"),
            output::bytes(stats.disk_bytes)
        ))?;
        let mut torn = Vec::new();
        if recovery.left_bytes > 0 {
            let why = recovery
                .tail_reason
                .as_deref()
                .unwrap_or("no reason recorded");
            torn.push(format!(
                "{} of never-synced records after LSN {last} ({why})",
                output::bytes(recovery.left_bytes)
            ));
        }
        if recovery.left_segments > 0 {
            torn.push(format!(
                "{} that a crashed roll left without a header",
                output::count(recovery.left_segments as u64, "segment")
            ));
        }
        if !torn.is_empty() {
            out.line(format!(
                "the log ends in a torn tail, never acknowledged, which the database's next \
                 open cuts: {}",
                torn.join("; ")
            ))?;
        }
    }

    let mut sum = Summary::default();
    let mut rows = Vec::new();
    while sum.listed < limit {
        let row = if args.headers {
            match reader.next_info() {
                None => break,
                Some(r) => Row {
                    info: r?,
                    detail: Detail::NotRead,
                },
            }
        } else {
            match reader.next() {
                None => break,
                Some(r) => {
                    let rec = r?;
                    Row {
                        info: RecordInfo {
                            lsn: rec.lsn,
                            kind: rec.kind,
                            timestamp_us: rec.timestamp_us,
                            len: rec.payload.len() as u32,
                        },
                        detail: decode(rec.kind, &rec.payload),
                    }
                }
            }
        };
        sum.add(&row.info);
        sum.listed += 1;
        if matches!(row.detail, Detail::Bad(_)) {
            sum.bad += 1;
        }
        if args.json {
            rows.push(row.json());
        } else {
            out.line(row.line())?;
        }
    }
    // Past the limit: count the rest, header-only.
    while let Some(r) = reader.next_info() {
        sum.add(&r?);
    }
    drop(reader);
    log.close()?;

    let summary = json!({
        "from": from,
        "records": sum.records,
        "listed": sum.listed,
        "first_lsn": sum.first_lsn,
        "last_lsn": sum.last_lsn,
        "transactions": sum.transactions,
        "checkpoints": sum.checkpoints,
        "other": sum.other,
        "payload_bytes": sum.payload_bytes,
        "bad_records": sum.bad,
    });
    if args.json {
        out.json(&json!({"log": log_json, "records": rows, "summary": summary}))?;
    } else {
        let range = match (sum.first_lsn, sum.last_lsn) {
            (Some(a), Some(b)) => format!("LSN {a}..={b}"),
            _ => "no records".to_string(),
        };
        out.line(format!(
            "summary: {range}: {} ({}, {}, {} other), {} of payloads; {} listed",
            output::count(sum.records, "record"),
            output::count(sum.transactions, "transaction"),
            output::count(sum.checkpoints, "checkpoint mark"),
            sum.other,
            output::bytes(sum.payload_bytes),
            sum.listed
        ))?;
    }
    out.flush()?;
    if sum.bad > 0 {
        return Err(CliError::new(
            Exit::Problems,
            format!(
                "{} of {} could not be decoded",
                output::count(sum.bad, "record"),
                dir.display()
            ),
        ));
    }
    Ok(())
}
