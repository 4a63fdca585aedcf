//! One request sent to a target and what came back: the capture, byte for
//! byte ([`crate::capture`]), and its transcript: the body lexed
//! ([`crate::sse`]), checked by a strict client, and normalised
//! ([`crate::normalize`]).
//!
//! ```no_run
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use harness::capture::CaptureLimits;
//! use harness::session::send::send;
//! use mock_engine::script::RequestSpec;
//!
//! let client = reqwest::Client::new();
//! let request = RequestSpec::default();
//! let sent = send(&client, "http://127.0.0.1:8000", &request, CaptureLimits::default()).await;
//! println!("{:?}: {:?}", sent.capture.status, sent.transcript);
//! # });
//! ```

use std::time::Duration;

use mock_engine::engine_view::EngineView;
use mock_engine::script::RequestSpec;

use crate::capture::{self, Capture, CaptureError, CaptureLimits};
use crate::normalize::{ClientValues, Transcript, TranscriptBuilder};
use crate::session::watch::EngineWatch;
use crate::sse;

/// One request's answer.
#[derive(Debug, Clone)]
pub struct Sent {
    pub capture: Capture,
    pub transcript: Transcript,
    /// Bytes of a body past the cap left out of the transcript (see
    /// [`send_keeping`]); 0 when nothing was.
    pub cut: usize,
}

/// Sends `request` to `base` and transcribes whatever came back.
pub async fn send(
    client: &reqwest::Client,
    base: &str,
    request: &RequestSpec,
    limits: CaptureLimits,
) -> Sent {
    let capture = capture::capture(client, base, request, limits).await;
    let transcript = transcribe(request, &capture, None).await;
    Sent {
        capture,
        transcript,
        cut: 0,
    }
}

/// [`send`], but a body past the cap is transcribed from its first `kept`
/// bytes only: it is evidence of a flood, not an answer, and a flooding
/// target's transcripts would be megabytes each. With a `watch` (started
/// before this is called), the transcript says what the engine was asked.
pub async fn send_keeping(
    client: &reqwest::Client,
    base: &str,
    request: &RequestSpec,
    limits: CaptureLimits,
    kept: usize,
    watch: Option<EngineWatch>,
) -> Sent {
    let mut capture = capture::capture(client, base, request, limits).await;
    let cut = match capture.error {
        Some(CaptureError::TooLarge(_)) => capture.keep_first(kept),
        _ => 0,
    };
    let engine = watch.map(EngineWatch::seen);
    let transcript = transcribe(request, &capture, engine).await;
    Sent {
        capture,
        transcript,
        cut,
    }
}

/// How long the strict SSE client may take over one recorded body.
const STRICT_LIMIT: Duration = Duration::from_secs(5);

/// Lexes and normalises one capture. An event stream also goes through the
/// strict client; where it would see something else, that is a note.
/// `engine`: what the engine was asked meanwhile, when that can be seen.
pub async fn transcribe(
    request: &RequestSpec,
    capture: &Capture,
    engine: Option<Result<Vec<EngineView>, String>>,
) -> Transcript {
    let body = capture.body();
    let (events, notes) = if capture.is_event_stream() {
        let chunks: Vec<&[u8]> = capture.chunks.iter().map(|c| c.bytes.as_ref()).collect();
        let lexed = sse::lex(&chunks);
        // Where TCP split the body depends on timing, not on the server:
        // keeping it out of transcripts keeps snapshots and diffs stable.
        let mut notes: Vec<String> = lexed
            .notes_ignoring_chunks()
            .map(ToString::to_string)
            .collect();
        match sse::strict::run(&chunks, STRICT_LIMIT).await {
            Ok(strict) => notes.extend(
                sse::strict::compare(&lexed, &strict)
                    .iter()
                    .map(|d| format!("strict client: {d}")),
            ),
            Err(e) => notes.push(format!("strict client could not run: {e}")),
        }
        (Some(lexed.data()), notes)
    } else {
        (None, Vec::new())
    };
    TranscriptBuilder::new(ClientValues::from_request(request))
        .engine(engine)
        .build(
            capture.status,
            &capture.headers,
            &body,
            events,
            notes,
            capture.error.as_ref().map(ToString::to_string),
        )
}
