//! The lexed form of an SSE body: lines, dispatched events and notes.
//!
//! Everything here is plain data with `Serialize`, so a harness report can
//! carry it into JSON unchanged. Line numbers are 1-based (as an editor shows
//! them); chunk indices are 0-based read indices (the order the body arrived).

use std::fmt;

use serde::{Serialize, Serializer};

/// How a line was terminated. The WHATWG grammar allows all three endings;
/// vLLM's servers only ever send `LF`, so anything else is worth a note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LineEnding {
    Lf,
    CrLf,
    Cr,
    /// The body ended before a line ending: the line is not part of the
    /// stream (the spec discards it).
    None,
}

impl fmt::Display for LineEnding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lf => "LF",
            Self::CrLf => "CRLF",
            Self::Cr => "CR",
            Self::None => "no line ending",
        })
    }
}

/// What came between the field name and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Separator {
    /// `name: value`, the form every server we know sends; the one space is
    /// not part of the value.
    ColonSpace,
    /// `name:value`; legal, the value starts right after the colon.
    Colon,
    /// `name` alone; legal, the whole line is the name and the value is empty.
    NoColon,
}

/// The meaning of one line under the event-stream grammar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LineKind {
    /// Empty line: dispatches the event being built.
    Blank,
    /// `:text`; ignored by clients, servers use it for keep-alives.
    Comment { text: String },
    /// A field; `value` is what a client sees (leading space already removed).
    Field {
        name: String,
        value: String,
        separator: Separator,
    },
}

/// One line of the body, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// 1-based line number.
    pub number: usize,
    /// Byte offset of the line's first byte in the body (the BOM, if any,
    /// counts, so offsets index the bytes exactly as received).
    pub offset: usize,
    /// The line without its ending, decoded as UTF-8 with replacement
    /// characters, exactly as the spec's decoder does.
    pub text: String,
    /// The raw bytes without the ending. Serialized only when they are not
    /// valid UTF-8 (otherwise `text` already says it all), escaped as ASCII.
    #[serde(skip_serializing_if = "is_utf8", serialize_with = "serialize_escaped")]
    pub raw: Vec<u8>,
    pub ending: LineEnding,
    pub kind: LineKind,
    /// Read index of the chunk holding the line's first byte.
    pub first_chunk: usize,
    /// Read index of the chunk holding the line's last byte (ending included).
    pub last_chunk: usize,
}

impl Line {
    /// True when the line (with its ending) arrived in more than one chunk.
    pub fn is_split(&self) -> bool {
        self.first_chunk != self.last_chunk
    }
}

fn is_utf8(raw: &[u8]) -> bool {
    std::str::from_utf8(raw).is_ok()
}

fn serialize_escaped<S: Serializer>(raw: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&raw.escape_ascii())
}

/// A field other than `data` that took part in an event, in body order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldValue {
    pub name: String,
    pub value: String,
}

/// An event as a conforming client dispatches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The `event` field, or `message` when none was given (as the spec says).
    pub event_type: String,
    /// The `data` lines joined with `\n` (the final `\n` removed).
    pub data: String,
    /// The last event id buffer at dispatch time. It persists across events,
    /// as in the spec; `None` until some `id` field was accepted.
    pub id: Option<String>,
    /// The last valid `retry` value given inside this event's lines.
    pub retry: Option<u64>,
    /// Fields other than `data` inside this event (`event`, `id`, `retry`
    /// and unknown names), so a report can show them.
    pub fields: Vec<FieldValue>,
    /// Line number of the event's first field line.
    pub first_line: usize,
    /// Line number of the blank line that dispatched it.
    pub last_line: usize,
    /// Read index of the chunk holding the event's first byte.
    pub first_chunk: usize,
    /// Read index of the chunk holding the dispatching blank line's last byte.
    pub last_chunk: usize,
}

impl Event {
    /// The OpenAI-style end-of-stream sentinel that both vLLM servers send last.
    pub const DONE: &'static str = "[DONE]";

    pub fn is_done(&self) -> bool {
        self.data == Self::DONE
    }

    /// True when the event arrived in more than one chunk (normal for TCP).
    pub fn is_split(&self) -> bool {
        self.first_chunk != self.last_chunk
    }
}

