//! Support for tests that run child processes: the test binary re-executed to run one
//! ignored test, its stderr collected for failure messages, a temporary directory on the real
//! file system that is kept (and named) when the test fails, and the two-table workload the
//! children write with its check. Shared by `vfs/tests/process.rs` and the root package's
//! `tests/sigkill.rs` (included by `#[path]`).
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

/// The children's schema: each transaction inserts id n into both tables, `b.h` the hash of
/// `a.v`; so a gap, half a transaction or a torn value shows.
pub const SCHEMA: &str = "CREATE TABLE a(id INTEGER PRIMARY KEY, v BLOB);
                      CREATE TABLE b(id INTEGER PRIMARY KEY, h INTEGER);";

/// FNV-1a, stored in `b.h` as a check of `a.v`.
pub fn fnv(data: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in data {
        h ^= byte as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Check a database's content through `conn`: integrity ok, `a` holds exactly ids 1..=n, `b`
/// the same ids, every `b.h` the hash of its `a.v`. Returns n.
pub fn check_content(conn: &rusqlite::Connection) -> Result<i64, String> {
    let sql = |e: rusqlite::Error| format!("query failed: {e}");
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql)?;
    if integrity != ["ok"] {
        return Err(format!("integrity_check: {}", integrity.join("; ")));
    }
    let mut rows = 0i64;
    {
        let mut stmt = conn
            .prepare("SELECT a.id, a.v, b.h FROM a LEFT JOIN b USING (id) ORDER BY a.id")
            .map_err(sql)?;
        let mut q = stmt.query([]).map_err(sql)?;
        while let Some(r) = q.next().map_err(sql)? {
            let id: i64 = r.get(0).map_err(sql)?;
            let v: Vec<u8> = r.get(1).map_err(sql)?;
            let h: Option<i64> = r.get(2).map_err(sql)?;
            rows += 1;
            if id != rows {
                return Err(format!("table a: expected id {rows}, found {id} (a gap)"));
            }
            match h {
                None => return Err(format!("id {id} is in a but not in b (half a transaction)")),
                Some(h) if h != fnv(&v) => {
                    return Err(format!(
                        "id {id}: b.h {h:#x} is not the hash of a.v ({} bytes, hash {:#x})",
                        v.len(),
                        fnv(&v)
                    ));
                }
                Some(_) => {}
            }
        }
    }
    let (b_count, b_max): (i64, i64) = conn
        .query_row("SELECT count(*), coalesce(max(id), 0) FROM b", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(sql)?;
    if b_count != rows || b_max != rows {
        return Err(format!(
            "table b has {b_count} rows up to id {b_max}, table a has ids 1..={rows} (half a transaction)"
        ));
    }
    Ok(rows)
}
