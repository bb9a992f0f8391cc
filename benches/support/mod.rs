//! What the log and commit benchmarks share: where their files live, and settling the disk
//! between two benchmarked functions.

use std::path::{Path, PathBuf};

/// The directory benchmark files live in: on the disk the project lives on (`target/`), not a
/// tmpfs.
pub fn bench_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-tmp");
    std::fs::create_dir_all(&p).expect("bench dir");
    p
}

/// A fresh temporary directory under [`bench_root`]. Keep it alive until the group ends
/// (see [`settle`]).
pub fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(bench_root()).expect("temp dir")
}

/// Write back every dirty page of the machine before the next function is measured.
///
/// The functions of a group run one after another on one disk. Without this, what one leaves
/// behind can be paid for by the next: `sqlite_wal_normal` leaves megabytes of unsynced WAL and
/// database pages that the kernel may write back while `pagelog_sync` runs, and a deleted
/// 64 MiB file may be discarded (`discard` mount option) while the next function syncs. For the same
/// reason each function's directory is kept until its group ends, not removed between
/// functions. What a function dirties itself while it runs is still written back during its
/// own measurement, as in production.
pub fn settle() {
    rustix::fs::sync();
}
