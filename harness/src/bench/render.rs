//! The bench's results as the terminal shows them: the run's setting, the
//! engine probe, and the comparison table.

use super::probe::Pacing;
use super::table::{self, Cell, Row};
use super::{BenchReport, LoadMode, StopAt, TargetResult};

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

const MIB: f64 = 1024.0 * 1024.0;

/// The comparison rows, one per figure.
pub fn rows(targets: &[TargetResult]) -> Vec<Row> {
    let ok: Vec<&TargetResult> = targets.iter().collect();
    let row = |label: &str, f: &dyn Fn(&TargetResult) -> Cell| {
        Row::new(
            label,
            ok.iter()
                .map(|t| {
                    if t.failed.is_some() {
                        Cell::text("failed")
                    } else {
                        f(t)
                    }
                })
                .collect(),
        )
    };
    let pair = |a: i64, b: i64| Cell {
        text: format!("{} / {}", table::human(ms(a)), table::human(ms(b))),
        value: Some(ms(a)),
    };
    vec![
        row("requests ok / errors", &|t| {
            Cell::text(format!("{} / {}", t.ok, t.error_count()))
        }),
        row("requests/s", &|t| Cell::number(t.requests_per_s, "{}")),
        row("output tokens/s", &|t| Cell::number(t.tokens_per_s, "{}")),
        row("SSE events/s", &|t| Cell::number(t.events_per_s, "{}")),
        row("TTFT p50 / p99 ms", &|t| pair(t.ttft.p50_us, t.ttft.p99_us)),
        row("TTFT p90 / max ms", &|t| pair(t.ttft.p90_us, t.ttft.max_us)),
        row("inter-event p50 / p99 ms", &|t| {
            pair(t.inter_event.p50_us, t.inter_event.p99_us)
        }),
        row("inter-event p90 / max ms", &|t| {
            pair(t.inter_event.p90_us, t.inter_event.max_us)
        }),
        row("TTFT over script p50 / p99 ms", &|t| {
            pair(t.ttft_overhead.p50_us, t.ttft_overhead.p99_us)
        }),
        row("event lag p50 / p99 ms", &|t| {
            pair(t.event_lag.p50_us, t.event_lag.p99_us)
        }),
        row("e2e over script p50 / p99 ms", &|t| {
            pair(t.e2e_overhead.p50_us, t.e2e_overhead.p99_us)
        }),
        row("server CPU (cores)", &|t| {
            t.server_cpu_cores
                .map_or(Cell::missing(), |c| Cell::number(c, "{}"))
        }),
        row(
            "server CPU us / event",
            &|t| match (t.server_cpu_s, t.events_per_s * t.elapsed_s) {
                (Some(c), e) if e > 0.0 => Cell::number(c * 1e6 / e, "{}"),
                _ => Cell::missing(),
            },
        ),
        row("server peak RSS MiB", &|t| {
            t.server_after.map_or(Cell::missing(), |u| {
                Cell::number(u.peak_rss_bytes as f64 / MIB, "{}")
            })
        }),
        row("client CPU (cores)", &|t| {
            Cell::number(t.client_cpu_cores, "{}")
        }),
        row("harness engine-core CPU (cores)", &|t| {
            Cell::number(t.harness_other_cpu_s / t.elapsed_s.max(1e-9), "{}")
        }),
        row("idle streams open", &|t| match &t.idle {
            Some(i) => Cell::text(format!("{} / {}", i.open, i.requested)),
            None => Cell::missing(),
        }),
        row("idle streams RSS MiB", &|t| {
            t.idle
                .as_ref()
                .and_then(|i| i.rss_during())
                .map_or(Cell::missing(), |b| Cell::number(b as f64 / MIB, "{}"))
        }),
    ]
}

