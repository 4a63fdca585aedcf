//! One real frontend and its engine side: how it starts, how it is seen
//! dead, how it stops.
//!
//! A [`Launch`] holds everything one start needs, so that it can run on its
//! own: the backend prepares it (ports, the log's number, the fork server)
//! and either waits for it or keeps it as a spare that starts while cases
//! run (see [`super::VllmBackend`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_engine::Engine;
use mock_engine::core::{CoreError, CoreOptions, run_engine_core};
use mock_engine::tap::{TapError, TapEvent, TapOptions, run_tap};
use mock_engine::wire::Layout;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::process::{Supervised, free_port};
use crate::vllm::engine::{EngineInstall, headless_command};
use crate::vllm::forkserver::{ForkServer, FrontendProcess};
use crate::vllm::{Frontend, Ports};

/// How often a starting frontend's `/health` is asked: a restarted vllm-rs
/// is up in a few milliseconds, a forked Python one in about a second.
const HEALTH_POLL: Duration = Duration::from_millis(25);

/// A running frontend and its engine side.
pub(super) struct Instance {
    pub(super) process: FrontendProcess,
    pub(super) core: Core,
    pub(super) base_url: String,
}

/// The engine side of a running instance.
pub(super) enum Core {
    Mock {
        core: JoinHandle<Result<(), CoreError>>,
        tap: Option<JoinHandle<Result<(), TapError>>>,
    },
    Real {
        tap: JoinHandle<Result<(), TapError>>,
        /// Boxed: a process handle is large beside two task handles.
        engine: Box<Supervised>,
    },
}

impl Core {
    /// Why the engine side can no longer serve, if it cannot.
    pub(super) fn dead(&mut self) -> Option<String> {
        match self {
            Self::Mock { core, tap } => {
                if core.is_finished() {
                    Some("the mock engine core stopped".to_string())
                } else {
                    tap.as_ref()
                        .is_some_and(JoinHandle::is_finished)
                        .then(|| "the tap stopped".to_string())
                }
            }
            Self::Real { tap, engine } => {
                if let Some(status) = engine.exited() {
                    Some(format!(
                        "the engine core exited ({status}); last lines of {}:\n{}",
                        engine.log.display(),
                        engine.log_tail(30)
                    ))
                } else {
                    tap.is_finished().then(|| "the tap stopped".to_string())
                }
            }
        }
    }

    /// Stops the engine side and says why it had ended, if it had.
    pub(super) async fn stop(self) -> Option<String> {
        match self {
            Self::Mock { core, tap } => {
                core.abort();
                if let Some(tap) = tap {
                    tap.abort();
                }
                match core.await {
                    // A fixture that scripts `fail` kills the engine on purpose.
                    Ok(Err(CoreError::ScriptedDeath(_))) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    _ => None,
                }
            }
            Self::Real { tap, engine } => {
                tap.abort();
                engine.stop(Duration::from_secs(10)).await;
                match tap.await {
                    Ok(Err(e)) => Some(e.to_string()),
                    _ => None,
                }
            }
        }
    }
}

impl Instance {
    /// Stops the frontend, then its engine side.
    pub(super) async fn stop(self) {
        self.process.stop(Duration::from_secs(10)).await;
        self.core.stop().await;
    }

    /// Why this instance can no longer serve, if it cannot.
    pub(super) fn dead(&mut self) -> Option<String> {
        if let Some(status) = self.process.exited() {
            return Some(format!("the frontend exited ({status})"));
        }
        self.core.dead()
    }
}

/// What answers a launched frontend's engine requests.
pub(super) enum LaunchEngine {
    /// Our scripted engine, as an engine core inside the harness.
    Mock(Engine),
    /// vLLM's own engine core on CPU, behind the recording tap.
    Real {
        install: EngineInstall,
        journal: mpsc::UnboundedSender<TapEvent>,
    },
}

/// One frontend start, prepared.
pub(super) struct Launch {
    pub(super) frontend: Frontend,
    /// The program, and the arguments before `serve` of a cold start.
    pub(super) program: (PathBuf, Vec<String>),
    /// `serve` and its arguments and environment.
    pub(super) command: tokio::process::Command,
    pub(super) ports: Ports,
    /// This start's number among the target's: its logs' names.
    pub(super) number: u32,
    pub(super) log_dir: PathBuf,
    pub(super) model_dir: PathBuf,
    /// Forks the frontend from a warm interpreter, when on.
    pub(super) fork: Option<Arc<ForkServer>>,
    pub(super) engine: LaunchEngine,
    pub(super) layout: &'static Layout,
    pub(super) through_tap: bool,
    pub(super) ready_timeout: Duration,
}

