//! A second opinion: the same body through the `eventsource-client` crate.
//!
//! Our lexer follows the WHATWG rules; real clients are sometimes stricter
//! (they reject invalid UTF-8 or an event made only of unknown fields) or
//! looser (`retry: +5`). Running the exact chunks through a widely used
//! client and comparing tells a report when a server's bytes, although
//! lexically fine, would be seen differently by such a client.
//!
//! The client is driven through its public API with an in-memory transport
//! (its `HttpTransport` trait) that answers 200 with the recorded chunks, one
//! stream item per chunk: no socket, no port, chunk boundaries kept exactly,
//! and the client's full stack (connection state machine + parser) runs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use eventsource_client::{Client, ClientBuilder, Error as ClientError, ReconnectOptions, SSE};
use futures::StreamExt;
use launchdarkly_sdk_transport::{
    ByteStream, HttpTransport, Request, Response, ResponseFuture, TransportError,
};
use serde::Serialize;

use super::lexed::{LexedBody, LineEnding, LineKind};

/// An event as the strict client dispatched it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StrictEvent {
    pub event_type: String,
    pub data: String,
    pub id: Option<String>,
    pub retry: Option<u64>,
}

/// How the strict client's stream ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "end", content = "message", rename_all = "snake_case")]
pub enum StrictEnd {
    /// The body ended on a line boundary.
    Eof,
    /// The body ended inside a line.
    UnexpectedEof,
    /// The client rejected the body and stopped reading it.
    Error(String),
    /// The client did not finish within the time limit (never seen; kept so
    /// a bug in the client cannot hang the harness).
    TimedOut,
}

/// Everything the strict client saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StrictRun {
    pub events: Vec<StrictEvent>,
    pub comments: Vec<String>,
    pub end: StrictEnd,
}

/// Why the strict client could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum StrictRunError {
    #[error("run_blocking was called from inside a tokio runtime; use `strict::run(..).await`")]
    InsideRuntime,
    #[error("could not build a tokio runtime for the strict client: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("the strict client refused its own settings: {0}")]
    Client(String),
}

/// Replays recorded chunks as the body of a 200 response, once.
#[derive(Clone)]
struct Replay {
    chunks: Arc<Vec<Bytes>>,
    used: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the recorded body can be replayed only once (the client tried to reconnect)")]
struct AlreadyReplayed;

impl HttpTransport for Replay {
    fn request(&self, _request: Request<Option<Bytes>>) -> ResponseFuture {
        if self.used.swap(true, Ordering::SeqCst) {
            return Box::pin(async { Err(TransportError::new(AlreadyReplayed)) });
        }
        let chunks: Vec<_> = self.chunks.iter().cloned().map(Ok).collect();
        let body: ByteStream = Box::pin(futures::stream::iter(chunks));
        let response = Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .body(body);
        Box::pin(async move { response.map_err(TransportError::new) })
    }
}

/// Run the chunks through `eventsource-client`, giving up after `limit`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use harness::sse::strict::{self, StrictEnd};
/// use std::time::Duration;
///
/// let run = strict::run(&[b"data: a\n\n".as_slice()], Duration::from_secs(5)).await.unwrap();
/// assert_eq!(run.events[0].data, "a");
/// assert_eq!(run.end, StrictEnd::Eof);
/// # });
/// ```
pub async fn run<C: AsRef<[u8]>>(
    chunks: &[C],
    limit: Duration,
) -> Result<StrictRun, StrictRunError> {
    let replay = Replay {
        chunks: Arc::new(
            chunks
                .iter()
                .map(|c| Bytes::copy_from_slice(c.as_ref()))
                .collect(),
        ),
        used: Arc::new(AtomicBool::new(false)),
    };
    // The URL is never resolved: the transport ignores it.
    let client = ClientBuilder::for_url("http://replay.invalid/")
        .map_err(|e| StrictRunError::Client(e.to_string()))?
        .reconnect(ReconnectOptions::reconnect(false).build())
        .build_with_transport(replay);
    let mut stream = client.stream();
    let mut run = StrictRun {
        events: Vec::new(),
        comments: Vec::new(),
        end: StrictEnd::Eof,
    };
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let item = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                run.end = StrictEnd::TimedOut;
                break;
            }
            Ok(None) => break,
            Ok(Some(item)) => item,
        };
        match item {
            Ok(SSE::Event(e)) => run.events.push(StrictEvent {
                event_type: e.event_type,
                data: e.data,
                id: e.id,
                retry: e.retry,
            }),
            Ok(SSE::Comment(c)) => run.comments.push(c),
            Ok(SSE::Connected(_)) => {}
            Err(ClientError::Eof) => run.end = StrictEnd::Eof,
            Err(ClientError::UnexpectedEof) => run.end = StrictEnd::UnexpectedEof,
            // With reconnect off the stream closes after any error; events
            // the parser had queued before the error still come out, so keep
            // reading until `None`.
            Err(e) => run.end = StrictEnd::Error(e.to_string()),
        }
    }
    Ok(run)
}

/// [`run`] for callers outside async code: builds a one-thread runtime.
pub fn run_blocking<C: AsRef<[u8]>>(
    chunks: &[C],
    limit: Duration,
) -> Result<StrictRun, StrictRunError> {
    // `block_on` inside a runtime would panic; say so instead.
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(StrictRunError::InsideRuntime);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?
        .block_on(run(chunks, limit))
}

