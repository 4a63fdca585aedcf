//! `genconform fuzz`: property-based testing of the token endpoints
//! (`--endpoint generate|completions|chat|all`).
//!
//! proptest generates cases ([`cases`]): a request with every knob in valid and
//! invalid forms and, when the targets' engines can be scripted, the script
//! that answers it. Each case is sent to every target, together with its
//! *twin* (the same request in the other response mode). The first target,
//! the baseline, must keep the [`oracle`]'s invariants (the contract) and a
//! stream and its twin must agree; every other target must agree with the
//! baseline after normalisation, or differ only where the divergence
//! registry says, and then may break the contract exactly that far
//! ([`verdict`]). A failing case is shrunk by proptest and written by
//! [`found`] as a fixture.
//!
//! Scripts reach an in-process engine directly and a `url=` target through
//! the reference server's control channel (`--enable-script-control`) when it
//! answers; otherwise the url target's own engine answers and only requests vary.
//!
//! ```no_run
//! use harness::fuzz::{FuzzOptions, fuzz};
//! let report = fuzz(&FuzzOptions { cases: 100, seed: 7, ..FuzzOptions::default() }).unwrap();
//! assert!(report.found.is_none(), "{}", report.summary());
//! ```

pub mod cases;
pub mod found;
pub mod oracle;
mod replay;
mod round;
pub mod shard;
pub mod soak;
mod trial;
pub mod verdict;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use mock_engine::{Corpus, Fixture};

use crate::capture::CaptureLimits;
use crate::divergence::Registry;
use crate::interrupt::{Interrupt, Interrupts};
use crate::partition::Partition;
use crate::prompt_lock::PromptLocks;
use crate::session::progress::stderr_line;
use crate::session::targets::TargetSet;
use crate::targets::{TargetSpec, VllmOptions};
use cases::{Case, Endpoints, Scope};
use oracle::Violation;
pub use replay::replay_fixture;
use round::{Shared, round};

/// `genconform fuzz`.
#[derive(Debug, Clone, Args)]
pub struct FuzzArgs {
    /// A server to test: `reference`, `vllm-rs`, `vllm-python` or
    /// `url=<base>[,name=<name>]`. Repeat to compare; the first is the
    /// baseline, held to the contract; the others are held to it as far as
    /// the registry says they differ. A real frontend named first gets the
    /// reference before it as the baseline.
    #[arg(long = "target", default_value = "reference")]
    pub targets: Vec<TargetSpec>,
    /// New cases to run (shrinking a failure runs more).
    #[arg(long, default_value_t = 256)]
    pub cases: u32,
    /// The endpoint the cases go to: `generate`, `completions`, `chat`, or
    /// `all` (the cases spread over the three).
    #[arg(long, default_value = "generate")]
    pub endpoint: Endpoints,
    /// Seed of the case generator; the same seed and targets run the same cases.
    /// Random (and printed) when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Registry of known divergences between targets.
    #[arg(long, default_value = "fixtures/divergences.toml")]
    pub divergences: PathBuf,
    /// Where a shrunk failing case is written as a fixture.
    #[arg(long, default_value = "fixtures/found")]
    pub found_dir: PathBuf,
    /// proptest's regression file: seeds of past failures, replayed first.
    #[arg(long, default_value = "harness/proptest-regressions/fuzz.txt")]
    pub regressions: PathBuf,
    /// Neither replay nor record past failures.
    #[arg(long)]
    pub no_regressions: bool,
    /// Most shrinking steps for a failure.
    #[arg(long, default_value_t = 2048)]
    pub max_shrink_iters: u32,
    /// The model name the targets serve.
    #[arg(long, default_value = mock_engine::script::DEFAULT_MODEL_NAME)]
    pub model: String,
    /// Per-request timeout.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// Run one shard of the seed's case stream: `count:K/N` (by place in
    /// the stream) or `hash:K/N` (by the case's digest), K from 1. Every
    /// shard generates the whole stream; the shards of one seed together
    /// are the unsharded run.
    #[arg(long, value_name = "KIND:K/N")]
    pub partition: Option<Partition>,
    /// Cases in flight at once. Their verdicts are judged in stream order,
    /// so the same seed finds and reports the same failure at any value;
    /// shrinking a failure is serial.
    #[arg(long, default_value_t = DEFAULT_JOBS, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
    /// Soak: rounds of `--cases` cases, one per seed (`--seed`, then the
    /// next ones), until this much time has passed (`90s`, `10m`, `2h`); a
    /// failing round's minimal case is kept and the next round goes on. The
    /// summary tells each distinct finding once, with the seeds that met it.
    #[arg(long, value_parser = soak::parse_duration)]
    pub duration: Option<Duration>,
    /// Soak: at most this many rounds (seeds), with or without
    /// `--duration`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: Option<u32>,
    /// Write what the run found as JSON: the seeds, the figures, each
    /// distinct finding with its minimal case, and the registered
    /// differences met.
    #[arg(long, value_name = "PATH")]
    pub report_json: Option<PathBuf>,
    #[command(flatten)]
    pub vllm: crate::targets::VllmArgs,
}

