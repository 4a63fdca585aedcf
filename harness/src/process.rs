//! Child processes the harness owns (the real vLLM frontends).
//!
//! Each child leads its own process group, so stopping it also stops whatever
//! it started; it is killed when its handle drops (end of run, Ctrl-C, panic),
//! and asks the kernel to kill it if the harness itself dies. Its stdout and
//! stderr go to a log file that failures quote.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A running child and its log.
#[derive(Debug)]
pub struct Supervised {
    pub name: String,
    pub log: PathBuf,
    child: tokio::process::Child,
    pgid: Option<Pid>,
}

impl Supervised {
    /// Starts `command` in a new process group, logging to `log`.
    pub fn spawn(
        name: &str,
        command: tokio::process::Command,
        log: &Path,
    ) -> std::io::Result<Self> {
        Self::spawn_with(name, command, log, false)
    }

    /// [`Supervised::spawn`], with stdin and stdout as pipes to the harness
    /// (stderr alone goes to `log`): for a child that talks a protocol.
    pub fn spawn_piped(
        name: &str,
        command: tokio::process::Command,
        log: &Path,
    ) -> std::io::Result<(
        Self,
        tokio::process::ChildStdin,
        tokio::process::ChildStdout,
    )> {
        let mut child = Self::spawn_with(name, command, log, true)?;
        let stdin = child.child.stdin.take().expect("stdin is piped");
        let stdout = child.child.stdout.take().expect("stdout is piped");
        Ok((child, stdin, stdout))
    }

    fn spawn_with(
        name: &str,
        mut command: tokio::process::Command,
        log: &Path,
        piped: bool,
    ) -> std::io::Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        if piped {
            command.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            command.stdin(Stdio::null()).stdout(out);
        }
        command.stderr(err).process_group(0).kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn()?;
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        Ok(Self {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
            pgid,
        })
    }

    /// The exit status, if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait())
                .await
                .is_err()
            {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = self.child.wait().await;
            }
            // Grandchildren that ignored SIGTERM go with the group.
            let _ = killpg(pgid, Signal::SIGKILL);
            self.pgid = None;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// A port that was free a moment ago (the frontends want numbers, not
/// sockets), below the kernel's ephemeral range.
///
/// Why below: between this check and the frontend's own bind, a port of the
/// ephemeral range can be taken by any outgoing connection on the machine
/// (the kernel picks their source ports there, and `bind(0)` too), and with
/// frontends, engines and clients connecting all the time it was: CI saw a
/// restarted vllm-python die on "Address already in use" for such a port.
/// Below the range only an explicit bind takes a port. Successive calls
/// walk the ports from a start that differs per process, so two runs at once
/// and one run's consecutive starts do not reuse a port just handed out.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (first, end) = (LOW_PORTS_START, ephemeral_start().max(LOW_PORTS_START + 1));
    let span = u32::from(end - first);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span.min(4096) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = first + (start.wrapping_add(n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The lowest port `free_port` hands out: above the well-known and the
/// commonly configured service ports.
const LOW_PORTS_START: u16 = 20000;

/// The first port of the kernel's ephemeral range (Linux's default when it
/// cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_below_the_ephemeral_range_and_not_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let start = ephemeral_start();
        assert!(
            ports.iter().all(|&p| (LOW_PORTS_START..start).contains(&p)),
            "{ports:?}"
        );
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    }

    /// Processes of the group that are not zombies: a killed grandchild
    /// stays a zombie until init reaps it, and `kill(0)` still finds those.
    fn live_members(pgid: Pid) -> usize {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                // pid (comm) state ppid pgrp ...; comm may hold spaces.
                let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
                let fields: Vec<&str> = after.split_whitespace().collect();
                fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
            })
            .count()
    }

    async fn wait_until_gone(pgid: Pid) -> bool {
        for _ in 0..250 {
            if live_members(pgid) == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn stop_ends_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new("sh");
        // The grandchild ignores SIGTERM; only the group kill ends it.
        command
            .arg("-c")
            .arg("trap '' TERM; sleep 300 & echo started; wait");
        let child = Supervised::spawn("sleeper", command, &dir.path().join("log")).unwrap();
        let pgid = child.pgid.unwrap();
        for _ in 0..250 {
            if child.log_tail(1) == "started" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(live_members(pgid), 2, "sh and its sleep are running");
        child.stop(Duration::from_millis(200)).await;
        assert!(
            wait_until_gone(pgid).await,
            "no live process of the group is left"
        );
    }

    #[tokio::test]
    async fn dropping_kills() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new("sleep");
        command.arg("300");
        let child = Supervised::spawn("sleeper", command, &dir.path().join("log")).unwrap();
        let pgid = child.pgid.unwrap();
        assert_eq!(live_members(pgid), 1);
        drop(child);
        assert!(
            wait_until_gone(pgid).await,
            "the process group survived the drop"
        );
    }
}
