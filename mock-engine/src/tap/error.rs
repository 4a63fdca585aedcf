use std::time::Duration;

use crate::wire::WireError;

/// Why the tap stopped before it could forward, or could not start.
///
/// Once both sides are connected the tap only ends because a side went away,
/// which is not an error: [`super::run_tap`] then returns `Ok`.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap: cannot bind {what} at {address}: {source}")]
    Bind {
        what: &'static str,
        address: String,
        #[source]
        source: zeromq::ZmqError,
    },
    #[error("tap: ZeroMQ error while {doing}: {source}")]
    Zmq {
        doing: String,
        #[source]
        source: zeromq::ZmqError,
    },
    #[error(
        "tap: the handshake between the frontend at {frontend} and the engine at {engine} \
         did not complete within {timeout:?} (stuck at: {stage})"
    )]
    HandshakeTimeout {
        frontend: String,
        engine: String,
        timeout: Duration,
        stage: String,
    },
    #[error("tap: bad {what} during the handshake: {source}")]
    Handshake {
        what: &'static str,
        #[source]
        source: WireError,
    },
    #[error("tap: {what} is not a single-frame message ({frames} frames)")]
    Frames { what: &'static str, frames: usize },
}

impl TapError {
    pub(crate) fn zmq(doing: impl Into<String>) -> impl FnOnce(zeromq::ZmqError) -> Self {
        let doing = doing.into();
        move |source| Self::Zmq { doing, source }
    }
}
