//! `pagelog verify`: read and check every object of a store (header and body checksums,
//! record checksums and payloads, batch continuity, snapshot parts against their manifests
//! and the whole-database checksum), and name each problem by key. Exits 3 on any problem.

use clap::Args;
use pagelog_snapshot::{VerifyReport, verify};
use serde_json::json;

use super::Context;
use super::exit::{CliError, Exit};
use super::output::{self, Out};
use super::progress;

const AFTER_HELP: &str = "\
Downloads every object. Each problem is printed as `KEY: MESSAGE` on stdout.

Examples:
  pagelog verify /backups/app
  pagelog verify s3://backups/app --json

A recorded gap (records never shipped: dropped locally by the backlog bound, or the records
before a branch's own base snapshot when the branch's first upload failed) is not corruption: it is printed as a `gap:` line and makes verify exit 4 when nothing else is
wrong (the history is intact but some LSNs cannot be restored).

Exit codes: 0 no problem and no gap; 3 problems found; 4 no problem, but gaps recorded; 5 no such store or no pagelog history in it;
1 other errors (e.g. the listing failed).";

/// Arguments of `pagelog verify`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct VerifyArgs {
    /// The store: a directory, file:///abs/dir or s3://bucket/prefix.
    #[arg(value_name = "STORE-URL")]
    store_url: String,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

/// Run `pagelog verify`.
pub fn run(ctx: &Context, args: VerifyArgs) -> Result<(), CliError> {
    let store = super::store::open(&args.store_url, &ctx.store)?;
    let spinner = progress::spinner(ctx.progress, "verifying");
    let result = verify(&*store);
    spinner.finish_and_clear();
    let report = result?;
    let name = store.describe();
    let mut out = Out::new();
    if args.json {
        out.json(&to_json(&name, &report))?;
    } else {
        for p in &report.problems {
            out.line(format!("{}: {}", p.key, without_key(&p.key, &p.message)))?;
        }
        for (t, lsn) in &report.incomplete_snapshots {
            out.line(format!(
                "note: {}{lsn:020}/: snapshot parts without a manifest (an interrupted upload; \
                 never used, removed by retention)",
                pagelog::snapshot::format::snapshot_prefix(*t)
            ))?;
        }
        for (t, a, b) in &report.gaps {
            out.line(format!(
                "gap: {}: records {a}..={b} were never shipped (dropped locally, or taken \
                 into a later snapshot); no LSN from {a} up to the first snapshot at or after \
                 {b} can be restored",
                pagelog::snapshot::format::batch_key(*t, *a)
            ))?;
        }
        out.line(format!(
            "{}: {} ({} read), {}, {} checked; {}{}",
            name,
            output::count(report.objects as u64, "object"),
            output::bytes(report.bytes),
            output::count(report.records, "log record"),
            output::count(report.snapshots as u64, "snapshot"),
            match report.problems.len() {
                0 => "no problem".to_string(),
                n => output::count(n as u64, "problem"),
            },
            match report.gaps.len() {
                0 => String::new(),
                n => format!(", {}", output::count(n as u64, "recorded gap")),
            }
        ))?;
    }
    out.flush()?;
    if !report.is_ok() {
        let n = report.problems.len();
        return Err(CliError::new(
            Exit::Problems,
            format!(
                "{} in {name}; first: {}: {}",
                output::count(n as u64, "problem"),
                report.problems[0].key,
                without_key(&report.problems[0].key, &report.problems[0].message)
            ),
        ));
    }
    if let Some((t, a, b)) = report.gaps.first() {
        return Err(CliError::new(
            Exit::OutOfRange,
            format!(
                "{} in {name} (no corruption); first: timeline {t}, LSN {a}..={b}",
                output::count(report.gaps.len() as u64, "recorded gap")
            ),
        ));
    }
    if report.objects == 0 {
        return Err(CliError::new(
            Exit::NotFound,
            format!("{name} holds no pagelog history"),
        ));
    }
    Ok(())
}

/// The message without a leading "corrupt object KEY: " (the line starts with the key).
fn without_key<'a>(key: &str, message: &'a str) -> &'a str {
    message
        .strip_prefix("corrupt object ")
        .and_then(|m| m.strip_prefix(key))
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(message)
}

fn to_json(store: &str, r: &VerifyReport) -> serde_json::Value {
    json!({
        "store": store,
        "ok": r.is_ok(),
        "objects": r.objects,
        "bytes": r.bytes,
        "records": r.records,
        "snapshots": r.snapshots,
        "incomplete_snapshots": r.incomplete_snapshots.iter().map(|(t, lsn)| json!({"timeline": t, "lsn": lsn})).collect::<Vec<_>>(),
        "gaps": r.gaps.iter().map(|(t, a, b)| json!({"timeline": t, "first_lsn": a, "last_lsn": b})).collect::<Vec<_>>(),
        "problems": r.problems.iter().map(|p| json!({"key": p.key, "message": p.message})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_not_repeated() {
        assert_eq!(without_key("k/1", "corrupt object k/1: bad CRC"), "bad CRC");
        assert_eq!(
            without_key("k/1", "gap: records 3..=4"),
            "gap: records 3..=4"
        );
        assert_eq!(
            without_key("k/1", "corrupt object k/2: x"),
            "corrupt object k/2: x"
        );
    }
}
