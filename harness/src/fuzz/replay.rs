//! A fixture (a found one, say) replayed against one server and checked by
//! the oracles alone.

use mock_engine::Fixture;

use super::oracle::{self, Expected, Violation};
use crate::capture::CaptureLimits;
use crate::session::scripts::{ScriptChannel, probe_control};
use crate::session::send::send;

/// Replays a fixture (a found one, say) against `base` and checks it with
/// the oracles: when `base` has the control channel, the fixture's script is
/// set for its prompt (and then counts as known), or, for a fixture without
/// one, any script another fixture left for that prompt is forgotten so the
/// generator answers. Returns the violations.
pub async fn replay_fixture(
    base: &str,
    fixture: &Fixture,
    model: &str,
    limits: CaptureLimits,
) -> Result<Vec<Violation>, String> {
    let client = reqwest::Client::new();
    let scripted = !fixture.engine.steps.is_empty();
    let prompt = fixture.prompt_token_ids();
    let script = if (scripted || prompt.is_some()) && probe_control(&client, base).await {
        let prompt = prompt.ok_or("the fixture's script has no prompt to be chosen by")?;
        let channel = ScriptChannel::Control(base.to_string());
        let script = scripted.then_some(&fixture.engine);
        channel.set(&client, &prompt, script).await?;
        script
    } else {
        None
    };
    let transcript = send(&client, base, &fixture.request, limits)
        .await
        .transcript;
    let expected = Expected::new(&fixture.request, model, script);
    Ok(oracle::check(&expected, &transcript))
}
