//! The `genconform` binary against targets that flood, hang, or are slow
//! while the run is interrupted: the run must stay small, end soon, and
//! report what it did.
//!
//! Each test serves a tiny misbehaving HTTP server in the test process and
//! runs the real binary against it as a `url=` target.

mod common;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::Response;
use common::serve;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// `genconform run` against `targets`, with reports in `dir`.
fn genconform(dir: &Path, targets: &[String], extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_genconform"));
    command
        .arg("run")
        .arg("--fixtures")
        .arg(fixtures())
        .arg("--divergences")
        .arg(fixtures().join("divergences.toml"))
        .args(["--no-snapshots", "--color", "never"])
        .arg("--report-json")
        .arg(dir.join("report.json"))
        .arg("--report-junit")
        .arg(dir.join("report.xml"))
        .args(targets.iter().flat_map(|t| ["--target", t.as_str()]))
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn cases_of(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["cases"].as_array().expect("cases")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_target_leaves_small_reports_and_output() {
    // 40 MiB of garbage event data per request: past the 16 MiB capture cap.
    let app = axum::Router::new().fallback(|| async {
        let chunk = Bytes::from(format!("data: {}\n\n", "garbage".repeat(9000)));
        let chunks = futures::stream::iter(
            std::iter::repeat_n(chunk, 40 * 1024 * 1024 / 63_008)
                .map(Ok::<_, std::convert::Infallible>),
        );
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(chunks))
            .expect("a response")
    });
    let flood = serve(app).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    // The reference as baseline, so each case is also diffed against a
    // 16 MiB transcript (what made the terminal output explode).
    let targets = ["reference".to_string(), format!("url={flood},name=flood")];
    let output = genconform(dir.path(), &targets, &["--filter", "finish_stop"])
        .output()
        .await
        .expect("genconform runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        &stdout[stdout.len().saturating_sub(2000)..]
    );
    let report = read_json(&dir.path().join("report.json"));
    let flooded: Vec<_> = cases_of(&report)
        .iter()
        .filter(|c| c["target"] == "flood")
        .collect();
    let n = flooded.len();
    assert!(n >= 5, "{n} flooded cases");
    for case in &flooded {
        assert_eq!(case["outcome"], "error", "{}", case["fixture"]);
        let cut = case["truncated"].as_array().expect("what was cut is said");
        assert!(
            cut.iter().any(|c| c
                .as_str()
                .is_some_and(|c| c.starts_with("body past the cap: transcribed from its first "))),
            "{cut:?}"
        );
    }
    // Unbounded, each flooded case took 16 MiB and more in each of these.
    let json = std::fs::metadata(dir.path().join("report.json"))
        .unwrap()
        .len();
    let junit = std::fs::metadata(dir.path().join("report.xml"))
        .unwrap()
        .len();
    assert!(
        json < n as u64 * (64 << 10),
        "JSON report: {json} bytes for {n} cases"
    );
    assert!(
        junit < n as u64 * (128 << 10),
        "JUnit report: {junit} bytes for {n} cases"
    );
    assert!(
        (output.stdout.len() as u64) < n as u64 * (128 << 10),
        "terminal output: {} bytes for {n} cases",
        output.stdout.len()
    );
    assert!(
        stdout.contains("… truncated: "),
        "the cut is said where it is printed"
    );
    assert!(stdout.contains(" passed, "), "the closing line is printed");
}

/// The corpus against `app` as a url= target named `name`, with a 6 s
/// request timeout (the longest recorded fixture takes 5.1 s; `run` refuses
/// a timeout its fixtures cannot finish within); the run must end, failing,
/// within `limit`. Returns its JSON report.
async fn run_against_hung(app: axum::Router, name: &str, limit: Duration) -> serde_json::Value {
    let hung = serve(app).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut child = genconform(
        dir.path(),
        &[format!("url={hung},name={name}")],
        &["--timeout-secs", "6"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("genconform starts");
    let started = Instant::now();
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .unwrap_or_else(|_| panic!("still running after {:?}", started.elapsed()))
        .expect("genconform ends");
    assert_eq!(status.code(), Some(1));
    read_json(&dir.path().join("report.json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_target_costs_a_few_timeouts_not_one_per_fixture() {
    // Accepts every request and never answers, /health included.
    let app = axum::Router::new().fallback(std::future::pending::<Response>);
    // Before: ~164 cases x 6 s = ~16 minutes. After: 3 timeouts and a probe.
    let report = run_against_hung(app, "hung", Duration::from_secs(90)).await;
    let errors: Vec<_> = cases_of(&report)
        .iter()
        .filter(|c| c["outcome"] == "error")
        .collect();
    assert!(errors.len() > 100, "{} errors", errors.len());
    let given_up = errors
        .iter()
        .filter(|c| {
            c["reason"].as_str().is_some_and(|r| {
                r.starts_with("not sent: the target stopped answering after case ")
            })
        })
        .count();
    // Waited out: the 3 failures in a row that trigger the probe, and the
    // other cases in flight beside them (up to `--jobs`, 4, in all).
    let waited = 3 + usize::from(harness::run::DEFAULT_JOBS);
    assert!(
        given_up >= errors.len() - waited,
        "{given_up} of {} given up",
        errors.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_whose_health_answers_but_requests_hang_ends_in_bounded_time() {
    // `/health` says 200; every other request is accepted and never answered.
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .fallback(std::future::pending::<Response>);
    // Before: one 6 s timeout per case, four in flight: over 600 s for the
    // corpus. After: 8 timeouts in a row (two or three rounds of 6 s).
    let report = run_against_hung(app, "half-hung", Duration::from_secs(120)).await;
    let cases = cases_of(&report);
    let errors: Vec<_> = cases.iter().filter(|c| c["outcome"] == "error").collect();
    let given_up = errors
        .iter()
        .filter(|c| {
            c["reason"].as_str().is_some_and(|r| {
                r.starts_with("not sent: the target stopped answering requests after case ")
                    && r.contains("8 requests in a row timed out")
            })
        })
        .count();
    let skipped = cases.iter().filter(|c| c["outcome"] == "skipped").count();
    // Every case but the timeouts themselves (and those in flight beside
    // them) carries the reason; none is lost.
    assert_eq!(
        errors.len() + skipped,
        cases.len(),
        "every case has a verdict"
    );
    let waited = 8 + usize::from(harness::run::DEFAULT_JOBS);
    assert!(
        given_up >= errors.len() - waited,
        "{given_up} of {} given up",
        errors.len()
    );
}

/// Answers every request with `{}` after 100 ms, counting them.
async fn paced_target() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .expect("a response")
        }
    });
    (serve(app).await, count)
}

/// Starts a run against a paced target, sends `signal` once it has sent a
/// few requests, and returns how it ended with the reports' directory.
async fn interrupt_run(signal: Signal) -> (ExitStatus, String, tempfile::TempDir) {
    let (paced, count) = paced_target().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let child = genconform(dir.path(), &[format!("url={paced},name=paced")], &[])
        .stdout(Stdio::piped())
        .spawn()
        .expect("genconform starts");
    let started = Instant::now();
    // Nine requests in: the first four (`--jobs`) have ended, whatever
    // order the column started its cases in.
    while count.load(Ordering::SeqCst) < 9 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no requests arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = Pid::from_raw(child.id().expect("running") as i32);
    kill(pid, signal).expect("signal sent");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the run ends after the signal")
        .expect("genconform ends");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        dir,
    )
}

fn assert_partial_reports(dir: &Path, stdout: &str, signal: &str) {
    let report = read_json(&dir.join("report.json"));
    assert_eq!(report["interrupted"], signal);
    let cases = cases_of(&report);
    let not_run = cases.iter().filter(|c| c["outcome"] == "not_run").count();
    let done = cases.len() - not_run;
    assert!(done >= 4, "{done} cases done");
    assert!(not_run > 50, "{not_run} cases not run");
    assert_eq!(cases.len(), report["fixtures"].as_array().unwrap().len());
    let junit = std::fs::read_to_string(dir.join("report.xml")).expect("JUnit written");
    assert!(
        junit.contains(&format!("interrupted by {signal}")),
        "the skip message"
    );
    assert_eq!(
        junit.matches("<testcase ").count(),
        cases.len(),
        "every case is named"
    );
    assert!(
        stdout.contains("not run"),
        "the grid shows the cases not run"
    );
    assert!(
        stdout.contains(&format!("interrupted by {signal}: {not_run} cases not run")),
        "{}",
        &stdout[stdout.len().saturating_sub(500)..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_writes_the_reports_and_exits_143() {
    let (status, stdout, dir) = interrupt_run(Signal::SIGTERM).await;
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert_partial_reports(dir.path(), &stdout, "SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_mid_run_writes_the_reports_and_exits_130() {
    let (status, stdout, dir) = interrupt_run(Signal::SIGINT).await;
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_partial_reports(dir.path(), &stdout, "SIGINT");
}
