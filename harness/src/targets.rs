//! The servers a run talks to.
//!
//! `--target` takes:
//! - `reference`: our reference server, in-process, on an ephemeral port, with
//!   the corpus's scripts loaded (one instance per distinct server options);
//! - `url=<base>[,name=<name>]`: any running server; its engine and options are
//!   the user's business, so fixtures that need other server options are
//!   skipped with the reason. Named url targets get snapshots of their own;
//! - `vllm-rs` and `vllm-python`: the real vLLM frontends, started by the
//!   harness against our mock engine core (see [`crate::vllm`]);
//! - `vllm-rs+engine` and `vllm-python+engine`: the same frontends in front
//!   of a real vLLM engine core on CPU (see [`crate::vllm::engine`]), through
//!   the recording tap ([`mock_engine::tap`]). They answer with whatever the
//!   model generates, not with the fixtures' scripts.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use mock_engine::script::{Fixture, ServerOptions};
use mock_engine::tap::TapEvent;
use mock_engine::wire::{Layout, LayoutFile, VllmVersion, check_layout};
use mock_engine::{Corpus, Engine, EngineConfig};
use reference_server::RunningServer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::process::free_port;
use crate::vllm::engine::EngineInstall;
use crate::vllm::forkserver::{ForkServer, MODULE, PRELOAD};
use crate::vllm::{self, Frontend, Install, Ports};

mod instance;

use instance::{Core, Instance, Launch, LaunchEngine, args_and_env};

/// A `--target` argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Reference,
    Url {
        base: String,
        name: Option<String>,
    },
    VllmRs,
    VllmPython,
    /// A real frontend in front of a real CPU engine core, through the tap.
    RealEngine(Frontend),
}

impl TargetSpec {
    /// The name in reports, and the snapshot folder when it has one.
    pub fn name(&self) -> String {
        match self {
            Self::Reference => "reference".into(),
            Self::VllmRs => "vllm-rs".into(),
            Self::VllmPython => "vllm-python".into(),
            Self::RealEngine(Frontend::Rust) => "vllm-rs+engine".into(),
            Self::RealEngine(Frontend::Python) => "vllm-python+engine".into(),
            Self::Url { name: Some(n), .. } => n.clone(),
            Self::Url { base, name: None } => format!("url:{base}"),
        }
    }

    /// Whether this target's transcripts are checked against snapshots: a
    /// real engine answers with what its model generates, so its transcripts
    /// are recordings (see `genconform record`), not reviewed snapshots.
    pub fn has_snapshots(&self) -> bool {
        !matches!(self, Self::Url { name: None, .. } | Self::RealEngine(_))
    }

    /// The real frontend this target runs, if it runs one.
    /// Whether the server merges engine outputs that queued up while it
    /// was busy into one chunk (vLLM's Python frontend does), so that a
    /// paced case's chunking depends on how busy the machine is.
    pub fn merges_queued_steps(&self) -> bool {
        self.frontend() == Some(Frontend::Python)
    }

    pub fn frontend(&self) -> Option<Frontend> {
        match self {
            Self::VllmRs => Some(Frontend::Rust),
            Self::VllmPython => Some(Frontend::Python),
            Self::RealEngine(frontend) => Some(*frontend),
            Self::Reference | Self::Url { .. } => None,
        }
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reference" => return Ok(Self::Reference),
            "vllm-rs" => return Ok(Self::VllmRs),
            "vllm-python" => return Ok(Self::VllmPython),
            "vllm-rs+engine" => return Ok(Self::RealEngine(Frontend::Rust)),
            "vllm-python+engine" => return Ok(Self::RealEngine(Frontend::Python)),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("url=") {
            let mut parts = rest.split(',');
            let base = parts
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string();
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(format!(
                    "`{s}`: the url must start with http:// or https:// (e.g. url=http://127.0.0.1:8000)"
                ));
            }
            let mut name = None;
            for part in parts {
                match part.split_once('=') {
                    Some(("name", n)) if valid_name(n) => name = Some(n.to_string()),
                    Some(("name", n)) => {
                        return Err(format!(
                            "`{s}`: name `{n}` may hold only ASCII letters, digits, `_`, `-` and `.` \
                             (it names a snapshot folder)"
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "`{s}`: unknown option `{part}` (expected name=<name>)"
                        ));
                    }
                }
            }
            return Ok(Self::Url { base, name });
        }
        Err(format!(
            "unknown target `{s}`; expected `reference`, `vllm-rs`, `vllm-python`, \
             `vllm-rs+engine`, `vllm-python+engine` or `url=<base>[,name=<name>]`"
        ))
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Why a target cannot take a fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// By design, with the reason (reported, not failed).
    Skip(String),
    /// The target is broken.
    Error(String),
}

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
    /// (see [`Target::keep_spares`]).
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
    /// interpreter that has imported vLLM once (see the README, "Speed").
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

