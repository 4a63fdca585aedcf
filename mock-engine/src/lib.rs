//! A scriptable vLLM engine.
//!
//! A [`script::Fixture`] pairs one request with the engine steps that answer it.
//! An [`engine::Engine`] replays those steps, on an absolute clock, for every
//! request whose prompt token ids match; other prompts get the deterministic
//! [`generator`]. The same engine runs in-process behind the reference server
//! and, later, behind vLLM's own frontends as an engine core.

pub mod cli;
pub mod clock;
pub mod core;
pub mod endpoint;
pub mod engine;
pub mod fixture;
pub mod generator;
pub mod script;
pub mod step;
pub mod tap;
pub mod wire;

pub use engine::{
    Engine, EngineConfig, EngineEvent, EngineOutput, EngineRequest, EngineStream, Timer,
};
pub use fixture::{Corpus, FixtureError, FixtureErrors, LoadedFixture};
pub use script::{FinishReason, Fixture, Script, Step};
