//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/*`) through the fuzz target bodies
//! on stable Rust, so that a regression of a decoder shows up in the normal test run, not only
//! under `cargo fuzz`. The target bodies and the seed generator are the fuzz crate's own files
//! (`fuzz/src/targets.rs`, `fuzz/src/seeds.rs`), compiled in here unchanged.
//!
//! Run: `cargo test --release --workspace --test fuzz_corpus`. A failure names the
//! corpus file; replay it alone with `PAGELOG_FUZZ_REPLAY=path/to/file` (same command).
//! Regenerate the seed files: `... --test fuzz_corpus -- --ignored write_seed_corpus`.

#[allow(dead_code)]
#[path = "../../fuzz/src/targets.rs"]
mod targets;

#[allow(dead_code)]
#[path = "../../fuzz/src/seeds.rs"]
mod seeds;

use std::path::{Path, PathBuf};

use targets::{Outcome, TARGETS};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn target_fn(name: &str) -> fn(&[u8]) -> Outcome {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

fn files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir().join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn committed_corpora_replay_without_panics() {
    if let Ok(one) = std::env::var("PAGELOG_FUZZ_REPLAY") {
        let path = PathBuf::from(&one);
        let target = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .expect("PAGELOG_FUZZ_REPLAY=fuzz/corpus/<target>/<file>");
        let out = target_fn(target)(&std::fs::read(&path).unwrap());
        println!("{one}: {out:?}");
        return;
    }
    for (name, f) in TARGETS {
        let files = files(name);
        assert!(!files.is_empty(), "no corpus for {name}");
        let (mut accepted, mut rejected) = (0, 0);
        for path in &files {
            let data = std::fs::read(path).unwrap();
            let r = std::panic::catch_unwind(|| f(&data));
            match r {
                Ok(Outcome::Accepted) => accepted += 1,
                Ok(Outcome::Rejected) => rejected += 1,
                Err(_) => panic!(
                    "fuzz target {name} panicked on {}; replay with PAGELOG_FUZZ_REPLAY={}",
                    path.display(),
                    path.display()
                ),
            }
        }
        println!(
            "{name}: {} corpus files, {accepted} accepted, {rejected} rejected",
            files.len()
        );
    }
}

#[test]
fn committed_seeds_are_current() {
    let seeds = seeds::seeds();
    for s in &seeds {
        let f = target_fn(s.target);
        assert_eq!(
            f(&s.bytes),
            s.expect,
            "generated seed {}/{} (the generator or a decoder is wrong)",
            s.target,
            s.name
        );
        let path = corpus_dir().join(s.target).join(format!("seed-{}", s.name));
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with `cargo test --release --workspace \
                 --test fuzz_corpus -- --ignored write_seed_corpus`",
                path.display()
            )
        });
        assert_eq!(
            f(&committed),
            s.expect,
            "committed seed {} no longer decodes as listed in fuzz/src/seeds.rs; regenerate",
            path.display()
        );
    }
    println!("{} seeds checked", seeds.len());
}

/// Writes every generated seed to `fuzz/corpus/<target>/seed-<name>`.
#[test]
#[ignore = "writes the seed corpus into the source tree; run on purpose"]
fn write_seed_corpus() {
    for s in seeds::seeds() {
        let dir = corpus_dir().join(s.target);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("seed-{}", s.name));
        std::fs::write(&path, &s.bytes).unwrap();
        println!("{} ({} bytes)", path.display(), s.bytes.len());
    }
}
