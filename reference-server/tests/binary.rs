//! The `reference-server` binary refuses a bad fixture corpus with the loader's message.

use std::process::Command;

fn run_with_fixtures(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reference-server"))
        .args(["--port", "0", "--fixtures"])
        .arg(dir)
        .output()
        .expect("the binary runs")
}

#[test]
fn a_bad_fixture_exits_non_zero_naming_file_and_path() {
    let dir = std::env::temp_dir().join(format!("reference-server-badfx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.json"),
        r#"{"name":"bad","request":{"body":{}},"engine":{"steps":[{"finish":"nope"}]}}"#,
    )
    .unwrap();
    let out = run_with_fixtures(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.json"), "{stderr}");
    assert!(stderr.contains("engine.steps[0].finish"), "{stderr}");
    assert!(stderr.contains("unknown variant `nope`"), "{stderr}");
}

#[test]
fn a_missing_fixture_dir_exits_non_zero() {
    let out = run_with_fixtures(std::path::Path::new(
        "/nonexistent/reference-server-fixtures",
    ));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/reference-server-fixtures"),
        "{stderr}"
    );
}
