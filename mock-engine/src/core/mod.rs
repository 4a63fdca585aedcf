//! The engine core: the scripted [`Engine`] behind vLLM's real frontends.
//!
//! A frontend started with `--data-parallel-size-local 0` binds a handshake
//! socket and waits for engines. [`run_engine_core`] connects to it, performs
//! the start-up handshake, then serves ADD / ABORT / UTILITY until the frontend
//! goes away or a script kills the engine.
//!
//! ```no_run
//! # async fn run() -> Result<(), mock_engine::core::CoreError> {
//! use mock_engine::core::{CoreOptions, run_engine_core};
//! use mock_engine::Engine;
//!
//! let opts = CoreOptions::new("tcp://127.0.0.1:29550");
//! run_engine_core(opts, Engine::default()).await
//! # }
//! ```

mod convert;
mod error;
mod handshake;
mod running;
mod serve;

use std::time::Duration;

pub use convert::{ConvertError, to_engine_request, to_wire_output};
pub use error::CoreError;

use crate::engine::Engine;
use crate::wire::{Layout, VllmVersion};

/// How to reach the frontend and which protocol to speak.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreOptions {
    /// The frontend's handshake socket, e.g. `tcp://127.0.0.1:29550`.
    pub handshake_address: String,
    /// Data-parallel rank: the ZeroMQ identity (two little-endian bytes) and
    /// the `engine_index` of every output.
    pub rank: u16,
    /// The wire layout (a hand-written table, or one read from the install
    /// and checked); a frontend of another version fails at its first request.
    pub layout: &'static Layout,
    /// From first connection attempt to READY.
    pub handshake_timeout: Duration,
    /// Sent in the ready response; vLLM uses it to tell engine instances apart.
    pub instance_id: String,
    /// Loops that step the requests, each its own task with a share of them
    /// (by request id). One is vLLM's shape; the default, one per core,
    /// keeps the mock ahead of the frontend it feeds.
    pub loops: usize,
}

impl CoreOptions {
    pub fn new(handshake_address: impl Into<String>) -> Self {
        Self {
            handshake_address: handshake_address.into(),
            rank: 0,
            layout: VllmVersion::V0_32_0.layout(),
            handshake_timeout: Duration::from_secs(60),
            instance_id: "genconform-mock-engine".to_string(),
            loops: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// Runs one engine core until the frontend disconnects (`Err(FrontendGone)`),
/// a script fails (`Err(ScriptedDeath)`, after ENGINE_CORE_DEAD was sent), or
/// the frontend speaks another layout (`Err(Wire)`, also after ENGINE_CORE_DEAD).
/// Cancel it by dropping the future (or aborting its task).
pub async fn run_engine_core(opts: CoreOptions, engine: Engine) -> Result<(), CoreError> {
    let layout = opts.layout;
    if !layout.verified {
        tracing::warn!(
            version = layout.version,
            "this wire layout was not verified against vLLM's source; requests that do not \
             fit it are rejected loudly"
        );
    }
    let sockets = handshake::connect(&opts, &engine).await?;
    serve::serve(sockets, engine, &opts).await
}
