//! Structured outputs: the constraint a request puts on what the engine may
//! generate, as vllm-rs 0.32.0 reads it and hands it to the engine.
//!
//! A request names it in `structured_outputs` (generate: inside
//! `sampling_params`; the OpenAI routes: at the top level) or, on the OpenAI
//! routes, through `response_format`, which overrides it: `json_object`
//! sets `json_object`, `json_schema` sets `json` to its schema, `text`
//! changes nothing (vLLM's `structured_outputs_from_response_format`).
//!
//! vllm-rs checks only that one kind of constraint is given; it compiles
//! nothing (a regex or schema that cannot compile reaches the engine) and
//! always names the `guidance` backend. The in-process engine does not
//! constrain anything: a script says what it generates. What the request
//! asked shows in the engine's view.
//!
//! ```
//! use reference_server::routes::structured_outputs::StructuredOutputs;
//! let s: StructuredOutputs = serde_json::from_str(r#"{"choice": ["yes", "no"]}"#).unwrap();
//! assert!(s.check().is_ok());
//! assert_eq!(
//!     s.engine_value(),
//!     serde_json::json!({"_backend": "guidance", "choice": ["yes", "no"]})
//! );
//! let two: StructuredOutputs = serde_json::from_str(r#"{"choice": ["y"], "regex": "y"}"#).unwrap();
//! assert!(two.check().unwrap_err().to_string().contains("regex, choice"));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The backend vllm-rs names for every constraint.
pub const BACKEND: &str = "guidance";

/// vLLM's `StructuredOutputsParams`: one constraint and its options. Read
/// from the request; written to the engine with only the fields set (every
/// field of vLLM's defaults to none or false).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct StructuredOutputs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choice: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_object: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structural_tag: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_any_whitespace: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_additional_properties: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whitespace_pattern: Option<String>,
}

impl StructuredOutputs {
    /// The constraints given, in vLLM's order of the fields.
    fn constraints(&self) -> Vec<&'static str> {
        [
            ("json", self.json.is_some()),
            ("regex", self.regex.is_some()),
            ("choice", self.choice.is_some()),
            ("grammar", self.grammar.is_some()),
            ("json_object", self.json_object.is_some()),
            ("structural_tag", self.structural_tag.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }

    /// vllm-rs's one check: at most one kind of constraint.
    pub fn check(&self) -> Result<(), ApiError> {
        let given = self.constraints();
        if given.len() > 1 {
            return Err(ApiError::invalid_request(
                format!(
                    "invalid structured_outputs: invalid structured outputs params: \
                     multiple structured output constraints specified: {}",
                    given.join(", ")
                ),
                Some("structured_outputs"),
            ));
        }
        Ok(())
    }

    /// The `structured_outputs` of the engine request: the fields set, and
    /// the backend.
    pub fn engine_value(&self) -> Value {
        let mut map = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            // A struct of strings, lists and JSON values always writes as an
            // object.
            _ => Map::new(),
        };
        map.insert("_backend".into(), Value::from(BACKEND));
        Value::Object(map)
    }
}

/// The OpenAI routes' `response_format`, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
    StructuralTag(Map<String, Value>),
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: Option<String>,
    pub description: Option<String>,
    pub schema: Option<Value>,
    pub strict: Option<bool>,
}

/// `structured_outputs` with `response_format`'s override applied.
pub fn resolve(
    structured: Option<&StructuredOutputs>,
    response_format: Option<&ResponseFormat>,
) -> Option<StructuredOutputs> {
    let mut resolved = structured.cloned();
    match response_format {
        None | Some(ResponseFormat::Text) => {}
        // An override without a constraint to amend starts a fresh one.
        Some(ResponseFormat::JsonObject) => {
            resolved.get_or_insert_default().json_object = Some(true);
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            resolved.get_or_insert_default().json = json_schema.schema.clone();
        }
        Some(ResponseFormat::StructuralTag(tag)) => {
            resolved.get_or_insert_default().structural_tag =
                Some(Value::Object(tag.clone()).to_string());
        }
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_format_overrides_structured_outputs() {
        let format: ResponseFormat = serde_json::from_str(
            r#"{"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}"#,
        )
        .unwrap();
        let resolved = resolve(None, Some(&format)).unwrap();
        assert_eq!(resolved.json, Some(serde_json::json!({"type": "object"})));
        let text: ResponseFormat = serde_json::from_str(r#"{"type": "text"}"#).unwrap();
        assert_eq!(resolve(None, Some(&text)), None);
        let object: ResponseFormat = serde_json::from_str(r#"{"type": "json_object"}"#).unwrap();
        assert_eq!(
            resolve(None, Some(&object)).unwrap().engine_value(),
            serde_json::json!({"_backend": "guidance", "json_object": true})
        );
    }

    #[test]
    fn an_unknown_format_or_a_missing_schema_does_not_read() {
        let e = serde_json::from_str::<ResponseFormat>(r#"{"type": "xml"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `xml`"), "{e}");
        let e = serde_json::from_str::<ResponseFormat>(r#"{"type": "json_schema"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `json_schema`"), "{e}");
    }
}
