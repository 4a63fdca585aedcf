//! The fidelity of the mock engine, measured: every recorded fixture is
//! replayed through the mock engine behind the frontend that recorded it,
//! and the replay's transcript is compared with the recording's.
//!
//! Chunk boundaries are compared too, whatever the pacing: the replay sends
//! the recorded steps, so a frontend that sends one chunk per engine output
//! must give the same chunks. Where a frontend merges steps by timing, the
//! registry says so.

use mock_engine::LoadedFixture;

use super::{RecordArgs, Recording, corpus_of};
use crate::capture::CaptureLimits;
use crate::diff::{self, Difference, Kind, Layer};
use crate::divergence::facts::CaseFacts;
use crate::divergence::{Compared, Registry};
use crate::normalize::{Body, Transcript};
use crate::run::{self, RunOptions};
use crate::stream_summary::StreamSummary;
use crate::targets::TargetSpec;
use crate::vllm::Frontend;

/// One replay, judged.
#[derive(Debug)]
pub struct Replay {
    pub fixture: String,
    /// Why the replay produced no transcript, if it did not.
    pub error: Option<String>,
    /// Each difference with the registry entry that explains it, if any.
    pub differences: Vec<(Difference, Option<String>)>,
}

impl Replay {
    /// No difference but key order, which is reported and never failed:
    /// vllm-rs writes some maps (prompt logprobs) in an order that changes
    /// from one process to the next.
    pub fn identical(&self) -> bool {
        self.error.is_none()
            && self
                .differences
                .iter()
                .all(|(d, _)| d.layer == Layer::KeyOrder)
    }

    /// Whether something here is neither equal nor explained.
    pub fn unexplained(&self) -> bool {
        self.error.is_some()
            || self
                .differences
                .iter()
                .any(|(d, known)| known.is_none() && d.layer != Layer::KeyOrder)
    }
}

/// Compares a replay with its recording and judges each difference by the
/// registry, with the recording's target as the baseline.
pub fn judge(
    registry: &Registry,
    recorded_by: &str,
    replayed_by: &str,
    fixture: &LoadedFixture,
    recorded: &Transcript,
    replayed: &Transcript,
) -> Vec<(Difference, Option<String>)> {
    let facts = CaseFacts::of(&fixture.fixture);
    differences(recorded, replayed)
        .into_iter()
        .map(|d| {
            let compared = Compared {
                baseline: recorded_by,
                target: replayed_by,
                facts: &facts,
                endpoint: fixture.fixture.request.endpoint,
                // A recording is judged as of the release it was recorded with.
                version: fixture
                    .fixture
                    .recorded
                    .as_ref()
                    .map_or(crate::vllm::DEFAULT_VERSION, |r| r.vllm_version.as_str()),
            };
            let known = registry.find(&compared, &d).map(|e| e.id.clone());
            (d, known)
        })
        .collect()
}

/// The differences between a recording and its replay, chunk boundaries
/// included. When the streams differ only in where chunks begin (the same
/// tokens, finish, usage and errors, split or interleaved otherwise), that
/// is one difference, `stream.chunks`, not one per shifted event: a
/// frontend that merges steps by timing shifts every event after the merge.
pub fn differences(recorded: &Transcript, replayed: &Transcript) -> Vec<Difference> {
    let strict = diff::compare(recorded, replayed, true);
    let (Body::Events(a), Body::Events(b)) = (&recorded.body, &replayed.body) else {
        return strict;
    };
    let per_event = |d: &Difference| {
        d.path.starts_with("events")
            || (d.layer == Layer::Stream && d.path.starts_with("stream.chunks"))
    };
    if !strict.iter().any(per_event) {
        return strict;
    }
    let shape_a = chunk_shape(a, StreamSummary::of(a).chunks);
    let shape_b = chunk_shape(b, StreamSummary::of(b).chunks);
    // Chunks split alike: the events' differences are their content's.
    if shape_a == shape_b {
        return strict;
    }
    let mut out: Vec<Difference> = strict.into_iter().filter(|d| !per_event(d)).collect();
    out.push(Difference {
        layer: Layer::Stream,
        path: "stream.chunks".into(),
        kind: Kind::Changed,
        baseline: Some(shape_a),
        other: Some(shape_b),
    });
    out
}

