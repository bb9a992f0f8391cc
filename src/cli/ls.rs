//! `pagelog ls`: what a store holds, per timeline — its claim (a new database, or a branch of
//! which timeline at which LSN), its complete and unfinished snapshots, its log batches, the
//! range it can restore and its size — and the count of foreign objects under the prefix.
//! Objects that cannot be read are reported and make the command fail after the listing.

use clap::Args;
use pagelog_log::Lsn;
use pagelog_snapshot::catalog::{SnapshotEntry, TimelineCatalog};
use pagelog_snapshot::format::{Manifest, TimelineInfo};
use pagelog_snapshot::{
    Bookmark, Catalog, ObjectStore, RestorableRange, SnapshotError, recorded_gaps,
    restorable_range, split_by_gaps,
};
use serde_json::{Value, json};

use super::Context;
use super::exit::{CliError, Exit};
use super::output::{self, Out};
use super::progress;

const AFTER_HELP: &str = "\
Reads the listing, each timeline's claim, the first and last batch headers and the snapshot
manifests; it does not download log bodies or snapshot pages (use `pagelog verify` for that).

Examples:
  pagelog ls /backups/app
  pagelog ls s3://backups/app --endpoint http://127.0.0.1:9000 --json

Exit codes: 0 listed; 5 no such store or no pagelog history in it; 3 a corrupt claim,
header or manifest; 1 other errors.";

/// Arguments of `pagelog ls`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct LsArgs {
    /// The store: a directory, file:///abs/dir or s3://bucket/prefix.
    #[arg(value_name = "STORE-URL")]
    store_url: String,
    /// Print one JSON object instead of the listing.
    #[arg(long)]
    json: bool,
}

struct SnapshotView {
    lsn: Lsn,
    manifest: Option<Manifest>,
    /// A manifest is there but could not be read (the error is among the view's errors).
    manifest_unreadable: bool,
    parts: usize,
    bytes: u64,
}

#[derive(Default)]
struct TimelineView {
    timeline: u64,
    bytes: u64,
    claim: Option<TimelineInfo>,
    snapshots: Vec<SnapshotView>,
    batches: usize,
    batch_bytes: u64,
    batch_range: Option<(Lsn, Lsn)>,
    range: Option<RestorableRange>,
    /// Recorded gaps (first, last LSN), and the restorable LSN ranges they leave.
    gaps: Vec<(Lsn, Lsn)>,
    ranges: Vec<(Lsn, Lsn)>,
    errors: Vec<CliError>,
}

impl TimelineView {
    fn read(store: &dyn ObjectStore, t: &TimelineCatalog) -> TimelineView {
        let mut v = TimelineView {
            timeline: t.timeline,
            bytes: t.bytes,
            batches: t.batches.len(),
            batch_bytes: t.batches.iter().map(|b| b.size).sum(),
            ..TimelineView::default()
        };
        match t.read_claim(store) {
            Ok(c) => v.claim = c,
            Err(e) => v.errors.push(e.into()),
        }
        if let (Some(first), Some(_)) = (t.batches.first(), t.batches.last()) {
            match t.batch_header(store, t.batches.len() - 1) {
                Ok(h) => v.batch_range = Some((first.first_lsn, h.last_lsn)),
                Err(e) => v.errors.push(e.into()),
            }
        }
        for s in &t.snapshots {
            let manifest = read_manifest(store, t, s, &mut v.errors);
            v.snapshots.push(SnapshotView {
                lsn: s.lsn,
                manifest_unreadable: s.is_complete() && manifest.is_none(),
                manifest,
                parts: s.parts.len(),
                bytes: s.size,
            });
        }
        match recorded_gaps(store, t) {
            Ok(g) => v.gaps = g,
            Err(e) => v.errors.push(e.into()),
        }
        match restorable_range(store, t) {
            Ok(r) => {
                v.ranges = split_by_gaps(t, &r, &v.gaps);
                v.range = Some(r);
            }
            // Nothing restorable yet (a claim alone): not an error.
            Err(SnapshotError::Empty { .. }) => {}
            Err(e) => v.errors.push(e.into()),
        }
        v
    }

    fn complete_snapshots(&self) -> usize {
        self.snapshots
            .iter()
            .filter(|s| s.manifest.is_some())
            .count()
    }

