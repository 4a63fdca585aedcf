//! Sending a fixture's request and keeping everything the server sent back:
//! status, headers, and the body as the reads that delivered it, each with its
//! arrival time.
//!
//! A server that hangs, resets or floods is a result, not a crash: whatever
//! arrived before the failure is kept beside the reason.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mock_engine::script::RequestSpec;
use serde::Serialize;

/// One read of the response body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chunk {
    /// Milliseconds since the request was sent.
    pub at_ms: f64,
    #[serde(serialize_with = "serialize_lossy")]
    pub bytes: Bytes,
}

fn serialize_lossy<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// Why a capture is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum CaptureError {
    #[error("could not send the request: {0}")]
    Send(String),
    #[error("no complete response within {0} ms")]
    Timeout(u64),
    #[error("the body broke off: {0}")]
    Body(String),
    #[error("the body exceeded {0} bytes; the rest was not read")]
    TooLarge(usize),
}

impl CaptureError {
    /// Whether the target failed to answer at all (refused, reset, silent),
    /// as opposed to answering too much.
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Send(_) | Self::Timeout(_) | Self::Body(_))
    }
}

/// What one request got back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capture {
    /// `None` when no response head arrived.
    pub status: Option<u16>,
    /// Lower-case names, in the order the server sent them.
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<Chunk>,
    pub elapsed_ms: f64,
    pub error: Option<CaptureError>,
}

impl Capture {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body(&self) -> Vec<u8> {
        self.chunks
            .iter()
            .flat_map(|c| c.bytes.iter().copied())
            .collect()
    }

    /// Keeps the first `bytes` bytes of the body (whole chunks, the last
    /// one cut) and drops the rest; returns how many bytes were dropped.
    ///
    /// For a capture that failed because the body was too large: its case
    /// is an error whatever the body says, and the body is only evidence,
    /// so its transcript is made from the start of it. Transcribed whole,
    /// 16 MiB of small JSON events take over 300 MiB as parsed values, per
    /// case in flight.
    pub fn keep_first(&mut self, bytes: usize) -> usize {
        let mut kept = 0;
        let mut dropped = 0;
        self.chunks.retain_mut(|chunk| {
            let room = bytes - kept;
            if room == 0 {
                dropped += chunk.bytes.len();
                return false;
            }
            if chunk.bytes.len() > room {
                dropped += chunk.bytes.len() - room;
                chunk.bytes.truncate(room);
            }
            kept += chunk.bytes.len();
            true
        });
        dropped
    }

    pub fn is_event_stream(&self) -> bool {
        self.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/event-stream"))
    }
}

/// Limits that keep a misbehaving server from stalling or exhausting the run.
#[derive(Debug, Clone, Copy)]
pub struct CaptureLimits {
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// After this many transport failures in a row at one target, `run`
    /// probes its health endpoint and gives up on it when that does not
    /// answer either (0: never).
    pub give_up_after: u32,
    /// How long that probe waits for an answer.
    pub probe_timeout: Duration,
    /// After this many requests in a row to one server time out, `run`
    /// gives up on it even though its health endpoint answers: a server
    /// that is up but never answers a request would otherwise cost a
    /// timeout per case (0: never).
    pub timeouts_in_a_row: u32,
}

impl Default for CaptureLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_body_bytes: 16 << 20,
            give_up_after: 3,
            probe_timeout: Duration::from_secs(5),
            timeouts_in_a_row: 8,
        }
    }
}

/// Sends `request` to `base_url` and records the answer.
pub async fn capture(
    client: &reqwest::Client,
    base_url: &str,
    request: &RequestSpec,
    limits: CaptureLimits,
) -> Capture {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut capture = Capture {
        status: None,
        headers: Vec::new(),
        chunks: Vec::new(),
        elapsed_ms: 0.0,
        error: None,
    };
    let result = tokio::time::timeout_at(
        deadline,
        receive(client, base_url, request, limits, started, &mut capture),
    )
    .await;
    capture.error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(CaptureError::Timeout(limits.timeout.as_millis() as u64)),
    };
    capture.elapsed_ms = ms_since(started);
    capture
}

async fn receive(
    client: &reqwest::Client,
    base_url: &str,
    request: &RequestSpec,
    limits: CaptureLimits,
    started: Instant,
    capture: &mut Capture,
) -> Result<(), CaptureError> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|e| CaptureError::Send(format!("method `{}`: {e}", request.method)))?;
    let url = format!("{}{}", base_url.trim_end_matches('/'), request.path());
    let mut builder = client.request(method, &url);
    let has_body = request.body.is_some() || request.raw_body.is_some();
    if has_body {
        builder = builder
            .header(reqwest::header::CONTENT_TYPE, request.content_type())
            .body(request.body_bytes());
    }
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let response = builder
        .send()
        .await
        .map_err(|e| CaptureError::Send(error_chain(&e)))?;
    capture.status = Some(response.status().as_u16());
    capture.headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = response.bytes_stream();
    let mut total = 0usize;
    while let Some(read) = body.next().await {
        let bytes = read.map_err(|e| CaptureError::Body(error_chain(&e)))?;
        total += bytes.len();
        capture.chunks.push(Chunk {
            at_ms: ms_since(started),
            bytes,
        });
        if total > limits.max_body_bytes {
            return Err(CaptureError::TooLarge(limits.max_body_bytes));
        }
    }
    Ok(())
}

fn ms_since(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// reqwest's top-level message rarely says what happened; its sources do.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}
