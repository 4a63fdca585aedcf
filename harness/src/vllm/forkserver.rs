//! Python frontends forked from a warm interpreter instead of started cold.
//!
//! A cold `vllm serve` spends most of its start-up importing vLLM, torch and
//! FastAPI (about 22 s of 25 to 55 s here). [`ForkServer`] runs
//! `forkserver.py` once per target, with the interpreter and environment the
//! frontends get; it imports vLLM's CLI and API server, then forks one child
//! per [`ForkServer::fork`] that runs `vllm.entrypoints.cli.main` as
//! `python -m` would, with the launch's argv, environment and log file. The
//! child is the real frontend: the same code, only its imports were done
//! before the fork.
//!
//! No orphans: the fork server dies with the harness (the kernel's parent
//! death signal, and EOF on its stdin), and each child with the fork server;
//! each child leads its own process group, which [`Forked::stop`] signals as
//! [`Supervised::stop`] does.
//!
//! ```no_run
//! # async fn f() -> Result<(), String> {
//! use std::{path::Path, time::Duration};
//! use harness::vllm::forkserver::ForkServer;
//! use harness::vllm::forkserver::{MODULE, PRELOAD};
//! let server = ForkServer::start(
//!     Path::new("/venv/bin/python"),
//!     MODULE,
//!     PRELOAD,
//!     &[("VLLM_TARGET_DEVICE".into(), "cpu".into())],
//!     Path::new(".genconform/logs/vllm-python"),
//!     Duration::from_secs(240),
//! )
//! .await?;
//! let args = vec!["serve".into(), "model".into()];
//! let frontend = server
//!     .fork(&args, &[], Path::new(".genconform/logs/vllm-python/frontend-1.log"))
//!     .await?;
//! frontend.stop(Duration::from_secs(5)).await;
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;
use tokio::sync::watch;

use crate::process::Supervised;

/// The fork server itself; run with the install's interpreter.
pub const SCRIPT: &str = include_str!("forkserver.py");

/// The module `python -m` runs for `vllm serve` (see the target's program).
pub const MODULE: &str = "vllm.entrypoints.cli.main";

/// What the fork server imports before it forks: the CLI's commands (its
/// `main` imports them all) and the API server `serve` starts (the bulk of a
/// cold start: vLLM, torch, transformers, FastAPI), then what a 0.32.0
/// frontend still imported after the fork (`GENCONFORM_FORKSERVER_TRACE=1`
/// writes that list next to each frontend's log). A name a release lacks is
/// logged and skipped: the child imports whatever it needs itself.
pub const PRELOAD: &[&str] = &[
    "vllm.entrypoints.cli.serve",
    "vllm.entrypoints.openai.api_server",
    "vllm.entrypoints.cli.benchmark.main",
    "vllm.entrypoints.cli.collect_env",
    "vllm.entrypoints.cli.download_kernels",
    "vllm.entrypoints.cli.launch",
    "vllm.entrypoints.cli.openai",
    "vllm.entrypoints.cli.preload",
    "vllm.entrypoints.cli.run_batch",
    "vllm.entrypoints.cli.snapshot",
    "vllm.entrypoints.generate.api_router",
    "vllm.entrypoints.scale_out.render",
    "vllm.entrypoints.scale_out.derender",
    "vllm.model_executor.model_loader",
    "vllm.v1.engine.async_llm",
    "vllm.v1.engine.core_client",
    "uvicorn",
];

/// A request to fork a frontend.
#[derive(Debug, Serialize)]
struct Request<'a> {
    id: u64,
    argv: &'a [String],
    env: HashMap<&'a str, &'a str>,
    log: &'a Path,
}

/// What the fork server says.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Ready {
        pid: i32,
        threads: Vec<String>,
    },
    Spawned {
        id: u64,
        pid: i32,
    },
    Failed {
        id: Option<u64>,
        error: String,
    },
    /// `status` is the raw status `waitpid` gave.
    Exited {
        pid: i32,
        status: i32,
    },
}

/// What the harness knows of the fork server, updated by its reader task.
#[derive(Debug, Default)]
struct State {
    /// The fork server's pid, once its imports are done.
    ready: Option<i32>,
    /// Answers to fork requests, by request id: a pid or why not.
    spawned: HashMap<u64, Result<i32, String>>,
    /// Children that exited, with their raw wait status.
    exited: HashMap<i32, i32>,
    /// Set when the fork server's stdout closed (it exited): why.
    gone: Option<String>,
}

