//! Byte-exact lexing of `text/event-stream` bodies.
//!
//! The harness records a streamed body as the chunks it arrived in and hands
//! them to [`lex`], which applies the WHATWG "event stream interpretation"
//! rules and returns a [`LexedBody`]: every line (raw bytes, line ending,
//! kind, source chunks), the events a conforming client dispatches, and
//! [`Note`]s on everything lexically unusual. [`strict`] replays the same
//! chunks through the `eventsource-client` crate and reports where a real,
//! stricter client would see something else.
//!
//! ```
//! use harness::sse::{lex, Note};
//!
//! let t = lex(&[b"data: {\"token_ids\":[1]}\r\n\r\ndata: [DONE]\r\n\r\n".as_slice()]);
//! assert_eq!(t.events.len(), 2);
//! assert!(t.events[1].is_done());
//! for note in &t.notes {
//!     println!("{note}"); // "4 lines ending in CRLF (first: line 1); vLLM's servers end lines with LF"
//! }
//! assert!(matches!(t.notes[0], Note::LineEndings { count: 4, .. }));
//! ```

mod lexed;
mod lexer;
pub mod strict;

pub use lexed::{Event, FieldValue, LexedBody, Line, LineEnding, LineKind, Note, Separator};
pub use lexer::lex;

#[cfg(test)]
mod tests;