/// A started target.
/// How long [`Target::settle_after_death`] waits for a killed engine's
/// instance to be seen dead; past it the next case runs anyway (and says
/// what it met).
const SETTLE_AFTER_DEATH: Duration = Duration::from_secs(10);

pub struct Target {
    pub spec: TargetSpec,
    backend: Backend,
}

enum Backend {
    Reference {
        engine: Engine,
        servers: BTreeMap<ServerOptions, RunningServer>,
    },
    Url {
        base: String,
    },
    Vllm(Box<VllmBackend>),
}

/// One real frontend per distinct server options, each with its engine core.
struct VllmBackend {
    frontend: Frontend,
    /// The program and the arguments that come before `serve`.
    program: (PathBuf, Vec<String>),
    /// The engine-core wire layout, checked at start-up.
    layout: &'static Layout,
    engine: EngineKind,
    model_dir: PathBuf,
    log_dir: PathBuf,
    ready_timeout: Duration,
    through_tap: bool,
    /// Python frontends are forked from this, when it is on (started at
    /// the first launch, again if it died).
    fork_server: Option<Option<Arc<ForkServer>>>,
    instances: BTreeMap<ServerOptions, Instance>,
    /// Frontends starting or started for the scripted engine deaths ahead
    /// (see [`Target::keep_spares`]), oldest first.
    spares: BTreeMap<ServerOptions, VecDeque<Spare>>,
    /// Spares start one at a time: on two cores, a Python frontend's start
    /// is a second of one core's work beside the cases.
    spare_gate: Arc<tokio::sync::Mutex<()>>,
    /// Dead instances being stopped while cases go on.
    retiring: Vec<JoinHandle<()>>,
    /// `--spare-frontends`.
    max_spares: usize,
    /// Frontends started (their logs' numbers).
    started: u32,
    /// Instances that served: a new one is a new server.
    generation: u32,
}

/// A frontend starting ahead of a scripted engine death.
type Spare = JoinHandle<Result<Instance, String>>;

/// Stops a spare nobody will use, once it is up: a spare still starting
/// comes up first (the fork server would stop it all the same, a spawned
/// one would not).
async fn discard(spare: Spare) {
    if let Ok(Ok(instance)) = spare.await {
        instance.stop().await;
    }
}

/// What answers the frontend's engine requests.
enum EngineKind {
    /// Our scripted engine, as an engine core inside the harness.
    Mock(Engine),
    /// vLLM's own engine core on CPU, behind the recording tap, whose
    /// journal is kept until [`Target::take_tap_events`] takes it.
    Real {
        install: EngineInstall,
        journal: mpsc::UnboundedSender<TapEvent>,
        events: mpsc::UnboundedReceiver<TapEvent>,
    },
}

impl Target {
    pub async fn start(
        spec: TargetSpec,
        corpus: &Corpus,
        vllm: &VllmOptions,
    ) -> anyhow::Result<Self> {
        let backend = match &spec {
            TargetSpec::Reference => Backend::Reference {
                engine: Engine::with_corpus(EngineConfig::default(), corpus),
                servers: BTreeMap::new(),
            },
            TargetSpec::Url { base, .. } => Backend::Url { base: base.clone() },
            TargetSpec::VllmRs | TargetSpec::VllmPython | TargetSpec::RealEngine(_) => {
                Backend::Vllm(Box::new(VllmBackend::new(&spec, corpus, vllm)?))
            }
        };
        Ok(Self { spec, backend })
    }

    pub fn name(&self) -> String {
        self.spec.name()
    }

