//! Fuzz target `parse_text`: the body is `pagelog_fuzz::targets::parse_text` (shared with the corpus replay
//! test, `snapshot/tests/fuzz_corpus.rs`). Run: `cargo fuzz run parse_text` from the repository root
//! (see `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pagelog_fuzz::targets::parse_text(data);
});
