//! The load generator: closed-loop (N clients, each sending its next request
//! when the last one ended) or open-loop (requests started at a fixed rate,
//! whatever the server's state).
//!
//! Open-loop arrivals are due at `start + i / rate`, absolute deadlines, so a
//! slow tick never shifts the rest of the schedule; how late each arrival was
//! actually dispatched is measured too (`dispatch_lag`), and says whether the
//! client kept up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::http::{BodySink, Connection};
use super::profile::ScriptedRequest;
use super::scan::{SseScanner, StreamEvent, count_token_ids};
use super::stats::Distribution;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LoadMode {
    Closed { concurrency: usize },
    Open { rate: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopAt {
    After(Duration),
    Requests(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoadPlan {
    pub mode: LoadMode,
    pub stop: StopAt,
    pub request_timeout: Duration,
}

/// The requests to send: one pre-rendered HTTP request per script variant.
pub struct Workload {
    pub addr: SocketAddr,
    pub requests: Vec<Vec<u8>>,
    pub scripts: Vec<Arc<ScriptedRequest>>,
    pub stream: bool,
}

impl Workload {
    pub fn new(
        addr: SocketAddr,
        path: &str,
        bodies: &[serde_json::Value],
        scripts: Vec<Arc<ScriptedRequest>>,
        stream: bool,
    ) -> Self {
        let requests = bodies
            .iter()
            .map(|body| {
                let body = serde_json::to_vec(body).expect("a JSON value serialises");
                let mut r = format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                     Accept: text/event-stream, application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(&body);
                r
            })
            .collect();
        Self {
            addr,
            requests,
            scripts,
            stream,
        }
    }
}

/// Everything one load run measured.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub started: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// One example message per error kind.
    pub error_examples: BTreeMap<String, String>,
    pub tokens: u64,
    pub events: u64,
    /// From the first request to the end of the last.
    pub elapsed: Duration,
    /// Request sent to first event with tokens (whole body, not streaming).
    pub ttft: Distribution,
    /// `ttft` minus the scripted delay of the first step.
    pub ttft_overhead: Distribution,
    /// Between consecutive token-carrying events of one stream.
    pub inter_event: Distribution,
    /// Each token event's arrival minus when its last token was scripted.
    pub event_lag: Distribution,
    /// Whole request, and its excess over the script's last step.
    pub e2e: Distribution,
    pub e2e_overhead: Distribution,
    /// Open loop: how late arrivals were dispatched against their deadline.
    pub dispatch_lag: Distribution,
}

impl LoadOutcome {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn error(&mut self, kind: &str, message: String) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
        self.error_examples
            .entry(kind.to_string())
            .or_insert(message);
    }
}

/// What one request saw; merged into the outcome when it ends.
struct RequestSink<'a> {
    script: &'a ScriptedRequest,
    sent: Instant,
    scanner: SseScanner,
    stream: bool,
    body: Vec<u8>,
    tokens: u32,
    events: u32,
    done: bool,
    error: bool,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    gaps: Vec<i64>,
    lags: Vec<i64>,
}

impl<'a> RequestSink<'a> {
    /// Nothing received yet for a request of `script` sent at `sent`.
    fn new(script: &'a ScriptedRequest, stream: bool, sent: Instant) -> Self {
        Self {
            script,
            sent,
            scanner: SseScanner::default(),
            stream,
            body: Vec::new(),
            tokens: 0,
            events: 0,
            done: false,
            error: false,
            first_token: None,
            last_token: None,
            gaps: Vec::new(),
            lags: Vec::new(),
        }
    }
}

impl BodySink for RequestSink<'_> {
    fn data(&mut self, bytes: &[u8], at: Instant) {
        if !self.stream {
            self.body.extend_from_slice(bytes);
            return;
        }
        let mut events = std::mem::take(&mut self.scanner);
        events.feed(bytes, |e| self.event(e, at));
        self.scanner = events;
    }
}

