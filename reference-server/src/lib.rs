//! An axum implementation of vLLM's `POST /inference/v1/generate`, `/v1/completions`
//! and `/v1/chat/completions`
//! over the in-process [`mock_engine::Engine`], reproducing what the vllm-rs 0.32.0
//! frontend puts on the wire.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mock_engine::Engine;
//! use mock_engine::script::Endpoint;
//! use reference_server::{Config, spawn};
//!
//! let server = spawn(Config::default(), Engine::default()).await?;
//! let url = format!("{}{}", server.base_url(), Endpoint::Generate.path());
//! // POST {"token_ids": [1, 2], "sampling_params": {"max_tokens": 4}} to `url` ...
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The endpoints live in [`routes`], one folder each (to add an endpoint, add
//! a folder there and its line in [`routes::router`]); the rest of the crate
//! is the server around them: [`server`] binds, serves and stops,
//! [`config`] is what it is started with, [`error`] how a failure goes on the
//! wire, [`request_id`] how a request is named, [`metrics`] `GET /metrics`,
//! and [`control`] the optional route that scripts the engine over HTTP.

pub mod config;
pub mod control;
pub mod error;
pub mod metrics;
pub mod request_id;
pub mod routes;
pub mod server;

pub use config::Config;
pub use error::ApiError;
pub use routes::router;
pub use server::{RunningServer, serve_until_signal, spawn};
