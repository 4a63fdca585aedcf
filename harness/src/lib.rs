//! genconform: replays fixtures against implementations of vLLM's token
//! endpoints (`/inference/v1/generate`, `/v1/completions`,
//! `/v1/chat/completions`), captures what they send byte for byte,
//! normalises it, snapshots it, and diffs the implementations.
//!
//! What differs between the endpoints lives in [`endpoint`], one module per
//! family behind one trait; the rest of the pipeline asks it.
//!
//! The pipeline, one module per stage: [`targets`] starts or names a server,
//! [`capture`] records one exchange, [`sse`] lexes the event stream,
//! [`normalize`] turns it into a [`normalize::Transcript`], [`diff`] compares
//! transcripts, [`divergence`] says which differences are known,
//! [`snapshot`] checks reviewed transcripts, and [`report`] tells the result.
//! [`session`] is the run machinery the commands share (the started targets,
//! a script registered and one request sent and transcribed, progress);
//! [`run`], [`fuzz`], [`record`] and [`bench`](mod@bench) are built on it. [`vllm`] and
//! [`process`] start the real vLLM frontends against the mock engine core.

pub mod args;
pub mod bench;
pub mod capture;
pub mod cli;
pub mod diff;
pub mod divergence;
pub mod endpoint;
pub mod excerpt;
pub mod fuzz;
pub mod interrupt;
pub mod matrix;
pub mod normalize;
pub mod partition;
pub mod process;
pub mod prompt_lock;
pub mod record;
pub mod report;
pub mod run;
pub mod session;
pub mod snapshot;
pub mod sse;
pub mod stream_summary;
pub mod targets;
pub mod vllm;
