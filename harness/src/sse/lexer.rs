//! The WHATWG "event stream interpretation" rules, applied to a whole body.
//!
//! The body is lexed after it has been fully read: the spec's streaming
//! algorithm gives the same lines no matter where the bytes were split, so
//! lexing the concatenation and mapping offsets back to chunks is both exact
//! and much harder to get wrong than a resumable state machine.

use std::collections::HashMap;

use super::lexed::{Event, FieldValue, LexedBody, Line, LineEnding, LineKind, Note, Separator};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Lex a body given as the chunks it arrived in (each slice element is one
/// read, its index the read index). Never panics, whatever the bytes.
///
/// ```
/// use harness::sse::{lex, LineEnding, Note};
///
/// let chunks: [&[u8]; 2] = [b"data: {\"a\":", b"1}\n\ndata: [DONE]\n\n"];
/// let t = lex(&chunks);
/// assert_eq!(t.data(), ["{\"a\":1}", "[DONE]"]);
/// assert_eq!(t.lines[0].ending, LineEnding::Lf);
/// assert!(t.events[0].is_split());
/// assert_eq!(t.notes, [Note::SplitEvents { count: 1, first_line: 1 }]);
/// ```
pub fn lex<C: AsRef<[u8]>>(chunks: &[C]) -> LexedBody {
    let mut body = Vec::new();
    // Exclusive end offset of every chunk; non-decreasing, so a binary
    // search maps a byte offset back to the read it came in.
    let mut chunk_ends = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        body.extend_from_slice(chunk.as_ref());
        chunk_ends.push(body.len());
    }
    let mut lexer = Lexer::new(&body, chunk_ends);
    lexer.run();
    lexer.finish()
}

/// Field lines seen since the last blank line: the event being built.
#[derive(Default)]
struct Pending {
    first_line: Option<usize>,
    first_offset: usize,
    data: String,
    data_lines: usize,
    event_type: String,
    retry: Option<u64>,
    fields: Vec<FieldValue>,
}

/// Keys for notes that are counted rather than repeated per line.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Tally {
    Ending(LineEnding),
    Comments,
    NoSpace(String),
    NoColon(String),
    Other(String),
    Utf8,
    Split,
}

struct Lexer<'a> {
    body: &'a [u8],
    chunk_ends: Vec<usize>,
    lines: Vec<Line>,
    events: Vec<Event>,
    notes: Vec<Note>,
    tallies: HashMap<Tally, usize>,
    pending: Pending,
    /// The spec's "last event ID buffer": it survives dispatch.
    last_event_id: Option<String>,
    /// Offset just after the blank line that dispatched the first `[DONE]`.
    done_end: Option<usize>,
}

impl<'a> Lexer<'a> {
    fn new(body: &'a [u8], chunk_ends: Vec<usize>) -> Self {
        Self {
            body,
            chunk_ends,
            lines: Vec::new(),
            events: Vec::new(),
            notes: Vec::new(),
            tallies: HashMap::new(),
            pending: Pending::default(),
            last_event_id: None,
            done_end: None,
        }
    }

    /// Read index of the chunk holding byte `offset`. Empty chunks hold no
    /// byte, so they are never the answer.
    fn chunk_of(&self, offset: usize) -> usize {
        self.chunk_ends.partition_point(|&end| end <= offset)
    }

