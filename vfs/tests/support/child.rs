//! Support for tests that run child processes: the test binary re-executed to run one
//! ignored test, its stderr collected for failure messages, and a temporary directory on the
//! real file system that is kept (and named) when the test fails. Shared by
//! `vfs/tests/process.rs` and the root package's `tests/sigkill.rs` (included by `#[path]`).
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};

/// This test binary, running only the ignored test `name`, with `envs` set.
pub fn spawn_self(name: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawning the child test process")
}

/// Collect a child's stderr in a thread (for failure messages).
pub fn collect_stderr(child: &mut Child) -> JoinHandle<String> {
    let mut err = child.stderr.take().expect("piped stderr");
    thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    })
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Keeps the temporary directory when the test panics, and says where it is.
pub struct KeepOnPanic(Option<tempfile::TempDir>);

impl KeepOnPanic {
    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("tempdir").path()
    }
}

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("test failed: keeping its files in {}", dir.keep().display());
        }
    }
}

/// A temporary directory on the real file system (the target directory, not a tmpfs).
pub fn real_tempdir(prefix: &str) -> KeepOnPanic {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("creating a temporary directory");
    KeepOnPanic(Some(dir))
}