/// A way in which the strict client saw the body differently from the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "discrepancy", rename_all = "snake_case")]
pub enum Discrepancy {
    /// The client rejected the body (its parser error) and stopped reading.
    StrictRejected { message: String },
    /// The client gave up within the time limit.
    StrictTimedOut,
    /// Events the spec dispatches that the client never delivered.
    MissingInStrict {
        from_event: usize,
        count: usize,
        first_line: usize,
    },
    /// Events the client delivered beyond those the spec dispatches.
    ExtraInStrict {
        from_event: usize,
        count: usize,
        first_data: String,
    },
    /// Same event position, a different value of one property.
    EventDiffers {
        event: usize,
        line: usize,
        property: &'static str,
        ours: String,
        theirs: String,
    },
    /// The comment lines the client reported differ from the body's.
    CommentsDiffer {
        ours: Vec<String>,
        theirs: Vec<String>,
    },
    /// Disagreement about whether the body ended inside a line.
    EndDiffers {
        ours_unterminated: bool,
        theirs: StrictEnd,
    },
}

impl fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StrictRejected { message } => write!(
                f,
                "eventsource-client rejected the stream ({message}) and would stop reading it"
            ),
            Self::StrictTimedOut => f.write_str("eventsource-client did not finish in time"),
            Self::MissingInStrict {
                from_event,
                count,
                first_line,
            } => write!(
                f,
                "eventsource-client never delivers {count} event(s) from event {from_event} (line {first_line}) on"
            ),
            Self::ExtraInStrict {
                from_event,
                count,
                first_data,
            } => write!(
                f,
                "eventsource-client delivers {count} event(s) the spec does not, from event {from_event} (data {first_data:?})"
            ),
            Self::EventDiffers {
                event,
                line,
                property,
                ours,
                theirs,
            } => write!(
                f,
                "event {event} (line {line}): {property} is {ours} per spec but {theirs} for eventsource-client"
            ),
            Self::CommentsDiffer { ours, theirs } => write!(
                f,
                "comments differ: {} per spec, {} for eventsource-client",
                ours.len(),
                theirs.len()
            ),
            Self::EndDiffers {
                ours_unterminated,
                theirs,
            } => write!(
                f,
                "the body {} inside a line per spec, but eventsource-client ended with {theirs:?}",
                if *ours_unterminated {
                    "ends"
                } else {
                    "does not end"
                }
            ),
        }
    }
}

/// What the strict client saw that a spec-following client would not.
///
/// ```
/// use harness::sse::{lex, strict::{self, Discrepancy}};
/// use std::time::Duration;
///
/// // `retry: +5`: the spec wants digits only, the client's `u64` parse takes it.
/// let chunks = [b"retry: +5\ndata: a\n\n".as_slice()];
/// let theirs = strict::run_blocking(&chunks, Duration::from_secs(5)).unwrap();
/// let found = strict::compare(&lex(&chunks), &theirs);
/// assert!(matches!(&found[..], [Discrepancy::EventDiffers { property: "retry", .. }]));
/// ```
pub fn compare(ours: &LexedBody, theirs: &StrictRun) -> Vec<Discrepancy> {
    let mut found = Vec::new();
    match &theirs.end {
        StrictEnd::Error(message) => found.push(Discrepancy::StrictRejected {
            message: message.clone(),
        }),
        StrictEnd::TimedOut => found.push(Discrepancy::StrictTimedOut),
        end @ (StrictEnd::Eof | StrictEnd::UnexpectedEof) => {
            let ours_unterminated = ours
                .lines
                .last()
                .is_some_and(|l| l.ending == LineEnding::None);
            if ours_unterminated != (*end == StrictEnd::UnexpectedEof) {
                found.push(Discrepancy::EndDiffers {
                    ours_unterminated,
                    theirs: end.clone(),
                });
            }
        }
    }
    for (i, (o, t)) in ours.events.iter().zip(&theirs.events).enumerate() {
        let mut differs = |property, ours: String, theirs: String| {
            if ours != theirs {
                found.push(Discrepancy::EventDiffers {
                    event: i,
                    line: o.first_line,
                    property,
                    ours,
                    theirs,
                });
            }
        };
        differs("event type", o.event_type.clone(), t.event_type.clone());
        differs("data", format!("{:?}", o.data), format!("{:?}", t.data));
        differs("id", format!("{:?}", o.id), format!("{:?}", t.id));
        differs("retry", format!("{:?}", o.retry), format!("{:?}", t.retry));
    }
    let shared = ours.events.len().min(theirs.events.len());
    if let Some(first) = ours.events.get(shared) {
        found.push(Discrepancy::MissingInStrict {
            from_event: shared,
            count: ours.events.len() - shared,
            first_line: first.first_line,
        });
    }
    if let Some(first) = theirs.events.get(shared) {
        found.push(Discrepancy::ExtraInStrict {
            from_event: shared,
            count: theirs.events.len() - shared,
            first_data: first.data.clone(),
        });
    }
    // Only comments on complete lines count: the spec never sees the rest.
    let our_comments: Vec<String> = ours
        .lines
        .iter()
        .filter(|l| l.ending != LineEnding::None)
        .filter_map(|l| match &l.kind {
            LineKind::Comment { text } => Some(text.clone()),
            _ => None,
        })
        .collect();
    // A client that stopped early saw only a prefix; that is reported above.
    let differ = match theirs.end {
        StrictEnd::Eof | StrictEnd::UnexpectedEof => our_comments != theirs.comments,
        _ => !our_comments.starts_with(&theirs.comments),
    };
    if differ {
        found.push(Discrepancy::CommentsDiffer {
            ours: our_comments,
            theirs: theirs.comments.clone(),
        });
    }
    found
}
