//! The engine-core wire layout of a vLLM install, read with its own
//! interpreter (`read_layout.py`) and cached per install.
//!
//! Importing vLLM takes 5 to 20 seconds, so the reader's JSON is kept in
//! `<cache>/layouts/`, keyed by the interpreter and stamps (size, mtime) of
//! the files that define the structs (and of a `sitecustomize` that could
//! patch them), which a cheap Python call that does not import vLLM finds.
//!
//! ```no_run
//! use std::path::Path;
//! let file = harness::vllm::layout::read(Path::new("/venv/bin/python")).unwrap();
//! let (layout, report) = file.layout().unwrap();
//! eprintln!("{report}");
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use mock_engine::wire::{LayoutError, LayoutFile};
use serde::{Deserialize, Serialize};

/// Prints the layouts as JSON; run with the install's interpreter.
pub const READER: &str = include_str!("read_layout.py");

/// Finds, without importing vLLM, the files whose change changes the layout.
const STAMP_PROBE: &str = r#"
import importlib.util, json, os, sys
found = []
spec = importlib.util.find_spec("vllm")
if spec is not None and spec.submodule_search_locations:
    root = list(spec.submodule_search_locations)[0]
    for rel in ("v1/engine/__init__.py", "v1/outputs.py", "_version.py"):
        found.append(os.path.join(root, rel))
for name in ("sitecustomize", "usercustomize"):
    s = importlib.util.find_spec(name)
    if s is not None and s.origin:
        found.append(s.origin)
print(json.dumps({"sys_path": sys.path, "files": found}))
"#;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot run {python}: {reason}")]
    Spawn { python: String, reason: String },
    #[error(
        "{python} cannot read vLLM's wire layout ({status}):\n{stderr}\n  \
         Is vLLM installed for this interpreter? (genconform setup vllm --version V, \
         or point --vllm-python at your build's python)"
    )]
    Reader {
        python: String,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Layout(Box<LayoutError>),
}

impl From<LayoutError> for ReadError {
    fn from(e: LayoutError) -> Self {
        Self::Layout(Box::new(e))
    }
}

/// What the cached layout was read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Key {
    python: PathBuf,
    sys_path: Vec<String>,
    /// Each file with its size and mtime (ns), or none when absent.
    stamps: Vec<(String, Option<(u64, u128)>)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    key: Key,
    layout: LayoutFile,
}

fn run(python: &Path, args: &[&str]) -> Result<String, ReadError> {
    let out = Command::new(python)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .map_err(|e| ReadError::Spawn {
            python: python.display().to_string(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(ReadError::Reader {
            python: python.display().to_string(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn key(python: &Path) -> Result<Key, ReadError> {
    #[derive(Deserialize)]
    struct Probe {
        sys_path: Vec<String>,
        files: Vec<String>,
    }
    let out = run(python, &["-c", STAMP_PROBE])?;
    let probe: Probe = serde_json::from_str(out.trim()).map_err(|e| ReadError::Reader {
        python: python.display().to_string(),
        status: "unexpected output".into(),
        stderr: format!("{e}: {out}"),
    })?;
    let stamps = probe
        .files
        .into_iter()
        .map(|f| {
            let stamp = std::fs::metadata(&f).ok().map(|m| {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                (m.len(), mtime)
            });
            (f, stamp)
        })
        .collect();
    Ok(Key {
        python: python.to_path_buf(),
        sys_path: probe.sys_path,
        stamps,
    })
}

/// Where the layout of `python`'s install is cached.
pub fn cache_file(python: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    // Names the file only: the full key inside decides whether it is current.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    python.hash(&mut h);
    super::cache_root()
        .join("layouts")
        .join(format!("{:016x}.json", h.finish()))
}

/// The layout of the vLLM `python` imports, from the cache when the
/// install has not changed since it was read.
pub fn read(python: &Path) -> Result<LayoutFile, ReadError> {
    let key = key(python)?;
    let cache = cache_file(python);
    if let Ok(text) = std::fs::read_to_string(&cache)
        && let Ok(cached) = serde_json::from_str::<Cached>(&text)
        && cached.key == key
    {
        return Ok(cached.layout);
    }
    let out = run(python, &["-c", READER])?;
    let layout = LayoutFile::parse(&out, &format!("the layout {} printed", python.display()))?;
    let cached = Cached { key, layout };
    // A cache that cannot be written costs the next start a few seconds.
    let written = cache
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::write(
                &cache,
                serde_json::to_string(&cached).expect("a layout serializes"),
            )
        });
    if let Err(e) = written {
        tracing::warn!("cannot cache the layout in {}: {e}", cache.display());
    }
    Ok(cached.layout)
}

/// The interpreter of the install a `vllm-rs` binary sits in
/// (`<venv>/lib/python3.X/site-packages/vllm/vllm-rs`), if it has one.
pub fn python_of_rs_bin(bin: &Path) -> Option<PathBuf> {
    let venv = bin.parent()?.parent()?.parent()?.parent()?.parent()?;
    let python = venv.join("bin/python");
    (bin.parent()?.file_name()? == "vllm" && python.is_file()).then_some(python)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vllm_rs_inside_a_venv_has_that_venvs_python() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("lib/python3.11/site-packages/vllm/vllm-rs");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        assert_eq!(python_of_rs_bin(&bin), None, "no interpreter yet");
        std::fs::write(dir.path().join("bin/python"), "").unwrap();
        assert_eq!(python_of_rs_bin(&bin), Some(dir.path().join("bin/python")));
        assert_eq!(python_of_rs_bin(&dir.path().join("vllm-rs")), None);
    }

    #[test]
    fn a_python_without_vllm_is_a_clear_error() {
        let Some(python) = ["python3", "/usr/bin/python3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| Command::new(p).arg("-c").arg("pass").status().is_ok())
        else {
            panic!("this test needs a python3 on PATH (apt-get install python3)");
        };
        // The system python has no vLLM (nor msgspec): the reader fails
        // with the interpreter named and a hint.
        let text = run(&python, &["-I", "-c", READER]).unwrap_err().to_string();
        assert!(text.contains("cannot read vLLM's wire layout"), "{text}");
        assert!(text.contains("ModuleNotFoundError"), "{text}");
    }
}
