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
//! One module per part: [`args`] (the command line), [`profile`] (scripts), [`http`] and [`scan`] (the
//! client's wire), [`load`] (open and closed loops), [`stats`], [`resources`]
//! (`/proc`), [`server`] (starting targets), [`idle`] (many idle streams),
//! [`probe`] (the engine alone), [`report`] (the figures), [`table`], [`render`] and [`plot`].

pub mod args;
pub mod http;
pub mod idle;
pub mod load;
pub mod plot;
pub mod probe;
pub mod profile;
pub mod render;
pub mod report;
pub mod resources;
pub mod scan;
pub mod server;
pub mod stats;
pub mod table;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use self::args::plan_of;
pub use self::args::{BenchArgs, EngineMode, parse_duration, parse_endpoint};
use self::load::{LoadMode, LoadPlan, StopAt, Workload};
use self::probe::Throughputs;
use self::profile::{EngineProfile, RequestShape, variants};
pub use self::report::{BenchReport, EngineProbe, TargetResult};
use self::report::{mark_tap, summarize};
use self::resources::Machine;
use self::server::{BenchServer, BenchServerOptions};
use crate::targets::TargetSpec;

/// Client threads carry this name: their CPU time is the client's.
const CLIENT_THREAD: &str = "bench-load";

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

#[cfg(test)]
mod tests {
    use super::*;

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
        let report = bench(args::parse(&[
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
            Some(resources::Measured::Process(std::process::id() as i32))
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
        let report = bench(args::parse(&[
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
}