    /// The base URL that serves `fixture`, starting a server if needed.
    pub async fn endpoint(&mut self, fixture: &Fixture) -> Result<String, Unavailable> {
        match &mut self.backend {
            Backend::Reference { engine, servers } => {
                if let Some(server) = servers.get(&fixture.server) {
                    return Ok(server.base_url());
                }
                let config = reference_server::Config::from_options(&fixture.server);
                let server = reference_server::spawn(config, engine.clone())
                    .await
                    .map_err(|e| {
                        Unavailable::Error(format!("reference server did not start: {e}"))
                    })?;
                let url = server.base_url();
                servers.insert(fixture.server.clone(), server);
                Ok(url)
            }
            Backend::Vllm(backend) => backend.endpoint(fixture).await,
            Backend::Url { base } => {
                if fixture.server != ServerOptions::default() {
                    return Err(Unavailable::Skip(format!(
                        "needs server options {}; a url= target runs with whatever options its server has",
                        serde_json::to_string(&fixture.server).unwrap_or_default()
                    )));
                }
                Ok(base.clone())
            }
        }
    }

    /// After a case whose script killed the engine: waits, at most
    /// [`SETTLE_AFTER_DEATH`], until the instance that served it knows it is
    /// dead, so that the next case meets a restarted one. The engine core
    /// sends `ENGINE_CORE_DEAD` before it stops, so a frontend can answer
    /// the dying request before the instance looks dead; a case sent in
    /// that gap would meet a frontend still up over a dead engine (a 500
    /// no fixture scripts). Serial rows hid the gap behind the other
    /// targets' cases; concurrent columns do not.
    pub async fn settle_after_death(&mut self, fixture: &Fixture) {
        let Backend::Vllm(backend) = &mut self.backend else {
            return;
        };
        let Some(instance) = backend.instances.get_mut(&fixture.server) else {
            return;
        };
        let deadline = Instant::now() + SETTLE_AFTER_DEATH;
        while instance.dead().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Keeps frontends starting, one at a time, for `options` beside the
    /// one serving, for the `deaths` scripted engine deaths ahead (at most
    /// `--spare-frontends` of them): after a death the next case meets a
    /// frontend that is already up, instead of waiting for a start (a
    /// second of a forked Python frontend's). A spare is the same frontend
    /// with the same options and engine as a restart would get; only when
    /// it starts differs. Nothing for other targets.
    pub async fn keep_spares(&mut self, options: &ServerOptions, deaths: usize) {
        if let Backend::Vllm(backend) = &mut self.backend {
            let count = deaths.min(backend.max_spares);
            backend.keep_spares(options, count).await;
        }
    }

    /// The engine behind this target, when the harness owns it (the
    /// reference and the real frontends): scripts registered on it are
    /// answered from the next request on.
    pub fn engine(&self) -> Option<&Engine> {
        match &self.backend {
            Backend::Reference { engine, .. } => Some(engine),
            Backend::Vllm(b) => match &b.engine {
                EngineKind::Mock(engine) => Some(engine),
                EngineKind::Real { .. } => None,
            },
            Backend::Url { .. } => None,
        }
    }

    /// How many servers this target has started so far: a restarted
    /// frontend may come back at a port an earlier one had, and is a new
    /// server all the same.
    pub fn generation(&self) -> u32 {
        match &self.backend {
            Backend::Vllm(b) => b.generation,
            Backend::Reference { servers, .. } => servers.len() as u32,
            Backend::Url { .. } => 0,
        }
    }

    /// The log of the frontend serving `fixture`, for failure reports.
    pub fn log_tail(&self, fixture: &Fixture, lines: usize) -> Option<String> {
        match &self.backend {
            Backend::Vllm(b) => b.instances.get(&fixture.server).map(|i| {
                format!(
                    "last lines of {}:\n{}",
                    i.process.log().display(),
                    i.process.log_tail(lines)
                )
            }),
            _ => None,
        }
    }

    /// Everything the tap has seen since the last call (or since the last
    /// [`Target::endpoint`], which drops older events), for a target with a
    /// real engine; empty for any other.
    pub fn take_tap_events(&mut self) -> Vec<TapEvent> {
        let Backend::Vllm(b) = &mut self.backend else {
            return Vec::new();
        };
        let EngineKind::Real { events, .. } = &mut b.engine else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        while let Ok(event) = events.try_recv() {
            taken.push(event);
        }
        taken
    }

    /// The log of the engine core serving `fixture`, for a real engine.
    pub fn engine_log_tail(&self, fixture: &Fixture, lines: usize) -> Option<String> {
        let Backend::Vllm(b) = &self.backend else {
            return None;
        };
        match &b.instances.get(&fixture.server)?.core {
            Core::Real { engine, .. } => Some(format!(
                "last lines of {}:\n{}",
                engine.log.display(),
                engine.log_tail(lines)
            )),
            Core::Mock { .. } => None,
        }
    }

    pub async fn stop(self) {
        match self.backend {
            Backend::Reference { servers, .. } => {
                for (_, server) in servers {
                    server.shutdown().await;
                }
            }
            Backend::Vllm(backend) => {
                for (_, instance) in backend.instances {
                    instance.stop().await;
                }
                for spare in backend.spares.into_values().flatten() {
                    discard(spare).await;
                }
                for retiring in backend.retiring {
                    let _ = retiring.await;
                }
                if let Some(Some(server)) = backend.fork_server {
                    server.shutdown().await;
                }
            }
            Backend::Url { .. } => {}
        }
    }
}

impl VllmBackend {
    fn new(spec: &TargetSpec, corpus: &Corpus, options: &VllmOptions) -> anyhow::Result<Self> {
        let frontend = spec.frontend().unwrap_or(Frontend::Python);
        let install = || Install::find(&options.version);
        let program = match (frontend, &options.rs_bin, &options.python) {
            (Frontend::Rust, Some(bin), _) => (bin.clone(), Vec::new()),
            (Frontend::Rust, None, _) => {
                let install = install()?;
                let bin = install.vllm_rs().ok_or_else(|| {
                    anyhow::anyhow!(
                        "no vllm-rs binary in the wheel at {}",
                        install.venv.display()
                    )
                })?;
                (bin, Vec::new())
            }
            (Frontend::Python, _, Some(python)) => (python.clone(), python_entry()),
            (Frontend::Python, _, None) => (install()?.python(), python_entry()),
        };
        if !program.0.is_file() {
            anyhow::bail!("{} does not exist", program.0.display());
        }
        let layout = wire_layout(spec, frontend, &program.0, options)?;
        let model_dir = options.work_dir.join("model");
        vllm::write_model_dir(&model_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the model directory {}: {e}",
                model_dir.display()
            )
        })?;
        let engine = if let TargetSpec::RealEngine(_) = spec {
            let install = EngineInstall::find(&options.version)?;
            let (journal, events) = mpsc::unbounded_channel();
            EngineKind::Real {
                install,
                journal,
                events,
            }
        } else {
            let config = EngineConfig {
                max_model_len: vllm::MAX_MODEL_LEN,
                ..EngineConfig::default()
            };
            EngineKind::Mock(Engine::with_corpus(config, corpus))
        };
        Ok(Self {
            frontend,
            program,
            layout,
            engine,
            model_dir,
            log_dir: options.work_dir.join("logs").join(spec.name()),
            ready_timeout: options.ready_timeout,
            through_tap: options.through_tap,
            fork_server: (frontend == Frontend::Python && options.fork_server).then_some(None),
            instances: BTreeMap::new(),
            spares: BTreeMap::new(),
            spare_gate: Arc::default(),
            retiring: Vec::new(),
            max_spares: options.spare_frontends,
            started: 0,
            generation: 0,
        })
    }

    async fn endpoint(&mut self, fixture: &Fixture) -> Result<String, Unavailable> {
        // What the tap saw before this case belongs to earlier ones: a run
        // that never reads the journal keeps at most one case of it.
        if let EngineKind::Real { events, .. } = &mut self.engine {
            while events.try_recv().is_ok() {}
        }
        if let Some(reason) = fixture.in_process_reason() {
            return Err(Unavailable::Skip(format!("in-process only: {reason}")));
        }
        let options = &fixture.server;
        if let Some(instance) = self.instances.get_mut(options) {
            let Some(why) = instance.dead() else {
                return Ok(instance.base_url.clone());
            };
            // A frontend and its engine are restarted together: a running
            // engine does not re-join a new frontend. The dead one stops
            // while the next serves.
            let old = self.instances.remove(options).expect("just found");
            tracing::info!(
                "{why}; restarting the {:?} frontend and its engine",
                self.frontend
            );
            self.retiring.push(tokio::spawn(async move {
                let log = old.process.log().to_path_buf();
                old.process.stop(Duration::from_secs(5)).await;
                if let Some(e) = old.core.stop().await {
                    tracing::warn!("{why} ({e}) (log: {})", log.display());
                }
            }));
        }
        let instance = match self.take_spare(options).await {
            Some(instance) => instance,
            None => {
                let launch = self.prepare(options).await.map_err(Unavailable::Error)?;
                launch.run().await.map_err(Unavailable::Error)?
            }
        };
        let url = instance.base_url.clone();
        self.instances.insert(options.clone(), instance);
        self.generation += 1;
        Ok(url)
    }

    /// The oldest spare for `options` that came up and is still alive.
    async fn take_spare(&mut self, options: &ServerOptions) -> Option<Instance> {
        while let Some(spare) = self.spares.get_mut(options)?.pop_front() {
            match spare.await {
                Ok(Ok(mut instance)) => match instance.dead() {
                    None => return Some(instance),
                    Some(why) => {
                        tracing::warn!("a spare {:?} frontend died unused: {why}", self.frontend);
                        self.retiring.push(tokio::spawn(instance.stop()));
                    }
                },
                Ok(Err(e)) => {
                    tracing::warn!("a spare {:?} frontend did not start: {e}", self.frontend)
                }
                Err(e) => {
                    tracing::warn!("a spare {:?} frontend's start failed: {e}", self.frontend)
                }
            }
        }
        None
    }

    /// See [`Target::keep_spares`].
    async fn keep_spares(&mut self, options: &ServerOptions, count: usize) {
        // Spares start beside cases, never beside a target's first start,
        // and only in front of our own engine (a real one is minutes of
        // start and gigabytes each).
        if !matches!(self.engine, EngineKind::Mock(_)) || !self.instances.contains_key(options) {
            return;
        }
        let have = self.spares.get(options).map_or(0, VecDeque::len);
        // Past the last death, the spares left are stopped (the newest
        // first: they started last).
        for _ in count..have {
            if let Some(spare) = self.spares.get_mut(options).and_then(VecDeque::pop_back) {
                self.retiring.push(tokio::spawn(discard(spare)));
            }
        }
        for _ in have..count {
            let launch = match self.prepare(options).await {
                Ok(launch) => launch,
                Err(e) => {
                    tracing::warn!("no spare {:?} frontend: {e}", self.frontend);
                    return;
                }
            };
            let gate = Arc::clone(&self.spare_gate);
            let spare = tokio::spawn(async move {
                let _one_at_a_time = gate.lock().await;
                launch.run().await
            });
            self.spares
                .entry(options.clone())
                .or_default()
                .push_back(spare);
        }
    }

    /// Everything one frontend start for `options` needs: its ports, its
    /// log's number and the fork server (started the first time).
    async fn prepare(&mut self, options: &ServerOptions) -> Result<Launch, String> {
        let ports = Ports {
            http: free_port().map_err(|e| format!("no free port: {e}"))?,
            handshake: free_port().map_err(|e| format!("no free port: {e}"))?,
        };
        self.started += 1;
        let mut command = vllm::frontend_command(
            self.frontend,
            &self.program.0,
            &self.model_dir,
            options,
            &ports,
        );
        // The frontend gives up on its engine after this; a real engine on a
        // busy 2-core machine takes minutes to import torch and vLLM.
        command.env(
            "VLLM_ENGINE_READY_TIMEOUT_S",
            self.ready_timeout.as_secs().max(1).to_string(),
        );
        let fork = match self.fork_server {
            Some(_) => Some(self.fork_server(&args_and_env(&command).1).await?),
            None => None,
        };
        let engine = match &self.engine {
            EngineKind::Mock(engine) => LaunchEngine::Mock(engine.clone()),
            EngineKind::Real {
                install, journal, ..
            } => LaunchEngine::Real {
                install: install.clone(),
                journal: journal.clone(),
            },
        };
        Ok(Launch {
            frontend: self.frontend,
            program: self.program.clone(),
            command,
            ports,
            number: self.started,
            log_dir: self.log_dir.clone(),
            model_dir: self.model_dir.clone(),
            fork,
            engine,
            layout: self.layout,
            through_tap: self.through_tap,
            ready_timeout: self.ready_timeout,
        })
    }

    /// The target's fork server, started with the frontends' environment
    /// `env` the first time (and again if it died).
    async fn fork_server(&mut self, env: &[(String, String)]) -> Result<Arc<ForkServer>, String> {
        let slot = self.fork_server.as_mut().expect("the fork server is on");
        if let Some(server) = slot.as_ref() {
            match server.gone() {
                None => return Ok(Arc::clone(server)),
                Some(why) => tracing::warn!(
                    "the fork server {why}; starting another (last lines of its log:\n{})",
                    server.log_tail(30)
                ),
            }
        }
        let clock = Instant::now();
        let server = ForkServer::start(
            &self.program.0,
            MODULE,
            PRELOAD,
            env,
            &self.log_dir,
            self.ready_timeout,
        )
        .await?;
        tracing::info!("fork server ready in {:?}", clock.elapsed());
        *slot = Some(Arc::clone(&server));
        Ok(server)
    }
}

