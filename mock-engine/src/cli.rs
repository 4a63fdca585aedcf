//! Command-line options shared by every binary that runs an engine (the
//! `mock-engine` core and the `reference-server`).
//!
//! ```
//! use clap::Parser;
//! use mock_engine::cli::EngineArgs;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     engine: EngineArgs,
//! }
//!
//! let args = Args::parse_from(["bin", "--itl-ms", "5"]);
//! assert_eq!(args.engine.config().generator.itl_ms, 5);
//! ```

use std::path::PathBuf;

use clap::Args;

use crate::fixture::{Corpus, FixtureErrors};
use crate::generator::GeneratorConfig;
use crate::{Engine, EngineConfig};

#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Answer the prompts of these fixtures with their scripts.
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// Seed of the generator that answers unscripted prompts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Generator: delay before the first step.
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Generator: delay before every later step.
    #[arg(long, default_value_t = 0)]
    pub itl_ms: u64,
    /// Context window: an unscripted request without max_tokens fills it, and
    /// an engine core reports it to its frontend (which keeps the smaller).
    #[arg(long, default_value_t = 2048)]
    pub max_model_len: u32,
}

impl EngineArgs {
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            generator: GeneratorConfig {
                seed: self.seed,
                ttft_ms: self.ttft_ms,
                itl_ms: self.itl_ms,
                ..GeneratorConfig::default()
            },
            max_model_len: self.max_model_len,
            ..EngineConfig::default()
        }
    }

    /// The engine, with the scripts of `--fixtures` when given.
    pub fn engine(&self) -> Result<Engine, FixtureErrors> {
        Ok(match &self.fixtures {
            Some(dir) => {
                let corpus = Corpus::load_dir(dir)?;
                tracing::info!(dir = %dir.display(), fixtures = corpus.fixtures.len(), "fixtures loaded");
                if let Some(warning) = corpus.shared_prompts_warning() {
                    tracing::warn!(dir = %dir.display(), "{warning}");
                }
                Engine::with_corpus(self.config(), &corpus)
            }
            None => Engine::new(self.config()),
        })
    }
}