/// A chunk count, or the tokens per chunk when the counts are equal and
/// only the boundaries or the order of choices moved.
fn chunk_shape(events: &[crate::normalize::EventData], count: usize) -> serde_json::Value {
    use crate::normalize::EventData;
    let shapes: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| match e {
            EventData::Json(v) => v.get("choices").and_then(|c| c.as_array()).map(|choices| {
                choices
                    .iter()
                    .map(|c| {
                        let n = c
                            .get("token_ids")
                            .and_then(|t| t.as_array())
                            .map_or(0, Vec::len);
                        format!(
                            "{}:{n}",
                            c.get("index").and_then(|i| i.as_u64()).unwrap_or(0)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("+")
                    .into()
            }),
            _ => None,
        })
        .collect();
    serde_json::json!({"chunks": count, "choice:tokens per chunk": shapes})
}

/// Replays every recording behind `frontend` with the mock engine, prints
/// the fidelity line and each difference, and says whether all is explained.
pub async fn replay(
    frontend: Frontend,
    recordings: &[Recording],
    registry: &Registry,
    args: &RecordArgs,
) -> anyhow::Result<bool> {
    let spec = match frontend {
        Frontend::Rust => TargetSpec::VllmRs,
        Frontend::Python => TargetSpec::VllmPython,
    };
    let replayed_by = spec.name();
    let recorded_by = args.target.name();
    eprintln!(
        "replaying {} recordings through the mock engine behind {replayed_by}",
        recordings.len()
    );
    let corpus = corpus_of(recordings);
    let options = RunOptions {
        limits: CaptureLimits {
            timeout: std::time::Duration::from_secs(args.timeout_secs),
            ..CaptureLimits::default()
        },
        budget: std::time::Duration::from_secs(3600),
        snapshots: args.snapshots.clone(),
        registry: registry.clone(),
        vllm: args.vllm.options(),
        // A replay keeps its recorded pacing best alone.
        jobs: 1,
        ..RunOptions::new(vec![spec])
    };
    let report = run::run(&corpus, &options, &()).await?;
    let replays: Vec<Replay> = corpus
        .fixtures
        .iter()
        .zip(recordings)
        .map(|(loaded, recording)| {
            let name = &loaded.fixture.name;
            match report.case(name, &replayed_by) {
                None => Replay {
                    fixture: name.clone(),
                    error: Some("the replay did not run".into()),
                    differences: Vec::new(),
                },
                Some(case) => match (&case.reason, &case.transcript) {
                    (Some(reason), _) => Replay {
                        fixture: name.clone(),
                        error: Some(reason.clone()),
                        differences: Vec::new(),
                    },
                    (None, None) => Replay {
                        fixture: name.clone(),
                        error: Some("the replay left no transcript".into()),
                        differences: Vec::new(),
                    },
                    (None, Some(replayed)) => Replay {
                        fixture: name.clone(),
                        error: None,
                        differences: judge(
                            registry,
                            &recorded_by,
                            &replayed_by,
                            loaded,
                            &recording.transcript,
                            replayed,
                        ),
                    },
                },
            }
        })
        .collect();
    print!("{}", render(&replays, &recorded_by, &replayed_by));
    Ok(!replays.iter().any(Replay::unexplained))
}

/// The fidelity line, then one line per difference.
pub fn render(replays: &[Replay], recorded_by: &str, replayed_by: &str) -> String {
    let identical = replays.iter().filter(|r| r.identical()).count();
    let unexplained = replays.iter().filter(|r| r.unexplained()).count();
    let mut out = format!(
        "fidelity: {identical}/{} replays identical ({replayed_by} over the mock engine vs {recorded_by}); {} explained by the registry, {unexplained} unexplained\n",
        replays.len(),
        replays.len() - identical - unexplained,
    );
    for replay in replays {
        if let Some(error) = &replay.error {
            let first = error.lines().next().unwrap_or_default();
            out.push_str(&format!("  ERROR  {}: {first}\n", replay.fixture));
        }
        for (d, known) in &replay.differences {
            let label = match known {
                Some(_) => "known",
                None if d.layer == Layer::KeyOrder => "order",
                None => "NEW",
            };
            let why = known
                .as_ref()
                .map(|id| format!(" ({id})"))
                .unwrap_or_default();
            let mut line = d.to_string();
            if line.len() > 240 {
                let cut = (0..=240)
                    .rev()
                    .find(|&i| line.is_char_boundary(i))
                    .unwrap_or(0);
                line.truncate(cut);
                line.push_str(" ...");
            }
            out.push_str(&format!("  {label:<6} {}: {line}{why}\n", replay.fixture));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(events: &[&str]) -> Transcript {
        crate::normalize::stream_of(events)
    }

    const ONE: &str = r#"{"choices":[{"index":0,"token_ids":[1]}]}"#;
    const TWO: &str = r#"{"choices":[{"index":0,"token_ids":[2],"finish_reason":"length"}]}"#;
    const MERGED: &str = r#"{"choices":[{"index":0,"token_ids":[1,2],"finish_reason":"length"}]}"#;

    #[test]
    fn merged_steps_are_one_chunk_difference() {
        let d = differences(&stream(&[ONE, TWO, "[DONE]"]), &stream(&[MERGED, "[DONE]"]));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].layer, d[0].path.as_str()),
            (Layer::Stream, "stream.chunks")
        );
        assert_eq!(d[0].baseline.as_ref().unwrap()["chunks"], 2);
        assert_eq!(d[0].other.as_ref().unwrap()["chunks"], 1);
    }

    #[test]
    fn a_content_difference_with_the_same_chunks_is_reported_as_itself() {
        let other = r#"{"choices":[{"index":0,"token_ids":[2],"finish_reason":"length","weight_versions":[]}]}"#;
        let d = differences(
            &stream(&[ONE, TWO, "[DONE]"]),
            &stream(&[ONE, other, "[DONE]"]),
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].path, "events[1].choices[0].weight_versions");
    }

    #[test]
    fn other_tokens_are_reported_beside_the_chunks() {
        let wrong = r#"{"choices":[{"index":0,"token_ids":[1,3],"finish_reason":"length"}]}"#;
        let d = differences(&stream(&[ONE, TWO, "[DONE]"]), &stream(&[wrong, "[DONE]"]));
        assert!(d.iter().any(|d| d.path == "stream.chunks"), "{d:?}");
        assert!(
            d.iter()
                .any(|d| d.layer == Layer::Stream && d.path.starts_with("stream.tokens")),
            "{d:?}"
        );
    }

    #[test]
    fn the_line_counts_identical_explained_and_unexplained() {
        let chunks = differences(&stream(&[ONE, TWO, "[DONE]"]), &stream(&[MERGED, "[DONE]"]));
        let replays = vec![
            Replay {
                fixture: "same".into(),
                error: None,
                differences: Vec::new(),
            },
            Replay {
                fixture: "merged".into(),
                error: None,
                differences: chunks
                    .into_iter()
                    .map(|d| (d, Some("entry".into())))
                    .collect(),
            },
            Replay {
                fixture: "broken".into(),
                error: Some("the frontend died\nmore".into()),
                differences: Vec::new(),
            },
        ];
        let text = render(&replays, "vllm-python+engine", "vllm-python");
        assert!(
            text.starts_with("fidelity: 1/3 replays identical"),
            "{text}"
        );
        assert!(
            text.contains("1 explained by the registry, 1 unexplained"),
            "{text}"
        );
        assert!(
            text.contains("known  merged: [stream] stream.chunks"),
            "{text}"
        );
        assert!(text.contains("ERROR  broken: the frontend died"), "{text}");
        assert!(replays[2].unexplained() && !replays[1].unexplained());
    }
}
