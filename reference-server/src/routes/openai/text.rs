//! The text output pipeline: generated token ids in, the text a client sees
//! out, with stop strings applied.
//!
//! Like vllm-rs, the incremental detokenizer is primed with the prompt, so the
//! first generated word comes out with the space that joins it to the prompt
//! (`" t33"`), and a character split over byte tokens comes out whole, once.
//! Stop strings are looked for in the text decoded so far (only once
//! `min_tokens` are out); on a match the text is cut before the stop string
//! (after it with `include_stop_str_in_output`) and the request finishes with
//! that string as its `stop_reason`. While stop strings may still match, a
//! stream holds back the last `longest stop string - 1` *bytes* (vllm-rs
//! measures stop strings in bytes: `["€"]` holds back two), so it never sends
//! text it would have to take back; the cut is moved back to a character
//! boundary. When the request finishes with a character still incomplete,
//! its bytes come out as `�` (vllm-rs flushes its decoder the same way).

use model::{Detokenizer, Tokenizer};

use crate::error::ApiError;

/// What the pipeline needs from the request.
#[derive(Debug, Clone, Default)]
pub struct TextOptions {
    pub skip_special_tokens: bool,
    /// Stop strings, in the request's order (the first one found wins).
    pub stop: Vec<String>,
    pub include_stop_str_in_output: bool,
    /// Stop strings are not looked for until this many tokens are out.
    pub min_tokens: u32,
}

/// The decoded text of one request, growing token by token.
pub struct TextPipeline {
    detokenizer: Detokenizer<'static>,
    options: TextOptions,
    /// Everything decoded and kept (after a stop string cut) so far.
    text: String,
    /// How much of `text` has been handed out.
    sent: usize,
    tokens_out: u32,
    /// Bytes kept back from a stream while a stop string may still match.
    hold_back: usize,
    stopped: bool,
}

/// The stop string that ended the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopMatch(pub String);

impl TextPipeline {
    /// A pipeline whose decoder has already seen `prompt`.
    pub fn new(
        tokenizer: &'static Tokenizer,
        prompt: &[u32],
        options: TextOptions,
    ) -> Result<Self, ApiError> {
        let detokenizer = tokenizer.detokenizer(prompt, options.skip_special_tokens);
        let hold_back = match options.include_stop_str_in_output {
            true => 0,
            false => options
                .stop
                .iter()
                .map(String::len)
                .max()
                .map_or(0, |longest| longest.saturating_sub(1)),
        };
        Ok(Self {
            detokenizer,
            options,
            text: String::new(),
            sent: 0,
            tokens_out: 0,
            hold_back,
            stopped: false,
        })
    }

    /// Decodes `ids`; `Some` when a stop string matched (the text is cut
    /// there, and later ids are not decoded).
    pub fn push(&mut self, ids: &[u32]) -> Result<Option<StopMatch>, ApiError> {
        for &id in ids {
            if self.stopped {
                break;
            }
            self.tokens_out += 1;
            let before = self.text.len();
            if let Some(piece) = self.detokenizer.step(id).map_err(detokenize_error)? {
                self.text.push_str(&piece);
            }
            if self.tokens_out > self.options.min_tokens
                && let Some(stop) = self.find_stop(before)
            {
                self.stopped = true;
                return Ok(Some(stop));
            }
        }
        Ok(None)
    }

    /// Looks for a stop string that ends in the text added after `before`;
    /// cuts the text at it. Of several, the one that starts first wins,
    /// whatever their order in `stop` (both frontends, seen in
    /// `completions_two_stop_strings_earliest_wins`).
    fn find_stop(&mut self, before: usize) -> Option<StopMatch> {
        if self.text.len() == before {
            return None;
        }
        let mut first: Option<(usize, &String)> = None;
        for stop in &self.options.stop {
            // A match that ends in the new text starts at most len(stop)-1 bytes before it.
            let mut from = before.saturating_sub(stop.len().saturating_sub(1));
            while !self.text.is_char_boundary(from) {
                from -= 1;
            }
            if let Some(at) = self.text[from..].find(stop.as_str())
                && first.is_none_or(|(start, _)| from + at < start)
            {
                first = Some((from + at, stop));
            }
        }
        let (start, stop) = first?;
        let stop = stop.clone();
        let end = if self.options.include_stop_str_in_output {
            start + stop.len()
        } else {
            start
        };
        self.text.truncate(end);
        self.sent = self.sent.min(end);
        Some(StopMatch(stop))
    }

