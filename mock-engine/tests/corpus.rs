//! The committed fixture corpus loads cleanly: every file parses, passes the
//! per-fixture checks, and names are unique across the corpus.

use std::path::Path;

use mock_engine::Corpus;

/// The issue asks for at least this many cases.
const MIN_FIXTURES: usize = 45;

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn load() -> Corpus {
    Corpus::load_dir(&corpus_dir())
        .unwrap_or_else(|e| panic!("the fixture corpus does not load:\n{e}"))
}

#[test]
fn the_corpus_loads_without_errors() {
    let corpus = load();
    assert!(
        corpus.fixtures.len() >= MIN_FIXTURES,
        "expected at least {MIN_FIXTURES} fixtures, found {}",
        corpus.fixtures.len()
    );
}

#[test]
fn every_file_is_named_after_its_fixture() {
    // Snapshots and CLI filters use the fixture name; a file named otherwise
    // would be impossible to find from a failing report.
    let misnamed: Vec<String> = load()
        .fixtures
        .iter()
        .filter(|f| {
            f.path.file_name().and_then(|n| n.to_str())
                != Some(format!("{}.json", f.fixture.name).as_str())
        })
        .map(|f| format!("{} holds `{}`", f.path.display(), f.fixture.name))
        .collect();
    assert!(
        misnamed.is_empty(),
        "misnamed fixtures:\n{}",
        misnamed.join("\n")
    );
}

#[test]
fn every_fixture_says_what_it_proves_on_one_line() {
    let bad: Vec<String> = load()
        .fixtures
        .iter()
        .filter(|f| f.fixture.description.trim().is_empty() || f.fixture.description.contains('\n'))
        .map(|f| f.fixture.name.clone())
        .collect();
    assert!(
        bad.is_empty(),
        "fixtures without a one-line description: {bad:?}"
    );
}

#[test]
fn every_hand_written_script_is_paced() {
    // Chunk boundaries are only comparable between servers when no server
    // can coalesce two engine steps into one chunk. Fixtures the fuzzer
    // found (fixtures/found/) keep their generated delays, and recorded ones
    // (fixtures/recorded/) the gaps a real engine left; both are compared
    // by what their streams amount to.
    let unpaced: Vec<String> = load()
        .fixtures
        .iter()
        .filter(|f| !f.path.components().any(|c| c.as_os_str() == "found"))
        .filter(|f| f.fixture.recorded.is_none())
        .filter(|f| !f.fixture.engine.steps.is_empty() && !f.fixture.engine.is_paced())
        .map(|f| f.fixture.name.clone())
        .collect();
    assert!(unpaced.is_empty(), "unpaced scripts: {unpaced:?}");
}