/// Something lexically notable about the body. None of these make the
/// stream invalid by themselves; they explain why two servers' bytes differ
/// or why a stricter client might see something else.
///
/// Notes about things that repeat per line carry a count and the first line
/// number instead of one note per line, so a long stream stays readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// The body started with a UTF-8 byte order mark; the spec strips it.
    Bom,
    /// Lines ended with CR or CRLF instead of LF.
    LineEndings {
        ending: LineEnding,
        count: usize,
        first_line: usize,
    },
    /// Comment lines (`:...`).
    Comments {
        count: usize,
        first_line: usize,
        first_text: String,
    },
    /// `name:value` with no space after the colon.
    NoSpaceAfterColon {
        field: String,
        count: usize,
        first_line: usize,
    },
    /// A field line without any colon (`data` alone): name only, empty value.
    NoColon {
        field: String,
        count: usize,
        first_line: usize,
    },
    /// A field other than `data`; `known` is false for names the spec
    /// ignores (anything but `event`, `id`, `retry`).
    OtherField {
        field: String,
        known: bool,
        count: usize,
        first_line: usize,
    },
    /// An `id` value containing NUL; the spec ignores the whole field.
    IdWithNul { line: usize },
    /// A `retry` value that is not only ASCII digits (or does not fit in
    /// 64 bits); the spec ignores it.
    InvalidRetry { line: usize, value: String },
    /// Lines that are not valid UTF-8; decoded with U+FFFD as the spec says.
    InvalidUtf8 { count: usize, first_line: usize },
    /// The body's last line had no line ending; the spec discards it.
    UnterminatedLine { line: usize, text: String },
    /// Field lines after the last blank line: the event was never dispatched.
    UnterminatedEvent {
        first_line: usize,
        data_lines: usize,
    },
    /// Field lines followed by a blank line but no `data`: nothing dispatched.
    FieldsWithoutData {
        first_line: usize,
        blank_line: usize,
    },
    /// An event was dispatched with empty data (`data:` then a blank line).
    EmptyData { blank_line: usize },
    /// Bytes followed the blank line that dispatched the first `[DONE]`.
    BytesAfterDone { bytes: usize, first_line: usize },
    /// A second (or later) `[DONE]` event.
    RepeatedDone { blank_line: usize },
    /// Events that arrived in more than one chunk. Normal over TCP and not an
    /// error; worth knowing when chunk boundaries are compared.
    SplitEvents { count: usize, first_line: usize },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bom => f.write_str(
                "the body starts with a UTF-8 byte order mark (stripped, as the spec says)",
            ),
            Self::LineEndings {
                ending,
                count,
                first_line,
            } => write!(
                f,
                "{} ending in {ending} (first: line {first_line}); vLLM's servers end lines with LF",
                lines(*count)
            ),
            Self::Comments {
                count,
                first_line,
                first_text,
            } => write!(
                f,
                "{} (first: line {first_line}, `:{first_text}`); clients ignore comments",
                plural(*count, "comment line", "comment lines")
            ),
            Self::NoSpaceAfterColon {
                field,
                count,
                first_line,
            } => write!(
                f,
                "`{field}:` with no space before the value on {} (first: line {first_line}); the value starts right after the colon",
                lines(*count)
            ),
            Self::NoColon {
                field,
                count,
                first_line,
            } => write!(
                f,
                "`{field}` with no colon on {} (first: line {first_line}); a field with an empty value",
                lines(*count)
            ),
            Self::OtherField {
                field,
                known: true,
                count,
                first_line,
            } => write!(
                f,
                "`{field}` field on {} (first: line {first_line})",
                lines(*count)
            ),
            Self::OtherField {
                field,
                known: false,
                count,
                first_line,
            } => write!(
                f,
                "unknown field `{field}` on {} (first: line {first_line}); clients ignore it",
                lines(*count)
            ),
            Self::IdWithNul { line } => write!(
                f,
                "line {line}: `id` contains NUL, so the spec ignores the field"
            ),
            Self::InvalidRetry { line, value } => write!(
                f,
                "line {line}: `retry: {value}` is not a number of milliseconds in ASCII digits, so the spec ignores it"
            ),
            Self::InvalidUtf8 { count, first_line } => write!(
                f,
                "{} not valid UTF-8 (first: line {first_line}); decoded with U+FFFD replacement characters",
                lines(*count)
            ),
            Self::UnterminatedLine { line, text } => write!(
                f,
                "line {line} (`{text}`) has no line ending at the end of the body; the spec discards it"
            ),
            Self::UnterminatedEvent {
                first_line,
                data_lines,
            } => write!(
                f,
                "the body ends inside an event (from line {first_line}, {}) with no blank line after it; the spec discards it",
                plural(*data_lines, "data line", "data lines")
            ),
            Self::FieldsWithoutData {
                first_line,
                blank_line,
            } => write!(
                f,
                "lines {first_line}-{blank_line}: fields but no `data`, so no event was dispatched"
            ),
            Self::EmptyData { blank_line } => write!(
                f,
                "line {blank_line}: an event with empty data was dispatched"
            ),
            Self::BytesAfterDone { bytes, first_line } => write!(
                f,
                "{} after the `[DONE]` event (from line {first_line})",
                plural(*bytes, "byte", "bytes")
            ),
            Self::RepeatedDone { blank_line } => write!(
                f,
                "line {blank_line}: another `[DONE]` event; a server should send exactly one"
            ),
            Self::SplitEvents { count, first_line } => write!(
                f,
                "{} arrived in more than one chunk (first: the one from line {first_line}); normal over TCP, not an error",
                plural(*count, "event", "events")
            ),
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn lines(n: usize) -> String {
    plural(n, "line", "lines")
}

/// The lexed body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LexedBody {
    pub lines: Vec<Line>,
    pub events: Vec<Event>,
    pub notes: Vec<Note>,
    /// Total number of bytes in the body.
    pub body_len: usize,
    /// Number of chunks the body arrived in (empty chunks included).
    pub chunk_count: usize,
}

impl LexedBody {
    /// The data of every dispatched event, in order.
    pub fn data(&self) -> Vec<String> {
        self.events.iter().map(|e| e.data.clone()).collect()
    }

    /// Every note as the sentence a report shows.
    pub fn note_lines(&self) -> Vec<String> {
        self.notes.iter().map(ToString::to_string).collect()
    }

    /// The notes that do not depend on where the body was split into chunks.
    pub fn notes_ignoring_chunks(&self) -> impl Iterator<Item = &Note> {
        self.notes
            .iter()
            .filter(|n| !matches!(n, Note::SplitEvents { .. }))
    }
}
