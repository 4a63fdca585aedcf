//! HTTP handlers and the router: generate here, the OpenAI routes one
//! folder each ([`completions`], [`chat`]) over what they share ([`openai`]).

pub mod chat;
pub mod completions;
pub mod generate;
pub mod openai;
pub mod sse;
pub mod usage;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{StreamExt, stream};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use mock_engine::Engine;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{ApiError, Unauthorized};
use crate::metrics::{METRICS_PATH, Metrics};
use crate::request_id;
use crate::routes::generate::collect::generate_response;
use crate::routes::generate::stream::{ChunkStream, StreamItem};
use crate::routes::generate::types::{GenerateRequest, Limits};

pub const GENERATE_PATH: &str = "/inference/v1/generate";

struct AppState {
    config: Config,
    engine: Engine,
    metrics: Arc<Metrics>,
    /// Cancelled when a shutdown's grace period is over: open responses end then.
    cut_off: CancellationToken,
}

type Shared = State<Arc<AppState>>;

impl AppState {
    fn limits(&self) -> Limits {
        Limits {
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
}

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
        .route(GENERATE_PATH, post(generate))
        .route(
            completions::COMPLETIONS_PATH,
            post(completions::completions),
        )
        .route(chat::CHAT_PATH, post(chat::chat_completions))
        .route("/v1/models", get(models));
    if config.enable_script_control {
        protected = protected.merge(crate::control::router(state.engine.clone()));
    }
    // Layers run outside in: the key is checked before any body is read.
    let protected = protected
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .route("/health", get(health))
        // Open, as in vllm-rs: a scraper holds no API key.
        .route(METRICS_PATH, get(metrics))
        .merge(protected)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}

/// `--api-key`: `Authorization: Bearer <key>`, scheme case-insensitive, like vllm-rs.
async fn require_api_key(State(state): Shared, request: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token);
        if given != Some(key.as_str()) {
            return Unauthorized.into_response();
        }
    }
    next.run(request).await
}

/// Reads the whole request body before the handler sees it, within
/// `max_body_bytes` (413 beyond, refused unread when `Content-Length` says so)
/// and `body_read_timeout` (408: a stalled or dripping body cannot hold a
/// connection). The handlers then parse bytes that are already here.
async fn read_body(State(state): Shared, request: Request, next: Next) -> Response {
    let config = &state.config;
    let too_large = || ApiError::payload_too_large().into_response();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let limited = Limited::new(body, config.max_body_bytes);
    let bytes = match tokio::time::timeout(config.body_read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return ApiError::json_parse(format!("Failed to buffer the request body: {e}"))
                .into_response();
        }
        Err(_) => return ApiError::body_timeout(config.body_read_timeout).into_response(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// How a stream cut off by a shutdown ends: an in-band error, then `[DONE]`.
fn cut_off_ending() -> [Result<Event, Infallible>; 2] {
    [
        StreamItem::Error(ApiError::server_error(SHUTTING_DOWN)),
        StreamItem::Done,
    ]
    .map(|item| Ok(item.to_event()))
}

const SHUTTING_DOWN: &str = "the server is shutting down";

async fn health() {}

async fn metrics(State(state): Shared) -> Response {
    crate::metrics::respond(&state.metrics)
}

#[derive(Serialize)]
struct ModelList {
    object: &'static str,
    data: Vec<ModelCard>,
}

#[derive(Serialize)]
struct ModelCard {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    root: String,
    parent: Option<String>,
    max_model_len: u32,
}

async fn models(State(state): Shared) -> Json<ModelList> {
    let created = unix_now();
    let data = state
        .config
        .served_model_names
        .iter()
        .map(|name| ModelCard {
            id: name.clone(),
            object: "model",
            created,
            owned_by: "vllm-frontend-rs",
            // vllm-rs names the model directory here; we have none, so the name.
            root: name.clone(),
            parent: None,
            max_model_len: state.engine.config().max_model_len,
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

async fn generate(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Json<GenerateRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let limits = state.limits();
    body.validate(|m| state.config.serves(m), limits)?;
    let request_id = request_id::resolve(&headers, body.request_id.as_deref());
    let options = body.response_options();
    let events = state.metrics.meter(
        state
            .engine
            .submit(body.engine_request(request_id::engine_id(&request_id), limits)),
    );
    if options.stream {
        let chunks = ChunkStream::new(
            events,
            request_id,
            options,
            state.config.enable_prompt_tokens_details,
        );
        let cut_off = state.cut_off.clone();
        let events = chunks
            .into_events()
            .take_until(cut_off.clone().cancelled_owned())
            .chain(
                stream::once(async move { cut_off.is_cancelled() }).flat_map(
                    // Cut off by a shutdown: say so, as for an engine failure mid-stream.
                    |cut| stream::iter(cut.then(cut_off_ending).into_iter().flatten()),
                ),
            );
        return Ok(Sse::new(events).into_response());
    }
    let response = tokio::select! {
        response = generate_response(events, request_id, &body.token_ids, options) => response?,
        () = state.cut_off.cancelled() => {
            return Err(ApiError::server_error(SHUTTING_DOWN));
        }
    };
    Ok(Json(response).into_response())
}