    fn origin(&self) -> String {
        match &self.claim {
            None => "no claim".to_string(),
            Some(c) if c.parent_timeline == 0 => format!(
                "new database {}, claimed {}",
                output::database_id(c.database_id),
                output::time(c.created_us)
            ),
            Some(c) => format!(
                "branched from timeline {} at LSN {} (database {}, claimed {})",
                c.parent_timeline,
                c.parent_lsn,
                output::database_id(c.database_id),
                output::time(c.created_us)
            ),
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!("timeline {}: {}", self.timeline, self.origin())];
        lines.push(match &self.range {
            Some(r) => format!(
                "  restorable  LSN {}  {} .. {}",
                self.ranges
                    .iter()
                    .map(|(a, b)| format!("{a}..={b}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                output::time(r.first_time_us),
                output::time(r.last_time_us)
            ),
            None => "  restorable  nothing yet".to_string(),
        });
        for &(a, b) in &self.gaps {
            // The LSNs the gap makes unrestorable: from its first up to where a range resumes
            // (the first complete snapshot at or after its last LSN, which restores that LSN).
            let resume = self.ranges.iter().map(|r| r.0).filter(|&s| s >= b).min();
            lines.push(match resume {
                Some(s) if s > a => format!(
                    "  gap         LSN {a}..={b}: records never shipped, LSN {a}..={} not \
                     restorable",
                    s - 1
                ),
                Some(s) => format!(
                    "  gap         LSN {a}..={b}: records never shipped, restorable from the \
                     snapshot at {s}"
                ),
                None => format!(
                    "  gap         LSN {a}..={b}: records never shipped, nothing from LSN {a} on \
                     restorable"
                ),
            });
        }
        lines.push(match self.batch_range {
            Some((first, last)) => format!(
                "  log         {}, LSN {first}..={last}, {}",
                output::count(self.batches as u64, "batch"),
                output::bytes(self.batch_bytes)
            ),
            None if self.batches > 0 => format!(
                "  log         {}, {}",
                output::count(self.batches as u64, "batch"),
                output::bytes(self.batch_bytes)
            ),
            None => "  log         no batches".to_string(),
        });
        lines.push(format!(
            "  snapshots   {} complete{}{}",
            self.complete_snapshots(),
            match self
                .snapshots
                .iter()
                .filter(|s| s.manifest.is_none() && !s.manifest_unreadable)
                .count()
            {
                0 => String::new(),
                n => format!(", {n} unfinished"),
            },
            match self
                .snapshots
                .iter()
                .filter(|s| s.manifest_unreadable)
                .count()
            {
                0 => String::new(),
                n => format!(", {n} with an unreadable manifest"),
            }
        ));
        for s in &self.snapshots {
            lines.push(match &s.manifest {
                Some(m) => format!(
                    "    LSN {:<10} {}  {} of {} B  {}",
                    s.lsn,
                    output::time(m.timestamp_us),
                    output::count(m.db_pages, "page"),
                    m.page_size,
                    output::bytes(s.bytes)
                ),
                None if s.manifest_unreadable => format!(
                    "    LSN {:<10} manifest unreadable (see below), {}  {}",
                    s.lsn,
                    output::count(s.parts as u64, "part"),
                    output::bytes(s.bytes)
                ),
                None => format!(
                    "    LSN {:<10} unfinished ({}, no manifest)  {}",
                    s.lsn,
                    output::count(s.parts as u64, "part"),
                    output::bytes(s.bytes)
                ),
            });
        }
        lines.push(format!("  total       {}", output::bytes(self.bytes)));
        for e in &self.errors {
            lines.push(format!("  unreadable: {e}"));
        }
        lines
    }

    fn json(&self) -> Value {
        let c = self.claim.as_ref();
        json!({
            "timeline": self.timeline,
            "claimed": c.is_some(),
            "database_id": c.map(|c| output::database_id(c.database_id)),
            "parent_timeline": c.and_then(|c| (c.parent_timeline != 0).then_some(c.parent_timeline)),
            "parent_lsn": c.and_then(|c| (c.parent_timeline != 0).then_some(c.parent_lsn)),
            "created": c.map(|c| output::json_time(c.created_us)),
            "first_lsn": c.map(|c| c.first_lsn),
            "snapshot_count": self.complete_snapshots(),
            "snapshots": self.snapshots.iter().map(|s| json!({
                "lsn": s.lsn,
                "complete": s.manifest.is_some(),
                "manifest_unreadable": s.manifest_unreadable,
                "time": s.manifest.as_ref().map(|m| output::json_time(m.timestamp_us)),
                "timestamp_us": s.manifest.as_ref().map(|m| m.timestamp_us),
                "page_size": s.manifest.as_ref().map(|m| m.page_size),
                "db_pages": s.manifest.as_ref().map(|m| m.db_pages),
                "checksum": s.manifest.as_ref().map(|m| output::checksum(m.checksum)),
                "parts": s.parts,
                "bytes": s.bytes,
            })).collect::<Vec<_>>(),
            "batches": {
                "count": self.batches,
                "first_lsn": self.batch_range.map(|r| r.0),
                "last_lsn": self.batch_range.map(|r| r.1),
                "bytes": self.batch_bytes,
            },
            "restorable": self.range.as_ref().map(|r| json!({
                "first_lsn": r.first_lsn,
                "last_lsn": r.last_lsn,
                "first_time": output::json_time(r.first_time_us),
                "last_time": output::json_time(r.last_time_us),
                "first_bookmark": Bookmark::new(r.timeline, r.first_lsn).to_string(),
                "last_bookmark": Bookmark::new(r.timeline, r.last_lsn).to_string(),
                "ranges": self.ranges.iter().map(|(a, b)| json!({"first_lsn": a, "last_lsn": b})).collect::<Vec<_>>(),
            })),
            "gaps": self.gaps.iter().map(|(a, b)| json!({"first_lsn": a, "last_lsn": b})).collect::<Vec<_>>(),
            "bytes": self.bytes,
            "errors": self.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        })
    }
}

fn read_manifest(
    store: &dyn ObjectStore,
    t: &TimelineCatalog,
    s: &SnapshotEntry,
    errors: &mut Vec<CliError>,
) -> Option<Manifest> {
    if !s.is_complete() {
        return None;
    }
    match t.manifest(store, s) {
        Ok(m) => Some(m),
        Err(e) => {
            errors.push(e.into());
            None
        }
    }
}

/// Run `pagelog ls`.
pub fn run(ctx: &Context, args: LsArgs) -> Result<(), CliError> {
    let store = super::store::open(&args.store_url, &ctx.store)?;
    let spinner = progress::spinner(ctx.progress, "listing");
    let catalog = Catalog::load(&*store);
    let catalog = match catalog {
        Ok(c) => c,
        Err(e) => {
            spinner.finish_and_clear();
            return Err(e.into());
        }
    };
    let views: Vec<TimelineView> = catalog
        .timelines
        .values()
        .map(|t| TimelineView::read(&*store, t))
        .collect();
    // A claim that cannot be read is already among the timeline's errors.
    let latest = catalog
        .latest_timeline(&*store)
        .ok()
        .flatten()
        .map(|t| t.timeline);
    spinner.finish_and_clear();

    let mut out = Out::new();
    if args.json {
        out.json(&json!({
            "store": catalog.store,
            "timeline_count": views.len(),
            "latest_timeline": latest,
            "bytes": catalog.bytes(),
            "foreign_objects": catalog.foreign.len(),
            "timelines": views.iter().map(TimelineView::json).collect::<Vec<_>>(),
        }))?;
    } else {
        out.line(format!(
            "store {}: {}, {}, {}",
            catalog.store,
            output::count(views.len() as u64, "timeline"),
            output::bytes(catalog.bytes()),
            output::count(catalog.foreign.len() as u64, "foreign object"),
        ))?;
        for v in &views {
            for line in v.lines() {
                out.line(line)?;
            }
        }
    }
    out.flush()?;
    if views.is_empty() {
        return Err(CliError::new(
            Exit::NotFound,
            format!("{} holds no pagelog history", catalog.store),
        ));
    }
    let errors: Vec<&CliError> = views.iter().flat_map(|v| &v.errors).collect();
    match errors.first() {
        None => Ok(()),
        Some(first) => Err(CliError::new(
            first.code,
            format!(
                "{} could not be read (run `pagelog verify`); first: {}",
                output::count(errors.len() as u64, "object"),
                first.message
            ),
        )),
    }
}
