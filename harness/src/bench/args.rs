//! The arguments of `genconform bench` and the load plan they make.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use mock_engine::script::Endpoint;
use serde::Serialize;

use super::load::{LoadMode, LoadPlan, StopAt};
use crate::targets::TargetSpec;

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

/// The load plan of the arguments: an open or closed loop, and when it stops.
pub(super) fn plan_of(args: &BenchArgs) -> anyhow::Result<LoadPlan> {
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

/// `args` parsed as `genconform bench` would, for tests.
#[cfg(test)]
pub(super) fn parse(extra: &[&str]) -> BenchArgs {
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

    #[test]
    fn plans_from_arguments() {
        let p = plan_of(&parse(&[])).unwrap();
        assert_eq!(p.mode, LoadMode::Closed { concurrency: 64 });
        assert_eq!(p.stop, StopAt::After(Duration::from_secs(10)));
        let p = plan_of(&parse(&["--rate", "200", "--requests", "1000"])).unwrap();
        assert_eq!(p.mode, LoadMode::Open { rate: 200.0 });
        assert_eq!(p.stop, StopAt::Requests(1000));
        let e = plan_of(&parse(&["--rate", "0"])).unwrap_err().to_string();
        assert!(e.contains("--rate"), "{e}");
        let e = plan_of(&parse(&["--concurrency", "0"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--concurrency"), "{e}");
    }
}
