//! `mock-engine`: the scripted engine as a vLLM engine core process.
//!
//! Start a frontend that waits for remote engines, then point this at its
//! handshake port:
//!
//! ```text
//! mock-engine --handshake tcp://127.0.0.1:29550 --fixtures fixtures/ --vllm-version 0.32.0
//! ```
//!
//! `--layout-file layout.json` speaks the layout `genconform layout --json`
//! read from an install instead of a hand-written table.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mock_engine::cli::EngineArgs;
use mock_engine::core::{CoreOptions, run_engine_core};
use mock_engine::wire::{LayoutFile, VllmVersion};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A scripted vLLM engine core for vLLM's real frontends"
)]
struct Args {
    /// The frontend's handshake address (its --data-parallel-rpc-port).
    #[arg(long, value_name = "tcp://HOST:PORT")]
    handshake: String,
    /// The frontend's vLLM version: picks the wire layout.
    #[arg(long, default_value = "0.32.0")]
    vllm_version: VllmVersion,
    /// Speak this layout (JSON, as `genconform layout --json` prints it)
    /// instead of the hand-written table of --vllm-version.
    #[arg(long, value_name = "PATH")]
    layout_file: Option<std::path::PathBuf>,
    /// Give up when the frontend has not completed the handshake by then.
    #[arg(long, default_value_t = 60)]
    handshake_timeout_secs: u64,
    /// Data-parallel rank (ZeroMQ identity and engine index).
    #[arg(long, default_value_t = 0)]
    rank: u16,
    /// Loops stepping the requests (default: one per core); 1 steps them
    /// all on one thread, as vLLM's engine does.
    #[arg(long)]
    loops: Option<usize>,
    #[command(flatten)]
    engine: EngineArgs,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("mock-engine: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let engine = args.engine.engine().map_err(|e| format!("fixtures: {e}"))?;
    let mut opts = CoreOptions::new(args.handshake);
    opts.rank = args.rank;
    opts.layout = match &args.layout_file {
        Some(path) => {
            let file = LayoutFile::read(path).map_err(|e| e.to_string())?;
            let (layout, report) = file.layout().map_err(|e| e.to_string())?;
            eprintln!("mock-engine: {report}");
            layout
        }
        None => args.vllm_version.layout(),
    };
    opts.handshake_timeout = Duration::from_secs(args.handshake_timeout_secs);
    if let Some(loops) = args.loops {
        opts.loops = loops.max(1);
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    runtime
        .block_on(run_engine_core(opts, engine))
        .map_err(|e| e.to_string())
}
