//! `genconform matrix`: the corpus run once per vLLM release, as `run` runs
//! it (the reference as the baseline, the real frontends of that release
//! beside it), told as one grid (fixtures down, release x frontend across)
//! and the fixtures whose transcript changed from one release to the next.
//!
//! ```text
//! $ genconform matrix --versions 0.31.0,0.32.0 --target vllm-rs --filter stream_basic
//!                          0.31.0    0.32.0
//! fixture       endpoint   vllm-rs   vllm-rs   reference
//! stream_basic  generate   known     pass      pass
//!
//! changed between releases:
//!   vllm-rs  0.31.0 -> 0.32.0  stream_basic  [json] events[0].x added: (absent) -> 1
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::args::{CaseArgs, Color, CorpusArgs};
use crate::diff::{self, Difference};
use crate::run::{self, CaseResult, Outcome, RunReport};
use crate::targets::{FrontendArgs, TargetSpec};
use crate::vllm;

#[derive(Debug, Args)]
pub struct MatrixArgs {
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// The vLLM releases, oldest first, comma-separated (each installed:
    /// `genconform setup vllm --version V`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub versions: Vec<String>,
    /// A real frontend to run per release (`vllm-rs`, `vllm-python`); repeat
    /// for both. The reference is always the baseline.
    #[arg(long = "target", default_value = "vllm-rs")]
    pub targets: Vec<TargetSpec>,
    #[command(flatten)]
    pub cases: CaseArgs,
    /// Write every release's run and the changes between releases as JSON.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
    #[command(flatten)]
    pub frontends: FrontendArgs,
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// One release's run, or why it could not run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRun {
    pub version: String,
    pub elapsed_ms: f64,
    pub report: Option<RunReport>,
    pub error: Option<String>,
}

/// A fixture whose transcript on one frontend differs between two
/// consecutive releases (as the differ compares targets).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub target: String,
    pub from: String,
    pub to: String,
    pub fixture: String,
    pub differences: Vec<Difference>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixReport {
    pub versions: Vec<String>,
    /// The frontends, as named in each release's run.
    pub targets: Vec<String>,
    pub runs: Vec<ReleaseRun>,
    pub changes: Vec<Change>,
}

impl MatrixReport {
    pub fn failed(&self) -> bool {
        self.runs
            .iter()
            .any(|r| r.error.is_some() || r.report.as_ref().is_some_and(RunReport::failed))
    }

    fn case(&self, version: &str, fixture: &str, target: &str) -> Option<&CaseResult> {
        let run = self.runs.iter().find(|r| r.version == version)?;
        run.report.as_ref()?.case(fixture, target)
    }
}

/// The fixtures whose transcript changed between consecutive releases, per
/// frontend. `paced` says whether a fixture's chunk boundaries compare.
pub fn changes(
    versions: &[String],
    targets: &[String],
    runs: &[ReleaseRun],
    paced: impl Fn(&str) -> bool,
) -> Vec<Change> {
    let mut out = Vec::new();
    let reports: BTreeMap<&str, &RunReport> = runs
        .iter()
        .filter_map(|r| Some((r.version.as_str(), r.report.as_ref()?)))
        .collect();
    for target in targets {
        for pair in versions.windows(2) {
            let (Some(a), Some(b)) = (reports.get(pair[0].as_str()), reports.get(pair[1].as_str()))
            else {
                continue;
            };
            for fixture in &a.fixtures {
                let transcripts = (
                    a.case(fixture, target).and_then(|c| c.transcript.as_ref()),
                    b.case(fixture, target).and_then(|c| c.transcript.as_ref()),
                );
                let (Some(x), Some(y)) = transcripts else {
                    continue;
                };
                let differences = diff::compare(x, y, paced(fixture));
                if !differences.is_empty() {
                    out.push(Change {
                        target: target.clone(),
                        from: pair[0].clone(),
                        to: pair[1].clone(),
                        fixture: fixture.clone(),
                        differences,
                    });
                }
            }
        }
    }
    out
}