/// What a fuzz run needs.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    pub targets: Vec<TargetSpec>,
    pub cases: u32,
    pub endpoints: Endpoints,
    pub seed: u64,
    pub limits: CaptureLimits,
    pub registry: Registry,
    pub found_dir: PathBuf,
    /// proptest's regression file, if any.
    pub regressions: Option<PathBuf>,
    pub max_shrink_iters: u32,
    pub model: String,
    pub vllm: VllmOptions,
    /// Draw a progress bar (on a terminal) or log progress lines.
    pub progress: bool,
    /// Exchange only this shard's cases (all, when `None`).
    pub partition: Option<Partition>,
    /// Cases in flight at once (at least 1).
    pub jobs: usize,
}

/// Cases in flight by default: most of a case's time is its script's
/// delays (two requests of up to six 0 to 5 ms steps), so many more than
/// the cores keep them busy. On the 2-core VM, 500 cases: 260 to 275
/// cases/s with 8, 361 with 16.
pub const DEFAULT_JOBS: u16 = 16;

impl Default for FuzzOptions {
    fn default() -> Self {
        Self {
            targets: vec![TargetSpec::Reference],
            cases: 256,
            endpoints: Endpoints::default(),
            seed: 0,
            limits: CaptureLimits {
                timeout: Duration::from_secs(10),
                ..CaptureLimits::default()
            },
            registry: Registry::default(),
            found_dir: PathBuf::from("fixtures/found"),
            regressions: None,
            max_shrink_iters: 2048,
            model: mock_engine::script::DEFAULT_MODEL_NAME.into(),
            vllm: VllmOptions::default(),
            progress: false,
            partition: None,
            jobs: usize::from(DEFAULT_JOBS),
        }
    }
}

/// A failure, shrunk.
#[derive(Debug, Clone)]
pub struct Found {
    pub violation: Violation,
    pub target: String,
    pub case: Case,
    /// Found on the twin (the response mode flipped).
    pub twin: bool,
    pub fixture: Fixture,
    /// Where the fixture was written, or why it was not.
    pub written: Result<PathBuf, String>,
    /// proptest's own account of the minimal failure.
    pub reason: String,
}

/// Everything a fuzz run found.
#[derive(Debug, Clone)]
pub struct FuzzReport {
    pub seed: u64,
    pub targets: Vec<String>,
    pub channels: Vec<(String, &'static str)>,
    pub scope: Scope,
    /// Cases exchanged with the targets, shrinking included.
    pub exchanged: u64,
    pub elapsed: Duration,
    pub found: Option<Found>,
    /// proptest gave up (too many rejects), with its reason.
    pub aborted: Option<String>,
    /// SIGINT (Ctrl-C) or SIGTERM ended the run early.
    pub interrupted: Option<Interrupt>,
    /// The shard of the case stream this run exchanged, when it was cut.
    pub partition: Option<Partition>,
    /// Cases of the stream generated, this shard's or not (shrinks aside).
    pub generated: u64,
    /// The digest ([`Case::digest`]) of each case this run exchanged, in
    /// order, shrinks aside: the shards of one seed share none, and together
    /// they hold the unsharded run's.
    pub ran: Vec<u64>,
    /// Per registry entry, the cases (before any shrinking) where a target
    /// broke the contract exactly as the entry says: known, not failures.
    pub known: BTreeMap<String, u64>,
}

impl FuzzReport {
    pub fn failed(&self) -> bool {
        self.found.is_some() || self.aborted.is_some() || self.interrupted.is_some()
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let rate = self.exchanged as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "fuzz: {} cases in {:.1} s ({rate:.0} cases/s), endpoint {}, seed {}, targets {}\n",
            self.exchanged,
            self.elapsed.as_secs_f64(),
            self.scope.endpoints,
            self.seed,
            self.targets.join(", ")
        );
        if let Some(p) = self.partition {
            s.push_str(&format!(
                "  shard {p}: ran {} of the {} cases the seed generated\n",
                self.ran.len(),
                self.generated
            ));
        }
        for (target, channel) in &self.channels {
            s.push_str(&format!("  scripts for {target}: {channel}\n"));
        }
        if !self.scope.scripts {
            s.push_str("  (no engine scripts: a target's engine cannot be scripted)\n");
        }
        if let Some(signal) = self.interrupted {
            s.push_str(&format!(
                "INTERRUPTED by {signal}: the cases after it were not run\n"
            ));
        }
        if let Some(reason) = &self.aborted {
            s.push_str(&format!("ABORTED: {reason}\n"));
        }
        s.push_str(&soak::known_line(
            &self.known,
            "breaks of the contract the registry explains",
        ));
        match &self.found {
            None => s.push_str("no property was violated\n"),
            Some(f) => {
                s.push_str(&format!(
                    "FAILED: {} against {}{}\n  {}\n",
                    f.violation.property,
                    f.target,
                    if f.twin { " (on the twin request)" } else { "" },
                    f.violation.detail
                ));
                match &f.written {
                    Ok(path) => {
                        s.push_str(&format!("  minimal case written to {}\n", path.display()))
                    }
                    Err(e) => {
                        s.push_str(&format!("  the minimal case could not be written: {e}\n"))
                    }
                }
                s.push_str(&format!(
                    "  request: {}\n  script: {}\n",
                    serde_json::to_string(&f.fixture.request).unwrap_or_default(),
                    serde_json::to_string(&f.fixture.engine).unwrap_or_default()
                ));
            }
        }
        s
    }
}

