//! The `pagelog` command-line tool: restore a database from a store at any point of its
//! history, list and verify what a store holds, and inspect a local log. See `docs/CLI.md`.

mod cli;

fn main() -> std::process::ExitCode {
    // Warnings (and more with `RUST_LOG`, e.g. `RUST_LOG=pagelog_snapshot=debug`) go to stderr;
    // stdout carries only the reports.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    cli::run()
}
