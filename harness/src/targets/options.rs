//! Where the real vLLM frontends come from, where their files go and how
//! they start: the `--vllm-*` arguments and the options they become.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::vllm;

/// Where the real frontends come from and where their files go.
#[derive(Debug, Clone)]
pub struct VllmOptions {
    pub version: String,
    /// A Python interpreter with vLLM importable (instead of the cached install).
    pub python: Option<PathBuf>,
    /// A `vllm-rs` binary (instead of the one in the cached install's wheel).
    pub rs_bin: Option<PathBuf>,
    /// Logs and the model directory.
    pub work_dir: PathBuf,
    /// How long a frontend may take to answer `/health`.
    pub ready_timeout: Duration,
    /// Speak this layout file instead of reading the install's.
    pub layout_file: Option<PathBuf>,
    /// Puts the tap between a frontend and the mock engine core too (the
    /// real engine is always behind one), to measure what the tap costs.
    pub through_tap: bool,
    /// Forks Python frontends from a warm interpreter (see
    /// [`crate::vllm::forkserver`]) instead of starting each one cold.
    pub fork_server: bool,
    /// At most this many frontends start ahead of scripted engine deaths
    /// (see [`Target::keep_spares`](super::Target::keep_spares)).
    pub spare_frontends: usize,
}

/// Spare frontends per target by default: the corpus kills the engine in
/// runs of up to six fixtures.
pub const DEFAULT_SPARES: u16 = 2;

impl Default for VllmOptions {
    fn default() -> Self {
        Self {
            version: vllm::DEFAULT_VERSION.into(),
            python: None,
            rs_bin: None,
            layout_file: None,
            work_dir: PathBuf::from(".genconform"),
            ready_timeout: Duration::from_secs(240),
            through_tap: false,
            fork_server: true,
            spare_frontends: usize::from(DEFAULT_SPARES),
        }
    }
}

/// Where the real vLLM frontends come from (`vllm-rs`, `vllm-python` targets).
#[derive(Debug, Clone, Args)]
pub struct VllmArgs {
    /// vLLM version of the `vllm-rs` / `vllm-python` targets (the install and
    /// the engine-core wire layout).
    #[arg(long, default_value = vllm::DEFAULT_VERSION)]
    pub vllm_version: String,
    /// A Python interpreter with your own vLLM build, for `vllm-python`.
    #[arg(long)]
    pub vllm_python: Option<PathBuf>,
    /// Your own `vllm-rs` binary, for `vllm-rs`.
    #[arg(long)]
    pub vllm_rs_bin: Option<PathBuf>,
    /// The engine-core wire layout to speak (JSON, as `genconform layout
    /// --json` prints it). Default: read from the target's install when it
    /// has a Python interpreter, else the table of --vllm-version.
    #[arg(long, value_name = "PATH")]
    pub layout_file: Option<PathBuf>,
    #[command(flatten)]
    pub frontends: FrontendArgs,
}

/// How the real frontends of a run are started, whatever their release.
#[derive(Debug, Clone, Args)]
pub struct FrontendArgs {
    /// Logs of the started frontends and their model directory.
    #[arg(long, default_value = ".genconform")]
    pub work_dir: PathBuf,
    /// How long a real frontend may take to become healthy.
    #[arg(long, default_value_t = 240)]
    pub ready_timeout_secs: u64,
    /// Start every Python frontend cold instead of forking it from a warm
    /// interpreter that has imported vLLM once (see docs/src/scheduling.md, "The fork server").
    #[arg(long)]
    pub no_fork_server: bool,
    /// Frontends to start ahead of the fixtures that kill the engine, one at
    /// a time while other cases run, so a scripted death costs no restart
    /// (0: restart after each death).
    #[arg(long, default_value_t = DEFAULT_SPARES)]
    pub spare_frontends: u16,
}

impl FrontendArgs {
    /// The options of `version`'s frontends from its install.
    pub fn options(&self, version: &str) -> VllmOptions {
        VllmOptions {
            version: version.to_string(),
            work_dir: self.work_dir.clone(),
            ready_timeout: Duration::from_secs(self.ready_timeout_secs),
            fork_server: !self.no_fork_server,
            spare_frontends: usize::from(self.spare_frontends),
            ..VllmOptions::default()
        }
    }
}

impl VllmArgs {
    pub fn options(&self) -> VllmOptions {
        VllmOptions {
            python: self.vllm_python.clone(),
            rs_bin: self.vllm_rs_bin.clone(),
            layout_file: self.layout_file.clone(),
            ..self.frontends.options(&self.vllm_version)
        }
    }
}