/// The grid (two header rows: releases, then frontends; a last column with
/// the reference's worst outcome over the releases), the runs that failed
/// to start, and the changes between releases.
pub fn render(report: &MatrixReport) -> String {
    let mut out = String::new();
    let mut fixtures: Vec<(String, String)> = Vec::new();
    for run in report.runs.iter().filter_map(|r| r.report.as_ref()) {
        for (f, e) in run.fixtures.iter().zip(&run.endpoints) {
            if !fixtures.iter().any(|(name, _)| name == f) {
                fixtures.push((f.clone(), e.name().to_string()));
            }
        }
    }
    let name_width = fixtures
        .iter()
        .map(|(f, _)| f.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let cell = report
        .targets
        .iter()
        .map(String::len)
        .chain(report.versions.iter().map(String::len))
        .max()
        .unwrap_or(8)
        .max("snapshot".len());
    let _ = write!(out, "{:name_width$}  {:10}", "", "");
    for version in &report.versions {
        for (i, _) in report.targets.iter().enumerate() {
            let shown = if i == 0 { version.as_str() } else { "" };
            let _ = write!(out, "  {shown:cell$}");
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    let _ = write!(out, "{:name_width$}  {:10}", "fixture", "endpoint");
    for _ in &report.versions {
        for target in &report.targets {
            let _ = write!(out, "  {target:cell$}");
        }
    }
    out.push_str("  reference\n");
    for (fixture, endpoint) in &fixtures {
        let _ = write!(out, "{fixture:name_width$}  {endpoint:10}");
        for version in &report.versions {
            let errored = report
                .runs
                .iter()
                .any(|r| &r.version == version && r.error.is_some());
            for target in &report.targets {
                let label = match report.case(version, fixture, target) {
                    Some(c) => c.outcome.label(),
                    None if errored => "ERROR",
                    None => "-",
                };
                let _ = write!(out, "  {label:cell$}");
            }
        }
        let reference = report
            .versions
            .iter()
            .filter_map(|v| report.case(v, fixture, "reference"))
            .map(|c| c.outcome)
            .max();
        let _ = writeln!(out, "  {}", reference.map_or("-", Outcome::label));
    }
    for run in &report.runs {
        if let Some(e) = &run.error {
            let _ = writeln!(out, "\nvLLM {}: the run did not start: {e}", run.version);
        }
    }
    let failing: Vec<&CaseResult> = report
        .runs
        .iter()
        .filter_map(|r| r.report.as_ref())
        .flat_map(|r| &r.cases)
        .filter(|c| c.outcome.fails())
        .collect();
    if !failing.is_empty() {
        out.push_str("\nfailing (details: genconform run --vllm-version V --filter NAME):\n");
        for run in report
            .runs
            .iter()
            .filter_map(|r| Some((&r.version, r.report.as_ref()?)))
        {
            for c in run.1.cases.iter().filter(|c| c.outcome.fails()) {
                let why = c
                    .differences
                    .iter()
                    .find(|d| d.known.is_none())
                    .map(|d| d.difference.to_string())
                    .or_else(|| c.reason.clone())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {} {} @ {}@{}  {}",
                    c.outcome.label(),
                    c.fixture,
                    c.target,
                    run.0,
                    one_line(&why, 160)
                );
            }
        }
    }
    if report.versions.len() > 1 {
        if report.changes.is_empty() {
            out.push_str("\nchanged between releases: nothing\n");
        } else {
            out.push_str("\nchanged between releases:\n");
            for c in &report.changes {
                let first = c.differences[0].to_string();
                let more = match c.differences.len() - 1 {
                    0 => String::new(),
                    n => format!(" (+{n} more)"),
                };
                let _ = writeln!(
                    out,
                    "  {}  {} -> {}  {}  {}{more}",
                    c.target,
                    c.from,
                    c.to,
                    c.fixture,
                    one_line(&first, 140)
                );
            }
        }
    }
    let counts = report
        .runs
        .iter()
        .map(|r| match &r.report {
            Some(rep) => {
                let count = |o: Outcome| rep.cases.iter().filter(|c| c.outcome == o).count();
                format!(
                    "{}: {} pass, {} known, {} NEW, {} other failures in {:.0} s",
                    r.version,
                    count(Outcome::Pass),
                    count(Outcome::Known),
                    count(Outcome::New),
                    rep.cases
                        .iter()
                        .filter(|c| c.outcome.fails() && c.outcome != Outcome::New)
                        .count(),
                    r.elapsed_ms / 1000.0
                )
            }
            None => format!("{}: did not run", r.version),
        })
        .collect::<Vec<_>>();
    let _ = writeln!(out, "\n{}", counts.join("\n"));
    out
}

/// The first line of `text`, cut to `max` bytes.
fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut at = max.min(line.len());
    while !line.is_char_boundary(at) {
        at -= 1;
    }
    if at < line.len() {
        format!("{}...", &line[..at])
    } else {
        line.to_string()
    }
}

/// `genconform matrix`: 0 when every release's run passes, 1 when one
/// fails (a NEW difference, a changed snapshot, an error), 2 on bad input.
pub fn command(args: MatrixArgs) -> ExitCode {
    if let Some(bad) = args
        .versions
        .iter()
        .find(|v| !vllm::SUPPORTED_VERSIONS.contains(&v.as_str()))
    {
        eprintln!(
            "error: --versions: `{bad}` is not a release genconform runs against (releases: {})",
            vllm::SUPPORTED_VERSIONS.join(", ")
        );
        return ExitCode::from(2);
    }
    if let Some(bad) = args.targets.iter().find(|t| t.frontend().is_none()) {
        eprintln!(
            "error: --target {bad}: the matrix runs real frontends (vllm-rs, vllm-python) per \
             release; the reference is always the baseline"
        );
        return ExitCode::from(2);
    }
    let corpus = match args.corpus.load(Some(args.cases.timeout_secs)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let registry = match args.cases.registry() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let runtime = match crate::args::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut targets = vec![TargetSpec::Reference];
    targets.extend(args.targets.iter().cloned());
    let mut runs = Vec::new();
    for version in &args.versions {
        let options = args.cases.run_options(
            &args.corpus,
            targets.clone(),
            registry.clone(),
            args.frontends.options(version),
        );
        eprintln!("==> vLLM {version}");
        let started = Instant::now();
        let progress = crate::run::progress::console_bar();
        let result = runtime.block_on(run::run(&corpus, &options, &progress));
        progress.finish();
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        eprintln!("    vLLM {version}: {:.0} s", elapsed_ms / 1000.0);
        runs.push(match result {
            Ok(report) => ReleaseRun {
                version: version.clone(),
                elapsed_ms,
                report: Some(report),
                error: None,
            },
            Err(e) => ReleaseRun {
                version: version.clone(),
                elapsed_ms,
                report: None,
                error: Some(format!("{e:#}")),
            },
        });
    }
    let names: Vec<String> = args.targets.iter().map(TargetSpec::name).collect();
    let paced = |name: &str| {
        corpus
            .fixtures
            .iter()
            .find(|f| f.fixture.name == name)
            .is_none_or(|f| f.fixture.chunks_comparable())
    };
    let changes = changes(&args.versions, &names, &runs, paced);
    let report = MatrixReport {
        versions: args.versions.clone(),
        targets: names,
        runs,
        changes,
    };
    print!("{}", render(&report));
    if let Some(path) = &args.report_json {
        let written = serde_json::to_vec(&report)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(path, bytes));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{Body, Transcript};
    use mock_engine::script::Endpoint;

    fn transcript(body: serde_json::Value) -> Transcript {
        Transcript {
            status: Some(200),
            headers: Default::default(),
            body: Body::Json(body),
            notes: Vec::new(),
            key_order: Vec::new(),
            error: None,
            engine: None,
        }
    }

    fn case(target: &str, outcome: Outcome, body: serde_json::Value) -> CaseResult {
        CaseResult {
            fixture: "f".into(),
            endpoint: Endpoint::Generate,
            target: target.into(),
            outcome,
            reason: None,
            transcript: Some(transcript(body)),
            differences: Vec::new(),
            text_diff: None,
            snapshot: None,
            elapsed_ms: 1.0,
            truncated: Vec::new(),
            unshown_evidence: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn release(version: &str, rs: (Outcome, serde_json::Value)) -> ReleaseRun {
        ReleaseRun {
            version: version.into(),
            elapsed_ms: 2000.0,
            report: Some(RunReport {
                targets: vec!["reference".into(), "vllm-rs".into()],
                fixtures: vec!["f".into()],
                endpoints: vec![Endpoint::Generate],
                cases: vec![
                    case("reference", Outcome::Pass, serde_json::json!({"a": 1})),
                    case("vllm-rs", rs.0, rs.1),
                ],
                elapsed_ms: 2000.0,
                interrupted: None,
                selection: crate::partition::Selection::of(["f"]),
                shard: None,
                timing: Default::default(),
            }),
            error: None,
        }
    }

    #[test]
    fn the_grid_has_a_cell_per_release_and_frontend_and_names_what_changed() {
        let versions: Vec<String> = vec!["0.30.0".into(), "0.31.0".into(), "0.32.0".into()];
        let targets = vec!["vllm-rs".to_string()];
        let runs = vec![
            release(
                "0.30.0",
                (Outcome::Known, serde_json::json!({"a": 1, "old": 0})),
            ),
            release("0.31.0", (Outcome::Pass, serde_json::json!({"a": 1}))),
            ReleaseRun {
                version: "0.32.0".into(),
                elapsed_ms: 1.0,
                report: None,
                error: Some("vLLM 0.32.0 is not installed".into()),
            },
        ];
        let changes = changes(&versions, &targets, &runs, |_| true);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].from.as_str(), changes[0].to.as_str()),
            ("0.30.0", "0.31.0")
        );
        assert!(
            changes[0].differences[0].path.contains("old"),
            "{changes:?}"
        );
        let report = MatrixReport {
            versions,
            targets,
            runs,
            changes,
        };
        assert!(
            report.failed(),
            "a release that did not run fails the matrix"
        );
        let text = render(&report);
        let row = text.lines().find(|l| l.starts_with("f ")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["f", "generate", "known", "pass", "ERROR", "pass"],
            "{text}"
        );
        assert!(
            text.contains("vllm-rs  0.30.0 -> 0.31.0  f  [json] body.old"),
            "{text}"
        );
        assert!(
            text.contains("vLLM 0.32.0: the run did not start"),
            "{text}"
        );
    }
}
