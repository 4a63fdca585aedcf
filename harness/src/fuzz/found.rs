//! A shrunk failing case, written as a ready fixture so it becomes a
//! regression case of `genconform run`.
//!
//! The fixture is checked by loading it back with the same loader the corpus
//! uses: a fixture that would not load is an error here, not in the next run.

use std::path::{Path, PathBuf};

use mock_engine::script::{RequestSpec, ServerOptions};
use mock_engine::{Fixture, FixtureErrors};

use super::cases::Case;
use super::oracle::Violation;

#[derive(Debug, thiserror::Error)]
pub enum FoundError {
    #[error("cannot create {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the written fixture does not load back: {0}")]
    Invalid(FixtureErrors),
}

/// The fixture name of a case: the property it breaks and the case's digest.
pub fn name(case: &Case, violation: Option<&Violation>) -> String {
    let property = violation.map_or("case".into(), |v| v.property.name().replace('-', "_"));
    format!("fuzz_{property}_{:08x}", case.digest() as u32)
}

/// The fixture that replays `request` with the case's script.
pub fn fixture(case: &Case, request: RequestSpec, name: String, description: String) -> Fixture {
    Fixture {
        name,
        description,
        server: ServerOptions::default(),
        request,
        engine: case.script.clone().unwrap_or_default(),
        in_process_only: None,
        recorded: None,
    }
}

/// The description of a found fixture: what broke, where, and what to do.
pub fn describe(violation: &Violation, target: &str, twin: bool) -> String {
    let mut detail = violation.detail.replace('\n', " ");
    if detail.len() > 400 {
        detail.truncate(detail.floor_char_boundary(400));
        detail.push_str("...");
    }
    let twin = if twin {
        " (found on the request with the response mode flipped)"
    } else {
        ""
    };
    format!(
        "Found by `genconform fuzz`{twin}: violates `{}` against {target}: {detail}",
        violation.property
    )
}

/// Writes `fixture` as `<dir>/<name>.json` and loads it back.
pub fn write(dir: &Path, fixture: &Fixture) -> Result<PathBuf, FoundError> {
    std::fs::create_dir_all(dir).map_err(|source| FoundError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(format!("{}.json", fixture.name));
    let mut text = serde_json::to_string_pretty(fixture).expect("a fixture serialises");
    text.push('\n');
    std::fs::write(&path, text).map_err(|source| FoundError::Write {
        path: path.clone(),
        source,
    })?;
    mock_engine::fixture::load_file(&path).map_err(FoundError::Invalid)?;
    Ok(path)
}
