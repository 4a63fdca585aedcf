//! How a case's script reaches a target's engine, so that every fixture
//! replays its own script even when fixtures share a prompt.
//!
//! The harness's in-process engines take a script directly; a reference
//! server started by hand with `--enable-script-control` takes it through
//! `POST /genconform/v1/scripts`; a real engine, or a server without the
//! control channel, answers with what it has (its own model, or the scripts
//! of the `--fixtures` it loaded, the first of each shared prompt's).

use std::time::Duration;

use mock_engine::Engine;
use mock_engine::script::{Fixture, Script};
use reference_server::control::SCRIPTS_PATH;

use super::watch::EngineWatch;
use crate::targets::{Target, TargetSpec};

/// How scripts reach a target's engine.
#[derive(Debug, Clone)]
pub enum ScriptChannel {
    /// The harness owns the engine.
    InProcess(Engine),
    /// The reference server's control channel at this base URL.
    Control(String),
    /// The target's own engine answers; scripts cannot be set.
    None,
}

impl ScriptChannel {
    /// The channel to a started target: its in-process engine when the
    /// harness owns one, the control channel of a `url=` target that has it
    /// ([`probe_control`]), else none.
    pub async fn of(target: &Target, client: &reqwest::Client) -> Self {
        match (target.engine(), &target.spec) {
            (Some(engine), _) => Self::InProcess(engine.clone()),
            (None, TargetSpec::Url { base, .. }) if probe_control(client, base).await => {
                Self::Control(base.clone())
            }
            (None, _) => Self::None,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::InProcess(_) => "in-process engine",
            Self::Control(_) => "control channel",
            Self::None => "none (its own engine answers)",
        }
    }

    /// Sets (or, for `None`, forgets) the script of `prompt`.
    pub async fn set(
        &self,
        client: &reqwest::Client,
        prompt: &[u32],
        script: Option<&Script>,
    ) -> Result<(), String> {
        match self {
            Self::InProcess(engine) => {
                match script {
                    Some(s) => engine.register(prompt.to_vec(), s.clone()),
                    None => engine.unregister(prompt),
                }
                Ok(())
            }
            Self::Control(base) => {
                let (url, request) = control_request(client, base, prompt, script);
                let answer = request
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .map_err(|e| format!("POST {url}: {e}"))?;
                if answer.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("POST {url} answered {}", answer.status()))
                }
            }
            Self::None => Ok(()),
        }
    }

    /// A watch of what the engine is asked for `fixture`'s prompt, when
    /// the harness owns the engine and the fixture has a prompt.
    pub fn watch(&self, fixture: &Fixture) -> Option<EngineWatch> {
        match self {
            Self::InProcess(engine) => fixture
                .prompt_token_ids()
                .map(|prompt| EngineWatch::new(engine, prompt)),
            Self::Control(_) | Self::None => None,
        }
    }

    /// Sets `fixture`'s script for its prompt, or forgets any script of
    /// that prompt when the fixture has none (the generator answers). A
    /// fixture without a well-formed prompt changes nothing.
    pub async fn set_for(&self, client: &reqwest::Client, fixture: &Fixture) -> Result<(), String> {
        let Some(prompt) = fixture.prompt_token_ids() else {
            return Ok(());
        };
        let script = (!fixture.engine.steps.is_empty()).then_some(&fixture.engine);
        self.set(client, &prompt, script).await
    }
}

/// Whether `base` has the reference server's control channel: forgetting
/// the script of an empty prompt changes nothing and answers 204.
pub async fn probe_control(client: &reqwest::Client, base: &str) -> bool {
    let (_, request) = control_request(client, base, &[], None);
    let answer = request.timeout(Duration::from_secs(5)).send().await;
    // Exactly 204: a server that answers every request with 200 is not
    // one that took a script.
    answer.is_ok_and(|r| r.status() == reqwest::StatusCode::NO_CONTENT)
}

/// The control channel's request that sets `prompt`'s script (or, with
/// `None`, forgets it), with the URL it goes to.
pub fn control_request(
    client: &reqwest::Client,
    base: &str,
    prompt: &[u32],
    script: Option<&Script>,
) -> (String, reqwest::RequestBuilder) {
    let url = format!("{}{SCRIPTS_PATH}", base.trim_end_matches('/'));
    let request = client
        .post(&url)
        .json(&serde_json::json!({"token_ids": prompt, "script": script}));
    (url, request)
}