    fn run(&mut self) {
        let mut pos = 0;
        if self.body.starts_with(BOM) {
            // Only one BOM, only at the very start: a second one is part of
            // the first line, as in the spec's UTF-8 decode.
            pos = BOM.len();
            self.notes.push(Note::Bom);
        }
        while pos < self.body.len() {
            let rest = &self.body[pos..];
            let (content_len, ending, ending_len) =
                match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                    None => (rest.len(), LineEnding::None, 0),
                    Some(i) if rest[i] == b'\n' => (i, LineEnding::Lf, 1),
                    // A CR at the very end of the body is a complete line
                    // ending: the grammar's `cr` alone is an end-of-line.
                    Some(i) if rest.get(i + 1) == Some(&b'\n') => (i, LineEnding::CrLf, 2),
                    Some(i) => (i, LineEnding::Cr, 1),
                };
            let end = pos + content_len + ending_len;
            self.line(pos, content_len, ending, end);
            pos = end;
        }
        self.end_of_body();
    }

    fn line(&mut self, offset: usize, content_len: usize, ending: LineEnding, end: usize) {
        let number = self.lines.len() + 1;
        let raw = &self.body[offset..offset + content_len];
        let text = String::from_utf8_lossy(raw).into_owned();
        if std::str::from_utf8(raw).is_err() {
            self.tally(Tally::Utf8, number);
        }
        if matches!(ending, LineEnding::Cr | LineEnding::CrLf) {
            self.tally(Tally::Ending(ending), number);
        }
        let kind = classify(&text);
        let line = Line {
            number,
            offset,
            text,
            raw: raw.to_vec(),
            ending,
            kind,
            first_chunk: self.chunk_of(offset),
            last_chunk: self.chunk_of(end - 1),
        };
        let kind = line.kind.clone();
        self.lines.push(line);
        if ending == LineEnding::None {
            // Not a line in the stream's grammar: only `end_of_body` looks
            // at it, to explain what was lost.
            return;
        }
        match kind {
            LineKind::Blank => self.dispatch(number, end),
            LineKind::Comment { text } => {
                let new = self.tally(Tally::Comments, number);
                if let Some(Note::Comments { first_text, .. }) = new.map(|i| &mut self.notes[i]) {
                    *first_text = text;
                }
            }
            LineKind::Field {
                name,
                value,
                separator,
            } => self.field(number, offset, name, value, separator),
        }
    }

    fn field(&mut self, number: usize, offset: usize, name: String, value: String, sep: Separator) {
        match sep {
            Separator::ColonSpace => {}
            Separator::Colon => {
                self.tally(Tally::NoSpace(name.clone()), number);
            }
            Separator::NoColon => {
                self.tally(Tally::NoColon(name.clone()), number);
            }
        }
        if self.pending.first_line.is_none() {
            self.pending.first_line = Some(number);
            self.pending.first_offset = offset;
        }
        if name == "data" {
            self.pending.data.push_str(&value);
            self.pending.data.push('\n');
            self.pending.data_lines += 1;
            return;
        }
        self.tally(Tally::Other(name.clone()), number);
        match name.as_str() {
            "event" => self.pending.event_type = value.clone(),
            "id" if value.contains('\0') => self.notes.push(Note::IdWithNul { line: number }),
            "id" => self.last_event_id = Some(value.clone()),
            "retry" => match parse_retry(&value) {
                Some(ms) => self.pending.retry = Some(ms),
                None => self.notes.push(Note::InvalidRetry {
                    line: number,
                    value: value.clone(),
                }),
            },
            _ => {}
        }
        self.pending.fields.push(FieldValue { name, value });
    }

    fn dispatch(&mut self, blank_line: usize, end: usize) {
        let pending = std::mem::take(&mut self.pending);
        let Some(first_line) = pending.first_line else {
            // A blank line with nothing before it (a keep-alive, or the
            // second blank of a pair): nothing to dispatch, nothing to note.
            return;
        };
        if pending.data.is_empty() {
            self.notes.push(Note::FieldsWithoutData {
                first_line,
                blank_line,
            });
            return;
        }
        let mut data = pending.data;
        data.pop(); // the spec removes exactly one trailing LF
        let event_type = if pending.event_type.is_empty() {
            "message".to_owned()
        } else {
            pending.event_type
        };
        let event = Event {
            event_type,
            data,
            id: self.last_event_id.clone(),
            retry: pending.retry,
            fields: pending.fields,
            first_line,
            last_line: blank_line,
            first_chunk: self.chunk_of(pending.first_offset),
            last_chunk: self.chunk_of(end - 1),
        };
        if event.data.is_empty() {
            self.notes.push(Note::EmptyData { blank_line });
        }
        if event.is_split() {
            self.tally(Tally::Split, first_line);
        }
        if event.is_done() {
            if self.done_end.is_some() {
                self.notes.push(Note::RepeatedDone { blank_line });
            } else {
                self.done_end = Some(end);
            }
        }
        self.events.push(event);
    }

    fn end_of_body(&mut self) {
        if let Some(last) = self.lines.last().filter(|l| l.ending == LineEnding::None) {
            let (line, text) = (last.number, last.text.clone());
            let unterminated_field = match &last.kind {
                LineKind::Field { name, .. } => Some(name == "data"),
                _ => None,
            };
            self.notes.push(Note::UnterminatedLine { line, text });
            if let Some(is_data) = unterminated_field {
                self.pending.first_line.get_or_insert(line);
                self.pending.data_lines += usize::from(is_data);
            }
        }
        if let Some(first_line) = self.pending.first_line {
            self.notes.push(Note::UnterminatedEvent {
                first_line,
                data_lines: self.pending.data_lines,
            });
        }
        if let Some(done_end) = self.done_end.filter(|&e| e < self.body.len()) {
            // Lines start at the offsets we cut them at, so the line that
            // starts at `done_end` exists.
            let first_line = self
                .lines
                .iter()
                .find(|l| l.offset >= done_end)
                .map_or(self.lines.len(), |l| l.number);
            self.notes.push(Note::BytesAfterDone {
                bytes: self.body.len() - done_end,
                first_line,
            });
        }
    }

    /// Count one more occurrence; returns the note's index when it is new.
    fn tally(&mut self, key: Tally, line: usize) -> Option<usize> {
        if let Some(&i) = self.tallies.get(&key) {
            bump(&mut self.notes[i]);
            return None;
        }
        let note = match &key {
            Tally::Ending(ending) => Note::LineEndings {
                ending: *ending,
                count: 1,
                first_line: line,
            },
            Tally::Comments => Note::Comments {
                count: 1,
                first_line: line,
                first_text: String::new(),
            },
            Tally::NoSpace(field) => Note::NoSpaceAfterColon {
                field: field.clone(),
                count: 1,
                first_line: line,
            },
            Tally::NoColon(field) => Note::NoColon {
                field: field.clone(),
                count: 1,
                first_line: line,
            },
            Tally::Other(field) => Note::OtherField {
                field: field.clone(),
                known: matches!(field.as_str(), "event" | "id" | "retry"),
                count: 1,
                first_line: line,
            },
            Tally::Utf8 => Note::InvalidUtf8 {
                count: 1,
                first_line: line,
            },
            Tally::Split => Note::SplitEvents {
                count: 1,
                first_line: line,
            },
        };
        self.notes.push(note);
        self.tallies.insert(key, self.notes.len() - 1);
        Some(self.notes.len() - 1)
    }

    fn finish(self) -> LexedBody {
        LexedBody {
            lines: self.lines,
            events: self.events,
            notes: self.notes,
            body_len: self.body.len(),
            chunk_count: self.chunk_ends.len(),
        }
    }
}