impl RequestSink<'_> {
    fn event(&mut self, event: StreamEvent, at: Instant) {
        self.events += 1;
        self.done |= event.done;
        self.error |= event.error;
        if event.tokens == 0 {
            return;
        }
        self.tokens += event.tokens;
        if self.first_token.is_none() {
            self.first_token = Some(at);
        }
        if let Some(last) = self.last_token.replace(at) {
            self.gaps.push(micros(at - last));
        }
        if let Some(scripted) = self.script.scripted_offset_us(self.tokens) {
            self.lags.push(micros(at - self.sent) - scripted);
        }
    }
}

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

struct Shared {
    workload: Workload,
    plan: LoadPlan,
    start: Instant,
    next: AtomicU64,
    outcome: Mutex<LoadOutcome>,
    last_end: Mutex<Instant>,
}

impl Shared {
    /// The next request's index, or `None` when the run is over.
    fn take(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let more = match self.plan.stop {
            StopAt::After(d) => self.start.elapsed() < d,
            StopAt::Requests(n) => i < n,
        };
        more.then_some(i)
    }
}

/// Runs the plan against the workload; call it inside the runtime whose
/// threads are the client (their CPU is the client's).
pub async fn run(workload: Workload, plan: LoadPlan) -> LoadOutcome {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        workload,
        plan,
        start,
        next: AtomicU64::new(0),
        outcome: Mutex::default(),
        last_end: Mutex::new(start),
    });
    match plan.mode {
        LoadMode::Closed { concurrency } => {
            let workers: Vec<_> = (0..concurrency.max(1))
                .map(|_| {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let mut conn = None;
                        while let Some(i) = shared.take() {
                            one_request(&shared, &mut conn, i).await;
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.await;
            }
        }
        LoadMode::Open { rate } => {
            let pool: Arc<Mutex<Vec<Connection>>> = Arc::default();
            let interval = Duration::from_secs_f64(1.0 / rate.max(1e-6));
            let mut tasks = tokio::task::JoinSet::new();
            let mut n = 0u32;
            while let Some(i) = shared.take() {
                let due = start + interval * n;
                n = n.saturating_add(1);
                tokio::time::sleep_until(due.into()).await;
                let lag = micros(Instant::now().saturating_duration_since(due));
                shared
                    .outcome
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .dispatch_lag
                    .push(lag);
                let (shared, pool) = (shared.clone(), pool.clone());
                tasks.spawn(async move {
                    let taken = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let mut conn = taken;
                    one_request(&shared, &mut conn, i).await;
                    if let Some(c) = conn {
                        pool.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                    }
                });
                // Reap finished tasks as we go, so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let shared = Arc::into_inner(shared).expect("all workers ended");
    let mut outcome = shared
        .outcome
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let last_end = *shared.last_end.lock().unwrap_or_else(|e| e.into_inner());
    outcome.elapsed = last_end - start;
    outcome
}

/// Sends request `i` on `conn` (connecting when it is `None`); leaves
/// `conn` `None` when the connection cannot be reused.
async fn one_request(shared: &Shared, conn: &mut Option<Connection>, i: u64) {
    let w = &shared.workload;
    let variant = (i % w.requests.len() as u64) as usize;
    let script = &w.scripts[variant];
    let mut sink = RequestSink::new(script, w.stream, Instant::now());
    let result = tokio::time::timeout(shared.plan.request_timeout, async {
        if conn.is_none() {
            *conn = Some(Connection::connect(w.addr).await?);
        }
        let c = conn.as_mut().expect("just connected");
        sink.sent = Instant::now();
        c.exchange(&w.requests[variant], &mut sink).await
    })
    .await;
    let end = Instant::now();
    {
        let mut last = shared.last_end.lock().unwrap_or_else(|e| e.into_inner());
        *last = (*last).max(end);
    }
    let mut out = shared.outcome.lock().unwrap_or_else(|e| e.into_inner());
    out.started += 1;
    let head = match result {
        Err(_) => {
            *conn = None;
            out.error(
                "timeout",
                format!(
                    "no complete response within {:?}",
                    shared.plan.request_timeout
                ),
            );
            return;
        }
        Ok(Err(e)) => {
            *conn = None;
            out.error(e.kind(), e.to_string());
            return;
        }
        Ok(Ok(head)) => head,
    };
    if head.close {
        *conn = None;
    }
    if head.status != 200 {
        let body = String::from_utf8_lossy(&sink.body)
            .chars()
            .take(200)
            .collect();
        out.error(&format!("http {}", head.status), body);
        return;
    }
    if !w.stream {
        sink.tokens = count_token_ids(&sink.body).unwrap_or(0);
        sink.first_token = Some(end);
    }
    out.events += u64::from(sink.events);
    out.tokens += u64::from(sink.tokens);
    if sink.error {
        out.error("in-band error", "the stream carried an error event".into());
        return;
    }
    if w.stream && !sink.done {
        out.error("no [DONE]", "the stream ended without data: [DONE]".into());
        return;
    }
    if sink.tokens != script.total_tokens {
        out.error(
            "token count",
            format!(
                "{} tokens where the script has {}",
                sink.tokens, script.total_tokens
            ),
        );
        return;
    }
    out.ok += 1;
    if let Some(first) = sink.first_token {
        let ttft = micros(first - sink.sent);
        out.ttft.push(ttft);
        out.ttft_overhead.push(ttft - script.offsets_us[0]);
    }
    let e2e = micros(end - sink.sent);
    out.e2e.push(e2e);
    out.e2e_overhead
        .push(e2e - script.offsets_us.last().copied().unwrap_or(0));
    out.inter_event.extend(&sink.gaps);
    out.event_lag.extend(&sink.lags);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_renders_complete_requests() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let body = serde_json::json!({"token_ids": [1]});
        let w = Workload::new(addr, "/inference/v1/generate", &[body], vec![], true);
        let text = String::from_utf8(w.requests[0].clone()).unwrap();
        assert!(text.starts_with("POST /inference/v1/generate HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(text.ends_with("Content-Length: 17\r\n\r\n{\"token_ids\":[1]}"));
    }

    #[test]
    fn lags_are_measured_against_the_script() {
        use super::super::profile::{EngineProfile, RequestShape, variants};
        let profile = EngineProfile {
            ttft_ms: 20,
            itl_ms: 10,
            itl_jitter_ms: 0,
            tokens_per_step: 2,
            unpaced: false,
        };
        let shape = RequestShape {
            max_tokens: 4,
            ..RequestShape::default()
        };
        let script = &variants(&profile, &shape, 1, 0)[0];
        let sent = Instant::now();
        let mut sink = RequestSink::new(script, true, sent);
        let ms = Duration::from_millis;
        // Step 1 (tokens 1-2) is due at 20 ms and arrives at 21 ms; step 2
        // (tokens 3-4) is due at 30 ms and arrives at 35 ms.
        sink.data(b"data: {\"token_ids\":[1,2]}\n\n", sent + ms(21));
        sink.data(
            b"data: {\"token_ids\":[3,4]}\n\ndata: [DONE]\n\n",
            sent + ms(35),
        );
        assert_eq!(sink.tokens, 4);
        assert_eq!(sink.events, 3);
        assert!(sink.done && !sink.error);
        assert_eq!(sink.first_token, Some(sent + ms(21)));
        assert_eq!(sink.gaps, [14_000]);
        assert_eq!(sink.lags, [1_000, 5_000]);
    }

    #[test]
    fn closed_requests_stop_after_n() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let shared = Shared {
            workload: Workload::new(addr, "/", &[], vec![], true),
            plan: LoadPlan {
                mode: LoadMode::Closed { concurrency: 1 },
                stop: StopAt::Requests(2),
                request_timeout: Duration::from_secs(1),
            },
            start: Instant::now(),
            next: AtomicU64::new(0),
            outcome: Mutex::default(),
            last_end: Mutex::new(Instant::now()),
        };
        assert_eq!(shared.take(), Some(0));
        assert_eq!(shared.take(), Some(1));
        assert_eq!(shared.take(), None);
    }
}
