//! An axum implementation of vLLM's `POST /inference/v1/generate`, `/v1/completions`
//! and `/v1/chat/completions`
//! over the in-process [`mock_engine::Engine`], reproducing what the vllm-rs 0.32.0
//! frontend puts on the wire.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mock_engine::Engine;
//! use reference_server::{Config, spawn};
//!
//! let server = spawn(Config::default(), Engine::default()).await?;
//! let url = format!("{}/inference/v1/generate", server.base_url());
//! // POST {"token_ids": [1, 2], "sampling_params": {"max_tokens": 4}} to `url` ...
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod config;
pub mod control;
pub mod error;
pub mod metrics;
pub mod request_id;
pub mod routes;
pub mod server;

pub use config::Config;
pub use error::ApiError;
pub use routes::{GENERATE_PATH, router};
pub use server::{RunningServer, serve_until_signal, spawn};
