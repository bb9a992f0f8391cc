//! `pagelog restore`: rebuild a database from a store at the latest state, an LSN, a time or a
//! bookmark, with a download progress bar, and print what was done (or one JSON object).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use pagelog_snapshot::{
    Bookmark, RestoreOptions, RestoreReport, RestoreTarget, SnapshotError, restore,
};
use serde_json::json;

use super::Context;
use super::exit::{CliError, Exit};
use super::output::{self, Out};
use super::progress;

const AFTER_HELP: &str = "\
Without --lsn, --time or --bookmark the latest state is restored, from the newest timeline
with history of its own unless --timeline names one (a branch made by --new-timeline counts
once its database has been opened with the store and shipped; before that it holds only its
branch point). The result is checked against the whole-database checksum recorded for the
target, then renamed into place; an existing output (or its -wal, -shm, -pagelog companions)
is replaced only with --force, and never while a process has the database open (its log is
locked): the lock is taken before the download and held until the new file is in place, so
the database cannot be opened meanwhile. With --new-timeline the new log goes into place
before the file (locked until the file is beside it): the database never appears without its
log, and a restore killed midway is completed by running it again with --force.

Examples:
  pagelog restore /backups/app -o app.db
  pagelog restore s3://backups/app -o app.db --lsn 1234 --integrity-check
  pagelog restore s3://backups/app -o app.db --time 2026-05-01T12:00:00+02:00
  pagelog restore /backups/app -o app.db --bookmark 00000001-00000000000004d2 --force
  pagelog restore /backups/app -o app.db --new-timeline   # then open and write app.db

Exit codes: 0 restored; 2 bad arguments (or -o names a directory); 3 corrupt object,
checksum mismatch or failed integrity check; 4 target out of range or records missing;
5 empty store or no such timeline; 6 output exists (no --force); 7 the output database is
owned by a running process; 1 other errors.";

/// Arguments of `pagelog restore`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct RestoreArgs {
    /// The store: a directory, file:///abs/dir or s3://bucket/prefix.
    #[arg(value_name = "STORE-URL")]
    store_url: String,
    /// The database file to write.
    #[arg(short, long, value_name = "PATH")]
    output: PathBuf,
    /// Restore the state right after this LSN.
    #[arg(long, value_name = "N", group = "target")]
    lsn: Option<u64>,
    /// Restore the state after the last transaction committed at or before this time
    /// (RFC 3339, e.g. 2026-05-01T12:00:00Z).
    #[arg(long, value_name = "RFC3339", group = "target", value_parser = parse_time)]
    time: Option<u64>,
    /// Restore the point a bookmark names (TTTTTTTT-LLLLLLLLLLLLLLLL: timeline and LSN).
    #[arg(long, value_name = "B", group = "target", conflicts_with = "timeline")]
    bookmark: Option<Bookmark>,
    /// Restore from this timeline. Default: the newest with history of its own (a batch, or a
    /// complete snapshot at or past its branch point).
    #[arg(long, value_name = "T")]
    timeline: Option<u64>,
    /// Replace an existing output file and its companions.
    #[arg(long)]
    force: bool,
    /// Run SQLite's `PRAGMA integrity_check` on the result.
    #[arg(long)]
    integrity_check: bool,
    /// Claim a new timeline, create a local log and upload the restored state as the new
    /// timeline's base snapshot, so that the restored database can be opened through pagelog
    /// and written (its new history ships to the new timeline). This writes to the store.
    #[arg(long)]
    new_timeline: bool,
    /// Parallel downloads of snapshot parts (4 MiB each).
    #[arg(long, value_name = "N", default_value_t = 4)]
    concurrency: usize,
    /// Open each log batch only once the one before it is applied, instead of starting its
    /// download while that one is applied (slightly less memory, slower).
    #[arg(long)]
    no_prefetch: bool,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

fn parse_time(s: &str) -> Result<u64, String> {
    pagelog_snapshot::time::parse_rfc3339(s).ok_or_else(|| {
        format!("{s:?} is not an RFC 3339 time after 1970 (e.g. 2026-05-01T12:00:00Z)")
    })
}

impl RestoreArgs {
    fn options(&self) -> RestoreOptions {
        let (target, timeline) = match (self.lsn, self.time, self.bookmark) {
            (Some(l), _, _) => (RestoreTarget::Lsn(l), self.timeline),
            (_, Some(t), _) => (RestoreTarget::TimeUs(t), self.timeline),
            (_, _, Some(b)) => (RestoreTarget::Lsn(b.lsn), Some(b.timeline)),
            _ => (RestoreTarget::Latest, self.timeline),
        };
        RestoreOptions {
            target,
            timeline,
            force: self.force,
            integrity_check: self.integrity_check,
            concurrency: self.concurrency.max(1),
            prefetch_batches: !self.no_prefetch,
            new_timeline: self.new_timeline,
            progress: None,
        }
    }
}