/// A running fork server (see the module docs).
pub struct ForkServer {
    process: std::sync::Mutex<Option<Supervised>>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    state: watch::Receiver<State>,
    next_id: AtomicU64,
    log: PathBuf,
}

impl ForkServer {
    /// Starts `forkserver.py` with `python` and `env` (the environment every
    /// frontend gets: vLLM reads some of it at import time), its script and
    /// log in `dir`, and waits until it has imported `module` (what each
    /// child runs as `python -m` would) and `preload`.
    pub async fn start(
        python: &Path,
        module: &str,
        preload: &[&str],
        env: &[(String, String)],
        dir: &Path,
        ready_timeout: Duration,
    ) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let script = dir.join("forkserver.py");
        std::fs::write(&script, SCRIPT)
            .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        let log = dir.join("forkserver.log");
        let mut command = tokio::process::Command::new(python);
        command.arg(&script).arg(module).args(preload);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let (process, stdin, stdout) = Supervised::spawn_piped("fork server", command, &log)
            .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
        let (tx, state) = watch::channel(State::default());
        tokio::spawn(read_events(stdout, tx));
        let server = Arc::new(Self {
            process: std::sync::Mutex::new(Some(process)),
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            state,
            next_id: AtomicU64::new(1),
            log,
        });
        let mut state = server.state.clone();
        let ready = tokio::time::timeout(
            ready_timeout,
            state.wait_for(|s| s.ready.is_some() || s.gone.is_some()),
        )
        .await;
        let failed = match ready {
            Err(_) => Some(format!(
                "did not finish its imports within {ready_timeout:?}"
            )),
            Ok(Err(_)) => Some("its reader stopped".to_string()),
            Ok(Ok(s)) => s.gone.clone(),
        };
        if let Some(why) = failed {
            let tail = server.log_tail(30);
            server.shutdown().await;
            return Err(format!(
                "the fork server {why}; last lines of {}:\n{tail}",
                server.log.display()
            ));
        }
        Ok(server)
    }

    /// Why the fork server can no longer fork, if it cannot.
    pub fn gone(&self) -> Option<String> {
        self.state.borrow().gone.clone()
    }

    /// The last `lines` lines of the fork server's own log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Forks a frontend: `python -m MODULE ARGV` with
    /// `env` added to the fork server's, its stdout and stderr in `log`.
    pub async fn fork(
        self: &Arc<Self>,
        argv: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Forked, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            id,
            argv,
            env: env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            log,
        };
        let mut line = serde_json::to_vec(&request).expect("a request serializes");
        line.push(b'\n');
        let gone = |why: String| {
            format!(
                "the fork server {why}; last lines of {}:\n{}",
                self.log.display(),
                self.log_tail(30)
            )
        };
        {
            let mut stdin = self.stdin.lock().await;
            let stdin = stdin
                .as_mut()
                .ok_or_else(|| gone("was shut down".to_string()))?;
            stdin
                .write_all(&line)
                .await
                .map_err(|e| gone(format!("does not take requests ({e})")))?;
            stdin
                .flush()
                .await
                .map_err(|e| gone(format!("does not take requests ({e})")))?;
        }
        let mut state = self.state.clone();
        let answered = state
            .wait_for(|s| s.spawned.contains_key(&id) || s.gone.is_some())
            .await
            .map_err(|_| gone("stopped answering".to_string()))?;
        match answered.spawned.get(&id) {
            Some(Ok(pid)) => Ok(Forked {
                pid: Some(Pid::from_raw(*pid)),
                log: log.to_path_buf(),
                server: Arc::clone(self),
            }),
            Some(Err(e)) => Err(format!("the fork server could not fork: {e}")),
            None => Err(gone(answered.gone.clone().unwrap_or_default())),
        }
    }

    /// Closes the fork server's stdin (it kills its children's groups, reaps
    /// them and exits), then stops it as any supervised child.
    pub async fn shutdown(&self) {
        self.stdin.lock().await.take();
        let process = self.process.lock().expect("not poisoned").take();
        if let Some(process) = process {
            let mut state = self.state.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), state.wait_for(|s| s.gone.is_some()))
                    .await;
            process.stop(Duration::from_secs(2)).await;
        }
    }
}

