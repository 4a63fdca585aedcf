//! The reference server keeps every fuzz invariant, in-process and through
//! its control channel as a `url=` target.

use harness::fuzz::{FuzzOptions, fuzz};
use harness::session::scripts::ScriptChannel;
use harness::targets::TargetSpec;

fn options(cases: u32, seed: u64, found: &std::path::Path) -> FuzzOptions {
    FuzzOptions {
        cases,
        seed,
        found_dir: found.to_path_buf(),
        ..FuzzOptions::default()
    }
}

#[test]
fn the_reference_keeps_every_property() {
    let found = tempfile::tempdir().unwrap();
    let report = fuzz(&options(300, 1, found.path())).unwrap();
    assert!(!report.failed(), "{}", report.summary());
    assert!(report.exchanged >= 300, "{}", report.summary());
    assert!(report.scope.scripts && report.scope.late_prompt_info);
}

#[test]
fn a_url_target_with_the_control_channel_is_scripted_and_agrees_with_the_reference() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(reference_server::spawn(
            reference_server::Config {
                enable_script_control: true,
                ..reference_server::Config::default()
            },
            mock_engine::Engine::default(),
        ))
        .unwrap();
    let found = tempfile::tempdir().unwrap();
    let mut o = options(100, 2, found.path());
    o.targets = vec![
        TargetSpec::Reference,
        TargetSpec::Url {
            base: server.base_url(),
            name: Some("remote".into()),
        },
    ];
    let report = fuzz(&o).unwrap();
    assert!(!report.failed(), "{}", report.summary());
    assert!(report.scope.scripts, "{}", report.summary());
    assert_eq!(
        report.channels[1],
        (
            "remote".to_string(),
            ScriptChannel::Control(String::new()).label()
        )
    );
    runtime.block_on(server.shutdown());
}

/// The shards of one seed (`--partition`) exchange disjoint cases that
/// together are the unsharded run's.
#[test]
fn shards_of_a_seed_make_the_whole_run() {
    let found = tempfile::tempdir().unwrap();
    let whole = fuzz(&options(60, 5, found.path())).unwrap();
    assert!(!whole.failed(), "{}", whole.summary());
    assert_eq!(whole.ran.len(), 60, "{}", whole.summary());
    let mut expected = whole.ran.clone();
    expected.sort_unstable();
    for cut in ["count:1/3", "hash:1/2"] {
        let cut: harness::partition::Partition = cut.parse().unwrap();
        let mut union = Vec::new();
        for p in cut.all() {
            let shard = fuzz(&FuzzOptions {
                partition: Some(p),
                ..options(60, 5, found.path())
            })
            .unwrap();
            assert!(!shard.failed(), "{}", shard.summary());
            assert_eq!(shard.generated, 60, "{p}: every shard generates the stream");
            assert!(shard.ran.len() < 60, "{p}: {}", shard.summary());
            assert!(shard.summary().contains(&format!("shard {p}")));
            union.extend(shard.ran);
        }
        union.sort_unstable();
        assert_eq!(union, expected, "{cut}: disjoint, and the whole run");
    }
}

/// Progress is a courtesy: a reader of stderr that goes away (`2>&1 | head`)
/// must not turn a passing run into a failed case.
#[test]
fn a_closed_stderr_does_not_fail_the_run() {
    use std::process::{Command, Stdio};
    let found = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_genconform"))
        .args(["fuzz", "--cases", "250", "--seed", "1", "--no-regressions"])
        .arg("--found-dir")
        .arg(found.path())
        .current_dir(env!("CARGO_MANIFEST_DIR").to_string() + "/..")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads stderr: its first progress line ("[100] cases passed")
    // meets a closed pipe.
    drop(child.stderr.take());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{:?}\n{stdout}", output.status);
    assert!(stdout.contains("no property was violated"), "{stdout}");
}
