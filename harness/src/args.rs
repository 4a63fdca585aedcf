//! The argument groups commands share, flattened into each command's own
//! arguments: which fixtures, how their cases run and are judged, colour.
//! They sit below the commands (`cli`, `matrix`, `record`), so no command
//! reaches into another for its arguments, nor for the async runtime they
//! all start ([`runtime`]).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use mock_engine::Corpus;
use mock_engine::fixture::Limits as FixtureLimits;

use crate::capture::CaptureLimits;
use crate::divergence::Registry;
use crate::run::{DEFAULT_JOBS, RunOptions};
use crate::targets::{TargetSpec, VllmOptions};

/// The per-request timeout `run`, `matrix` and `validate` default to.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// Which fixtures.
#[derive(Debug, Args)]
pub struct CorpusArgs {
    /// Directory of fixture files.
    #[arg(long, default_value = "fixtures")]
    pub fixtures: PathBuf,
    /// Only fixtures whose name contains this (or matches it, with `*`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Only the fixtures of this endpoint: generate, completions or chat.
    #[arg(long)]
    pub endpoint: Option<mock_engine::script::Endpoint>,
}

impl CorpusArgs {
    /// The fixtures, each held to what a run with this per-request timeout
    /// can replay (a script whose delays add up to it is refused; `None`:
    /// no such check); when one is invalid, every problem is printed and
    /// the exit code returned.
    pub fn load(&self, timeout_secs: Option<u64>) -> Result<Corpus, ExitCode> {
        let mut limits = FixtureLimits::default();
        if let Some(secs) = timeout_secs {
            limits.request_timeout = Some(Duration::from_secs(secs));
        }
        Corpus::load_dir_with(&self.fixtures, &limits).map_err(|e| {
            eprintln!("error: invalid fixtures:\n{e}");
            ExitCode::from(2)
        })
    }
}

/// How the cases of a run go: where their verdicts come from, how long
/// they may take, how many run at once.
#[derive(Debug, Args)]
pub struct CaseArgs {
    /// Reviewed snapshots, one folder per target (a release's own in
    /// `<target>@<release>/`).
    #[arg(long, default_value = "snapshots")]
    pub snapshots: PathBuf,
    /// Registry of known divergences (entries may be scoped by `versions`).
    #[arg(long, default_value = "fixtures/divergences.toml")]
    pub divergences: PathBuf,
    /// Do not check snapshots (compare targets only).
    #[arg(long)]
    pub no_snapshots: bool,
    /// Per-request timeout. Fixtures whose scripts take this long or longer
    /// are refused before the run starts, as `validate` refuses them.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout_secs: u64,
    /// After this many requests in a row to a target fail to get an answer
    /// (refused, reset, timed out), probe its `/health`; when that does not
    /// answer within 5 s, the target's remaining cases are errors at once.
    /// 0: never give up.
    #[arg(long, default_value_t = 3)]
    pub give_up_after: u32,
    /// After this many requests in a row to a target time out, its
    /// remaining cases are errors at once, even when its `/health` answers
    /// (a server that is up but never answers a request). 0: never.
    #[arg(long, default_value_t = 8)]
    pub give_up_after_timeouts: u32,
    /// Budget for the whole run (for `matrix`, each release's); cases not
    /// started by then are errors.
    #[arg(long, default_value_t = 1800)]
    pub budget_secs: u64,
    /// Cases in flight at once per target. A case whose script kills the
    /// engine, and a paced one, still runs alone in its target's column;
    /// the grid and the reports keep the fixtures' order. 1 runs each
    /// column one case at a time.
    #[arg(long, default_value_t = DEFAULT_JOBS, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
}

impl CaseArgs {
    /// The registry; when it is invalid, the problem is printed and the
    /// exit code returned.
    pub fn registry(&self) -> Result<Registry, ExitCode> {
        Registry::load(&self.divergences).map_err(|e| {
            eprintln!("error: invalid divergence registry: {e}");
            ExitCode::from(2)
        })
    }

    /// A run of `corpus`'s selection on `targets`, whole and unaccepted.
    pub fn run_options(
        &self,
        corpus: &CorpusArgs,
        targets: Vec<TargetSpec>,
        registry: Registry,
        vllm: VllmOptions,
    ) -> RunOptions {
        RunOptions {
            filter: corpus.filter.clone(),
            endpoint: corpus.endpoint,
            limits: CaptureLimits {
                timeout: Duration::from_secs(self.timeout_secs),
                give_up_after: self.give_up_after,
                timeouts_in_a_row: self.give_up_after_timeouts,
                ..CaptureLimits::default()
            },
            budget: Duration::from_secs(self.budget_secs),
            snapshots: self.snapshots.clone(),
            registry,
            check_snapshots: !self.no_snapshots,
            vllm,
            jobs: usize::from(self.jobs),
            ..RunOptions::new(targets)
        }
    }
}

/// Colour in the grid.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    pub fn enabled(self) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stdout().is_terminal(),
        }
    }
}

/// The async runtime a command runs on; when it cannot start, the error is
/// printed and the exit code returned (2, as for any set-up failure).
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::from(2)
    })
}