/// Run `pagelog restore`.
pub fn run(ctx: &Context, args: RestoreArgs) -> Result<(), CliError> {
    // --force replaces the output whatever it is; never a directory (`-o ~ --force`).
    if args.output.is_dir() {
        return Err(CliError::new(
            Exit::Usage,
            format!(
                "{} is a directory; -o names the database file to write",
                args.output.display()
            ),
        ));
    }
    let store = super::store::open(&args.store_url, &ctx.store)?;
    let mut opts = args.options();
    let bar = progress::bytes_bar(ctx.progress, "downloading");
    let b = bar.clone();
    opts.progress = Some(Arc::new(move |done, planned| {
        b.set_length(planned);
        b.set_position(done);
    }));
    let result = restore(&*store, &args.output, &opts);
    bar.finish_and_clear();
    let report = result.map_err(|e| match e {
        // The library's words are for API users; name the flag.
        SnapshotError::Exists { path } => CliError::new(
            Exit::Exists,
            format!("{} exists (use --force to replace it)", path.display()),
        ),
        e @ SnapshotError::Vfs(pagelog_vfs::VfsError::Owned { .. }) => CliError::new(
            Exit::Owned,
            format!("{e}; stop it before restoring over it, or restore to another path"),
        ),
        e => e.into(),
    })?;
    let mut out = Out::new();
    if args.json {
        out.json(&to_json(&report, args.integrity_check))?;
    } else {
        for line in human(&report, args.integrity_check) {
            out.line(line)?;
        }
    }
    out.flush()
}

fn size_bytes(r: &RestoreReport) -> u64 {
    r.db_pages as u64 * r.page_size as u64
}

fn to_json(r: &RestoreReport, integrity_checked: bool) -> serde_json::Value {
    let secs = r.elapsed.as_secs_f64();
    let dl = r.download_elapsed.as_secs_f64();
    json!({
        "path": r.path.display().to_string(),
        "database_id": output::database_id(r.database_id),
        "timeline": r.timeline,
        "lsn": r.lsn,
        "bookmark": Bookmark::new(r.timeline, r.lsn).to_string(),
        "time": output::json_time(r.timestamp_us),
        "timestamp_us": r.timestamp_us,
        "snapshot_lsn": r.snapshot_lsn,
        "batches": r.batches,
        "transactions": r.transactions,
        "bytes_downloaded": r.bytes_downloaded,
        "page_size": r.page_size,
        "db_pages": r.db_pages,
        "size_bytes": size_bytes(r),
        "checksum": output::checksum(r.checksum),
        "integrity_check": if integrity_checked { json!("ok") } else { json!(null) },
        "new_timeline": r.new_timeline,
        "new_timeline_base_lsn": r.new_timeline_base,
        "elapsed_s": secs,
        "download_elapsed_s": dl,
        "bytes_per_s": if dl > 0.0 { r.bytes_downloaded as f64 / dl } else { 0.0 },
    })
}

fn human(r: &RestoreReport, integrity_checked: bool) -> Vec<String> {
    let secs = r.elapsed.as_secs_f64();
    let mut lines = vec![
        format!("restored {}", r.path.display()),
        format!(
            "  LSN           {} (bookmark {})",
            r.lsn,
            Bookmark::new(r.timeline, r.lsn)
        ),
        format!("  time          {}", output::time(r.timestamp_us)),
        format!("  timeline      {}", r.timeline),
        match r.snapshot_lsn {
            Some(s) => format!("  snapshot      LSN {s}"),
            None => "  snapshot      none (replayed the log from its start)".to_string(),
        },
        format!("  batches       {}", r.batches),
        format!("  transactions  {}", r.transactions),
        format!("  downloaded    {}", output::bytes(r.bytes_downloaded)),
        format!(
            "  size          {} ({} pages of {} B)",
            output::bytes(size_bytes(r)),
            r.db_pages,
            r.page_size
        ),
        format!(
            "  checksum      {} (verified)",
            output::checksum(r.checksum)
        ),
    ];
    if integrity_checked {
        lines.push("  integrity     ok".to_string());
    }
    if let Some(t) = r.new_timeline {
        lines.push(format!(
            "  new timeline  {t} (branched at LSN {}; open the database to continue)",
            r.lsn
        ));
        lines.push(match r.new_timeline_base {
            Some(l) => {
                format!("  base          snapshot of the restored state at LSN {l}, uploaded")
            }
            None => "  base          not uploaded (see the warning): the shipper takes one, and \
                     the records before it show as a recorded gap"
                .to_string(),
        });
    }
    let dl = r.download_elapsed.as_secs_f64();
    lines.push(if r.new_timeline.is_some() {
        format!(
            "  elapsed       {secs:.3} s (download {dl:.3} s, {})",
            output::rate(r.bytes_downloaded, dl)
        )
    } else {
        format!(
            "  elapsed       {secs:.3} s ({})",
            output::rate(r.bytes_downloaded, dl)
        )
    });
    lines
}
