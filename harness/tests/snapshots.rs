//! Every fixture against the embedded reference server, checked against its
//! reviewed snapshot in `snapshots/reference/` (`cargo insta review` to accept
//! changes). All mismatches are reported, not just the first.

use std::path::Path;

use harness::run::{self, RunOptions};
use harness::targets::TargetSpec;
use mock_engine::Corpus;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness sits in the workspace")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_transcripts_match_reviewed_snapshots() {
    let corpus = Corpus::load_dir(&workspace().join("fixtures")).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        budget: std::time::Duration::from_secs(600),
        snapshots: workspace().join("snapshots"),
        ..RunOptions::new(vec![TargetSpec::Reference])
    };
    let report = run::run(&corpus, &options, &())
        .await
        .expect("the run starts");
    assert_eq!(report.cases.len(), corpus.fixtures.len());
    let mut failed = Vec::new();
    for case in &report.cases {
        let loaded = corpus
            .get(&case.fixture)
            .expect("a case comes from a fixture");
        let transcript = harness::snapshot::render(
            &case.fixture,
            &loaded.fixture.description,
            case.transcript
                .as_ref()
                .unwrap_or_else(|| panic!("{}: no transcript: {:?}", case.fixture, case.reason)),
            loaded.fixture.chunks_comparable(),
        );
        let name = case.fixture.clone();
        let checked = std::panic::catch_unwind(|| {
            insta::with_settings!({
                snapshot_path => workspace().join("snapshots/reference"),
                prepend_module_to_snapshot => false,
                omit_expression => false,
            }, {
                insta::assert_snapshot!(name, transcript);
            });
        });
        if checked.is_err() {
            failed.push(case.fixture.clone());
        }
    }
    assert!(
        failed.is_empty(),
        "{} snapshot(s) differ or are missing: {failed:?}",
        failed.len()
    );
}
