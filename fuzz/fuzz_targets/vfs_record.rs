//! Fuzz target `vfs_record`: the body is `pagelog_fuzz::targets::vfs_record` (shared with the corpus replay
//! test, `snapshot/tests/fuzz_corpus.rs`). Run: `cargo fuzz run vfs_record` from the repository root
//! (see `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pagelog_fuzz::targets::vfs_record(data);
});
