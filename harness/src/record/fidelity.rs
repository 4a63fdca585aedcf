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
use crate::capture::Limits;
use crate::diff::{self, Difference, Layer};
use crate::divergence::Registry;
use crate::run::{self, RunOptions};
use crate::target::TargetSpec;
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
    recorded: &crate::normalize::Transcript,
    replayed: &crate::normalize::Transcript,
) -> Vec<(Difference, Option<String>)> {
    diff::compare(recorded, replayed, true)
        .into_iter()
        .map(|d| {
            let known = registry
                .find(recorded_by, replayed_by, &fixture.fixture.name, &d)
                .map(|e| e.id.clone());
            (d, known)
        })
        .collect()
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
        targets: vec![spec],
        filter: None,
        limits: Limits {
            timeout: std::time::Duration::from_secs(args.timeout_secs),
            ..Limits::default()
        },
        budget: std::time::Duration::from_secs(3600),
        snapshots: args.snapshots.clone(),
        registry: registry.clone(),
        accept_snapshots: false,
        check_snapshots: false,
        vllm: args.vllm.options(),
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
