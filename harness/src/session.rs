//! The run machinery `run`, `fuzz`, `record` and `bench` share: the
//! started targets ([`targets`]), how a case's script reaches a target's
//! engine ([`scripts`]), one request sent and captured into a transcript
//! ([`send`]), and the progress shown while cases run ([`progress`]).
//!
//! What each command does with the answers (judge a grid, check the oracle,
//! write a fixture, measure a load) stays in the command's module; nothing
//! here knows which command runs it.

pub mod progress;
pub mod scripts;
pub mod send;
pub mod targets;
pub mod watch;
