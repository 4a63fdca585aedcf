//! One fixture against one target: how it ended, how it differs from the
//! baseline, and what of it a report keeps.

use mock_engine::LoadedFixture;
use mock_engine::script::Endpoint;
use serde::{Deserialize, Serialize};

use crate::diff::Difference;
use crate::excerpt;
use crate::normalize::Transcript;
use crate::snapshot;

/// How a case ended, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Skipped,
    /// The run was interrupted before this case finished.
    NotRun,
    /// Differs from the baseline only in registered ways.
    Known,
    /// The transcript is not the reviewed snapshot.
    SnapshotChanged,
    /// Differs from the baseline in a way the registry does not accept.
    New,
    Error,
}

impl Outcome {
    pub fn fails(self) -> bool {
        matches!(self, Self::SnapshotChanged | Self::New | Self::Error)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Skipped => "skip",
            Self::NotRun => "not run",
            Self::Known => "known",
            Self::SnapshotChanged => "snapshot",
            Self::New => "NEW",
            Self::Error => "ERROR",
        }
    }
}

/// A difference from the baseline, with the registry entry that accepts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Judged {
    #[serde(flatten)]
    pub difference: Difference,
    /// The id of the registry entry, when the difference is known.
    pub known: Option<String>,
}

/// One fixture against one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    pub fixture: String,
    /// The endpoint the fixture's request went to.
    pub endpoint: Endpoint,
    pub target: String,
    pub outcome: Outcome,
    /// Why it was skipped or errored.
    pub reason: Option<String>,
    pub transcript: Option<Transcript>,
    pub differences: Vec<Judged>,
    /// Unified diff against the baseline's transcript, when it differs.
    pub text_diff: Option<String>,
    pub snapshot: Option<snapshot::Status>,
    pub elapsed_ms: f64,
    /// What was cut from this case to keep it within its budget (see
    /// [`crate::excerpt`]); empty when nothing was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
    /// Registry entries that name this fixture as evidence (`seen_in`) and
    /// that no difference of this case matched: stale evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unshown_evidence: Vec<String>,
    /// What the verdict allowed for that a reader should know (a snapshot
    /// whose stream merged paced steps under load).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl CaseResult {
    /// Cuts what this case keeps to the budgets of [`crate::excerpt`], once
    /// it has been judged on the whole of it, and says what was cut.
    pub fn bound(&mut self) {
        let mut cut = |what: &str, more: usize| {
            if more > 0 {
                self.truncated.push(format!("{what}: {more} bytes more"));
            }
        };
        if let Some(reason) = &mut self.reason {
            cut(
                "reason",
                excerpt::truncate(reason, excerpt::KEPT_REASON_BYTES),
            );
        }
        // A case that passes equals its baseline or its snapshot: that is a
        // real answer (a long recorded stream is hundreds of KiB), kept
        // whole. A failing one may hold anything a broken target sent.
        let fails = self.outcome.fails();
        if let Some(transcript) = self.transcript.as_mut().filter(|_| fails) {
            cut(
                "transcript",
                excerpt::truncate_transcript(transcript, excerpt::KEPT_TRANSCRIPT_BYTES),
            );
        }
        if let Some(diff) = &mut self.text_diff {
            cut(
                "text_diff",
                excerpt::truncate(diff, excerpt::KEPT_TEXT_BYTES),
            );
        }
        if let Some(snapshot::Status::Changed(diff)) = &mut self.snapshot {
            cut(
                "snapshot diff",
                excerpt::truncate(diff, excerpt::KEPT_TEXT_BYTES),
            );
        }
        let mut values = 0;
        let mut used = 0;
        let mut keep = self.differences.len();
        for (i, judged) in self.differences.iter_mut().enumerate() {
            let d = &mut judged.difference;
            for v in [&mut d.baseline, &mut d.other].into_iter().flatten() {
                values += excerpt::value(v, excerpt::KEPT_VALUE_BYTES);
            }
            used += d.path.len()
                + [&d.baseline, &d.other]
                    .into_iter()
                    .flatten()
                    .map(|v| v.to_string().len())
                    .sum::<usize>();
            if used > excerpt::KEPT_DIFFERENCES_BYTES {
                keep = i;
                break;
            }
        }
        let dropped = self.differences.len() - keep;
        self.differences.truncate(keep);
        cut("difference values", values);
        if dropped > 0 {
            self.truncated
                .push(format!("differences: {dropped} more not kept"));
        }
    }
}

impl CaseResult {
    /// An `error` case with `reason` and nothing else: no transcript, no
    /// differences (a caller sets another outcome on top of it).
    pub fn error(loaded: &LoadedFixture, target: &str, reason: String) -> Self {
        Self {
            fixture: loaded.fixture.name.clone(),
            endpoint: loaded.fixture.request.endpoint,
            target: target.to_string(),
            outcome: Outcome::Error,
            reason: Some(reason),
            transcript: None,
            differences: Vec::new(),
            text_diff: None,
            snapshot: None,
            elapsed_ms: 0.0,
            truncated: Vec::new(),
            unshown_evidence: Vec::new(),
            notes: Vec::new(),
        }
    }
}