/// A command's arguments and the environment it sets, as strings.
pub(super) fn args_and_env(
    command: &tokio::process::Command,
) -> (Vec<String>, Vec<(String, String)>) {
    let lossy = |s: &std::ffi::OsStr| s.to_string_lossy().into_owned();
    let args = command.as_std().get_args().map(lossy).collect();
    let env = command
        .as_std()
        .get_envs()
        .filter_map(|(k, v)| Some((lossy(k), lossy(v?))))
        .collect();
    (args, env)
}

impl Launch {
    /// This start's log of `what` (`frontend` or `engine`).
    fn log(&self, what: &str) -> PathBuf {
        self.log_dir.join(format!("{what}-{}.log", self.number))
    }

    /// Starts the frontend and its engine core, and waits until it is
    /// healthy.
    pub(super) async fn run(self) -> Result<Instance, String> {
        let ports = &self.ports;
        let log = self.log("frontend");
        let mut process = match &self.fork {
            Some(server) => {
                let (args, env) = args_and_env(&self.command);
                FrontendProcess::Forked(server.fork(&args, &env, &log).await?)
            }
            None => {
                let mut args: Vec<std::ffi::OsString> =
                    self.program.1.iter().map(Into::into).collect();
                args.extend(self.command.as_std().get_args().map(ToOwned::to_owned));
                let mut full = tokio::process::Command::new(&self.program.0);
                full.args(args);
                for (k, v) in self.command.as_std().get_envs() {
                    if let Some(v) = v {
                        full.env(k, v);
                    }
                }
                FrontendProcess::Spawned(Box::new(
                    Supervised::spawn(&format!("{:?} frontend", self.frontend), full, &log)
                        .map_err(|e| format!("cannot start {}: {e}", self.program.0.display()))?,
                ))
            }
        };
        let frontend_handshake = format!("tcp://127.0.0.1:{}", ports.handshake);
        let mut core = match &self.engine {
            LaunchEngine::Mock(engine) => {
                let (engine_handshake, tap) = if self.through_tap {
                    let engine_port = free_port().map_err(|e| format!("no free port: {e}"))?;
                    let engine_handshake = format!("tcp://127.0.0.1:{engine_port}");
                    let mut tap = TapOptions::new(frontend_handshake, engine_handshake.clone());
                    tap.layout = self.layout;
                    tap.handshake_timeout = self.ready_timeout;
                    // Nobody reads this journal: the tap is here to be timed.
                    let (journal, _) = mpsc::unbounded_channel();
                    (engine_handshake, Some(tokio::spawn(run_tap(tap, journal))))
                } else {
                    (frontend_handshake, None)
                };
                let mut core = CoreOptions::new(engine_handshake);
                core.layout = self.layout;
                core.handshake_timeout = self.ready_timeout;
                Core::Mock {
                    core: tokio::spawn(run_engine_core(core, engine.clone())),
                    tap,
                }
            }
            LaunchEngine::Real { install, journal } => {
                let engine_port = free_port().map_err(|e| format!("no free port: {e}"))?;
                let mut tap =
                    TapOptions::new(frontend_handshake, format!("tcp://127.0.0.1:{engine_port}"));
                tap.layout = self.layout;
                tap.handshake_timeout = self.ready_timeout;
                let tap = tokio::spawn(run_tap(tap, journal.clone()));
                let engine_log = self.log("engine");
                let engine = Supervised::spawn(
                    "engine core",
                    headless_command(install, &self.model_dir, engine_port),
                    &engine_log,
                )
                .map_err(|e| {
                    format!("cannot start the engine core {}: {e}", engine_log.display())
                })?;
                Core::Real {
                    tap,
                    engine: Box::new(engine),
                }
            }
        };
        let base_url = format!("http://127.0.0.1:{}", ports.http);
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = process.exited() {
                let tail = process.log_tail(30);
                core.stop().await;
                return Err(format!(
                    "the frontend exited during start-up ({status}); last lines of {}:\n{tail}",
                    log.display(),
                ));
            }
            if let Some(dead) = core.dead() {
                let why = core.stop().await.unwrap_or(dead);
                process.stop(Duration::from_secs(5)).await;
                return Err(format!("the engine side failed during start-up: {why}"));
            }
            let health = client
                .get(format!("{base_url}/health"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                tracing::info!(
                    "{:?} frontend ready at {base_url} in {:?}",
                    self.frontend,
                    started.elapsed()
                );
                return Ok(Instance {
                    process,
                    core,
                    base_url,
                });
            }
            if started.elapsed() > self.ready_timeout {
                let tail = process.log_tail(30);
                process.stop(Duration::from_secs(5)).await;
                if let Core::Real { engine, .. } = &core {
                    tracing::warn!(
                        "the engine core's last lines ({}):\n{}",
                        engine.log.display(),
                        engine.log_tail(30)
                    );
                }
                core.stop().await;
                return Err(format!(
                    "the frontend did not become healthy within {:?}; last lines of {}:\n{tail}",
                    self.ready_timeout,
                    log.display()
                ));
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }
}
