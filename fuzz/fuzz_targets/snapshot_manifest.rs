//! Fuzz target `snapshot_manifest`: the body is `pagelog_fuzz::targets::snapshot_manifest` (shared with the corpus replay
//! test, `snapshot/tests/fuzz_corpus.rs`). Run: `cargo fuzz run snapshot_manifest` from the repository root
//! (see `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pagelog_fuzz::targets::snapshot_manifest(data);
});
