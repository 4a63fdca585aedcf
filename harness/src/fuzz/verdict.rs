//! The verdict on one fuzz case, once every target has answered it.
//!
//! There is one truth per frontend, and each lives in one place:
//!
//! - the **contract** (vllm-rs's rules of the pinned release, which the
//!   reference reproduces) is the [`super::oracle`]: the baseline,
//!   the first target, must keep every one of its invariants;
//! - where **another frontend departs from the contract** (Python's lax
//!   request types, its order of checks, a newer vllm-rs's refusals) is the
//!   divergence registry, the file `run` reads too.
//!
//! So a target other than the baseline is judged by both: when it breaks an
//! invariant, the break is *known* if everything that separates its answers
//! from the baseline's is registered, and a violation otherwise. A
//! registered difference is never a fuzz violation, a difference learnt in
//! `run` serves `fuzz` with no second copy of it, and removing the entry
//! brings the violation back. A transport failure (a timeout, a reset) is
//! never explained away.
//!
//! ```
//! use harness::divergence::Registry;
//! use harness::fuzz::verdict::{TargetAnswers, judge};
//!
//! // No target answered (each skipped the case): nothing to judge.
//! let rows: Vec<TargetAnswers> = vec![TargetAnswers { name: "reference".into(), answers: None }];
//! assert!(judge(&rows, &[], &Registry::default(), "0.32.0").unwrap().is_empty());
//! ```

use std::collections::BTreeSet;
use std::fmt;

use crate::diff::{self, Layer};
use crate::divergence::facts::CaseFacts;
use crate::divergence::{Compared, Registry};
use crate::normalize::Transcript;

use super::oracle::{self, Expected, Property, Violation};

/// One request of a case and what a target answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub expected: Expected,
    pub transcript: Transcript,
}

/// A target's answers to a case: the request, then its twin (the other
/// response mode) when the request is valid. `None`: the target skipped it.
#[derive(Debug, Clone)]
pub struct TargetAnswers {
    pub name: String,
    pub answers: Option<Vec<Answer>>,
}

/// One case's failure on one target.
#[derive(Debug, Clone)]
pub struct Failure {
    pub violation: Violation,
    pub target: String,
    /// On the twin request (the response mode flipped).
    pub twin: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let twin = if self.twin { " (twin request)" } else { "" };
        write!(f, "{} against {}{twin}", self.violation, self.target)
    }
}

/// Differences named in a failure; the rest are counted.
const SHOWN_DIFFERENCES: usize = 6;

/// Judges one case. `facts[r]` describes request `r` of the rows (the
/// twin's facts differ: it streams or not); `version` is the vLLM release
/// the registry's entries are scoped by. Returns the ids of the registry
/// entries that explained a target's break of the contract.
pub fn judge(
    rows: &[TargetAnswers],
    facts: &[CaseFacts],
    registry: &Registry,
    version: &str,
) -> Result<BTreeSet<String>, Failure> {
    let mut known = BTreeSet::new();
    let Some(first) = rows.first() else {
        return Ok(known);
    };
    let fail = |row: &TargetAnswers, violation: Violation, twin: bool| Failure {
        violation,
        target: row.name.clone(),
        twin,
    };
    if let Some(baseline) = &first.answers
        && let Some((v, twin)) = first_violation(baseline)
    {
        return Err(fail(first, v, twin));
    }
    for row in &rows[1..] {
        let Some(answers) = &row.answers else {
            continue;
        };
        let broken = first_violation(answers);
        if let Some((v, twin)) = &broken
            && v.property == Property::Transport
        {
            return Err(fail(row, v.clone(), *twin));
        }
        let Some(baseline) = &first.answers else {
            // Nothing to explain a break by.
            return match broken {
                Some((v, twin)) => Err(fail(row, v, twin)),
                None => Ok(known),
            };
        };
        let compared = |r: usize| Compared {
            baseline: &first.name,
            target: &row.name,
            facts: &facts[r],
            endpoint: baseline[r].expected.endpoint,
            version,
        };
        let mut explained_by = BTreeSet::new();
        let mut unexplained = None;
        for (r, (a, b)) in baseline.iter().zip(answers).enumerate() {
            let differences = diff::compare(
                &comparable(&a.transcript),
                &comparable(&b.transcript),
                false,
            )
            .into_iter()
            .filter(|d| d.layer != Layer::KeyOrder);
            let mut new = Vec::new();
            for d in differences {
                match registry.find(&compared(r), &d) {
                    Some(entry) => {
                        explained_by.insert(entry.id.clone());
                    }
                    None => new.push(d.to_string()),
                }
            }
            if unexplained.is_none() && !new.is_empty() {
                unexplained = Some((r, new));
            }
        }
        match (broken, unexplained) {
            // The break is what the registry says this target does.
            (Some(_), None) if !explained_by.is_empty() => known.extend(explained_by),
            (Some((mut v, twin)), unexplained) => {
                // Say what keeps the registry from explaining the break.
                match unexplained {
                    Some((_, new)) => v.detail.push_str(&format!(
                        " (not registered: {}{})",
                        new[0],
                        if new.len() > 1 {
                            format!(" and {} more", new.len() - 1)
                        } else {
                            String::new()
                        }
                    )),
                    None => v.detail.push_str(
                        " (the answers are the baseline's: the baseline should break it too)",
                    ),
                }
                return Err(fail(row, v, twin));
            }
            (None, Some((r, new))) => {
                let shown = new.len().min(SHOWN_DIFFERENCES);
                let more = match new.len() - shown {
                    0 => String::new(),
                    n => format!("; and {n} more"),
                };
                let violation = Violation {
                    property: Property::Differential,
                    detail: format!(
                        "differs from {}: {}{more}",
                        first.name,
                        new[..shown].join("; ")
                    ),
                };
                return Err(fail(row, violation, r == 1));
            }
            (None, None) => {}
        }
    }
    Ok(known)
}

