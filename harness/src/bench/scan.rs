//! Counting what a token stream (generate, completions, chat) delivers, at
//! the speed it arrives.
//!
//! The conformance path lexes every byte ([`crate::sse::lex`]) and parses
//! every event as JSON; at hundreds of thousands of events a second that
//! would make the client the bottleneck. The bench needs less: where events
//! end, how many token ids each carries, whether one is `[DONE]` or an
//! error. Lines are found with `memchr`, token ids by counting the commas of
//! the `"token_ids"` array. A completions or chat chunk without token ids (a
//! frontend that ignores `return_token_ids`) counts as one token when it
//! carries text (`"text"` or `"content"` not empty), so progress still shows.
//!
//! ```
//! use harness::bench::scan::{SseScanner, StreamEvent};
//!
//! let mut events = Vec::new();
//! let mut scanner = SseScanner::default();
//! scanner.feed(b"data: {\"choices\":[{\"token_ids\":[5,6]}]}\n\nda", |e| events.push(e));
//! scanner.feed(b"ta: [DONE]\n\n", |e| events.push(e));
//! assert_eq!(events, [StreamEvent { tokens: 2, done: false, error: false },
//!                     StreamEvent { tokens: 0, done: true, error: false }]);
//! ```

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// One dispatched SSE event, as the bench sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamEvent {
    pub tokens: u32,
    pub done: bool,
    pub error: bool,
}

/// Splits an event stream into events across arbitrary read boundaries.
#[derive(Debug, Default)]
pub struct SseScanner {
    /// The start of a line that the last read cut.
    partial: Vec<u8>,
    current: StreamEvent,
    has_data: bool,
}

impl SseScanner {
    pub fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(StreamEvent)) {
        while let Some(nl) = memchr::memchr(b'\n', bytes) {
            let (line, rest) = bytes.split_at(nl);
            bytes = &rest[1..];
            if self.partial.is_empty() {
                self.line(line, &mut on_event);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole, &mut on_event);
                whole.clear();
                self.partial = whole;
            }
        }
        self.partial.extend_from_slice(bytes);
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(StreamEvent)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                on_event(std::mem::take(&mut self.current));
            }
            return;
        }
        let Some(data) = line.strip_prefix(b"data:") else {
            // Comments, `event:`, `id:`: not data, no event of their own.
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        self.has_data = true;
        if data == b"[DONE]" {
            self.current.done = true;
        } else if data.starts_with(b"{\"error\"") {
            self.current.error = true;
        } else {
            self.current.tokens +=
                count_token_ids(data).unwrap_or_else(|| u32::from(carries_text(data)));
        }
    }
}

static TEXT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"text\":\""));
static CONTENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content\":\""));

/// Whether a completions chunk's `text` or a chat chunk's `delta.content`
/// holds a non-empty string (compact JSON, as the frontends write it).
pub fn carries_text(json: &[u8]) -> bool {
    [&*TEXT, &*CONTENT].into_iter().any(|key| {
        let mut from = 0;
        while let Some(at) = key.find(&json[from..]) {
            let value = from + at + key.needle().len();
            if json.get(value).is_some_and(|&b| b != b'"') {
                return true;
            }
            from = value;
        }
        false
    })
}

static TOKEN_IDS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"token_ids\""));

/// The number of elements of the first `"token_ids"` array in `json`
/// (`prompt_token_ids` does not match: its key is not `"token_ids"`).
pub fn count_token_ids(json: &[u8]) -> Option<u32> {
    let at = TOKEN_IDS.find(json)? + b"\"token_ids\"".len();
    let rest = &json[at..];
    let colon = rest.iter().position(|&b| !b.is_ascii_whitespace())?;
    let rest = rest[colon..].strip_prefix(b":")?;
    let open = rest.iter().position(|&b| !b.is_ascii_whitespace())?;
    let rest = rest[open..].strip_prefix(b"[")?;
    let close = memchr::memchr(b']', rest)?;
    let inside = &rest[..close];
    if inside.iter().all(u8::is_ascii_whitespace) {
        return Some(0);
    }
    Some(memchr::memchr_iter(b',', inside).count() as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(body: &[u8], piece: usize) -> Vec<StreamEvent> {
        let mut scanner = SseScanner::default();
        let mut events = Vec::new();
        for part in body.chunks(piece) {
            scanner.feed(part, |e| events.push(e));
        }
        events
    }

    #[test]
    fn counts_tokens_and_ends_across_any_split() {
        let body = b": comment\n\ndata: {\"choices\":[{\"index\":0,\"token_ids\":[1,2,3]}],\"prompt_token_ids\":[9,9,9,9]}\r\n\r\n\
data: {\"choices\":[{\"token_ids\": [ 4 ]}]}\n\n\
data: {\"choices\":[],\"usage\":{\"completion_tokens\":4}}\n\n\
data: {\"error\":{\"message\":\"boom\"}}\n\n\
data: [DONE]\n\n";
        let want = [
            StreamEvent {
                tokens: 3,
                ..Default::default()
            },
            StreamEvent {
                tokens: 1,
                ..Default::default()
            },
            StreamEvent::default(),
            StreamEvent {
                error: true,
                ..Default::default()
            },
            StreamEvent {
                done: true,
                ..Default::default()
            },
        ];
        for piece in [1, 2, 5, 13, body.len()] {
            assert_eq!(scan_in_pieces(body, piece), want, "piece size {piece}");
        }
    }

    #[test]
    fn text_chunks_without_token_ids_count_once() {
        let body = b"data: {\"choices\":[{\"index\":0,\"text\":\" t33\",\"logprobs\":null}]}\n\n\
data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"\\u00e9\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"token_ids\":[4035,4009]}]}\n\n";
        let tokens: Vec<u32> = scan_in_pieces(body, 7).iter().map(|e| e.tokens).collect();
        assert_eq!(tokens, [1, 0, 1, 2]);
        assert!(!carries_text(br#"{"text":"","content":null}"#));
    }

    #[test]
    fn token_id_arrays() {
        assert_eq!(count_token_ids(br#"{"token_ids":[]}"#), Some(0));
        assert_eq!(count_token_ids(br#"{"token_ids" : [7, 8]}"#), Some(2));
        assert_eq!(count_token_ids(br#"{"prompt_token_ids":[1]}"#), None);
        assert_eq!(count_token_ids(br#"{"token_ids":null}"#), None);
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        assert!(scan_in_pieces(b"data: [DONE]\n", 4).is_empty());
    }
}