async fn read_events(stdout: tokio::process::ChildStdout, tx: watch::Sender<State>) {
    let mut lines = BufReader::new(stdout).lines();
    let gone = loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                Ok(event) => tx.send_modify(|s| apply(s, event)),
                Err(e) => tracing::warn!("the fork server said `{line}`, not an event: {e}"),
            },
            Ok(None) => break "exited".to_string(),
            Err(e) => break format!("cannot be read ({e})"),
        }
    };
    tx.send_modify(|s| s.gone = Some(gone));
}

fn apply(state: &mut State, event: Event) {
    match event {
        Event::Ready { pid, threads } => {
            tracing::info!("fork server {pid} ready (threads: {})", threads.join(", "));
            state.ready = Some(pid);
        }
        Event::Spawned { id, pid } => {
            state.spawned.insert(id, Ok(pid));
        }
        Event::Failed { id, error } => match id {
            Some(id) => {
                state.spawned.insert(id, Err(error));
            }
            None => tracing::warn!("the fork server rejected a request: {error}"),
        },
        Event::Exited { pid, status } => {
            state.exited.insert(pid, status);
        }
    }
}

fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A frontend forked by a [`ForkServer`]; killed (its group) when dropped.
pub struct Forked {
    /// `None` once stopped.
    pid: Option<Pid>,
    pub log: PathBuf,
    server: Arc<ForkServer>,
}

impl Forked {
    /// The child's pid (and process group), until it is stopped.
    pub fn pid(&self) -> Option<i32> {
        self.pid.map(Pid::as_raw)
    }

    /// How the child exited, if it has: as the fork server reaped it, or
    /// killed with the fork server (the kernel's parent death signal).
    pub fn exited(&self) -> Option<String> {
        let pid = self.pid?;
        let state = self.server.state.borrow();
        if let Some(status) = state.exited.get(&pid.as_raw()) {
            return Some(ExitStatus::from_raw(*status).to_string());
        }
        state
            .gone
            .as_ref()
            .map(|why| format!("killed: its fork server {why}"))
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let Some(pid) = self.pid.take() else { return };
        let _ = killpg(pid, Signal::SIGTERM);
        if !self.reaped(pid, grace).await {
            let _ = killpg(pid, Signal::SIGKILL);
            self.reaped(pid, Duration::from_secs(5)).await;
        }
        // Grandchildren that ignored SIGTERM go with the group.
        let _ = killpg(pid, Signal::SIGKILL);
    }

