//! The command line: argument parsing (clap derive), the global options, dispatch to the
//! subcommands, and turning their result into `error: ...` on stderr and an exit code.
//!
//! - [`restore`]: rebuild a database from a store at the latest state, an LSN, a time or a
//!   bookmark;
//! - [`ls`]: what a store holds, per timeline;
//! - [`verify`]: check every object of a store;
//! - [`log_dump`]: list the records of a local log;
//! - [`store`]: opening a store from a URL; [`exit`]: exit codes and errors;
//!   [`output`], [`progress`]: what is printed.

pub mod exit;
pub mod log_dump;
pub mod ls;
pub mod output;
pub mod progress;
pub mod restore;
pub mod store;
pub mod verify;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use exit::{EXIT_CODES_HELP, Exit};
use store::StoreArgs;

const EXAMPLES: &str = "\
STORE-URL is a local directory, file:///abs/dir, or s3://bucket/prefix.

Examples:
  pagelog ls /backups/app
  pagelog restore s3://backups/app -o app.db --time 2026-05-01T12:00:00Z
  pagelog verify file:///backups/app
  pagelog log dump app.db --limit 20";

/// Restore, list and verify pagelog stores; inspect local logs.
#[derive(Debug, Parser)]
#[command(name = "pagelog", version, after_help = format!("{EXAMPLES}\n\n{EXIT_CODES_HELP}"))]
pub struct Cli {
    /// S3 options.
    #[command(flatten)]
    store: StoreArgs,
    /// No progress display (it is shown only when stderr is a terminal anyway).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// The subcommand.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rebuild a database from a store at the latest state, an LSN, a time or a bookmark.
    Restore(restore::RestoreArgs),
    /// List what a store holds: per timeline, its snapshots, log batches and restorable range.
    Ls(ls::LsArgs),
    /// Check every object of a store (checksums, continuity, snapshot images).
    Verify(verify::VerifyArgs),
    /// Inspect the local log of a database.
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// List the records of a database's local log (`DB-PATH-pagelog/`).
    Dump(log_dump::DumpArgs),
}

/// What every subcommand gets besides its own arguments.
#[derive(Debug, Clone)]
pub struct Context {
    /// S3 options.
    pub store: StoreArgs,
    /// Show progress on stderr.
    pub progress: bool,
}

/// Parse the arguments, run the subcommand, print any error, and return the exit code.
pub fn run() -> ExitCode {
    // Usage errors exit with 2 here (clap), `--help` and `--version` with 0.
    let cli = Cli::parse();
    let ctx = Context {
        store: cli.store,
        progress: !cli.quiet && std::io::stderr().is_terminal(),
    };
    let result = match cli.command {
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Ls(a) => ls::run(&ctx, a),
        Command::Verify(a) => verify::run(&ctx, a),
        Command::Log(LogCommand::Dump(a)) => log_dump::run(&ctx, a),
    };
    match result {
        Ok(()) => ExitCode::from(Exit::Ok.code()),
        Err(e) => {
            if !e.message.is_empty() {
                let _ = writeln!(std::io::stderr(), "error: {}", e.message);
            }
            ExitCode::from(e.code.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_the_exit_codes() {
        let help = Cli::command().render_help().to_string();
        assert!(
            help.contains("Examples:") && help.contains(EXIT_CODES_HELP),
            "{help}"
        );
    }

    #[test]
    fn targets_exclude_each_other() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["pagelog", "restore", "s", "-o", "x", "--lsn", "3"]).is_ok());
        assert!(
            parse(&[
                "pagelog", "restore", "s", "-o", "x", "--lsn", "3", "--time", "x"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "pagelog",
                "restore",
                "s",
                "-o",
                "x",
                "--bookmark",
                "00000001-0000000000000003",
                "--timeline",
                "1"
            ])
            .is_err()
        );
        assert!(parse(&["pagelog", "restore", "s", "-o", "x", "--bookmark", "zz"]).is_err());
        assert!(parse(&["pagelog", "restore", "s", "-o", "x", "--time", "yesterday"]).is_err());
        let cli = parse(&["pagelog", "ls", "s", "--path-style", "--region", "eu"]).unwrap();
        assert_eq!(cli.store.path_style, Some(true));
        assert_eq!(cli.store.region.as_deref(), Some("eu"));
        let cli = parse(&["pagelog", "--path-style=false", "verify", "s"]).unwrap();
        assert_eq!(cli.store.path_style, Some(false));
    }
}
