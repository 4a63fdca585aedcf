//! `mock-engine`: the scripted engine as a vLLM engine core process.
//!
//! Start a frontend that waits for remote engines, then point this at its
//! handshake port:
//!
//! ```text
//! mock-engine --handshake tcp://127.0.0.1:29550 --fixtures fixtures/ --vllm-version 0.32.0
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mock_engine::core::{CoreOptions, run_engine_core};
use mock_engine::generator::GeneratorConfig;
use mock_engine::wire::VllmVersion;
use mock_engine::{Corpus, Engine, EngineConfig};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A scripted vLLM engine core for vLLM's real frontends"
)]
struct Args {
    /// The frontend's handshake address (its --data-parallel-rpc-port).
    #[arg(long, value_name = "tcp://HOST:PORT")]
    handshake: String,
    /// Fixture directory: each fixture's prompt token ids select its script.
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
    /// The frontend's vLLM version: picks the wire layout.
    #[arg(long, default_value = "0.32.0")]
    vllm_version: VllmVersion,
    /// Give up when the frontend has not completed the handshake by then.
    #[arg(long, default_value_t = 60)]
    handshake_timeout_secs: u64,
    /// Data-parallel rank (ZeroMQ identity and engine index).
    #[arg(long, default_value_t = 0)]
    rank: u16,
    /// Seed of the generator that answers unscripted prompts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generator: delay before the first token.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Generator: delay between later tokens.
    #[arg(long, default_value_t = 0)]
    itl_ms: u64,
    /// Context window reported to the frontend (it keeps the smaller of its own and this).
    #[arg(long, default_value_t = 2048)]
    max_model_len: u32,
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
    let config = EngineConfig {
        generator: GeneratorConfig {
            seed: args.seed,
            ttft_ms: args.ttft_ms,
            itl_ms: args.itl_ms,
            ..GeneratorConfig::default()
        },
        max_model_len: args.max_model_len,
    };
    let engine = match &args.fixtures {
        Some(dir) => {
            let corpus = Corpus::load_dir(dir).map_err(|e| format!("fixtures: {e}"))?;
            tracing::info!(dir = %dir.display(), fixtures = corpus.fixtures.len(), "fixtures loaded");
            Engine::with_corpus(config, &corpus)
        }
        None => Engine::new(config),
    };
    let mut opts = CoreOptions::new(args.handshake);
    opts.rank = args.rank;
    opts.version = args.vllm_version;
    opts.handshake_timeout = Duration::from_secs(args.handshake_timeout_secs);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    runtime
        .block_on(run_engine_core(opts, engine))
        .map_err(|e| e.to_string())
}