/// The layout a target's engine side speaks: `--layout-file`, else the one
/// read from the frontend's install when it has an interpreter (cached),
/// else the hand-written table of `--vllm-version`. Checked, and the check's
/// report (fields the mock has no meaning for) printed once.
fn wire_layout(
    spec: &TargetSpec,
    frontend: Frontend,
    program: &std::path::Path,
    options: &VllmOptions,
) -> anyhow::Result<&'static Layout> {
    let python = match frontend {
        Frontend::Python => Some(program.to_path_buf()),
        Frontend::Rust => vllm::layout::python_of_rs_bin(program),
    };
    let (layout, report) = if let Some(path) = &options.layout_file {
        LayoutFile::read(path)?.layout()?
    } else if let Some(python) = python {
        let file = vllm::layout::read(&python)
            .map_err(|e| anyhow::anyhow!("{spec}: the wire layout of {}: {e}", python.display()))?;
        file.layout().map_err(|e| anyhow::anyhow!("{spec}: {e}"))?
    } else {
        let version: VllmVersion = options.version.parse().map_err(|_| {
            anyhow::anyhow!(
                "{spec}: {} sits in no install with a Python interpreter, and there is no \
                 hand-written wire layout for vLLM {v} (tables: {tables}).\n  \
                 Give the layout as a file: genconform layout --vllm-version {v} --json > \
                 layout-{v}.json (or --vllm-python PATH of a {v} install), then \
                 --layout-file layout-{v}.json",
                program.display(),
                v = options.version,
                tables = VllmVersion::ALL.map(VllmVersion::as_str).join(", "),
            )
        })?;
        let layout = version.layout();
        (layout, check_layout(layout)?)
    };
    eprintln!("{spec}: {report}");
    Ok(layout)
}

