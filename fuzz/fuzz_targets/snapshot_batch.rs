//! Fuzz target `snapshot_batch`: the body is `pagelog_fuzz::targets::snapshot_batch` (shared with the corpus replay
//! test, `snapshot/tests/fuzz_corpus.rs`). Run: `cargo fuzz run snapshot_batch` from the repository root
//! (see `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pagelog_fuzz::targets::snapshot_batch(data);
});
