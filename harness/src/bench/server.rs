//! The servers a bench loads, started so that they can be measured.
//!
//! Unlike `run`, the bench starts the reference as a separate process (the
//! `reference-server` binary built next to `genconform`): its CPU time and
//! memory then belong to it alone. Its engine is scripted over the script
//! control channel. The real frontends are a [`TargetSet`] of one, their
//! engine scripted in-process; `url=` servers are scripted over the control
//! channel when they have one.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use mock_engine::Corpus;
use mock_engine::script::{Fixture, RequestSpec, Script, ServerOptions};
use reference_server::control::SCRIPTS_PATH;

use super::resources::{Measured, group_of, pid_listening_on};
use crate::process::{Supervised, free_port};
use crate::session::scripts::{ScriptChannel, control_request};
use crate::session::targets::TargetSet;
use crate::targets::{TargetSpec, VllmOptions};

/// How to start the bench's servers.
#[derive(Debug, Clone)]
pub struct BenchServerOptions {
    pub vllm: VllmOptions,
    /// The `reference-server` binary; default: next to this executable.
    pub reference_bin: Option<PathBuf>,
}

enum Backend {
    Reference(Box<Supervised>),
    Harness(Box<TargetSet>),
    Url,
}

/// A started server, its address and the processes that are its cost.
pub struct BenchServer {
    pub spec: TargetSpec,
    pub base_url: String,
    pub addr: SocketAddr,
    /// `None`: the server's processes are not visible from here.
    pub scope: Option<Measured>,
    backend: Backend,
}

impl BenchServer {
    pub async fn start(spec: &TargetSpec, options: &BenchServerOptions) -> anyhow::Result<Self> {
        let (base_url, backend) = match spec {
            TargetSpec::Reference => {
                let (url, process) = start_reference(options).await?;
                (url, Backend::Reference(Box::new(process)))
            }
            TargetSpec::VllmRs | TargetSpec::VllmPython | TargetSpec::RealEngine(_) => {
                let mut set = TargetSet::start(
                    std::slice::from_ref(spec),
                    &Corpus::default(),
                    &options.vllm,
                )
                .await
                .with_context(|| format!("starting {spec}"))?;
                let url = set.targets[0]
                    .endpoint(&bench_fixture())
                    .await
                    .map_err(|e| anyhow!("{spec} did not start: {e:?}"))?;
                (url, Backend::Harness(Box::new(set)))
            }
            TargetSpec::Url { base, .. } => (base.clone(), Backend::Url),
        };
        let addr = socket_addr(&base_url)?;
        let scope = pid_listening_on(addr.port()).map(|pid| match backend {
            // A started frontend leads its process group: count helpers too.
            Backend::Reference(_) | Backend::Harness(_) => {
                Measured::Group(group_of(pid).unwrap_or(pid))
            }
            Backend::Url => Measured::Process(pid),
        });
        Ok(Self {
            spec: spec.clone(),
            base_url,
            addr,
            scope,
            backend,
        })
    }

    /// Makes the engine behind the server answer each prompt with its script.
    pub async fn register(&self, scripts: &[(Vec<u32>, Script)]) -> anyhow::Result<()> {
        if let Backend::Harness(set) = &self.backend {
            let channel = match &set.channels[0] {
                channel @ ScriptChannel::InProcess(_) => channel,
                _ => bail!("{} has no in-process engine", self.spec),
            };
            for (prompt, script) in scripts {
                channel
                    .set(&set.client, prompt, Some(script))
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            return Ok(());
        }
        let client = reqwest::Client::new();
        for (prompt, script) in scripts {
            let (url, request) = control_request(&client, &self.base_url, prompt, Some(script));
            let response = request
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            match response.status().as_u16() {
                204 | 200 => {}
                404 => bail!(
                    "{} has no script control channel (POST {SCRIPTS_PATH} is a 404): start it \
                     with --enable-script-control, or the bench cannot give its engine a profile",
                    self.spec
                ),
                status => bail!(
                    "{} refused a script ({status}): {}",
                    self.spec,
                    response.text().await.unwrap_or_default()
                ),
            }
        }
        Ok(())
    }

    pub async fn stop(self) {
        match self.backend {
            Backend::Reference(process) => process.stop(Duration::from_secs(10)).await,
            Backend::Harness(set) => set.stop().await,
            Backend::Url => {}
        }
    }
}

/// The request options every bench request uses (default server options).
fn bench_fixture() -> Fixture {
    Fixture {
        name: "bench".into(),
        description: String::new(),
        server: ServerOptions::default(),
        request: RequestSpec::default(),
        engine: Script::default(),
        in_process_only: None,
        recorded: None,
    }
}

fn socket_addr(base_url: &str) -> anyhow::Result<SocketAddr> {
    let rest = base_url.strip_prefix("http://").ok_or_else(|| {
        anyhow!("`{base_url}`: the bench speaks plain HTTP/1.1 only (http://host:port)")
    })?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving `{authority}`"))?
        .next()
        .ok_or_else(|| anyhow!("`{authority}` resolves to no address"))
}

fn reference_binary(options: &BenchServerOptions) -> anyhow::Result<PathBuf> {
    let path = match &options.reference_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("reference-server"),
    };
    if !path.is_file() {
        bail!(
            "no reference-server binary at {} (build it next to genconform with \
             `cargo build --release -p reference-server`, or pass --reference-bin)",
            path.display()
        );
    }
    Ok(path)
}

async fn start_reference(options: &BenchServerOptions) -> anyhow::Result<(String, Supervised)> {
    let bin = reference_binary(options)?;
    let port = free_port().context("no free port")?;
    let mut command = tokio::process::Command::new(&bin);
    command
        .args(["--port", &port.to_string(), "--enable-script-control"])
        // Per-request logging would be measured as the server's cost.
        .env("RUST_LOG", "warn");
    let log = options
        .vllm
        .work_dir
        .join("logs/bench/reference-server.log");
    let mut process = Supervised::spawn("reference-server", command, &log)
        .with_context(|| format!("starting {}", bin.display()))?;
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Some(status) = process.exited() {
            bail!(
                "reference-server exited during start-up ({status}):\n{}",
                process.log_tail(20)
            );
        }
        let health = client
            .get(format!("{url}/health"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if health.is_ok_and(|r| r.status().is_success()) {
            return Ok((url, process));
        }
        if started.elapsed() > Duration::from_secs(30) {
            let tail = process.log_tail(20);
            process.stop(Duration::from_secs(2)).await;
            bail!("reference-server was not healthy within 30 s:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_of_base_urls() {
        assert_eq!(
            socket_addr("http://127.0.0.1:8000").unwrap(),
            "127.0.0.1:8000".parse().unwrap()
        );
        assert_eq!(socket_addr("http://127.0.0.1/x").unwrap().port(), 80);
        let e = socket_addr("https://127.0.0.1:1").unwrap_err().to_string();
        assert!(e.contains("plain HTTP/1.1"), "{e}");
    }
}
