//! The HTTP surface: the router, the state its handlers share, and one
//! folder per endpoint, each split as vLLM's own routes are (`types`,
//! `validate`, `convert`, `stream`):
//!
//! - [`generate`]: `POST /inference/v1/generate`, token ids in and out;
//! - [`completions`]: `POST /v1/completions`;
//! - [`chat`]: `POST /v1/chat/completions`;
//! - [`openai`]: what the two OpenAI routes share (their sampling fields,
//!   the text pipeline, the handler flow);
//! - [`sampling`], [`usage`] and [`sse`]: what all three share (the
//!   sampling parameters and their checks, usage, how a stream goes on the
//!   wire and how a shutdown cuts it off);
//! - `models` and `middleware`: `GET /v1/models`, and the API key and
//!   body reading every protected route goes through.
//!
//! The endpoints' paths are the engine crate's ([`Endpoint::path`]), so a
//! fixture and the router cannot disagree on them.

pub mod chat;
pub mod completions;
pub mod engine_view;
pub mod generate;
pub mod logprob;
mod middleware;
mod models;
pub mod openai;
pub mod sampling;
pub mod sse;
pub mod structured_outputs;
pub mod usage;

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::{get, post};
use mock_engine::Engine;
use mock_engine::script::Endpoint;
use tokio_util::sync::CancellationToken;

use self::sampling::EngineLimits;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::{METRICS_PATH, Metrics};

struct AppState {
    config: Config,
    engine: Engine,
    metrics: Arc<Metrics>,
    /// Cancelled when a shutdown's grace period is over: open responses end then.
    cut_off: CancellationToken,
}

type Shared = State<Arc<AppState>>;

impl AppState {
    fn limits(&self) -> EngineLimits {
        EngineLimits {
            max_model_len: self.engine.config().max_model_len,
        }
    }

    /// The name a response carries: the one asked for, else the first served.
    fn model_name(&self, requested: Option<&str>) -> String {
        requested
            .filter(|m| !m.is_empty())
            .or(self.config.served_model_names.first().map(String::as_str))
            .unwrap_or_default()
            .to_string()
    }

    /// `work` (a body being collected), unless a shutdown past its grace
    /// comes first: then a 500 saying so, and `work` is dropped, which
    /// aborts its engine request. (A stream's cut-off is [`sse::respond`]'s.)
    async fn unless_cut_off<T>(
        &self,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        tokio::select! {
            result = work => result,
            () = self.cut_off.cancelled() => Err(ApiError::server_error(SHUTTING_DOWN)),
        }
    }
}

/// What a response cut off by a shutdown says.
const SHUTTING_DOWN: &str = "the server is shutting down";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The whole HTTP surface: `POST /inference/v1/generate`, `POST /v1/completions`,
/// `POST /v1/chat/completions`, `GET /v1/models`,
/// `GET /health`, `GET /metrics`.
pub fn router(config: &Config, engine: Engine) -> Router {
    router_with_cut_off(config, engine, CancellationToken::new())
}

/// [`router`] whose open responses end (aborting their engine requests) when
/// `cut_off` is cancelled, so that a stalled stream cannot hold a shutdown forever.
pub fn router_with_cut_off(config: &Config, engine: Engine, cut_off: CancellationToken) -> Router {
    let model_name = config.served_model_names.first().map_or("", String::as_str);
    let state = Arc::new(AppState {
        config: config.clone(),
        metrics: Arc::new(Metrics::new(model_name, engine.clone())),
        engine,
        cut_off,
    });
    let mut protected = Router::new()
        .route(Endpoint::Generate.path(), post(generate::generate))
        .route(Endpoint::Completions.path(), post(completions::completions))
        .route(Endpoint::Chat.path(), post(chat::chat_completions))
        .route("/v1/models", get(models::models));
    if config.enable_script_control {
        protected = protected.merge(crate::control::router(state.engine.clone()));
    }
    // Layers run outside in: the key is checked before any body is read.
    let protected = protected
        .route_layer(from_fn_with_state(state.clone(), middleware::read_body))
        .route_layer(from_fn_with_state(
            state.clone(),
            middleware::require_api_key,
        ));
    Router::new()
        .route("/health", get(health))
        // Open, as in vllm-rs: a scraper holds no API key.
        .route(METRICS_PATH, get(metrics))
        .merge(protected)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}

async fn health() {}

async fn metrics(State(state): Shared) -> Response {
    crate::metrics::respond(&state.metrics)
}
