//! Weight-version spans: which weights sampled which output tokens, reported
//! on a finished choice as `weight_versions`.
//!
//! As vLLM 0.32.0 does it (`RequestState.track_weight_version` and
//! `_weight_version_spans` in `vllm/v1/engine/output_processor.py`, followed by
//! vllm-rs): an engine output with new tokens and a weight version opens a span
//! when the version differs from the last one; a finished choice gets the spans,
//! each ending where the next starts and the last at the number of output
//! tokens. No tokens at all gives no spans (`[]`); tokens none of which came
//! with a version give `null`.

use serde::Serialize;

/// Output tokens `start..end` were sampled by the weights labelled `version`.
/// Fields in vLLM's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WeightVersionSpan {
    pub version: &'static str,
    pub start: usize,
    pub end: usize,
}

/// The spans of one request so far, fed with every engine output.
#[derive(Debug, Clone, Default)]
pub struct WeightVersions {
    /// Each version change: the version and the output token it starts at.
    starts: Vec<(&'static str, usize)>,
    output_tokens: usize,
}

impl WeightVersions {
    /// One engine output: `new_tokens` tokens sampled by `version` (`None`:
    /// the engine said nothing about its weights).
    pub fn observe(&mut self, version: Option<&'static str>, new_tokens: usize) {
        if new_tokens > 0
            && let Some(version) = version
            && self.starts.last().is_none_or(|&(last, _)| last != version)
        {
            self.starts.push((version, self.output_tokens));
        }
        self.output_tokens += new_tokens;
    }

    /// The spans over every output token observed, for a finished choice.
    pub fn spans(&self) -> Option<Vec<WeightVersionSpan>> {
        if self.starts.is_empty() && self.output_tokens > 0 {
            // No label was reported for these tokens.
            return None;
        }
        let ends = self
            .starts
            .iter()
            .skip(1)
            .map(|&(_, start)| start)
            .chain([self.output_tokens]);
        Some(
            self.starts
                .iter()
                .zip(ends)
                .map(|(&(version, start), end)| WeightVersionSpan {
                    version,
                    start,
                    end,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(version: &'static str, start: usize, end: usize) -> WeightVersionSpan {
        WeightVersionSpan {
            version,
            start,
            end,
        }
    }

    #[test]
    fn one_version_spans_every_token_including_a_finish_only_last_step() {
        let mut w = WeightVersions::default();
        w.observe(Some("default"), 0);
        w.observe(Some("default"), 2);
        w.observe(Some("default"), 1);
        w.observe(Some("default"), 0);
        assert_eq!(w.spans(), Some(vec![span("default", 0, 3)]));
    }

    #[test]
    fn no_tokens_is_no_spans_and_unlabelled_tokens_are_null() {
        let mut w = WeightVersions::default();
        w.observe(Some("default"), 0);
        assert_eq!(w.spans(), Some(vec![]));
        let mut unlabelled = WeightVersions::default();
        unlabelled.observe(None, 2);
        assert_eq!(unlabelled.spans(), None);
    }

    #[test]
    fn a_version_change_opens_a_span_where_its_tokens_start() {
        let mut w = WeightVersions::default();
        w.observe(Some("a"), 2);
        w.observe(None, 1);
        w.observe(Some("b"), 1);
        w.observe(Some("b"), 0);
        w.observe(Some("a"), 2);
        assert_eq!(
            w.spans(),
            Some(vec![span("a", 0, 3), span("b", 3, 4), span("a", 4, 6)])
        );
    }

    #[test]
    fn spans_serialise_in_vllm_key_order() {
        assert_eq!(
            serde_json::to_string(&span("default", 0, 16)).unwrap(),
            r#"{"version":"default","start":0,"end":16}"#
        );
    }
}
