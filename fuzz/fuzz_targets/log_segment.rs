//! Fuzz target `log_segment`: the body is `pagelog_fuzz::targets::log_segment` (shared with the corpus replay
//! test, `snapshot/tests/fuzz_corpus.rs`). Run: `cargo fuzz run log_segment` from the repository root
//! (see `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pagelog_fuzz::targets::log_segment(data);
});
