//! The registry of known, accepted differences between targets.
//!
//! ```toml
//! [[divergence]]
//! id = "python-null-fields"
//! targets = ["vllm-python"]          # the non-baseline target(s) it applies to
//! endpoints = ["chat"]               # optional: generate, completions, chat
//! when = [{ stream = true }]         # optional: a condition on the case (see `condition`)
//! layer = "json"                     # optional: http, framing, json, stream
//! kinds = ["null-vs-absent"]         # optional
//! paths = ["events[*].choices[*].logprobs"]
//! versions = ["0.30.0", "0.31.0"]  # optional: the vLLM releases (`--vllm-version`)
//! class = "intended"                 # intended | bug | artefact
//! reason = "Python emits null for unset fields; Rust skips them"
//! source = "vllm/entrypoints/.../protocol.py"
//! link = "https://github.com/vllm-project/vllm/pull/43779"
//! seen_in = ["stream_basic"]         # optional: fixtures that show it (evidence)
//! ```
//!
//! A difference matched by an entry is "known"; any other one is new and
//! fails the run. An entry says what the difference is and on which cases
//! it shows ([`condition::When`] over [`facts::CaseFacts`]), never which
//! fixtures: a new fixture that shows a registered behaviour is known as
//! it is. `seen_in` names fixtures as evidence only; it never widens or
//! narrows a match, and `run` says when a listed fixture no longer shows
//! the entry.

pub mod condition;
pub mod facts;

use std::path::Path;

use mock_engine::script::Endpoint;
use serde::{Deserialize, Serialize};

use crate::diff::{Difference, Kind, Layer};
use condition::When;
use facts::CaseFacts;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// The servers are meant to differ.
    Intended,
    /// One server is wrong; the entry says which.
    Bug,
    /// The difference comes from how we drive the servers, not from them.
    Artefact,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub id: String,
    /// Target names this applies to (as the other side of a comparison);
    /// empty means any.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Baseline target names; empty means any.
    #[serde(default)]
    pub baselines: Vec<String>,
    /// The endpoints whose fixtures this applies to; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub layer: Option<Layer>,
    #[serde(default)]
    pub kinds: Vec<Kind>,
    #[serde(default = "any")]
    pub paths: Vec<String>,
    /// The vLLM releases (exact, as `--vllm-version` names them) whose runs
    /// this applies to; empty means every release. For what a release
    /// changed: an entry for the old behaviour names the releases that have it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    pub class: Class,
    pub reason: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub link: Option<String>,
    /// The cases it holds for; empty means every case.
    #[serde(default, skip_serializing_if = "When::is_always")]
    pub when: When,
    /// Fixtures that show it: evidence for a reader, checked by `run` (a
    /// listed fixture that ran and did not show it is reported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_in: Vec<String>,
}

/// Which comparison a difference came from: what an entry is scoped by.
#[derive(Debug, Clone, Copy)]
pub struct Compared<'a> {
    pub baseline: &'a str,
    pub target: &'a str,
    /// What the case is: its request, server options and script.
    pub facts: &'a CaseFacts,
    pub endpoint: Endpoint,
    /// The vLLM release of the run (`--vllm-version`).
    pub version: &'a str,
}

fn any() -> Vec<String> {
    vec!["*".to_string()]
}

impl Entry {
    pub fn matches(&self, case: &Compared<'_>, d: &Difference) -> bool {
        self.applies_to(case)
            && self.layer.is_none_or(|l| l == d.layer)
            && (self.kinds.is_empty() || self.kinds.contains(&d.kind))
            && self.paths.iter().any(|p| wildcard(p, &d.path))
            && self.when.holds(case.facts)
    }

    /// Whether the comparison is in the entry's scope: its targets,
    /// baselines, endpoints and releases (not yet its condition on the case).
    fn applies_to(&self, case: &Compared<'_>) -> bool {
        (self.targets.is_empty() || self.targets.iter().any(|t| t == case.target))
            && (self.baselines.is_empty() || self.baselines.iter().any(|t| t == case.baseline))
            && (self.endpoints.is_empty() || self.endpoints.contains(&case.endpoint))
            && (self.versions.is_empty() || self.versions.iter().any(|v| v == case.version))
    }
}

