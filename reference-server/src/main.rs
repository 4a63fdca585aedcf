//! `reference-server`: the generate endpoint over the mock engine, with vLLM's flag names.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mock_engine::generator::GeneratorConfig;
use mock_engine::{Corpus, Engine, EngineConfig};
use reference_server::Config;
use reference_server::config::DEFAULT_MAX_BODY_BYTES;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Model names the server answers to (repeat or comma-separate for several).
    #[arg(long = "served-model-name", default_value = "tiny", value_delimiter = ',', num_args = 1..)]
    served_model_name: Vec<String>,
    /// Require `Authorization: Bearer <KEY>` on /v1 and /inference routes.
    #[arg(long, env = "VLLM_API_KEY")]
    api_key: Option<String>,
    /// Report `prompt_tokens_details.cached_tokens` in usage.
    #[arg(long)]
    enable_prompt_tokens_details: bool,
    /// Answer the prompts of these fixtures with their scripts.
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
    /// Seed of the generator that answers unscripted prompts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generator: delay before the first step.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Generator: delay before every later step.
    #[arg(long, default_value_t = 0)]
    itl_ms: u64,
    #[arg(long, default_value_t = 2048)]
    max_model_len: u32,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Accept engine scripts over HTTP at POST /genconform/v1/scripts (for
    /// `genconform fuzz` against this server as a url= target).
    #[arg(long)]
    enable_script_control: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let engine_config = EngineConfig {
        generator: GeneratorConfig {
            seed: args.seed,
            ttft_ms: args.ttft_ms,
            itl_ms: args.itl_ms,
            ..GeneratorConfig::default()
        },
        max_model_len: args.max_model_len,
    };
    let engine = match &args.fixtures {
        Some(dir) => match Corpus::load_dir(dir) {
            Ok(corpus) => Engine::with_corpus(engine_config, &corpus),
            Err(e) => {
                eprintln!("error: cannot load fixtures from {}:\n{e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
        None => Engine::new(engine_config),
    };
    let config = Config {
        host: args.host,
        port: args.port,
        served_model_names: args.served_model_name,
        api_key: args.api_key,
        enable_prompt_tokens_details: args.enable_prompt_tokens_details,
        max_body_bytes: args.max_body_bytes,
        enable_script_control: args.enable_script_control,
    };
    match reference_server::serve_until_signal(config, engine).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
