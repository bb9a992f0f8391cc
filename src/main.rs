//! The `pagelog` command-line tool: restore a database from a store at any point of its
//! history, list and verify what a store holds, and inspect a local log. See `docs/CLI.md`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
