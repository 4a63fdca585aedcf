//! CPU time and memory of the processes in a bench, from `/proc`, and the
//! machine a result was measured on.
//!
//! A frontend is found by the port it listens on (the socket's inode in
//! `/proc/net/tcp`, then the process holding it), so any local server can be
//! measured, including the real vLLM frontends that the harness starts
//! without handing out their pids. Frontends the bench starts lead their own
//! process group, and the whole group is counted (vLLM's Python frontend may
//! start helpers); a `url=` server is counted alone, since its group may be
//! the shell that started it, or this very process.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

/// Which processes are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Measured {
    Process(i32),
    Group(i32),
}

/// CPU time and memory of a scope at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub cpu: Duration,
    /// Sum over the processes of their peak resident set (`VmHWM`).
    pub peak_rss_bytes: u64,
    /// Sum over the processes of their current resident set (`VmRSS`).
    pub rss_bytes: u64,
    pub processes: u32,
}

fn clock_ticks() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(text: &str) -> Option<Vec<&str>> {
    let close = text.rfind(')')?;
    Some(text[close + 1..].split_whitespace().collect())
}

/// (process group, utime + stime in ticks) of a `/proc/<pid>/stat` text.
pub fn parse_stat(text: &str) -> Option<(i32, u64)> {
    let f = stat_fields(text)?;
    // After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((pgrp, utime + stime))
}

/// A `kB` field of `/proc/<pid>/status`, in bytes.
pub fn status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

fn add_process(dir: &Path, usage: &mut Usage, ticks: &mut u64) {
    let (Ok(stat), Ok(status)) = (
        std::fs::read_to_string(dir.join("stat")),
        std::fs::read_to_string(dir.join("status")),
    ) else {
        return; // it exited between listing and reading
    };
    if let Some((_, t)) = parse_stat(&stat) {
        *ticks += t;
        usage.processes += 1;
        usage.peak_rss_bytes += status_kib(&status, "VmHWM").unwrap_or(0);
        usage.rss_bytes += status_kib(&status, "VmRSS").unwrap_or(0);
    }
}

/// The usage of `scope` now.
pub fn usage(scope: Measured) -> Usage {
    let mut usage = Usage::default();
    let mut ticks = 0;
    match scope {
        Measured::Process(pid) => add_process(
            &Path::new("/proc").join(pid.to_string()),
            &mut usage,
            &mut ticks,
        ),
        Measured::Group(pgid) => {
            for dir in pids() {
                let in_group = std::fs::read_to_string(dir.join("stat"))
                    .ok()
                    .and_then(|s| parse_stat(&s))
                    .is_some_and(|(g, _)| g == pgid);
                if in_group {
                    add_process(&dir, &mut usage, &mut ticks);
                }
            }
        }
    }
    usage.cpu = ticks_to_duration(ticks);
    usage
}

fn pids() -> impl Iterator<Item = std::path::PathBuf> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
}

/// CPU time of this process's threads whose name starts with `prefix`
/// (the load generator's runtime), and of all its other threads.
pub fn own_threads_cpu(prefix: &str) -> (Duration, Duration) {
    let (mut mine, mut rest) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Some((_, t)) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        else {
            continue;
        };
        if comm.starts_with(prefix) {
            mine += t;
        } else {
            rest += t;
        }
    }
    (ticks_to_duration(mine), ticks_to_duration(rest))
}

/// The socket inode listening on `port` in a `/proc/net/tcp`-format table.
pub fn listening_inode(table: &str, port: u16) -> Option<u64> {
    let want = format!("{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit(':').next()?;
        (local_port == want && *f.get(3)? == "0A")
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

/// The process listening on `port` of this machine, if we may see it.
pub fn pid_listening_on(port: u16) -> Option<i32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .find_map(|t| listening_inode(&t, port))?;
    let target = format!("socket:[{inode}]");
    pids().find_map(|dir| {
        let fds = std::fs::read_dir(dir.join("fd")).ok()?;
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
        });
        holds
            .then(|| dir.file_name()?.to_str()?.parse().ok())
            .flatten()
    })
}

/// The process group of `pid`.
pub fn group_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(g, _)| g)
}

/// The machine a result was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_bytes: u64,
    pub kernel: String,
    pub load_average: String,
    pub open_files_limit: u64,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_bytes: status_kib(&meminfo, "MemTotal").unwrap_or(0),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            load_average: read_trimmed("/proc/loadavg"),
            open_files_limit: nix::sys::resource::getrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
            )
            .map_or(0, |(soft, _)| soft),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Raises this process's open-file limit to its hard limit (children, the
/// frontends, inherit it): ten thousand open streams need twenty thousand
/// descriptors on one machine. Returns the new soft limit.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let text =
            "4242 (tokio rt (x)) S 1 4240 4240 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat(text), Some((4240, 300)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_status_fields() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t1024 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(2 * 1024 * 1024));
        assert_eq!(status_kib(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn finds_the_listening_socket() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inode(table, 8080), Some(12345));
        assert_eq!(listening_inode(table, 8081), None);
    }

    #[test]
    fn finds_this_process_by_its_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id() as i32));
        let me = usage(Measured::Process(std::process::id() as i32));
        assert_eq!(me.processes, 1);
        assert!(me.peak_rss_bytes >= me.rss_bytes && me.rss_bytes > 0);
    }
}
