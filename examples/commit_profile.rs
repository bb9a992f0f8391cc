//! Profiling driver for the commit path (not part of the docs): N one-row Gated commits with a
//! wait every 64, as in `benches/commit.rs`'s `pagelog_gated64`.
//! `cargo build --release --example commit_profile && valgrind --tool=callgrind target/release/examples/commit_profile DIR 5000`
use std::path::PathBuf;

use pagelog::vfs::{Durability, PagelogVfs, VfsOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "profile-db".into()));
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5000);
    std::fs::create_dir_all(&dir)?;
    let vfs = PagelogVfs::register("profile", VfsOptions::new(Durability::Gated))?;
    let path = std::path::absolute(dir.join("p.db"))?;
    let db = vfs.open_database(&path)?;
    let conn = vfs.connect(&path)?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB NOT NULL)")?;
    let blob = vec![0x5au8; 100];
    let mut stmt = conn.prepare("INSERT INTO t(v) VALUES (?1)")?;
    for i in 1..=n {
        stmt.execute([&blob])?;
        if i % 64 == 0 {
            db.wait_durable(pagelog::vfs::last_commit_lsn().ok_or("no lsn")?)?;
        }
    }
    Ok(())
}
