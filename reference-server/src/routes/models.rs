//! `GET /v1/models`: the served model names, as vllm-rs lists them.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{Shared, unix_now};

#[derive(Serialize)]
pub(super) struct ModelList {
    object: &'static str,
    data: Vec<ModelCard>,
}

#[derive(Serialize)]
struct ModelCard {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    root: String,
    parent: Option<String>,
    max_model_len: u32,
}

pub(super) async fn models(State(state): Shared) -> Json<ModelList> {
    let created = unix_now();
    let data = state
        .config
        .served_model_names
        .iter()
        .map(|name| ModelCard {
            id: name.clone(),
            object: "model",
            created,
            owned_by: "vllm-frontend-rs",
            // vllm-rs names the model directory here; we have none, so the name.
            root: name.clone(),
            parent: None,
            max_model_len: state.engine.config().max_model_len,
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}