/// The CLI entry: parses nothing, runs, prints the summary.
pub fn fuzz_command(args: FuzzArgs) -> ExitCode {
    let registry = match Registry::load(&args.divergences) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: invalid divergence registry: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let options = FuzzOptions {
        targets: args.targets,
        cases: args.cases,
        endpoints: args.endpoint,
        seed,
        limits: CaptureLimits {
            timeout: Duration::from_secs(args.timeout_secs),
            ..CaptureLimits::default()
        },
        registry,
        found_dir: args.found_dir,
        regressions: (!args.no_regressions).then_some(args.regressions),
        max_shrink_iters: args.max_shrink_iters,
        model: args.model,
        vllm: args.vllm.options(),
        progress: true,
        partition: args.partition,
        jobs: usize::from(args.jobs),
    };
    let soaking = args.duration.is_some() || args.rounds.is_some();
    let until = Until {
        time: args.duration.map(|d| Instant::now() + d),
        rounds: args.rounds.map(|n| n as usize),
    };
    let rounds = match fuzz_rounds(&options, until) {
        Ok(rounds) => rounds,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let soak = soak::SoakReport::of(&rounds);
    if soaking {
        print!("{}", soak.summary());
    } else {
        print!("{}", rounds[0].summary());
    }
    if let Some(path) = &args.report_json {
        let json = serde_json::to_string_pretty(&soak).expect("a report serialises");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    match rounds.iter().find_map(|r| r.interrupted) {
        Some(signal) => ExitCode::from(signal.exit_code()),
        None if soak.failed() => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    }
}

/// Runs the fuzzer on a runtime of its own (proptest's runner is
/// synchronous): one round, the seed's.
pub fn fuzz(options: &FuzzOptions) -> anyhow::Result<FuzzReport> {
    let mut rounds = fuzz_rounds(options, Until::default())?;
    Ok(rounds.remove(0))
}

/// When a soak stops; neither set: after one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct Until {
    /// No round starts after this.
    pub time: Option<Instant>,
    /// At most this many rounds.
    pub rounds: Option<usize>,
}

impl Until {
    fn done(&self, rounds: usize) -> bool {
        let out_of_time = self.time.is_some_and(|t| Instant::now() >= t);
        let enough = self.rounds.is_some_and(|n| rounds >= n);
        let one_round = self.time.is_none() && self.rounds.is_none();
        out_of_time || enough || one_round
    }
}

/// Runs rounds of `options.cases` cases against one set of targets: the
/// round of `options.seed`, then, until `until`, one round per next seed
/// (`seed + 1`, `seed + 2`, ...). A failing round's minimal case is
/// recorded and the next round goes on. A signal ends the rounds.
pub fn fuzz_rounds(options: &FuzzOptions, until: Until) -> anyhow::Result<Vec<FuzzReport>> {
    if options.targets.is_empty() {
        anyhow::bail!("no target to fuzz");
    }
    let options = &FuzzOptions {
        targets: contract_first(&options.targets),
        ..options.clone()
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let set = runtime.block_on(TargetSet::start(
        &options.targets,
        &Corpus::default(),
        &options.vllm,
    ))?;
    let real_frontends = options
        .targets
        .iter()
        .any(|t| matches!(t, TargetSpec::VllmRs | TargetSpec::VllmPython));
    let scope = Scope {
        scripts: set.all_scripted(),
        late_prompt_info: !real_frontends,
        engine_failures: !real_frontends,
        endpoints: options.endpoints,
    };
    let channels = set.channel_labels();
    let names = set.names.clone();
    // SIGINT or SIGTERM lets the cases in flight finish and sends no more;
    // a shrink stops where it is, the targets stop, and a minimal case found
    // so far is still written.
    let interrupts = if options.progress {
        let _entered = runtime.enter();
        Some(Interrupts::listen().map_err(|e| anyhow::anyhow!("cannot listen for signals: {e}"))?)
    } else {
        None
    };
    let interrupted = || interrupts.as_ref().and_then(Interrupts::first);
    let set = tokio::sync::Mutex::new(set);
    let locks = PromptLocks::default();
    let shared = Shared {
        runtime: &runtime,
        set: &set,
        locks: &locks,
        scope,
        channels,
        names,
        interrupted: &interrupted,
    };
    let mut rounds = Vec::new();
    let mut seed = options.seed;
    loop {
        let round_options = FuzzOptions {
            seed,
            ..options.clone()
        };
        let report = round(&shared, &round_options);
        if until.time.is_some() || until.rounds.is_some() {
            let verdict = match &report.found {
                None => "clean".to_string(),
                Some(f) => format!("FAILED: {} against {}", f.violation.property, f.target),
            };
            stderr_line(format_args!(
                "round of seed {seed}: {} cases in {:.1} s, {verdict}",
                report.exchanged,
                report.elapsed.as_secs_f64()
            ));
        }
        let interrupted = report.interrupted.is_some();
        rounds.push(report);
        let stop = interrupted || until.done(rounds.len());
        if stop {
            break;
        }
        seed = seed.wrapping_add(1);
    }
    runtime.block_on(set.into_inner().stop());
    Ok(rounds)
}

/// The targets with the contract first. A real frontend is judged against
/// the baseline through the registry (see [`verdict`]); when a run names a
/// real frontend first, the reference joins as the baseline, so a
/// difference the registry knows is known on its own too.
fn contract_first(targets: &[TargetSpec]) -> Vec<TargetSpec> {
    match targets.first() {
        Some(TargetSpec::VllmRs | TargetSpec::VllmPython) => std::iter::once(TargetSpec::Reference)
            .chain(targets.iter().cloned())
            .collect(),
        _ => targets.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::{Strategy, ValueTree};

    use super::*;
    use crate::fuzz::oracle::Expected;
    use proptest::test_runner::{Config, TestRunner};
    use round::rng;

    /// The oracles only bite on what the generator reaches: enough valid
    /// streams with each usage mode, plain requests, and each script ending.
    #[test]
    fn the_generator_reaches_every_mode() {
        let mut runner = TestRunner::new_with_rng(Config::default(), rng(3));
        let mut count = std::collections::BTreeMap::<&str, u32>::new();
        let n = 2000;
        for _ in 0..n {
            let case = cases::case(Scope::default())
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let e = Expected::new(&case.request_spec("tiny"), "tiny", case.script.as_ref());
            let mut tag = |t: &'static str, on: bool| *count.entry(t).or_default() += u32::from(on);
            let valid = e.validity == oracle::Validity::Valid;
            tag("valid", valid);
            tag("invalid", !valid);
            tag("valid stream", valid && e.stream);
            tag("valid plain", valid && !e.stream);
            tag("valid usage", valid && e.include_usage);
            tag("valid continuous", valid && e.continuous_usage);
            tag("valid logprobs", valid && e.logprobs.is_some());
            tag("valid return_token_ids", valid && e.return_token_ids);
            let end = e.script.as_ref().map(|s| s.end);
            tag(
                "error finish",
                valid && end == Some(oracle::ScriptEnd::ErrorFinish),
            );
            tag("fail", valid && end == Some(oracle::ScriptEnd::Fail));
            tag(
                "late prompt",
                valid && e.script.as_ref().is_some_and(|s| s.late_prompt_info),
            );
            tag("generator", valid && case.script.is_none());
            tag(
                "404",
                e.validity == oracle::Validity::Invalid { status: 404 },
            );
        }
        for (tag, c) in &count {
            assert!(
                *c >= n / 100,
                "only {c} of {n} cases are `{tag}`: {count:?}"
            );
        }
    }
}