    /// Waits up to `limit` until the fork server has reaped `pid` (or died,
    /// which kills it).
    async fn reaped(&self, pid: Pid, limit: Duration) -> bool {
        let mut state = self.server.state.clone();
        tokio::time::timeout(
            limit,
            state.wait_for(|s| s.exited.contains_key(&pid.as_raw()) || s.gone.is_some()),
        )
        .await
        .is_ok()
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

/// A real frontend's process, however it was started.
pub enum FrontendProcess {
    /// Started cold by the harness (`vllm-rs`, or `--no-fork-server`).
    Spawned(Box<Supervised>),
    /// Forked by the target's warm [`ForkServer`].
    Forked(Forked),
}

impl FrontendProcess {
    pub fn log(&self) -> &Path {
        match self {
            Self::Spawned(p) => &p.log,
            Self::Forked(p) => &p.log,
        }
    }

    /// How the frontend exited, if it has.
    pub fn exited(&mut self) -> Option<String> {
        match self {
            Self::Spawned(p) => p.exited().map(|s| s.to_string()),
            Self::Forked(p) => p.exited(),
        }
    }

    /// The last `lines` lines of the frontend's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(self.log(), lines)
    }

    /// SIGTERM to the frontend's group, then SIGKILL after `grace`.
    pub async fn stop(self, grace: Duration) {
        match self {
            Self::Spawned(p) => p.stop(grace).await,
            Self::Forked(p) => p.stop(grace).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for vLLM's CLI (guarded as its `main` is: importing it
    /// runs nothing), and a module the fork server preloads.
    const FAKE_CLI: &str = r#"
import os, signal, sys, time
import preloaded

def main():
    mode = sys.argv[1]
    if mode == "echo":
        print("argv", sys.argv[1:], "launch", os.environ.get("PER_LAUNCH"),
              "server", os.environ.get("SERVER_ENV"),
              "preloaded-before-fork", preloaded.PID != os.getpid(), flush=True)
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(300)

if __name__ == "__main__":
    main()
"#;

    fn python() -> PathBuf {
        let found = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sys; print(sys.executable)")
            .output()
            .expect("these tests need python3 on PATH (apt-get install python3)");
        PathBuf::from(String::from_utf8(found.stdout).unwrap().trim())
    }

    async fn fork_server(dir: &Path) -> Arc<ForkServer> {
        std::fs::write(dir.join("fake_cli.py"), FAKE_CLI).unwrap();
        std::fs::write(dir.join("preloaded.py"), "import os\nPID = os.getpid()\n").unwrap();
        let env = [
            ("PYTHONPATH".to_string(), dir.display().to_string()),
            ("SERVER_ENV".to_string(), "at-import".to_string()),
        ];
        ForkServer::start(
            &python(),
            "fake_cli",
            &["preloaded"],
            &env,
            dir,
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether `pid` is a live process (not gone, not a zombie).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            !after.starts_with('Z')
        })
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting until {what}");
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[tokio::test]
    async fn a_child_runs_the_module_with_its_argv_env_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let server = fork_server(dir.path()).await;
        let log = dir.path().join("logs/child.log");
        let env = [("PER_LAUNCH".to_string(), "launch-1".to_string())];
        let child = server
            .fork(&args(&["echo", "--flag", "x y"]), &env, &log)
            .await
            .unwrap();
        until("the child exits", || child.exited().is_some()).await;
        assert_eq!(child.exited().unwrap(), "exit status: 3");
        let out = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            out.trim(),
            "argv ['echo', '--flag', 'x y'] launch launch-1 server at-import \
             preloaded-before-fork True"
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn stop_kills_a_child_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let server = fork_server(dir.path()).await;
        let log = dir.path().join("child.log");
        let child = server.fork(&args(&["stubborn"]), &[], &log).await.unwrap();
        let pid = child.pid().unwrap();
        let process = FrontendProcess::Forked(child);
        until("the child is ready", || process.log_tail(1) == "ready").await;
        process.stop(Duration::from_millis(200)).await;
        assert!(!alive(pid), "the child outlived its stop");
        let state = server.state.borrow();
        let status = ExitStatus::from_raw(state.exited[&pid]);
        assert_eq!(status.to_string(), "signal: 9 (SIGKILL)");
    }

    #[tokio::test]
    async fn no_child_outlives_its_fork_server() {
        let dir = tempfile::tempdir().unwrap();
        // Shut down: the fork server kills its children before it exits.
        let server = fork_server(dir.path()).await;
        let log = dir.path().join("a.log");
        let child = server.fork(&args(&["stubborn"]), &[], &log).await.unwrap();
        let a = child.pid().unwrap();
        until("the child is ready", || tail(&log, 1) == "ready").await;
        server.shutdown().await;
        until("the child dies with its server", || !alive(a)).await;
        assert!(child.exited().is_some(), "the death is reported");

        // Killed outright: the kernel kills the children (parent death signal).
        let server = fork_server(dir.path()).await;
        let log = dir.path().join("b.log");
        let child = server.fork(&args(&["stubborn"]), &[], &log).await.unwrap();
        let b = child.pid().unwrap();
        until("the child is ready", || tail(&log, 1) == "ready").await;
        let server_pid = server.state.borrow().ready.unwrap();
        nix::sys::signal::kill(Pid::from_raw(server_pid), Signal::SIGKILL).unwrap();
        until("the child dies with its server", || !alive(b)).await;
        until("the harness sees it", || child.exited().is_some()).await;
        assert!(
            child.exited().unwrap().contains("fork server exited"),
            "{:?}",
            child.exited()
        );
        assert!(server.gone().is_some());
    }

    #[tokio::test]
    async fn a_bad_request_is_an_error_and_the_server_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let server = fork_server(dir.path()).await;
        let e = server
            .fork(&args(&["echo"]), &[], Path::new("/proc/no/such/dir/x.log"))
            .await
            .err()
            .expect("a log that cannot be created fails the fork");
        assert!(
            e.contains("could not fork") && e.contains("/proc/no"),
            "{e}"
        );
        let log = dir.path().join("ok.log");
        let child = server.fork(&args(&["echo"]), &[], &log).await.unwrap();
        until("the child exits", || child.exited().is_some()).await;
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_fork_server_that_cannot_import_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let e = ForkServer::start(
            &python(),
            "no_such_module_here",
            &[],
            &[],
            dir.path(),
            Duration::from_secs(30),
        )
        .await
        .err()
        .expect("the import fails");
        assert!(
            e.contains("fork server exited") && e.contains("No module named 'no_such_module_here'"),
            "{e}"
        );
    }
}
