//! A scriptable vLLM engine.
//!
//! A [`script::Fixture`] pairs one request with the engine steps that answer it.
//! An [`engine::Engine`] replays those steps, on an absolute clock, for every
//! request whose prompt token ids match; other prompts get the deterministic
//! [`generator`]. The same engine runs in-process behind the reference server
//! and, later, behind vLLM's own frontends as an engine core.
//!
//! The modules build on each other in one direction: a [`step`] is what the
//! engine emits once; the [`generator`] makes steps; an [`endpoint`] turns a
//! request body into the prompt a script is keyed on; the [`script`] format
//! (a fixture) puts a request and its steps together; [`fixture`] loads and
//! checks them from disk; the [`engine`] plays them. [`core`], [`wire`] and
//! [`tap`] speak vLLM's engine-core protocol around it.

pub mod cli;
pub mod clock;
pub mod core;
pub mod endpoint;
pub mod engine;
pub mod engine_view;
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
