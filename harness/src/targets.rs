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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mock_engine::script::{Fixture, ServerOptions};
use mock_engine::tap::TapEvent;
use mock_engine::{Corpus, Engine, EngineConfig};
use reference_server::RunningServer;

mod frontends;
mod instance;
mod options;
mod spec;

use frontends::{EngineKind, VllmBackend, discard};
use instance::Core;
pub use options::{DEFAULT_SPARES, FrontendArgs, VllmArgs, VllmOptions};
pub use spec::TargetSpec;

/// Why a target cannot take a fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// By design, with the reason (reported, not failed).
    Skip(String),
    /// The target is broken.
    Error(String),
}

/// How long [`Target::settle_after_death`] waits for a killed engine's
/// instance to be seen dead; past it the next case runs anyway (and says
/// what it met).
const SETTLE_AFTER_DEATH: Duration = Duration::from_secs(10);

/// A started target.
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
    /// `SETTLE_AFTER_DEATH`, until the instance that served it knows it is
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
