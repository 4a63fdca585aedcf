//! Telling people and machines what a run found: a fixture x target grid
//! with the diffs of what failed, a JSON report, and JUnit XML; [`merge`]
//! puts the reports of a run's shards back together.

pub mod merge;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use console::Style;
use mock_engine::script::Endpoint;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::excerpt;
use crate::run::{CaseResult, Outcome, RunReport};
use crate::snapshot;

fn style(outcome: Outcome, color: bool) -> Style {
    let s = Style::new().force_styling(color);
    match outcome {
        Outcome::Pass => s.green(),
        Outcome::Skipped | Outcome::NotRun => s.dim(),
        Outcome::Known => s.cyan(),
        Outcome::SnapshotChanged => s.yellow(),
        Outcome::New | Outcome::Error => s.red().bold(),
    }
}

/// The grid, the details of every failing case, and a summary line.
pub fn terminal(report: &RunReport, color: bool) -> String {
    let mut out = String::new();
    let name_width = report
        .fixtures
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(7)
        .max(7);
    let widths: Vec<usize> = report.targets.iter().map(|t| t.len().max(8)).collect();
    let _ = write!(out, "{:name_width$}  {:11}", "fixture", "endpoint");
    for (t, w) in report.targets.iter().zip(&widths) {
        let _ = write!(out, "  {t:w$}");
    }
    out.push('\n');
    let by_key: BTreeMap<(&str, &str), &CaseResult> = report
        .cases
        .iter()
        .map(|c| ((c.fixture.as_str(), c.target.as_str()), c))
        .collect();
    for (fixture, endpoint) in report.fixtures.iter().zip(&report.endpoints) {
        let _ = write!(out, "{fixture:name_width$}  {:11}", endpoint.name());
        for (t, w) in report.targets.iter().zip(&widths) {
            let label = match by_key.get(&(fixture.as_str(), t.as_str())) {
                Some(c) => style(c.outcome, color)
                    .apply_to(format!("{:w$}", c.outcome.label()))
                    .to_string(),
                None => format!("{:w$}", "-"),
            };
            let _ = write!(out, "  {label}");
        }
        out.push('\n');
    }
    for case in report
        .cases
        .iter()
        .filter(|c| c.outcome.fails() || c.outcome == Outcome::Known)
    {
        out.push('\n');
        let head = style(case.outcome, color).apply_to(format!(
            "{} {} ({}) @ {}",
            case.outcome.label(),
            case.fixture,
            case.endpoint,
            case.target
        ));
        let _ = writeln!(out, "{head}");
        let mut details = case_details(case);
        // Each case's share of the terminal is bounded, so a flooding
        // target cannot bury the grid's closing lines.
        if excerpt::truncate(&mut details, excerpt::PRINTED_CASE_BYTES) > 0 {
            details.push_str(" (the JSON report keeps more)\n");
        }
        out.push_str(&details);
    }
    out.push('\n');
    out.push_str(&stale_evidence(report));
    out.push_str(&summary(report));
    out.push('\n');
    out
}

/// One line per registry entry that names a fixture as evidence (`seen_in`)
/// which ran and did not show it: the entry or its evidence needs a look.
/// It fails nothing (a timing-dependent entry may not show on every run).
fn stale_evidence(report: &RunReport) -> String {
    let mut out = String::new();
    for case in &report.cases {
        for id in &case.unshown_evidence {
            let _ = writeln!(
                out,
                "evidence: divergence `{id}` lists {} in seen_in, but {} showed no difference it explains",
                case.fixture, case.target
            );
        }
    }
    out
}

