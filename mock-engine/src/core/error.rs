use std::time::Duration;

use crate::wire::WireError;

/// Why the engine core stopped.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("ZeroMQ error while {doing}: {source}")]
    Zmq {
        doing: String,
        #[source]
        source: zeromq::ZmqError,
    },
    #[error(
        "no handshake with the frontend at {address} within {timeout:?} (stuck at: {stage}); \
         is a frontend running with --data-parallel-size-local 0 and this rpc port?"
    )]
    HandshakeTimeout {
        address: String,
        timeout: Duration,
        stage: &'static str,
    },
    #[error("bad message from the frontend: {0}")]
    Wire(#[from] WireError),
    #[error("a script killed the engine: {0}")]
    ScriptedDeath(String),
    #[error("the frontend went away: {0}")]
    FrontendGone(String),
}

impl CoreError {
    pub(crate) fn zmq(doing: impl Into<String>) -> impl FnOnce(zeromq::ZmqError) -> Self {
        let doing = doing.into();
        move |source| Self::Zmq { doing, source }
    }
}
