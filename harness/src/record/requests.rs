//! The requests file of `genconform record`: JSON Lines, one request a line.
//!
//! ```text
//! {"name": "greedy_8", "body": {"token_ids": [5, 6, 7], "sampling_params": {"max_tokens": 8, "temperature": 0}}}
//! {"name": "cached_twice", "body": {...}, "headers": {"x-request-id": "a"}, "server": {"enable_prompt_tokens_details": true}}
//! {"name": "chat_2", "endpoint": "chat", "body": {"messages": [{"role": "user", "content": "t5 t6"}], "max_tokens": 2}}
//! ```
//!
//! A line is a fixture's request, flattened: `endpoint`, `path` (the
//! endpoint's when absent), `body`, `headers`, and the fixture's `server`
//! and `description`. Without an `endpoint`, the one whose path `path` is,
//! else `generate`.
//!
//! Blank lines and lines starting with `#` are skipped. Errors name the file,
//! the line and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mock_engine::script::{Endpoint, RequestSpec, ServerOptions};
use serde::Deserialize;

/// One line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRequest {
    /// The fixture's name (and its snapshot's).
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub body: serde_json::Value,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub server: ServerOptions,
    /// The endpoint the request is for, as a fixture names it: what its
    /// body means, and so which prompt the engine is scripted for.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// Another path than the endpoint's.
    #[serde(default)]
    pub path: Option<String>,
}

impl RecordRequest {
    /// The endpoint named, or the one `path` goes to, or generate.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.unwrap_or_else(|| {
            Endpoint::ALL
                .into_iter()
                .find(|e| self.path.as_deref() == Some(e.path()))
                .unwrap_or_default()
        })
    }

    pub fn request_spec(&self) -> RequestSpec {
        let endpoint = self.endpoint();
        RequestSpec {
            method: "POST".into(),
            endpoint,
            // Written out, so a recording says where it was sent.
            path: Some(
                self.path
                    .clone()
                    .unwrap_or_else(|| endpoint.path().to_string()),
            ),
            headers: self.headers.clone(),
            body: Some(self.body.clone()),
            ..RequestSpec::default()
        }
    }
}

/// Reads and checks the whole file; every bad line is reported.
pub fn load(path: &Path) -> Result<Vec<RecordRequest>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Vec<RecordRequest>, String> {
    let mut requests = Vec::new();
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let de = &mut serde_json::Deserializer::from_str(line);
        match serde_path_to_error::deserialize::<_, RecordRequest>(de) {
            Ok(request) => {
                let valid = !request.name.is_empty()
                    && request
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    problems.push(format!(
                        "{at}: at `name`: `{}` may hold only ASCII letters, digits, `_` and `-` (it names a fixture file)",
                        request.name
                    ));
                } else if !names.insert(request.name.clone()) {
                    problems.push(format!(
                        "{at}: at `name`: `{}` is used by an earlier line",
                        request.name
                    ));
                } else {
                    requests.push(request);
                }
            }
            Err(e) => {
                let field = e.path().to_string();
                let field = if field == "." {
                    String::new()
                } else {
                    format!("at `{field}`: ")
                };
                problems.push(format!("{at}: {field}{}", e.into_inner()));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    if requests.is_empty() {
        return Err(format!("{}: no requests in the file", path.display()));
    }
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_with_defaults() {
        let text = "# comment\n\n{\"name\":\"a\",\"body\":{\"token_ids\":[1]}}\n\
                    {\"name\":\"b\",\"body\":{},\"headers\":{\"x-request-id\":\"r\"},\"server\":{\"enable_prompt_tokens_details\":true}}\n";
        let requests = parse(Path::new("r.jsonl"), text).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].server, ServerOptions::default());
        assert!(requests[1].server.enable_prompt_tokens_details);
        assert_eq!(requests[1].request_spec().headers["x-request-id"], "r");
        assert_eq!(
            requests[0].request_spec().path(),
            mock_engine::script::GENERATE_PATH
        );
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let text = "{\"name\":\"a\",\"body\":{}}\n{\"name\":\"a\",\"body\":{}}\n{\"name\":\"c\",\"body\":{},\"server\":{\"bogus\":1}}\nnot json\n{\"name\":\"d e\",\"body\":{}}\n";
        let e = parse(Path::new("r.jsonl"), text).unwrap_err();
        assert!(
            e.contains("r.jsonl:2: at `name`: `a` is used by an earlier line"),
            "{e}"
        );
        assert!(e.contains("r.jsonl:3: at `server.bogus`"), "{e}");
        assert!(e.contains("r.jsonl:4: "), "{e}");
        assert!(e.contains("r.jsonl:5: at `name`"), "{e}");
    }

    #[test]
    fn a_line_names_its_endpoint_as_a_fixture_does() {
        let text = r#"{"name":"c","endpoint":"chat","body":{"messages":[{"role":"user","content":"t5"}]}}
{"name":"p","endpoint":"completions","path":"/v1/completions","body":{"prompt":"t5"}}"#;
        let requests = parse(Path::new("r.jsonl"), text).unwrap();
        let chat = requests[0].request_spec();
        assert_eq!(chat.endpoint, Endpoint::Chat);
        assert_eq!(chat.path(), Endpoint::Chat.path());
        assert_eq!(requests[1].request_spec().endpoint, Endpoint::Completions);
        // The line of the issue that asked for this: a path, no endpoint.
        let by_path = r#"{"name": "c_chat1", "path": "/v1/chat/completions", "body": {"model": "tiny", "messages": [{"role": "user", "content": "t10 t11"}], "max_tokens": 5}}"#;
        let spec = parse(Path::new("r.jsonl"), by_path).unwrap()[0].request_spec();
        assert_eq!(spec.endpoint, Endpoint::Chat);
        let e = parse(
            Path::new("r.jsonl"),
            r#"{"name":"x","endpoint":"embed","body":{}}"#,
        )
        .unwrap_err();
        assert!(e.contains("r.jsonl:1: at `endpoint`"), "{e}");
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let e = parse(Path::new("r.jsonl"), "\n# nothing\n").unwrap_err();
        assert!(e.contains("no requests"), "{e}");
    }
}
