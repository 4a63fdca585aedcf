//! The servers a run talks to.
//!
//! `--target` takes:
//! - `reference`: our reference server, in-process, on an ephemeral port, with
//!   the corpus's scripts loaded (one instance per distinct server options);
//! - `url=<base>[,name=<name>]`: any running server; its engine and options are
//!   the user's business, so fixtures that need other server options are
//!   skipped with the reason. Named url targets get snapshots of their own;
//! - `vllm-rs` and `vllm-python`: the real vLLM frontends, started by the
//!   harness against our mock engine core (see [`crate::vllm`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use mock_engine::core::{CoreError, CoreOptions, run_engine_core};
use mock_engine::script::{Fixture, ServerOptions};
use mock_engine::wire::VllmVersion;
use mock_engine::{Corpus, Engine, EngineConfig};
use reference_server::RunningServer;
use tokio::task::JoinHandle;

use crate::process::{Supervised, free_port};
use crate::vllm::{self, Frontend, Install, Ports};

/// A `--target` argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Reference,
    Url { base: String, name: Option<String> },
    VllmRs,
    VllmPython,
}

impl TargetSpec {
    /// The name in reports, and the snapshot folder when it has one.
    pub fn name(&self) -> String {
        match self {
            Self::Reference => "reference".into(),
            Self::VllmRs => "vllm-rs".into(),
            Self::VllmPython => "vllm-python".into(),
            Self::Url { name: Some(n), .. } => n.clone(),
            Self::Url { base, name: None } => format!("url:{base}"),
        }
    }

    /// Whether this target's transcripts are checked against snapshots.
    pub fn has_snapshots(&self) -> bool {
        !matches!(self, Self::Url { name: None, .. })
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
            "unknown target `{s}`; expected `reference`, `vllm-rs`, `vllm-python` or `url=<base>[,name=<name>]`"
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
}

impl Default for VllmOptions {
    fn default() -> Self {
        Self {
            version: vllm::DEFAULT_VERSION.into(),
            python: None,
            rs_bin: None,
            work_dir: PathBuf::from(".genconform"),
            ready_timeout: Duration::from_secs(240),
        }
    }
}

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

/// One real frontend per distinct server options, each with its engine core.
struct VllmBackend {
    frontend: Frontend,
    /// The program and the arguments that come before `serve`.
    program: (PathBuf, Vec<String>),
    version: VllmVersion,
    engine: Engine,
    model_dir: PathBuf,
    log_dir: PathBuf,
    ready_timeout: Duration,
    instances: BTreeMap<ServerOptions, Instance>,
    started: u32,
}

struct Instance {
    process: Supervised,
    engine_core: JoinHandle<Result<(), CoreError>>,
    base_url: String,
}

impl Instance {
    /// Why this instance can no longer serve, if it cannot.
    fn dead(&mut self) -> Option<String> {
        if let Some(status) = self.process.exited() {
            return Some(format!("the frontend exited ({status})"));
        }
        self.engine_core
            .is_finished()
            .then(|| "the mock engine core stopped".to_string())
    }
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
            TargetSpec::VllmRs | TargetSpec::VllmPython => {
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

    /// The engine behind this target, when the harness owns it (the
    /// reference and the real frontends): scripts registered on it are
    /// answered from the next request on.
    pub fn engine(&self) -> Option<&Engine> {
        match &self.backend {
            Backend::Reference { engine, .. } => Some(engine),
            Backend::Vllm(b) => Some(&b.engine),
            Backend::Url { .. } => None,
        }
    }

    /// The log of the frontend serving `fixture`, for failure reports.
    pub fn log_tail(&self, fixture: &Fixture, lines: usize) -> Option<String> {
        match &self.backend {
            Backend::Vllm(b) => b.instances.get(&fixture.server).map(|i| {
                format!(
                    "last lines of {}:\n{}",
                    i.process.log.display(),
                    i.process.log_tail(lines)
                )
            }),
            _ => None,
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
                    instance.engine_core.abort();
                    instance.process.stop(Duration::from_secs(10)).await;
                }
            }
            Backend::Url { .. } => {}
        }
    }
}

