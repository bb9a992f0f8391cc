//! Shared code of the fuzz targets: the target bodies ([`targets`]) and the generator of their
//! seed corpora ([`seeds`]). Both files are also compiled into `snapshot/tests/fuzz_corpus.rs`,
//! which replays every committed corpus file on stable Rust in the normal test run.

pub mod seeds;
pub mod targets;
