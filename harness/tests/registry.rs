//! The checked-in registry describes behaviour, not fixtures: its evidence
//! (`seen_in`) names real fixtures that meet each entry's condition, and a
//! case is matched the same whatever its fixture is called.

use std::path::Path;

use harness::diff::{Difference, Kind, Layer};
use harness::divergence::facts::CaseFacts;
use harness::divergence::{Compared, Registry};
use mock_engine::Corpus;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness sits in the workspace")
}

fn load() -> (Registry, Corpus) {
    let registry = Registry::load(&workspace().join("fixtures/divergences.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let corpus = Corpus::load_dir(&workspace().join("fixtures")).unwrap_or_else(|e| panic!("{e}"));
    (registry, corpus)
}

#[test]
fn every_fixture_named_as_evidence_exists_and_meets_the_entrys_condition() {
    let (registry, corpus) = load();
    let mut wrong = Vec::new();
    for entry in &registry.entries {
        for name in &entry.seen_in {
            let Some(loaded) = corpus.get(name) else {
                wrong.push(format!(
                    "{}: seen_in names `{name}`, which is no fixture",
                    entry.id
                ));
                continue;
            };
            let fixture = &loaded.fixture;
            if !entry.endpoints.is_empty() && !entry.endpoints.contains(&fixture.request.endpoint) {
                wrong.push(format!(
                    "{}: `{name}` is a {} fixture, outside the entry's endpoints",
                    entry.id, fixture.request.endpoint
                ));
            }
            if !entry.when.holds(&CaseFacts::of(fixture)) {
                wrong.push(format!(
                    "{}: `{name}` does not meet the entry's `when`",
                    entry.id
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every entry with a condition holds for its evidence and still holds when
/// the fixture is renamed: the name is not part of what is matched.
#[test]
fn a_renamed_fixture_is_matched_by_the_same_entries() {
    let (registry, corpus) = load();
    let mut checked = 0;
    for entry in registry.entries.iter().filter(|e| !e.seen_in.is_empty()) {
        let Some(loaded) = corpus.get(&entry.seen_in[0]) else {
            continue;
        };
        let mut renamed = loaded.fixture.clone();
        renamed.name = format!("zz_{checked}");
        let difference = Difference {
            layer: entry.layer.unwrap_or(Layer::Json),
            path: entry
                .paths
                .first()
                .map_or("status".into(), |p| p.replace('*', "0")),
            kind: entry.kinds.first().copied().unwrap_or(Kind::Changed),
            baseline: None,
            other: None,
        };
        let target = entry.targets.first().map_or("vllm-python", String::as_str);
        let version = entry.versions.first().map_or("0.32.0", String::as_str);
        let at = |facts| Compared {
            baseline: entry.baselines.first().map_or("reference", String::as_str),
            target,
            facts,
            endpoint: loaded.fixture.request.endpoint,
            version,
        };
        let (original, renamed) = (CaseFacts::of(&loaded.fixture), CaseFacts::of(&renamed));
        assert!(entry.matches(&at(&original), &difference), "{}", entry.id);
        assert!(entry.matches(&at(&renamed), &difference), "{}", entry.id);
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} entries have evidence");
}