    /// Ends the text of a request the engine finished: ids still waiting
    /// for the rest of a character are decoded as they are (`�`), as
    /// vllm-rs's final flush does. Nothing changes after a stop string (the
    /// text was cut before them).
    pub fn flush(&mut self) -> Result<(), ApiError> {
        if self.stopped {
            return Ok(());
        }
        if let Some(rest) = self.detokenizer.flush().map_err(detokenize_error)? {
            self.text.push_str(&rest);
        }
        Ok(())
    }

    /// The text not handed out yet: all of it once `finished`, else all but
    /// the bytes a stop string might still claim.
    pub fn take_delta(&mut self, finished: bool) -> String {
        let mut end = self.text.len();
        if !finished && !self.stopped && self.hold_back > 0 {
            end = end.saturating_sub(self.hold_back);
            while !self.text.is_char_boundary(end) {
                end -= 1;
            }
            end = end.max(self.sent);
        }
        let delta = self.text[self.sent..end].to_string();
        self.sent = end;
        delta
    }

    /// How many generated tokens have been decoded (none after a stop
    /// string matched).
    pub fn tokens_out(&self) -> u32 {
        self.tokens_out
    }

    /// Everything decoded and kept so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}

fn detokenize_error(e: model::TokenizerError) -> ApiError {
    ApiError::server_error(format!("detokenization failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::vocabulary::byte_tokens;

    fn pipeline(stop: &[&str], include: bool) -> TextPipeline {
        let options = TextOptions {
            skip_special_tokens: true,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            include_stop_str_in_output: include,
            min_tokens: 0,
        };
        TextPipeline::new(Tokenizer::shared_built_in(), &[5, 7], options).unwrap()
    }

    #[test]
    fn primed_with_the_prompt_and_whole_characters_only() {
        let mut p = pipeline(&[], false);
        p.push(&[33]).unwrap();
        assert_eq!(p.take_delta(false), " t33");
        let e = byte_tokens("é");
        p.push(&e[..1]).unwrap();
        assert_eq!(p.take_delta(false), "");
        p.push(&e[1..]).unwrap();
        assert_eq!(p.take_delta(false), " é");
    }

    #[test]
    fn a_stop_string_spanning_two_tokens_cuts_the_text() {
        let mut p = pipeline(&["t34 t35"], false);
        assert_eq!(p.push(&[33, 34]).unwrap(), None);
        // " t33 t34" minus the 6 characters the stop string could still claim.
        assert_eq!(p.take_delta(false), " t");
        assert_eq!(
            p.push(&[35, 36]).unwrap(),
            Some(StopMatch("t34 t35".into()))
        );
        assert_eq!(p.take_delta(true), "33 ");
        assert_eq!(p.text(), " t33 ");
    }

    #[test]
    fn hold_back_is_bytes_cut_back_to_a_character() {
        // "€" is 3 bytes: hold back 2.
        let mut p = pipeline(&["€"], false);
        p.push(&[33]).unwrap();
        assert_eq!(p.take_delta(false), " t");
        // "éé" is 4 bytes: hold back 3, which is inside the "é" of " t33 é",
        // so the cut moves back to before it.
        let mut p = pipeline(&["éé"], false);
        p.push(&[33]).unwrap();
        p.push(&byte_tokens("é")).unwrap();
        assert_eq!(p.take_delta(false), " t33");
    }

    #[test]
    fn flush_lets_out_an_incomplete_character() {
        let mut p = pipeline(&[], false);
        p.push(&[33]).unwrap();
        p.push(&byte_tokens("é")[..1]).unwrap();
        assert_eq!(p.take_delta(false), " t33");
        p.flush().unwrap();
        assert_eq!(p.take_delta(true), " \u{FFFD}");
    }

    #[test]
    fn include_stop_str_in_output_keeps_it_and_holds_nothing_back() {
        let mut p = pipeline(&["t34 t35"], true);
        p.push(&[33, 34]).unwrap();
        assert_eq!(p.take_delta(false), " t33 t34");
        assert!(p.push(&[35]).unwrap().is_some());
        assert_eq!(p.take_delta(true), " t35");
    }
}