/// The checked-in registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    #[serde(default, rename = "divergence")]
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `at` is the entry and field (`divergence[3].kinds[0]`), or empty
    /// when the TOML itself is malformed; the source names line and column.
    #[error("{path}: {}{source}", if at.is_empty() { String::new() } else { format!("at `{at}`: ") })]
    Parse {
        path: String,
        at: String,
        source: Box<toml::de::Error>,
    },
    #[error(
        "{path}: divergence id `{id}` appears twice (entries {first} and {again}, counted from 0)"
    )]
    DuplicateId {
        path: String,
        id: String,
        first: usize,
        again: usize,
    },
    #[error("{path}: at `{at}`: {why}")]
    UnknownFact {
        path: String,
        at: String,
        why: String,
    },
    #[error(
        "{path}: at `{at}`: `{version}` is not a vLLM release genconform runs against \
         (releases: {releases}; write the exact version, e.g. \"0.31.0\")"
    )]
    UnknownVersion {
        path: String,
        at: String,
        version: String,
        releases: String,
    },
}

impl Registry {
    /// Loads the registry; a missing file is an empty registry.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(RegistryError::Read {
                    path: shown,
                    source,
                });
            }
        };
        let registry: Self = serde_path_to_error::deserialize(toml::Deserializer::new(&text))
            .map_err(|e| RegistryError::Parse {
                path: shown.clone(),
                at: e.path().to_string().trim_start_matches('.').to_string(),
                source: Box::new(e.into_inner()),
            })?;
        let mut seen = std::collections::BTreeMap::new();
        for (again, e) in registry.entries.iter().enumerate() {
            if let Some(first) = seen.insert(&e.id, again) {
                return Err(RegistryError::DuplicateId {
                    path: shown,
                    id: e.id.clone(),
                    first,
                    again,
                });
            }
            if let Some((at, why)) = e.when.unknown_path() {
                return Err(RegistryError::UnknownFact {
                    path: shown,
                    at: format!("divergence[{again}].{at}"),
                    why,
                });
            }
            // A misspelt release would silently match no run.
            for (j, version) in e.versions.iter().enumerate() {
                if !crate::vllm::SUPPORTED_VERSIONS.contains(&version.as_str()) {
                    return Err(RegistryError::UnknownVersion {
                        path: shown,
                        at: format!("divergence[{again}].versions[{j}]"),
                        version: version.clone(),
                        releases: crate::vllm::SUPPORTED_VERSIONS.join(", "),
                    });
                }
            }
        }
        Ok(registry)
    }

    /// The entries that name `fixture` as evidence (`seen_in`) and apply to
    /// this comparison (its targets, baselines, endpoints, releases), but
    /// match none of its differences: their evidence no longer shows.
    pub fn evidence_unshown(
        &self,
        fixture: &str,
        case: &Compared<'_>,
        differences: &[Difference],
    ) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.seen_in.iter().any(|f| f == fixture) && e.applies_to(case))
            .filter(|e| !differences.iter().any(|d| e.matches(case, d)))
            .map(|e| e.id.clone())
            .collect()
    }

    /// The entry that accepts this difference, if any.
    pub fn find(&self, case: &Compared<'_>, d: &Difference) -> Option<&Entry> {
        self.entries.iter().find(|e| e.matches(case, d))
    }
}