/// What the terminal shows under a failing or known case's head line.
fn case_details(case: &CaseResult) -> String {
    let mut out = String::new();
    if let Some(reason) = &case.reason {
        let _ = writeln!(out, "  reason: {reason}");
    }
    for d in &case.differences {
        match &d.known {
            Some(id) => {
                let _ = writeln!(out, "  known ({id}): {}", d.difference);
            }
            None => {
                let _ = writeln!(out, "  {}", d.difference);
            }
        }
    }
    if case.outcome.fails()
        && let Some(diff) = &case.text_diff
    {
        out.push_str(&indent(diff));
    }
    match &case.snapshot {
        Some(snapshot::Status::New) => out.push_str(
            "  no reviewed snapshot yet: review with `cargo insta review` or rerun with --accept\n",
        ),
        Some(snapshot::Status::Changed(diff)) => {
            out.push_str(
                "  snapshot changed (review with `cargo insta review` or rerun with --accept):\n",
            );
            out.push_str(&indent(diff));
        }
        _ => {}
    }
    for note in &case.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    for cut in &case.truncated {
        let _ = writeln!(out, "  truncated {cut}");
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// `N passed, N failed` (the plain closing line CI systems read), then counts.
pub fn summary(report: &RunReport) -> String {
    let count = |o: Outcome| report.cases.iter().filter(|c| c.outcome == o).count();
    let failed = report.cases.iter().filter(|c| c.outcome.fails()).count();
    let passed = count(Outcome::Pass) + count(Outcome::Known);
    let interrupted = match &report.interrupted {
        Some(signal) => format!(
            "\ninterrupted by {signal}: {} cases not run",
            count(Outcome::NotRun)
        ),
        None => String::new(),
    };
    let shard = match &report.shard {
        Some(shard) => format!(
            "\nshard {}: {} of {} selected fixtures (selection {})",
            shard.partition,
            report.fixtures.len(),
            report.selection.size,
            report.selection.digest
        ),
        None => String::new(),
    };
    let t = &report.timing;
    let secs = |ms: f64| ms / 1000.0;
    format!(
        "{passed} passed, {failed} failed, {} skipped\n({} known divergences, {} new divergences, {} snapshot changes, {} errors; {} fixtures{} x {} targets in {:.1} s: start-up {:.1} s, cases {:.1} s, restarts {:.1} s ({} restarts), stop {:.1} s)",
        count(Outcome::Skipped),
        count(Outcome::Known),
        count(Outcome::New),
        count(Outcome::SnapshotChanged),
        count(Outcome::Error),
        report.fixtures.len(),
        per_endpoint(report),
        report.targets.len(),
        secs(report.elapsed_ms),
        secs(t.startup_ms),
        secs(t.cases_ms),
        secs(t.restart_ms),
        t.restarts,
        secs(t.stop_ms),
    ) + &shard
        + &interrupted
}

/// ` (generate 175, completions 35, chat 30)` when the run had more than
/// one endpoint.
fn per_endpoint(report: &RunReport) -> String {
    let counts: Vec<String> = Endpoint::ALL
        .iter()
        .map(|e| (e, report.endpoints.iter().filter(|x| *x == e).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(e, n)| format!("{e} {n}"))
        .collect();
    if counts.len() > 1 {
        format!(" ({})", counts.join(", "))
    } else {
        String::new()
    }
}

/// Streams the report to `path` (no second copy of it in memory), as one
/// line of compact JSON: indentation tripled the size of a report whose
/// failing cases keep their transcripts' first kilobytes (`jq .` shows it
/// indented).
pub fn write_json(report: &RunReport, path: &Path) -> anyhow::Result<()> {
    let cannot =
        |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot write {}: {e}", path.display());
    let file = std::fs::File::create(path).map_err(|e| cannot(&e))?;
    let mut writer = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut writer, report).map_err(|e| cannot(&e))?;
    writer.flush().map_err(|e| cannot(&e))
}

/// One test suite per target, one test case per fixture.
pub fn junit(report: &RunReport) -> anyhow::Result<String> {
    let mut junit = Report::new("genconform");
    for target in &report.targets {
        let mut suite = TestSuite::new(target.as_str());
        for case in report.cases.iter().filter(|c| &c.target == target) {
            let status = match case.outcome {
                Outcome::Pass | Outcome::Known => TestCaseStatus::success(),
                Outcome::Skipped | Outcome::NotRun => {
                    let mut s = TestCaseStatus::skipped();
                    if let Some(r) = &case.reason {
                        s.set_message(r.as_str());
                    }
                    s
                }
                Outcome::New | Outcome::SnapshotChanged | Outcome::Error => {
                    let kind = if case.outcome == Outcome::Error {
                        NonSuccessKind::Error
                    } else {
                        NonSuccessKind::Failure
                    };
                    let mut s = TestCaseStatus::non_success(kind);
                    s.set_message(excerpt::cut(
                        &failure_message(case),
                        excerpt::KEPT_REASON_BYTES,
                    ));
                    s.set_description(excerpt::cut(
                        &failure_detail(case),
                        excerpt::PRINTED_CASE_BYTES,
                    ));
                    s
                }
            };
            let mut test = TestCase::new(case.fixture.as_str(), status);
            test.set_classname(format!("genconform.{target}.{}", case.endpoint));
            test.set_time(std::time::Duration::from_secs_f64(case.elapsed_ms / 1000.0));
            suite.add_test_case(test);
        }
        junit.add_test_suite(suite);
    }
    Ok(junit.to_string()?)
}

fn failure_message(case: &CaseResult) -> String {
    match case.outcome {
        Outcome::Error => case.reason.clone().unwrap_or_else(|| "error".into()),
        Outcome::SnapshotChanged => "the transcript differs from the reviewed snapshot".into(),
        _ => format!(
            "{} new divergence(s) from the baseline",
            case.differences
                .iter()
                .filter(|d| d.known.is_none())
                .count()
        ),
    }
}

fn failure_detail(case: &CaseResult) -> String {
    let mut out = String::new();
    for d in case.differences.iter().filter(|d| d.known.is_none()) {
        let _ = writeln!(out, "{}", d.difference);
    }
    if let Some(diff) = &case.text_diff {
        out.push_str(diff);
    }
    if let Some(snapshot::Status::Changed(diff)) = &case.snapshot {
        out.push_str(diff);
    }
    out
}
