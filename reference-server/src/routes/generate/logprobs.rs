//! Logprobs on the generate wire: integer token ids, no token strings.
//!
//! Output logprobs: `{"content": [{token_id, logprob, rank, top_logprobs: [...]}]}`,
//! one entry per generated token. The engine lists the sampled token first, then
//! the candidates in rank order; a candidate can repeat the sampled token, and the
//! wire lists each token id once (vLLM keeps them in a map keyed by token id).

use std::collections::HashSet;

use mock_engine::script::LogprobEntry;
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::error::ApiError;
use crate::routes::logprob::clamp;

/// Rank 0 is what the engine reports for a NaN sampled logprob: not a rank.
fn wire_rank(rank: u32) -> Option<u32> {
    (rank != 0).then_some(rank)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateLogProbs {
    pub content: Vec<GenerateLogProbsContent>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateLogProb {
    pub token_id: u32,
    pub logprob: f32,
    pub rank: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateLogProbsContent {
    pub token_id: u32,
    pub logprob: f32,
    pub rank: Option<u32>,
    pub top_logprobs: Vec<GenerateLogProb>,
}

impl From<&LogprobEntry> for GenerateLogProb {
    fn from(e: &LogprobEntry) -> Self {
        Self {
            token_id: e.token_id,
            logprob: clamp(e.logprob),
            rank: wire_rank(e.rank),
        }
    }
}

impl GenerateLogProbsContent {
    /// One position; `requested` is `sampling_params.logprobs` (-1: all candidates,
    /// 0: the sampled token only). `None` for a position without any entry.
    pub fn from_entries(entries: &[LogprobEntry], requested: i32) -> Option<Self> {
        let sampled = entries.first()?;
        let keep = if requested < 0 {
            usize::MAX
        } else {
            (requested as usize).max(1)
        };
        let mut seen = HashSet::new();
        let top_logprobs = entries
            .iter()
            .filter(|e| seen.insert(e.token_id))
            .take(keep)
            .map(GenerateLogProb::from)
            .collect();
        Some(Self {
            token_id: sampled.token_id,
            logprob: clamp(sampled.logprob),
            rank: wire_rank(sampled.rank),
            top_logprobs,
        })
    }
}

/// Builds the output logprobs of a choice from engine positions.
pub fn output_logprobs(
    positions: &[Vec<LogprobEntry>],
    requested: i32,
) -> Option<GenerateLogProbs> {
    positions
        .iter()
        .map(|p| GenerateLogProbsContent::from_entries(p, requested))
        .collect::<Option<Vec<_>>>()
        .map(|content| GenerateLogProbs { content })
}

/// vllm-rs's answer when an engine position to report has no candidate at all.
pub fn no_candidates() -> ApiError {
    ApiError::server_error("raw generate logprobs position unexpectedly had no token candidates")
}

/// `prompt_logprobs`: `null` for the first prompt position (nothing predicts it),
/// then per position a map from token id to `{logprob, rank, decoded_token}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptLogprobs(pub Vec<Option<Vec<LogprobEntry>>>);

#[derive(Serialize)]
struct PromptLogprob {
    logprob: f32,
    rank: Option<u32>,
    decoded_token: String,
}

struct PositionMap<'a>(&'a [LogprobEntry]);

impl Serialize for PositionMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seen = HashSet::new();
        let unique: Vec<_> = self.0.iter().filter(|e| seen.insert(e.token_id)).collect();
        let mut map = s.serialize_map(Some(unique.len()))?;
        for e in unique {
            map.serialize_entry(
                &e.token_id.to_string(),
                &PromptLogprob {
                    logprob: clamp(e.logprob),
                    rank: wire_rank(e.rank),
                    decoded_token: format!("token_id:{}", e.token_id),
                },
            )?;
        }
        map.end()
    }
}

impl Serialize for PromptLogprobs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|p| p.as_deref().map(PositionMap)))
    }
}

impl PromptLogprobs {
    pub fn from_positions(positions: &[Vec<LogprobEntry>]) -> Self {
        Self(
            std::iter::once(None)
                .chain(positions.iter().cloned().map(Some))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(token_id: u32, logprob: f32, rank: u32) -> LogprobEntry {
        LogprobEntry {
            token_id,
            logprob,
            rank,
        }
    }

    #[test]
    fn sampled_first_candidates_once_and_at_most_requested() {
        let entries = [
            entry(7, -0.5, 1),
            entry(7, -0.5, 1),
            entry(9, f32::NEG_INFINITY, 2),
            entry(3, -3.0, 3),
        ];
        let c = GenerateLogProbsContent::from_entries(&entries, 2).unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"token_id":7,"logprob":-0.5,"rank":1,"top_logprobs":[{"token_id":7,"logprob":-0.5,"rank":1},{"token_id":9,"logprob":-9999.0,"rank":2}]}"#
        );
        let zero = GenerateLogProbsContent::from_entries(&entries, 0).unwrap();
        assert_eq!(zero.top_logprobs.len(), 1);
        let all = GenerateLogProbsContent::from_entries(&entries, -1).unwrap();
        assert_eq!(all.top_logprobs.len(), 3);
    }

    #[test]
    fn nan_sampled_logprob_has_no_rank() {
        let c = GenerateLogProbsContent::from_entries(&[entry(1, f32::NAN, 0)], 1).unwrap();
        assert_eq!((c.logprob, c.rank), (-9999.0, None));
    }

    #[test]
    fn prompt_logprobs_start_with_null() {
        let p = PromptLogprobs::from_positions(&[vec![entry(5, -1.0, 2)]]);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"[null,{"5":{"logprob":-1.0,"rank":2,"decoded_token":"token_id:5"}}]"#
        );
    }
}
