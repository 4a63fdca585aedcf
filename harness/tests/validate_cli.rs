//! `genconform validate` and `run` load fixtures and the registry alike:
//! symlinked cases run, broken links and loops are named, fixtures that
//! cannot finish within the request timeout or would take gigabytes are
//! refused, and a broken registry fails `validate` as it fails `run`.
//!
//! These drive the real binary; every file they write is in a tempdir.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn genconform(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genconform"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("genconform starts")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fixture(name: &str, steps: &str) -> String {
    format!(
        r#"{{"name": "{name}", "description": "d",
        "request": {{"body": {{"token_ids": [7, 8], "sampling_params": {{"max_tokens": 1}}}}}},
        "engine": {{"steps": [{steps}]}}}}"#
    )
}

fn quick(name: &str) -> String {
    fixture(name, r#"{"tokens": [1], "finish": "stop"}"#)
}

#[test]
fn a_symlinked_fixture_is_validated_listed_and_run() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("linked_case.json"),
        quick("linked_case"),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let fixtures = work.path().join("fixtures");
    std::fs::create_dir(&fixtures).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("linked_case.json"),
        fixtures.join("linked_case.json"),
    )
    .unwrap();

    let out = genconform(work.path(), &["validate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("1 fixtures in fixtures and 0 divergences"),
        "{}",
        text(&out)
    );
    let out = genconform(work.path(), &["list"]);
    assert!(text(&out).contains("linked_case"), "{}", text(&out));
    let out = genconform(work.path(), &["run", "--no-snapshots", "--color", "never"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 passed"), "{}", text(&out));
}

#[test]
fn dangling_links_and_loops_fail_validate_and_run_naming_the_path() {
    let work = tempfile::tempdir().unwrap();
    let fixtures = work.path().join("fixtures");
    std::fs::create_dir_all(fixtures.join("sub")).unwrap();
    std::fs::write(fixtures.join("ok.json"), quick("ok")).unwrap();
    std::os::unix::fs::symlink("missing.json", fixtures.join("dangling.json")).unwrap();
    std::os::unix::fs::symlink("..", fixtures.join("sub/loop")).unwrap();
    for args in [&["validate"][..], &["run", "--no-snapshots"]] {
        let out = genconform(work.path(), args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(
            all.contains("fixtures/dangling.json: is a dangling symbolic link: its target missing.json does not exist"),
            "{args:?}: {all}"
        );
        assert!(
            all.contains("fixtures/sub/loop: is a symbolic link loop"),
            "{args:?}: {all}"
        );
    }
}

#[test]
fn scripts_that_outlast_the_request_timeout_are_refused_by_validate_and_run() {
    let work = tempfile::tempdir().unwrap();
    let fixtures = work.path().join("fixtures");
    std::fs::create_dir(&fixtures).unwrap();
    let max = u64::MAX;
    std::fs::write(
        fixtures.join("forever.json"),
        fixture(
            "forever",
            &format!(
                r#"{{"delay_ms": {max}, "tokens": [1]}}, {{"delay_ms": {max}, "finish": "stop"}}"#
            ),
        ),
    )
    .unwrap();
    let many = vec![r#"{"delay_ms": 20, "tokens": [1]}"#; 100_000].join(",");
    std::fs::write(
        fixtures.join("many.json"),
        fixture("many", &format!(r#"{many}, {{"finish": "stop"}}"#)),
    )
    .unwrap();
    std::fs::write(
        fixtures.join("forty_seconds.json"),
        fixture(
            "forty_seconds",
            r#"{"delay_ms": 40000, "tokens": [1], "finish": "stop"}"#,
        ),
    )
    .unwrap();
    for args in [&["validate"][..], &["run", "--no-snapshots"]] {
        let out = genconform(work.path(), args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(
            all.contains("forever.json: at `engine.steps[0].delay_ms`: 18446744073709551615 ms"),
            "{args:?}: {all}"
        );
        assert!(
            all.contains("many.json: at `engine.steps`: its 100001 steps take 2000 s in all"),
            "{args:?}: {all}"
        );
        assert!(
            all.contains(
                "many.json: at `engine`: has 100001 steps in all; a fixture may have at most 65536"
            ),
            "{args:?}: {all}"
        );
        assert!(
            all.contains("forty_seconds.json: at `engine.steps[0].delay_ms`: 40 s is at or over the per-request timeout of 30 s"),
            "{args:?}: {all}"
        );
    }
    // The flag moves the line, for `validate` as for `run`.
    std::fs::remove_file(fixtures.join("forever.json")).unwrap();
    std::fs::remove_file(fixtures.join("many.json")).unwrap();
    let out = genconform(work.path(), &["validate", "--timeout-secs", "60"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_prompt_of_26_million_ids_is_refused_quickly() {
    // 208 MB on disk, so not in a tmpfs.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fixtures = work.path().join("fixtures");
    std::fs::create_dir(&fixtures).unwrap();
    let ids = "1234567,".repeat(1 << 20);
    let mut body = String::from(r#"{"name": "huge", "request": {"body": {"token_ids": ["#);
    for _ in 0..25 {
        body.push_str(&ids);
    }
    body.push_str(r#"1]}}, "engine": {"steps": [{"tokens": [1], "finish": "stop"}]}}"#);
    std::fs::write(fixtures.join("huge.json"), body).unwrap();
    let started = Instant::now();
    let out = genconform(work.path(), &["validate"]);
    let took = started.elapsed();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("huge.json: is 200 MiB; a fixture file may be at most 64 MiB (not read)"),
        "{all}"
    );
    // Unfixed, it parsed for 12 s in 2.1 GB and said all was valid.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn a_broken_registry_fails_validate_naming_the_file_and_the_field() {
    let work = tempfile::tempdir().unwrap();
    let fixtures = work.path().join("fixtures");
    std::fs::create_dir(&fixtures).unwrap();
    std::fs::write(fixtures.join("ok.json"), quick("ok")).unwrap();
    std::fs::write(
        fixtures.join("divergences.toml"),
        "[[divergence]]\nid = 'a'\nclass = 'bug'\nreason = 'r'\n\n\
         [[divergence]]\nid = 'b'\nclass = 'bug'\nreasn = 'typo'\n",
    )
    .unwrap();
    let out = genconform(work.path(), &["validate"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("error: invalid divergence registry: fixtures/divergences.toml"),
        "{all}"
    );
    assert!(all.contains("divergence[1].reasn"), "{all}");
    assert!(all.contains("unknown field `reasn`"), "{all}");
    // `--divergences` points it elsewhere, as for `run`.
    std::fs::write(work.path().join("ok.toml"), "").unwrap();
    let out = genconform(work.path(), &["validate", "--divergences", "ok.toml"]);
    assert!(out.status.success(), "{}", text(&out));
}
