//! A deliberately broken server for tests: a proxy in front of a healthy one
//! that damages the event stream in one way a real implementation might,
//! and a way to serve any app for a test.
#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

/// Rewrites the events (each without its blank-line terminator) of a stream.
pub type Damage = fn(Vec<String>) -> Vec<String>;

/// Forgets the final `[DONE]`.
pub fn drop_done(mut events: Vec<String>) -> Vec<String> {
    events.retain(|e| e != "data: [DONE]");
    events
}

/// Moves the usage object from the usage-only event onto the first event.
pub fn usage_on_first_chunk(events: Vec<String>) -> Vec<String> {
    let parse =
        |e: &str| serde_json::from_str::<serde_json::Value>(e.trim_start_matches("data: ")).ok();
    let usage_at = events.iter().position(|e| {
        parse(e).is_some_and(|v| v["choices"].as_array().is_some_and(|c| c.is_empty()))
    });
    let Some(at) = usage_at.filter(|&at| at > 0) else {
        return events;
    };
    let usage = parse(&events[at]).expect("just parsed")["usage"].clone();
    let mut first = parse(&events[0]).expect("a JSON chunk before the usage event");
    first["usage"] = usage;
    let mut out = events;
    out[0] = format!("data: {first}");
    out.remove(at);
    out
}

/// Counts one completion token too many in every usage object (and in its
/// total, so the arithmetic still adds up).
pub fn usage_off_by_one(events: Vec<String>) -> Vec<String> {
    events
        .into_iter()
        .map(|e| {
            let Ok(mut v) =
                serde_json::from_str::<serde_json::Value>(e.trim_start_matches("data: "))
            else {
                return e;
            };
            let Some(usage) = v.get_mut("usage").and_then(|u| u.as_object_mut()) else {
                return e;
            };
            for key in ["completion_tokens", "total_tokens"] {
                if let Some(n) = usage.get(key).and_then(serde_json::Value::as_u64) {
                    usage.insert(key.into(), (n + 1).into());
                }
            }
            format!("data: {v}")
        })
        .collect()
}

struct Proxy {
    upstream: String,
    damage: Damage,
    client: reqwest::Client,
}

/// Serves, on an ephemeral port, a proxy to `upstream` that applies
/// `damage` to every event stream; returns its base URL.
pub async fn spawn_broken_proxy(upstream: String, damage: Damage) -> String {
    let proxy = Arc::new(Proxy {
        upstream,
        damage,
        client: reqwest::Client::new(),
    });
    serve(axum::Router::new().fallback(forward).with_state(proxy)).await
}

/// Serves `app` on an ephemeral port; returns its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("a bound port");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .expect("small body");
    let mut upstream = proxy.client.request(
        parts.method.clone(),
        format!("{}{}", proxy.upstream, parts.uri.path()),
    );
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream.body(body).send().await.expect("upstream answers");
    let status = answer.status();
    let headers = answer.headers().clone();
    let text = answer.text().await.expect("upstream body");
    let text = if headers
        .get("content-type")
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"))
    {
        let events: Vec<String> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        (proxy.damage)(events)
            .into_iter()
            .map(|e| e + "\n\n")
            .collect()
    } else {
        text
    };
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(text)).expect("valid response")
}
