//! The script control channel: lets a harness that reaches this server only
//! over HTTP (a `url=` target) script the engine behind it, as it would an
//! in-process engine.
//!
//! Off unless the server was started with `--enable-script-control`; a server
//! without it answers the path with 404, like any unknown route.
//!
//! ```text
//! POST /genconform/v1/scripts
//! {"token_ids": [1, 2], "script": {"steps": [{"tokens": [7], "finish": "stop"}]}}
//! => 204; the next request whose prompt is [1, 2] follows the script.
//! {"token_ids": [1, 2], "script": null}
//! => 204; the prompt is answered by the default generator again.
//! ```

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use mock_engine::{Engine, Script};
use serde::Deserialize;

use crate::error::ApiError;

pub const SCRIPTS_PATH: &str = "/genconform/v1/scripts";

/// One registration: the prompt a script answers, or `null` to forget it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptRegistration {
    pub token_ids: Vec<u32>,
    pub script: Option<Script>,
}

/// The control routes, for merging into the server's router.
pub fn router<S: Clone + Send + Sync + 'static>(engine: Engine) -> Router<S> {
    Router::new()
        .route(SCRIPTS_PATH, post(register_script))
        .with_state(engine)
}

/// `POST /genconform/v1/scripts`.
async fn register_script(
    State(engine): State<Engine>,
    body: Result<Json<ScriptRegistration>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(registration) = body?;
    match registration.script {
        Some(script) => engine.register(registration.token_ids, script),
        None => engine.unregister(&registration.token_ids),
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use mock_engine::script::Endpoint;
    use serde_json::{Value, json};

    use crate::{Config, spawn};

    async fn post(url: String, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_registered_script_answers_and_null_forgets_it() {
        let config = Config {
            enable_script_control: true,
            ..Config::default()
        };
        let server = spawn(config, Default::default()).await.unwrap();
        let base = server.base_url();
        let script = json!({"steps": [{"tokens": [7, 8], "finish": "stop"}]});
        let r = post(
            format!("{base}{}", super::SCRIPTS_PATH),
            json!({"token_ids": [1, 2], "script": script}),
        )
        .await;
        assert_eq!(r.status(), 204);
        let generate = json!({"token_ids": [1, 2], "sampling_params": {"max_tokens": 5}});
        let body: Value = post(
            format!("{base}{}", Endpoint::Generate.path()),
            generate.clone(),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(body["choices"][0]["token_ids"], json!([7, 8]));
        let r = post(
            format!("{base}{}", super::SCRIPTS_PATH),
            json!({"token_ids": [1, 2], "script": null}),
        )
        .await;
        assert_eq!(r.status(), 204);
        let body: Value = post(format!("{base}{}", Endpoint::Generate.path()), generate)
            .await
            .json()
            .await
            .unwrap();
        let tokens = body["choices"][0]["token_ids"].as_array().unwrap();
        assert_eq!(tokens.len(), 5, "the generator answers again: {body}");
        let r = post(
            format!("{base}{}", super::SCRIPTS_PATH),
            json!({"token_ids": [1], "scirpt": null}),
        )
        .await;
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"]["message"].as_str().unwrap().contains("scirpt"),
            "{e}"
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn off_by_default() {
        let server = spawn(Config::default(), Default::default()).await.unwrap();
        let r = post(
            format!("{}{}", server.base_url(), super::SCRIPTS_PATH),
            json!({"token_ids": [1], "script": null}),
        )
        .await;
        assert_eq!(r.status(), 404);
        server.shutdown().await;
    }
}
