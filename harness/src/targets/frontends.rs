//! The real vLLM frontends of a `vllm-rs` or `vllm-python` target: one per
//! distinct server options, each with its engine core (the mock engine, or
//! vLLM's own behind the tap), spares started ahead of scripted engine
//! deaths, and the engine-core wire layout they speak.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_engine::script::{Fixture, ServerOptions};
use mock_engine::tap::TapEvent;
use mock_engine::wire::{Layout, LayoutFile, VllmVersion, check_layout};
use mock_engine::{Corpus, Engine, EngineConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::instance::{Instance, Launch, LaunchEngine, args_and_env};
use super::{TargetSpec, Unavailable, VllmOptions};
use crate::process::free_port;
use crate::vllm::engine::EngineInstall;
use crate::vllm::forkserver::{ForkServer, MODULE, PRELOAD};
use crate::vllm::{self, Frontend, Install, Ports};

/// One real frontend per distinct server options, each with its engine core.
pub(super) struct VllmBackend {
    pub(super) frontend: Frontend,
    /// The program and the arguments that come before `serve`.
    pub(super) program: (PathBuf, Vec<String>),
    /// The engine-core wire layout, checked at start-up.
    pub(super) layout: &'static Layout,
    pub(super) engine: EngineKind,
    pub(super) model_dir: PathBuf,
    pub(super) log_dir: PathBuf,
    pub(super) ready_timeout: Duration,
    pub(super) through_tap: bool,
    /// Python frontends are forked from this, when it is on (started at
    /// the first launch, again if it died).
    pub(super) fork_server: Option<Option<Arc<ForkServer>>>,
    pub(super) instances: BTreeMap<ServerOptions, Instance>,
    /// Frontends starting or started for the scripted engine deaths ahead
    /// (see [`Target::keep_spares`]), oldest first.
    pub(super) spares: BTreeMap<ServerOptions, VecDeque<Spare>>,
    /// Spares start one at a time: on two cores, a Python frontend's start
    /// is a second of one core's work beside the cases.
    pub(super) spare_gate: Arc<tokio::sync::Mutex<()>>,
    /// Dead instances being stopped while cases go on.
    pub(super) retiring: Vec<JoinHandle<()>>,
    /// `--spare-frontends`.
    pub(super) max_spares: usize,
    /// Frontends started (their logs' numbers).
    pub(super) started: u32,
    /// Instances that served: a new one is a new server.
    pub(super) generation: u32,
}

/// A frontend starting ahead of a scripted engine death.
type Spare = JoinHandle<Result<Instance, String>>;

/// Stops a spare nobody will use, once it is up: a spare still starting
/// comes up first (the fork server would stop it all the same, a spawned
/// one would not).
pub(super) async fn discard(spare: Spare) {
    if let Ok(Ok(instance)) = spare.await {
        instance.stop().await;
    }
}

/// What answers the frontend's engine requests.
pub(super) enum EngineKind {
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

impl VllmBackend {
    pub(super) fn new(
        spec: &TargetSpec,
        corpus: &Corpus,
        options: &VllmOptions,
    ) -> anyhow::Result<Self> {
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

    pub(super) async fn endpoint(&mut self, fixture: &Fixture) -> Result<String, Unavailable> {
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
    pub(super) async fn keep_spares(&mut self, options: &ServerOptions, count: usize) {
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
