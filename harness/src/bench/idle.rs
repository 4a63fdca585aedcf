//! Many open, idle streams: what a server's memory does when thousands of
//! clients wait on a slow engine.
//!
//! Each stream's script emits one token and then stalls, so the server holds
//! the request, the response and its engine stream without sending anything.
//! The client keeps only the socket (no read buffer) per stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_engine::script::{Script, Step};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

use super::resources::{Measured, Usage, usage};

/// The prompt whose script stalls (distinct from every bench variant).
pub fn idle_prompt() -> Vec<u32> {
    vec![4000, 4001, 4002, 4003]
}

/// One token, then silence until the client goes away.
pub fn idle_script() -> Script {
    Script {
        steps: vec![
            Step {
                tokens: vec![100],
                ..Step::default()
            },
            Step {
                stall: true,
                ..Step::default()
            },
        ],
        ..Script::default()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    pub requested: usize,
    /// Streams whose response head arrived (the server holds them open).
    pub open: usize,
    pub failed: usize,
    pub open_after_s: f64,
    pub before: Option<Usage>,
    pub during: Option<Usage>,
}

impl IdleResult {
    /// Resident memory while the streams were open.
    pub fn rss_during(&self) -> Option<u64> {
        self.during.map(|u| u.rss_bytes)
    }
}

/// Opens `count` streams of `request`, holds them for `hold`, measures the
/// server's `scope`, and closes them.
pub async fn hold_streams(
    addr: SocketAddr,
    request: Vec<u8>,
    count: usize,
    hold: Duration,
    scope: Option<Measured>,
) -> IdleResult {
    let before = scope.map(usage);
    let request = Arc::new(request);
    let (release, released) = watch::channel(false);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    // Connecting ten thousand sockets at once overflows the listen backlog.
    let connecting = Arc::new(Semaphore::new(256));
    let start = Instant::now();
    for _ in 0..count {
        let (request, mut released, opened, connecting) = (
            request.clone(),
            released.clone(),
            opened_tx.clone(),
            connecting.clone(),
        );
        tokio::spawn(async move {
            let permit = connecting.acquire_owned().await;
            let stream = tokio::time::timeout(Duration::from_secs(30), open(addr, &request)).await;
            drop(permit);
            let Ok(Ok(stream)) = stream else {
                let _ = opened.send(false);
                return;
            };
            let _ = opened.send(true);
            // Holding the socket is the point; dropping it closes the stream.
            let _ = released.wait_for(|r| *r).await;
            drop(stream);
        });
    }
    drop(opened_tx);
    let (mut open_count, mut failed) = (0, 0);
    while open_count + failed < count {
        match opened_rx.recv().await {
            Some(true) => open_count += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    let open_after_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(hold).await;
    let during = scope.map(usage);
    let _ = release.send(true);
    IdleResult {
        requested: count,
        open: open_count,
        failed,
        open_after_s,
        before,
        during,
    }
}

/// Connects, sends the request and reads until the response head is complete.
async fn open(addr: SocketAddr, request: &[u8]) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the response head"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 200") {
                let line = String::from_utf8_lossy(&head[..end.min(64)]).into_owned();
                return Err(std::io::Error::other(format!("status line `{line}`")));
            }
            return Ok(stream);
        }
    }
}
