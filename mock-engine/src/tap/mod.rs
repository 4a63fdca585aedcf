//! A recording tap between a real vLLM frontend and a real engine core.
//!
//! The frontend binds its handshake socket and waits for engines; the tap
//! connects to it as the engine would, and binds a handshake socket of its
//! own for the engine to connect to. It relays the start-up handshake,
//! giving the engine its own input and output sockets instead of the
//! frontend's, then forwards every message both ways, frame for frame and
//! byte for byte. Each message is forwarded first and recorded after: its
//! frames and receipt time go to a decoding task that sends a [`TapEvent`]
//! to the journal, so decoding never delays the traffic.
//!
//! ```no_run
//! # async fn run() -> Result<(), mock_engine::tap::TapError> {
//! use mock_engine::tap::{TapEvent, TapOptions, run_tap};
//!
//! let (journal, mut events) = tokio::sync::mpsc::unbounded_channel::<TapEvent>();
//! let opts = TapOptions::new("tcp://127.0.0.1:29550", "tcp://127.0.0.1:29551");
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         println!("{:?}", event.message);
//!     }
//! });
//! run_tap(opts, journal).await
//! # }
//! ```
//!
//! Not tapped: the DP coordinator and stats-publish addresses of the init
//! message pass through unchanged, so an engine that uses them talks to the
//! frontend directly (single-engine frontends send none).

mod error;
mod forward;
mod handshake;
mod journal;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

pub use error::TapError;

use crate::wire::{EngineCoreOutputs, EngineCoreRequest, Layout, VllmVersion};

/// Where the two sides are and which layout to decode with.
#[derive(Debug, Clone, PartialEq)]
pub struct TapOptions {
    /// The frontend's handshake socket (it binds; the tap connects like an
    /// engine), e.g. `tcp://127.0.0.1:29550`.
    pub frontend_handshake: String,
    /// Where the tap binds the handshake socket the engine connects to,
    /// e.g. `tcp://127.0.0.1:29551`. The tap's input and output sockets go
    /// on the same host, on ephemeral ports.
    pub engine_handshake: String,
    /// The layout the journal decodes with; forwarding ignores it.
    pub layout: &'static Layout,
    /// From start to the forwarded READY.
    pub handshake_timeout: Duration,
}

impl TapOptions {
    /// vLLM 0.32.0, and 300 s for the handshake (a real engine loads its
    /// model between HELLO and READY).
    pub fn new(frontend_handshake: impl Into<String>, engine_handshake: impl Into<String>) -> Self {
        Self {
            frontend_handshake: frontend_handshake.into(),
            engine_handshake: engine_handshake.into(),
            layout: VllmVersion::V0_32_0.layout(),
            handshake_timeout: Duration::from_secs(300),
        }
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    ToEngine,
    ToFrontend,
}

/// One forwarded message.
#[derive(Debug, Clone, PartialEq)]
pub struct TapEvent {
    /// When the tap received it (before forwarding it).
    pub at: Instant,
    pub message: Tapped,
    /// The frames exactly as forwarded (without the ROUTER identity frame):
    /// the type byte, payload and aux frames of a request; the payload and
    /// aux frames of outputs.
    pub frames: Vec<Bytes>,
}

/// What a forwarded message was, decoded with the configured layout.
#[derive(Debug, Clone, PartialEq)]
pub enum Tapped {
    /// frontend -> engine ADD
    Add(EngineCoreRequest),
    /// frontend -> engine ABORT (request ids)
    Abort(Vec<String>),
    /// any other message (utility calls, START_DP_WAVE, anything the engine
    /// sends on an input socket), kind named
    Other { direction: Direction, what: String },
    /// engine -> frontend
    Outputs(EngineCoreOutputs),
    /// engine -> frontend `ENGINE_CORE_DEAD`
    EngineDead,
    /// forwarded all the same; `error` says why it did not decode
    Undecodable { direction: Direction, error: String },
}

/// Runs until either side goes away (`Ok`) or the handshake fails; every
/// forwarded message is sent to `journal` (a closed journal is not an error:
/// forwarding goes on). Within one direction, events come in forwarding
/// order; across directions, [`TapEvent::at`] orders them.
///
/// Cancel it by dropping the future (or aborting its task): every socket
/// closes. The journal closes once what was forwarded is decoded.
pub async fn run_tap(
    opts: TapOptions,
    journal: mpsc::UnboundedSender<TapEvent>,
) -> Result<(), TapError> {
    let layout = opts.layout;
    let connected = handshake::connect(&opts).await?;
    let recorder = journal::spawn_decoder(layout, journal);
    let handshake::Connected {
        inputs,
        outputs,
        monitors,
        _handshakes,
    } = connected;
    let (side, why) = forward::forward(inputs, outputs, monitors, recorder).await;
    tracing::info!(%side, %why, "tap: a side went away; stopping");
    Ok(())
}