fn bump(note: &mut Note) {
    match note {
        Note::LineEndings { count, .. }
        | Note::Comments { count, .. }
        | Note::NoSpaceAfterColon { count, .. }
        | Note::NoColon { count, .. }
        | Note::OtherField { count, .. }
        | Note::InvalidUtf8 { count, .. }
        | Note::SplitEvents { count, .. } => *count += 1,
        _ => {}
    }
}

/// Split a line (already decoded) into its grammatical kind.
fn classify(text: &str) -> LineKind {
    if text.is_empty() {
        return LineKind::Blank;
    }
    if let Some(comment) = text.strip_prefix(':') {
        return LineKind::Comment {
            text: comment.to_owned(),
        };
    }
    match text.split_once(':') {
        None => LineKind::Field {
            name: text.to_owned(),
            value: String::new(),
            separator: Separator::NoColon,
        },
        Some((name, value)) => {
            let (value, separator) = match value.strip_prefix(' ') {
                Some(v) => (v, Separator::ColonSpace),
                None => (value, Separator::Colon),
            };
            LineKind::Field {
                name: name.to_owned(),
                value: value.to_owned(),
                separator,
            }
        }
    }
}

/// The spec accepts only ASCII digits; `str::parse` would also take `+5`.
fn parse_retry(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}
