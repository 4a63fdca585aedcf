//! `reference-server`: the generate, completions and chat endpoints over the
//! mock engine, with vLLM's flag names.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use mock_engine::cli::EngineArgs;
use reference_server::Config;
use reference_server::config::{
    DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_BODY_BYTES, ModelTokenizer,
};

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
    #[command(flatten)]
    engine: EngineArgs,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Seconds a connection has to send a complete request head, from when it
    /// opens or its last response ends (so also the idle keep-alive limit).
    #[arg(long, value_name = "SECS", default_value_t = Seconds(DEFAULT_HEADER_READ_TIMEOUT))]
    header_read_timeout: Seconds,
    /// Seconds a request body has to arrive in full; a late one gets 408.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(DEFAULT_BODY_READ_TIMEOUT))]
    body_read_timeout: Seconds,
    /// Accept engine scripts over HTTP at POST /genconform/v1/scripts (for
    /// `genconform fuzz` against this server as a url= target).
    #[arg(long)]
    enable_script_control: bool,
    /// A model directory whose `tokenizer.json` and `tokenizer_config.json`
    /// (chat template) the OpenAI endpoints use instead of the built-in tiny model's.
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
}

/// A positive number of seconds on the command line, fractions allowed (`0.5`).
#[derive(Debug, Clone, Copy)]
struct Seconds(Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let secs: f64 = text
            .parse()
            .map_err(|e| format!("not a number of seconds: {e}"))?;
        match Duration::try_from_secs_f64(secs) {
            Ok(d) if !d.is_zero() => Ok(Self(d)),
            _ => Err(format!("must be a positive number of seconds, got {text}")),
        }
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let engine = match args.engine.engine() {
        Ok(engine) => engine,
        Err(e) => {
            let dir = args.engine.fixtures.as_deref().unwrap_or("".as_ref());
            eprintln!("error: cannot load fixtures from {}:\n{e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let tokenizer = match &args.model_dir {
        None => ModelTokenizer::default(),
        Some(dir) => match ModelTokenizer::from_dir(dir) {
            Ok(tokenizer) => tokenizer,
            Err(e) => {
                eprintln!("error: --model-dir {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let config = Config {
        host: args.host,
        port: args.port,
        served_model_names: args.served_model_name,
        api_key: args.api_key,
        enable_prompt_tokens_details: args.enable_prompt_tokens_details,
        max_body_bytes: args.max_body_bytes,
        header_read_timeout: args.header_read_timeout.0,
        body_read_timeout: args.body_read_timeout.0,
        enable_script_control: args.enable_script_control,
        tokenizer,
    };
    match reference_server::serve_until_signal(config, engine).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