/// Runs vLLM's CLI from a given interpreter, so a contributor's own
/// environment works as well as the cached install.
fn python_entry() -> Vec<String> {
    vec!["-m".into(), MODULE.into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!("reference".parse(), Ok(TargetSpec::Reference));
        assert_eq!(
            "url=http://127.0.0.1:9/,name=mine".parse(),
            Ok(TargetSpec::Url {
                base: "http://127.0.0.1:9".into(),
                name: Some("mine".into())
            })
        );
        let e = "url=localhost:9".parse::<TargetSpec>().unwrap_err();
        assert!(e.contains("must start with http://"), "{e}");
        let e = "url=http://x,nmae=a".parse::<TargetSpec>().unwrap_err();
        assert!(e.contains("unknown option `nmae=a`"), "{e}");
        let e = "vllm".parse::<TargetSpec>().unwrap_err();
        assert!(e.contains("unknown target `vllm`"), "{e}");
        let real: TargetSpec = "vllm-python+engine".parse().unwrap();
        assert_eq!(real, TargetSpec::RealEngine(Frontend::Python));
        assert_eq!(real.name(), "vllm-python+engine");
        assert_eq!(real.frontend(), Some(Frontend::Python));
        assert!(
            !real.has_snapshots(),
            "a real engine's answers are recordings"
        );
        assert_eq!(
            "vllm-rs+engine".parse::<TargetSpec>().unwrap().name(),
            "vllm-rs+engine"
        );
        assert!(e.contains("vllm-rs+engine"), "{e}");
    }
}