impl VllmBackend {
    fn new(spec: &TargetSpec, corpus: &Corpus, options: &VllmOptions) -> anyhow::Result<Self> {
        let version: VllmVersion = options
            .version
            .parse()
            .map_err(|e| anyhow::anyhow!("--vllm-version: {e}"))?;
        let frontend = match spec {
            TargetSpec::VllmRs => Frontend::Rust,
            _ => Frontend::Python,
        };
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
        let model_dir = options.work_dir.join("model");
        vllm::write_model_dir(&model_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the model directory {}: {e}",
                model_dir.display()
            )
        })?;
        let config = EngineConfig {
            max_model_len: vllm::MAX_MODEL_LEN,
            ..EngineConfig::default()
        };
        Ok(Self {
            frontend,
            program,
            version,
            engine: Engine::with_corpus(config, corpus),
            model_dir,
            log_dir: options.work_dir.join("logs").join(spec.name()),
            ready_timeout: options.ready_timeout,
            instances: BTreeMap::new(),
            started: 0,
        })
    }

    async fn endpoint(&mut self, fixture: &Fixture) -> Result<String, Unavailable> {
        if let Some(reason) = fixture.in_process_reason() {
            return Err(Unavailable::Skip(format!("in-process only: {reason}")));
        }
        if let Some(instance) = self.instances.get_mut(&fixture.server) {
            match instance.dead() {
                None => return Ok(instance.base_url.clone()),
                Some(why) => {
                    let old = self.instances.remove(&fixture.server).expect("just found");
                    let log = old.process.log.clone();
                    old.process.stop(Duration::from_secs(5)).await;
                    old.engine_core.abort();
                    match old.engine_core.await {
                        // A fixture that scripts `fail` kills the engine on purpose.
                        Ok(Err(CoreError::ScriptedDeath(_))) => tracing::info!(
                            "the engine died as scripted; restarting the {:?} frontend",
                            self.frontend
                        ),
                        Ok(Err(e)) => {
                            tracing::warn!("{why} ({e}); restarting (log: {})", log.display())
                        }
                        _ => tracing::warn!("{why}; restarting (log: {})", log.display()),
                    }
                }
            }
        }
        let instance = self
            .launch(&fixture.server)
            .await
            .map_err(Unavailable::Error)?;
        let url = instance.base_url.clone();
        self.instances.insert(fixture.server.clone(), instance);
        Ok(url)
    }

    /// Starts a frontend and its engine core, and waits until it is healthy.
    async fn launch(&mut self, options: &ServerOptions) -> Result<Instance, String> {
        let ports = Ports {
            http: free_port().map_err(|e| format!("no free port: {e}"))?,
            handshake: free_port().map_err(|e| format!("no free port: {e}"))?,
        };
        self.started += 1;
        let log = self.log_dir.join(format!("frontend-{}.log", self.started));
        let mut command = vllm::frontend_command(
            self.frontend,
            &self.program.0,
            &self.model_dir,
            options,
            &ports,
        );
        let mut args: Vec<std::ffi::OsString> = self.program.1.iter().map(Into::into).collect();
        args.extend(command.as_std().get_args().map(ToOwned::to_owned));
        let mut full = tokio::process::Command::new(&self.program.0);
        full.args(args);
        for (k, v) in command.as_std().get_envs() {
            if let Some(v) = v {
                full.env(k, v);
            }
        }
        command = full;
        let mut process =
            Supervised::spawn(&format!("{:?} frontend", self.frontend), command, &log)
                .map_err(|e| format!("cannot start {}: {e}", self.program.0.display()))?;
        let mut core = CoreOptions::new(format!("tcp://127.0.0.1:{}", ports.handshake));
        core.version = self.version;
        core.handshake_timeout = self.ready_timeout;
        let engine_core = tokio::spawn(run_engine_core(core, self.engine.clone()));
        let base_url = format!("http://127.0.0.1:{}", ports.http);
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = process.exited() {
                engine_core.abort();
                return Err(format!(
                    "the frontend exited during start-up ({status}); last lines of {}:\n{}",
                    log.display(),
                    process.log_tail(30)
                ));
            }
            if engine_core.is_finished() {
                let why = match engine_core.await {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(())) => "it ended".into(),
                    Err(e) => e.to_string(),
                };
                process.stop(Duration::from_secs(5)).await;
                return Err(format!(
                    "the mock engine core failed during start-up: {why}"
                ));
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
                    engine_core,
                    base_url,
                });
            }
            if started.elapsed() > self.ready_timeout {
                engine_core.abort();
                let tail = process.log_tail(30);
                process.stop(Duration::from_secs(5)).await;
                return Err(format!(
                    "the frontend did not become healthy within {:?}; last lines of {}:\n{tail}",
                    self.ready_timeout,
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Runs vLLM's CLI from a given interpreter, so a contributor's own
/// environment works as well as the cached install.
fn python_entry() -> Vec<String> {
    vec!["-m".into(), "vllm.entrypoints.cli.main".into()]
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
    }
}
