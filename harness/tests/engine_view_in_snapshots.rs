//! The engine's view is part of every reviewed snapshot: each fixture whose
//! request has a prompt says, on every target whose engine the harness owns
//! and in every release's own snapshot, what the frontend asked the engine
//! (an `engine:` line, or that no request for its prompt came). A snapshot
//! accepted from a target without the view, or a watch that stopped seeing
//! requests, fails here.

use std::path::Path;

use mock_engine::Corpus;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness sits in the workspace")
}

#[test]
fn every_snapshot_of_a_fixture_with_a_prompt_says_what_the_engine_was_asked() {
    let corpus = Corpus::load_dir(&workspace().join("fixtures")).unwrap_or_else(|e| panic!("{e}"));
    let snapshots = workspace().join("snapshots");
    let mut checked = 0;
    let mut missing = Vec::new();
    for dir in std::fs::read_dir(&snapshots).expect("snapshots/ is there") {
        let dir = dir.expect("a snapshot folder").path();
        for loaded in &corpus.fixtures {
            let file = dir.join(format!("{}.snap", loaded.fixture.name));
            let Ok(text) = std::fs::read_to_string(&file) else {
                // A release's folder holds only what differs from the pinned one.
                continue;
            };
            checked += 1;
            let has_view = text.lines().any(|l| l.starts_with("engine: "));
            match (loaded.fixture.prompt_token_ids().is_some(), has_view) {
                (true, false) => missing.push(file.display().to_string()),
                (false, true) => missing.push(format!(
                    "{}: has an engine line but its fixture has no prompt to watch",
                    file.display()
                )),
                _ => {}
            }
        }
    }
    assert!(checked > 1000, "only {checked} snapshots read");
    assert!(
        missing.is_empty(),
        "{} snapshots without the engine's view (rerun with --accept on a target \
         whose engine the harness owns):\n{}",
        missing.len(),
        missing.join("\n")
    );
}
