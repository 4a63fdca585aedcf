//! Shards of a run (`run --partition`), merged by `report merge`, equal the
//! unsharded run case for case; and a merge refuses shards that do not make
//! one whole run.

use std::path::{Path, PathBuf};

use harness::partition::Partition;
use harness::report::merge::{MergeError, merge_files};
use harness::run::{self, RunOptions, RunReport};
use harness::targets::TargetSpec;
use mock_engine::Corpus;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness sits in the workspace")
}

/// Fixtures of every endpoint, few enough to run nine times.
const FILTER: &str = "usage";

/// A copy of the reviewed reference snapshots in which the first selected
/// fixture has none and the second one's differs, so the run has passes and
/// failures of two kinds to merge.
fn snapshots(corpus: &Corpus, dir: &Path) -> PathBuf {
    let root = dir.join("snapshots");
    let reviewed = root.join("reference");
    std::fs::create_dir_all(&reviewed).unwrap();
    let selected = run::select(corpus, Some(FILTER), None);
    for (i, f) in selected.iter().enumerate() {
        let file = format!("{}.snap", f.fixture.name);
        let text = std::fs::read_to_string(workspace().join("snapshots/reference").join(&file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        match i {
            0 => {}
            1 => std::fs::write(reviewed.join(&file), text + "\nnot what the server sends\n")
                .unwrap(),
            _ => std::fs::write(reviewed.join(&file), text).unwrap(),
        }
    }
    root
}

async fn run_once(corpus: &Corpus, partition: Option<Partition>) -> RunReport {
    // Each run has its own copy: a run writes pending snapshots.
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        filter: Some(FILTER.into()),
        budget: std::time::Duration::from_secs(600),
        snapshots: snapshots(corpus, dir.path()),
        check_snapshots: true,
        partition,
        ..RunOptions::new(vec![TargetSpec::Reference])
    };
    run::run(corpus, &options, &())
        .await
        .expect("the run starts")
}

/// What a report says of its cases, without the time each took.
fn cases(report: &RunReport) -> Vec<serde_json::Value> {
    report
        .cases
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap();
            v.as_object_mut().unwrap().remove("elapsed_ms");
            v
        })
        .collect()
}

/// JUnit without its `time` attributes.
fn untimed(xml: &str) -> String {
    let mut out = String::new();
    for (i, part) in xml.split(" time=\"").enumerate() {
        match i {
            0 => out.push_str(part),
            _ => out.push_str(&part[part.find('"').unwrap() + 1..]),
        }
    }
    out
}

fn write(dir: &Path, name: &str, report: &RunReport) -> PathBuf {
    let path = dir.join(name);
    harness::report::write_json(report, &path).unwrap();
    path
}

fn edited(dir: &Path, from: &Path, name: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from).unwrap()).unwrap();
    edit(&mut v);
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_shards_equal_the_unsharded_run_and_bad_sets_are_refused() {
    let corpus = Corpus::load_dir(&workspace().join("fixtures")).unwrap_or_else(|e| panic!("{e}"));
    let whole = run_once(&corpus, None).await;
    let outcomes: std::collections::BTreeSet<_> = whole.cases.iter().map(|c| c.outcome).collect();
    assert!(
        outcomes.len() >= 2 && whole.failed(),
        "the run should pass some cases and fail others: {outcomes:?}"
    );
    assert!(whole.fixtures.len() >= 20, "{}", whole.fixtures.len());
    let dir = tempfile::tempdir().unwrap();

    let mut count_paths = Vec::new();
    for cut in ["count:1/4", "hash:1/3"] {
        let cut: Partition = cut.parse().unwrap();
        let mut paths = Vec::new();
        for p in cut.all() {
            let shard = run_once(&corpus, Some(p)).await;
            assert_eq!(shard.selection, whole.selection, "{p}");
            assert!(shard.fixtures.len() < whole.fixtures.len(), "{p}");
            paths.push(write(
                dir.path(),
                &format!("{}-{}.json", cut.kind.name(), p.shard),
                &shard,
            ));
        }
        // The order of the files does not matter.
        paths.reverse();
        let merged = merge_files(&paths).unwrap_or_else(|e| panic!("{cut}: {e}"));
        assert_eq!(merged.fixtures, whole.fixtures, "{cut}");
        assert_eq!(merged.endpoints, whole.endpoints, "{cut}");
        assert_eq!(merged.targets, whole.targets, "{cut}");
        assert_eq!(merged.selection, whole.selection, "{cut}");
        assert!(merged.shard.is_none());
        assert_eq!(merged.failed(), whole.failed(), "{cut}");
        assert_eq!(cases(&merged), cases(&whole), "{cut}: case for case");
        assert_eq!(
            untimed(&harness::report::junit(&merged).unwrap()),
            untimed(&harness::report::junit(&whole).unwrap()),
            "{cut}: the JUnit"
        );
        if cut.kind == harness::partition::PartitionKind::Count {
            count_paths = paths;
            count_paths.reverse();
        }
    }

    let d = dir.path();
    let p = &count_paths;
    let refused = |paths: &[PathBuf]| merge_files(paths).expect_err("the merge should fail");
    match refused(&p[..3]) {
        MergeError::Missing { missing, .. } => assert_eq!(missing, ["count:4/4"]),
        e => panic!("{e}"),
    }
    assert!(matches!(
        refused(&[
            p[0].clone(),
            p[1].clone(),
            p[1].clone(),
            p[2].clone(),
            p[3].clone()
        ]),
        MergeError::SameShard { .. }
    ));
    let whole_path = write(d, "whole.json", &whole);
    assert!(matches!(
        refused(&[whole_path]),
        MergeError::NotAShard { .. }
    ));
    let hash1 = d.join("hash-1.json");
    assert!(matches!(
        refused(&[p[0].clone(), hash1]),
        MergeError::Partitions { .. }
    ));
    let other_selection = edited(d, &p[1], "sel.json", |v| {
        v["selection"]["digest"] = "0000000000000000".into();
    });
    let e = refused(&[p[0].clone(), other_selection, p[2].clone(), p[3].clone()]);
    assert!(matches!(e, MergeError::Selections { .. }), "{e}");
    assert!(e.to_string().contains("sel.json"), "names the file: {e}");
    let other_targets = edited(d, &p[1], "targets.json", |v| {
        v["targets"] = serde_json::json!(["vllm-rs"]);
    });
    assert!(matches!(
        refused(&[p[0].clone(), other_targets]),
        MergeError::Targets { .. }
    ));
    // Shard 1's fixtures again, claiming to be shard 2.
    let twice = edited(d, &p[0], "twice.json", |v| {
        v["shard"]["partition"] = "count:2/4".into();
    });
    assert!(matches!(
        refused(&[p[0].clone(), twice, p[2].clone(), p[3].clone()]),
        MergeError::Overlap { .. }
    ));
    let junk = d.join("junk.json");
    std::fs::write(&junk, "{\"targets\": 3}").unwrap();
    let e = refused(&[junk]);
    assert!(matches!(e, MergeError::NotAReport { .. }), "{e}");
    assert!(
        e.to_string().contains("junk.json") && e.to_string().contains("targets"),
        "{e}"
    );
    assert!(matches!(
        refused(&[d.join("absent.json")]),
        MergeError::Read { .. }
    ));
    assert!(matches!(refused(&[]), MergeError::Empty));
}
