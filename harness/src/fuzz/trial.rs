//! A trial: one fuzz case, and its twin, sent to every target, and the
//! answers judged ([`verdict`](super::verdict)).

use std::collections::BTreeSet;

use super::cases::{self, Case};
use super::oracle::{self, Expected, Property, Violation};
use super::verdict::{self, Answer, Failure, TargetAnswers};
use super::{FuzzOptions, found};
use crate::divergence::facts::CaseFacts;
use crate::prompt_lock::PromptLocks;
use crate::session::scripts::ScriptChannel;
use crate::session::send::send;
use crate::session::targets::TargetSet;
use crate::targets::Unavailable;

/// Sends the case (and its twin) to every target and judges the answers
/// ([`verdict::judge`]): `Ok` holds the registry entries that explained a
/// target's break of the contract.
///
/// Several cases may be in flight at once ([`FuzzOptions::jobs`]): a case
/// holds its prompt's [`PromptLocks`] lock from setting its script to its
/// last answer, so no other case can change the script it is answered from,
/// and holds the target set only while it sets scripts and finds the servers.
pub(super) async fn trial(
    set: &tokio::sync::Mutex<TargetSet>,
    locks: &PromptLocks,
    options: &FuzzOptions,
    case: &Case,
) -> Result<BTreeSet<String>, Failure> {
    let primary = case.request_spec(&options.model);
    let fixture = found::fixture(
        case,
        primary.clone(),
        found::name(case, None),
        String::new(),
    );
    let script = case.script.as_ref();
    let mut requests = vec![primary];
    let probe = Expected::new(&requests[0], &options.model, script);
    if probe.validity == oracle::Validity::Valid
        && let Some(twin) = cases::twin(&requests[0])
    {
        requests.push(twin);
    }
    // What the registry reads of each request (the twin's differs).
    let facts: Vec<CaseFacts> = requests
        .iter()
        .map(|request| {
            CaseFacts::of(&mock_engine::script::Fixture {
                request: request.clone(),
                ..fixture.clone()
            })
        })
        .collect();
    let prompt = case.prompt();
    let _prompt = locks.lock(&prompt).await;
    // Per target: its name, base URL and the script it knows; no base for a
    // target that skips the case.
    let mut plan = Vec::new();
    let client = {
        let mut guard = set.lock().await;
        let TargetSet {
            targets,
            channels,
            client,
            ..
        } = &mut *guard;
        for (target, channel) in targets.iter_mut().zip(channels.iter()) {
            let name = target.name();
            let fail = |detail: String| Failure {
                violation: Violation {
                    property: Property::Transport,
                    detail,
                },
                target: name.clone(),
                twin: false,
            };
            let known_script = match channel {
                ScriptChannel::None => None,
                _ => script,
            };
            channel
                .set(client, &prompt, known_script)
                .await
                .map_err(|e| fail(format!("cannot set the script: {e}")))?;
            match target.endpoint(&fixture).await {
                Ok(base) => plan.push((name, Some((base, known_script)))),
                Err(Unavailable::Skip(_)) => plan.push((name, None)),
                Err(Unavailable::Error(e)) => return Err(fail(e)),
            }
        }
        client.clone()
    };
    let mut rows = Vec::new();
    for (name, step) in plan {
        let Some((base, known_script)) = step else {
            rows.push(TargetAnswers {
                name,
                answers: None,
            });
            continue;
        };
        let mut answers = Vec::new();
        for request in &requests {
            let sent = send(&client, &base, request, options.limits).await;
            answers.push(Answer {
                expected: Expected::new(request, &options.model, known_script),
                transcript: sent.transcript,
            });
        }
        rows.push(TargetAnswers {
            name,
            answers: Some(answers),
        });
    }
    verdict::judge(&rows, &facts, &options.registry, &options.vllm.version)
}
