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

use crate::script::{FinishReason, Fixture};

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
    let steps = &fixture.engine.steps;
    for (i, step) in steps.iter().enumerate() {
        let at = |field: &str| format!("engine.steps[{i}].{field}");
        let ends = step.finish.is_some() || step.fail.is_some() || step.stall;
        if ends && i + 1 != steps.len() {
            problems.push((
                format!("engine.steps[{i}]"),
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
                format!("engine.steps[{i}]"),
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
                        format!("engine.steps[{i}].logprobs[{t}]"),
                        "needs at least the sampled token's entry".into(),
                    )),
                    Some(first) if first.token_id != *token => problems.push((
                        format!("engine.steps[{i}].logprobs[{t}][0].token_id"),
                        format!(
                            "the first entry is the sampled token, {token}, not {}",
                            first.token_id
                        ),
                    )),
                    Some(_) => {}
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
            format!("engine.steps[{}]", steps.len() - 1),
            "the last step must end the request with `finish`, `fail` or `stall`".into(),
        ));
    }
    if !steps.is_empty() && fixture.prompt_token_ids().is_none() {
        problems.push((
            "engine".into(),
            "a script needs `request.body.token_ids` (a list of token ids) to be chosen by".into(),
        ));
    }
    problems
}

/// A directory of fixtures, checked as a whole.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    pub fixtures: Vec<LoadedFixture>,
}

impl Corpus {
    /// Loads every `*.json` file below `dir` (sorted by path), and checks that
    /// names and prompt token ids are unique. Reports every problem at once.
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
        errors.extend(corpus.uniqueness_errors());
        if errors.is_empty() {
            Ok(corpus)
        } else {
            Err(FixtureErrors(errors))
        }
    }

    fn uniqueness_errors(&self) -> Vec<FixtureError> {
        let mut errors = Vec::new();
        let mut names: BTreeMap<&str, &Path> = BTreeMap::new();
        let mut prompts: BTreeMap<Vec<u32>, &Path> = BTreeMap::new();
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
            if let Some(ids) = loaded.fixture.prompt_token_ids()
                && !ids.is_empty()
                && let Some(first) = prompts.insert(ids.clone(), &loaded.path)
            {
                errors.push(FixtureError {
                    file: loaded.path.clone(),
                    json_path: "request.body.token_ids".into(),
                    message: format!(
                        "{ids:?} are also the token ids of {}; the engine picks scripts by \
                         prompt, so they must be unique",
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
    fn duplicate_prompts_name_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let body = |name: &str| {
            format!(r#"{{"name": "{name}", "request": {{"body": {{"token_ids": [7, 8]}}}}}}"#)
        };
        std::fs::write(dir.path().join("a.json"), body("a")).unwrap();
        std::fs::write(dir.path().join("b.json"), body("b")).unwrap();
        let msg = Corpus::load_dir(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("b.json: at `request.body.token_ids`"), "{msg}");
        assert!(msg.contains("a.json"), "{msg}");
    }
}