/// The report as the terminal shows it.
pub fn render_report(r: &BenchReport) -> String {
    let mut out = String::new();
    let m = &r.machine;
    out.push_str(&format!(
        "machine: {} x {} ({:.1} GiB, Linux {}, load {})\n",
        m.cpus,
        m.cpu_model,
        m.memory_bytes as f64 / (1024.0 * MIB),
        m.kernel,
        m.load_average
    ));
    let p = &r.profile;
    let engine = if p.unpaced {
        "unpaced".to_string()
    } else {
        format!(
            "ttft {} ms, itl {} ms ± {} ms",
            p.ttft_ms, p.itl_ms, p.itl_jitter_ms
        )
    };
    let mode = match r.plan.mode {
        LoadMode::Closed { concurrency } => format!("closed loop, {concurrency} clients"),
        LoadMode::Open { rate } => format!("open loop, {rate} requests/s"),
    };
    let stop = match r.plan.stop {
        StopAt::After(d) => format!("for {d:?}"),
        StopAt::Requests(n) => format!("{n} requests"),
    };
    out.push_str(&format!(
        "load: {mode}, {stop}; request: {} ({}), {} prompt tokens, {} tokens, {}; engine: {engine}, {} tokens/step; client: {} thread(s)\n",
        r.shape.endpoint.name(),
        r.shape.endpoint.path(),
        r.shape.prompt_len,
        r.shape.max_tokens,
        if r.shape.stream { "stream" } else { "no stream" },
        p.tokens_per_step,
        r.client_threads,
    ));
    let tapped: Vec<&str> = r
        .targets
        .iter()
        .filter(|t| t.tapped)
        .map(|t| t.target.as_str())
        .collect();
    if !tapped.is_empty() {
        out.push_str(&format!(
            "tap: the recording tap forwarded every engine message of {} (in front of the mock \
             engine core nobody reads its journal, so it forwards without decoding); compare \
             with a run without --tap\n",
            tapped.join(", ")
        ));
    }
    if let Some(probe) = &r.engine_probe {
        if let Some(all) = &probe.throughput
            && let Some(t) = all.runs.first()
        {
            let runs: Vec<String> = all
                .runs
                .iter()
                .map(|r| table::human(r.tokens_per_s))
                .collect();
            out.push_str(&format!(
                "engine core alone: {} tokens/s to a frontend, median of {} runs ({}) of {} requests x {} tokens ({} scripts)\n",
                table::human(all.tokens_per_s),
                all.runs.len(),
                runs.join(", "),
                t.requests,
                t.tokens_per_request,
                t.script_variants,
            ));
        }
        let pacing_line = |what: &str, pc: &Pacing| {
            format!(
                "engine pacing at {} ms ({what}): error p50 {:.2}%, p99 {:.2}%, max {:.2}% ({} requests)\n",
                pc.scripted_itl_ms,
                pc.p50_pct(),
                pc.p99_pct(),
                pc.relative_error_centipct.max_us as f64 / 100.0,
                pc.requests
            )
        };
        if let Some(pc) = &probe.pacing {
            out.push_str(&pacing_line("through the engine core", pc));
        }
        out.push_str(&pacing_line("in-process", &probe.pacing_in_process));
        for e in &probe.errors {
            out.push_str(&format!("engine probe failed: {e}\n"));
        }
    }
    out.push('\n');
    let names: Vec<String> = r.targets.iter().map(|t| t.target.clone()).collect();
    out.push_str(&table::render(&names, &rows(&r.targets)));
    for t in &r.targets {
        if let Some(why) = &t.failed {
            out.push_str(&format!("\n{}: failed: {why}\n", t.target));
        }
        for (kind, example) in &t.error_examples {
            out.push_str(&format!(
                "\n{}: {} x {kind}, e.g. {example}",
                t.target, t.errors[kind]
            ));
        }
    }
    if let Some(probe) = r.engine_probe.as_ref().and_then(|p| p.throughput.as_ref()) {
        // Only the vllm targets get their tokens from the engine core.
        let limits: Vec<String> = r
            .targets
            .iter()
            .filter(|t| t.failed.is_none() && t.engine == "engine-core" && t.tokens_per_s > 0.0)
            .map(|t| format!("{} {:.1}x", t.target, probe.tokens_per_s / t.tokens_per_s))
            .collect();
        if !limits.is_empty() {
            out.push_str(&format!(
                "\nengine core headroom (its tokens/s alone over what each target took from it): {}\n",
                limits.join(", ")
            ));
        }
    }
    out
}