/// The first invariant a target's answers break: each exchange's own, then
/// a stream against its non-streamed twin. `bool`: found on the twin.
fn first_violation(answers: &[Answer]) -> Option<(Violation, bool)> {
    for (r, x) in answers.iter().enumerate() {
        if let Some(v) = oracle::check(&x.expected, &x.transcript).into_iter().next() {
            return Some((v, r == 1));
        }
    }
    if let [a, b] = answers {
        let (stream, plain) = if a.expected.stream { (a, b) } else { (b, a) };
        if let Some(v) =
            oracle::check_twins(&stream.expected, &stream.transcript, &plain.transcript)
        {
            return Some((v, false));
        }
    }
    None
}

/// The transcript without notes on where TCP split the body.
fn comparable(t: &Transcript) -> Transcript {
    let mut t = t.clone();
    t.notes.retain(|n| !oracle::is_transport_note(n));
    t
}

#[cfg(test)]
mod tests {
    use mock_engine::script::{Fixture, RequestSpec, Script};
    use serde_json::{Value, json};

    use super::*;
    use crate::normalize::TranscriptBuilder;

    fn committed_registry() -> Registry {
        Registry::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/divergences.toml"),
        )
        .unwrap()
    }

    fn facts(request: &RequestSpec, script: &Script) -> CaseFacts {
        CaseFacts::of(&Fixture {
            name: "any name".into(),
            description: String::new(),
            server: Default::default(),
            request: request.clone(),
            engine: script.clone(),
            in_process_only: None,
            recorded: None,
        })
    }

    fn transcript(
        status: u16,
        content_type: &str,
        body: Option<&Value>,
        events: &[&str],
    ) -> Transcript {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        TranscriptBuilder::new(Default::default()).build(
            Some(status),
            &[("content-type".into(), content_type.into())],
            body.as_bytes(),
            (!events.is_empty()).then(|| events.iter().map(|e| e.to_string()).collect()),
            vec![],
            None,
        )
    }

    fn row(name: &str, expected: &Expected, transcripts: Vec<Transcript>) -> TargetAnswers {
        TargetAnswers {
            name: name.into(),
            answers: Some(
                transcripts
                    .into_iter()
                    .map(|transcript| Answer {
                        expected: expected.clone(),
                        transcript,
                    })
                    .collect(),
            ),
        }
    }

    /// `sampling_params.n: null`: the contract reads it as absent and
    /// answers; Python answers 400, which `python-refuses-null-n` registers.
    /// With the entry the break is known; without it, it is the violation
    /// it always was; and no other target is forgiven by it.
    #[test]
    fn a_registry_entry_silences_the_break_it_describes_and_only_that() {
        let request: RequestSpec = serde_json::from_value(json!({
            "body": {"token_ids": [5, 7], "sampling_params": {"n": null, "max_tokens": 1}}
        }))
        .unwrap();
        let script: Script = serde_json::from_value(json!({"steps": [
            {"delay_ms": 0, "tokens": [33], "finish": "length"}
        ]}))
        .unwrap();
        let expected = Expected::new(&request, "tiny", Some(&script));
        assert_eq!(expected.validity, oracle::Validity::Valid);
        let answer = json!({"request_id": "r", "choices": [
            {"index": 0, "token_ids": [33], "finish_reason": "length"}
        ]});
        let refusal = json!({"error": {"message": "n: Input should be a valid integer", "type": "BadRequestError", "param": null, "code": 400}});
        let reference = row(
            "reference",
            &expected,
            vec![transcript(200, "application/json", Some(&answer), &[])],
        );
        let refused = |name: &str| {
            row(
                name,
                &expected,
                vec![transcript(400, "application/json", Some(&refusal), &[])],
            )
        };
        let facts = [facts(&request, &script)];
        let registry = committed_registry();
        let judge_python = |registry: &Registry| {
            judge(
                &[reference.clone(), refused("vllm-python")],
                &facts,
                registry,
                "0.32.0",
            )
        };

        let known = judge_python(&registry).unwrap();
        assert!(known.contains("python-refuses-null-n"), "{known:?}");

        let mut without = registry.clone();
        without.entries.retain(|e| e.id != "python-refuses-null-n");
        let failure = judge_python(&without).unwrap_err();
        assert_eq!(failure.violation.property, Property::Status, "{failure}");
        assert_eq!(failure.target, "vllm-python");

        // The entry is Python's: vllm-rs answering so is a violation.
        let failure = judge(
            &[reference.clone(), refused("vllm-rs")],
            &facts,
            &registry,
            "0.32.0",
        )
        .unwrap_err();
        assert_eq!(failure.violation.property, Property::Status, "{failure}");
        // And the baseline is held to the contract, registry or not.
        let failure = judge(&[refused("reference")], &facts, &registry, "0.32.0").unwrap_err();
        assert_eq!(failure.target, "reference");
    }

    /// The fuzz case CI saw fail once: an error step 1 ms after three
    /// tokens, which Python merged and lost. The registry knows it of
    /// vllm-python (`python-loses-steps-merged-into-error`), and of no
    /// other target.
    #[test]
    fn python_may_lose_the_steps_merged_into_an_error_step() {
        let request: RequestSpec = serde_json::from_value(json!({
            "body": {
                "token_ids": [4095, 505],
                "sampling_params": {},
                "stream": true,
                "return_token_ids": true
            }
        }))
        .unwrap();
        let script: Script = serde_json::from_value(json!({"steps": [
            {"delay_ms": 0, "tokens": [2422, 433, 927]},
            {"delay_ms": 1, "tokens": [2225], "finish": "error"}
        ]}))
        .unwrap();
        let expected = Expected::new(&request, "tiny", Some(&script));
        let error =
            r#"{"error":{"message":"engine error","type":"InternalServerError","code":500}}"#;
        let sse = "text/event-stream; charset=utf-8";
        let all = transcript(
            200,
            sse,
            None,
            &[
                r#"{"request_id":"r","choices":[{"index":0,"token_ids":[2422,433,927],"finish_reason":null}]}"#,
                error,
                "[DONE]",
            ],
        );
        let lost = transcript(200, sse, None, &[error, "[DONE]"]);
        let facts = [facts(&request, &script)];
        let registry = committed_registry();
        let judge_as = |target: &str| {
            judge(
                &[
                    row("reference", &expected, vec![all.clone()]),
                    row(target, &expected, vec![lost.clone()]),
                ],
                &facts,
                &registry,
                "0.32.0",
            )
        };
        let known = judge_as("vllm-python").unwrap();
        assert!(
            known.contains("python-loses-steps-merged-into-error"),
            "{known:?}"
        );
        let failure = judge_as("vllm-rs").unwrap_err();
        assert_eq!(failure.violation.property, Property::Script, "{failure}");
    }
}
