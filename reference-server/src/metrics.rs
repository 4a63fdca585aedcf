//! `GET /metrics`: the subset of vllm-rs's Prometheus metrics our engine can
//! know, under vllm-rs's names, labels, help texts and content type.
//!
//! vllm-rs 0.32.0 renders its page with the `prometheus-client` crate
//! (OpenMetrics text, `# EOF`, help texts with the crate's trailing `.`), so
//! we do too: the same encoder gives the same shape, and nothing is
//! hand-rendered. Like vllm-rs, the page needs no API key.
//!
//! | metric | type | what we count |
//! |---|---|---|
//! | `vllm:num_requests_running` | gauge | the engine's requests in flight |
//! | `vllm:request_success_total{finished_reason}` | counter | requests by how they ended: the engine's finish reason, `abort` when the client went away first, `error` when the engine failed |
//! | `vllm:prompt_tokens_total` | counter | prompt tokens of the requests that reached the engine's first output |
//! | `vllm:generation_tokens_total` | counter | tokens the engine emitted |
//!
//! Every sample carries `model_name` (the first `--served-model-name`) and
//! `engine="0"`, as vllm-rs's do.
//!
//! ```
//! # async fn demo() -> std::io::Result<()> {
//! let server = reference_server::spawn(Default::default(), Default::default()).await?;
//! let page = reqwest::get(format!("{}/metrics", server.base_url()))
//!     .await.unwrap().text().await.unwrap();
//! assert!(page.contains("vllm:num_requests_running{model_name=\"tiny\",engine=\"0\"} 0"));
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::Stream;
use mock_engine::{Engine, EngineEvent, EngineStream};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::ApiError;

pub const METRICS_PATH: &str = "/metrics";

/// vllm-rs's content type (the OpenMetrics text format).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels every vllm-rs engine metric carries.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    model_name: String,
    engine: String,
}

/// [`EngineLabels`] and how a request ended (vllm-rs's label order).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    model_name: String,
    engine: String,
    finished_reason: &'static str,
}

/// The server's metrics; shared by the handlers and every metered request.
pub struct Metrics {
    registry: Registry,
    engine: Engine,
    labels: EngineLabels,
    running: Gauge,
    /// Per reason; a reason appears once a request ended that way, as in vllm-rs.
    finished: Family<FinishedLabels, Counter>,
    // Handles to the one sample of each family: counting is one atomic add.
    prompt_tokens: Counter,
    generation_tokens: Counter,
}

impl Metrics {
    /// Metrics of `engine` served as `model_name`.
    pub fn new(model_name: &str, engine: Engine) -> Self {
        let labels = EngineLabels {
            model_name: model_name.to_string(),
            engine: "0".to_string(),
        };
        let mut registry = Registry::default();
        // vllm-rs's help texts, without the `.` the encoder adds.
        let running = Family::<EngineLabels, Gauge>::default();
        registry.register(
            "vllm:num_requests_running",
            "Number of requests in model execution batches",
            running.clone(),
        );
        let prompt_tokens = Family::<EngineLabels, Counter>::default();
        registry.register(
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            prompt_tokens.clone(),
        );
        let generation_tokens = Family::<EngineLabels, Counter>::default();
        registry.register(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            generation_tokens.clone(),
        );
        let finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "vllm:request_success",
            "Count of successfully processed requests.",
            finished.clone(),
        );
        Self {
            registry,
            engine,
            running: running.get_or_create(&labels).clone(),
            prompt_tokens: prompt_tokens.get_or_create(&labels).clone(),
            generation_tokens: generation_tokens.get_or_create(&labels).clone(),
            finished,
            labels,
        }
    }

    /// `stream`, counted as its outputs flow and when it ends or is dropped.
    pub fn meter(self: &Arc<Self>, stream: EngineStream) -> Metered {
        Metered {
            stream,
            metrics: self.clone(),
            prompt_counted: false,
            ended: false,
        }
    }

    /// The page, in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let active = self.engine.stats().active();
        self.running.set(i64::try_from(active).unwrap_or(i64::MAX));
        let mut page = String::new();
        encode(&mut page, &self.registry)?;
        Ok(page)
    }

    fn count_finished(&self, reason: &'static str) {
        self.finished
            .get_or_create(&FinishedLabels {
                model_name: self.labels.model_name.clone(),
                engine: self.labels.engine.clone(),
                finished_reason: reason,
            })
            .inc();
    }
}

/// `GET /metrics`.
pub(crate) fn respond(metrics: &Metrics) -> Response {
    match metrics.render() {
        Ok(page) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], page).into_response(),
        Err(e) => ApiError::server_error(format!("cannot render the metrics: {e}")).into_response(),
    }
}

/// An engine stream that counts what flows through it; see [`Metrics::meter`].
///
/// Dropped before its request ended (the client went away, or a shutdown cut
/// it off), it counts an abort, as the engine does.
pub struct Metered {
    stream: EngineStream,
    metrics: Arc<Metrics>,
    prompt_counted: bool,
    ended: bool,
}

impl Metered {
    fn end(&mut self, reason: Option<&'static str>) {
        self.ended = true;
        if let Some(reason) = reason {
            self.metrics.count_finished(reason);
        }
    }
}

impl Stream for Metered {
    type Item = EngineEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EngineEvent>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_next(cx);
        match &polled {
            Poll::Ready(Some(EngineEvent::Output(output))) => {
                if !this.prompt_counted
                    && let Some(prompt) = &output.prompt_token_ids
                {
                    this.prompt_counted = true;
                    this.metrics.prompt_tokens.inc_by(prompt.len() as u64);
                }
                this.metrics
                    .generation_tokens
                    .inc_by(output.new_token_ids.len() as u64);
                if let Some(reason) = output.finish_reason {
                    this.end(Some(reason.as_str()));
                }
            }
            Poll::Ready(Some(EngineEvent::Failed(_))) => this.end(Some("error")),
            // A script that runs out without a finish reason: the engine calls
            // it complete, and it has no reason to be counted under.
            Poll::Ready(None) if !this.ended => this.end(None),
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if !self.ended {
            self.metrics.count_finished("abort");
        }
    }
}
