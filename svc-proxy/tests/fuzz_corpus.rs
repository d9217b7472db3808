//! Replays every file of the fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets'
//! own entry points, on the stable toolchain, so that `cargo test --workspace` (and CI) covers
//! everything the fuzzers found and kept, crashes they found included (their inputs stay in
//! the corpora once fixed).

#[path = "../../fuzz/src/entries.rs"]
mod entries;

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            panic!("{target}: {} fails", file.display());
        }
    }
}

#[test]
fn manifest_parse_corpus() {
    replay("manifest_parse", entries::manifest_parse);
}

#[test]
fn model_convert_corpus() {
    replay("model_convert", entries::model_convert);
}

#[test]
fn dns_answer_corpus() {
    replay("dns_answer", entries::dns_answer);
}

#[test]
fn hop_by_hop_corpus() {
    replay("hop_by_hop", entries::hop_by_hop);
}

#[test]
fn h1_direct_corpus() {
    replay("h1_direct", entries::h1_direct);
}