/// `*` matches any run of characters (dots and brackets included); every
/// other character matches itself.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((bp, bt)) = backtrack {
            pi = bp + 1;
            ti = bt + 1;
            backtrack = Some((bp, bt + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*", ""));
        assert!(wildcard(
            "events[*].choices[*].logprobs",
            "events[12].choices[0].logprobs"
        ));
        assert!(!wildcard(
            "events[*].choices[*].logprobs",
            "events[1].choices[0].token_ids"
        ));
        assert!(wildcard("stream_*", "stream_usage"));
        assert!(!wildcard("stream_*", "nostream"));
    }

    fn facts(body: serde_json::Value) -> CaseFacts {
        CaseFacts::of(
            &serde_json::from_value(serde_json::json!({"name": "f", "request": {"body": body}}))
                .unwrap(),
        )
    }

    #[test]
    fn an_entry_matches_on_every_axis() {
        let registry: Registry = toml::from_str(
            r#"
            [[divergence]]
            id = "x"
            targets = ["py"]
            when = [{ stream = true }]
            kinds = ["null-vs-absent"]
            paths = ["events[*].usage"]
            class = "intended"
            reason = "python writes null"
            "#,
        )
        .unwrap();
        let d = Difference {
            layer: Layer::Json,
            path: "events[0].usage".into(),
            kind: Kind::NullVsAbsent,
            baseline: None,
            other: Some(serde_json::Value::Null),
        };
        let streamed = facts(serde_json::json!({"token_ids": [1], "stream": true}));
        let plain = facts(serde_json::json!({"token_ids": [1]}));
        let at = |target, facts| Compared {
            baseline: "rs",
            target,
            facts,
            endpoint: Endpoint::Generate,
            version: "0.32.0",
        };
        assert!(registry.find(&at("py", &streamed), &d).is_some());
        assert!(registry.find(&at("other", &streamed), &d).is_none());
        assert!(registry.find(&at("py", &plain), &d).is_none());
        let changed = Difference {
            kind: Kind::Changed,
            ..d
        };
        assert!(registry.find(&at("py", &streamed), &changed).is_none());
    }

    #[test]
    fn a_fixture_name_is_no_longer_a_scope() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(
            &path,
            "[[divergence]]\nid='a'\nfixtures=['x_*']\nclass='bug'\nreason='r'\n",
        )
        .unwrap();
        let e = Registry::load(&path).unwrap_err().to_string();
        assert!(e.contains("at `divergence[0].fixtures`"), "{e}");
        std::fs::write(
            &path,
            "[[divergence]]\nid='a'\nwhen=[{'script.no_such_fact'=true}]\nclass='bug'\nreason='r'\n",
        )
        .unwrap();
        let e = Registry::load(&path).unwrap_err().to_string();
        assert!(e.contains("divergence[0].when[0]"), "{e}");
        assert!(e.contains("no_such_fact"), "{e}");
    }

    #[test]
    fn an_entry_scoped_to_endpoints_matches_only_their_fixtures() {
        let registry: Registry = toml::from_str(
            r#"
            [[divergence]]
            id = "x"
            endpoints = ["chat"]
            class = "intended"
            reason = "only chat"
            "#,
        )
        .unwrap();
        let d = Difference {
            layer: Layer::Json,
            path: "events[0].system_fingerprint".into(),
            kind: Kind::Added,
            baseline: None,
            other: Some("fp".into()),
        };
        let any = facts(serde_json::json!({}));
        let at = |endpoint| Compared {
            baseline: "rs",
            target: "py",
            facts: &any,
            endpoint,
            version: "0.32.0",
        };
        assert!(registry.find(&at(Endpoint::Chat), &d).is_some());
        assert!(registry.find(&at(Endpoint::Completions), &d).is_none());
        assert!(registry.find(&at(Endpoint::Generate), &d).is_none());
        let e = toml::from_str::<Registry>(
            "[[divergence]]\nid='y'\nendpoints=['chats']\nclass='bug'\nreason='r'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("chats"), "{e}");
    }

    #[test]
    fn an_entry_scoped_to_releases_matches_only_their_runs() {
        let registry: Registry = toml::from_str(
            "[[divergence]]\nid='old'\nversions=['0.30.0','0.31.0']\nclass='intended'\nreason='r'\n",
        )
        .unwrap();
        let d = Difference {
            layer: Layer::Json,
            path: "events[0].kv_transfer_params".into(),
            kind: Kind::Missing,
            baseline: Some(serde_json::Value::Null),
            other: None,
        };
        let any = facts(serde_json::json!({}));
        let at = |version| Compared {
            baseline: "reference",
            target: "vllm-rs",
            facts: &any,
            endpoint: Endpoint::Generate,
            version,
        };
        assert!(registry.find(&at("0.30.0"), &d).is_some());
        assert!(registry.find(&at("0.31.0"), &d).is_some());
        assert!(registry.find(&at("0.32.0"), &d).is_none());
        assert!(
            registry.find(&at("0.31"), &d).is_none(),
            "exact releases only"
        );
    }

    #[test]
    fn a_release_genconform_does_not_know_is_an_error_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(
            &path,
            "[[divergence]]\nid='a'\nversions=['0.31.0','0.31']\nclass='bug'\nreason='r'\n",
        )
        .unwrap();
        let e = Registry::load(&path).unwrap_err().to_string();
        assert!(e.contains("at `divergence[0].versions[1]`"), "{e}");
        assert!(e.contains("`0.31` is not a vLLM release"), "{e}");
    }

    #[test]
    fn unknown_fields_and_duplicate_ids_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(
            &path,
            "[[divergence]]\nid='a'\nclass='bug'\nreason='r'\nreasn='typo'\n",
        )
        .unwrap();
        let e = Registry::load(&path).unwrap_err().to_string();
        assert!(e.contains("at `divergence[0].reasn`"), "{e}");
        std::fs::write(&path, "[[divergence]]\nid='a'\nclass='bug'\nreason='r'\n[[divergence]]\nid='a'\nclass='bug'\nreason='r'\n").unwrap();
        let e = Registry::load(&path).unwrap_err().to_string();
        assert!(e.contains("`a` appears twice"), "{e}");
    }
}
