//! A wire layout read from a vLLM install: the JSON genconform's reader
//! (`harness/src/vllm/read_layout.py`) prints, which is also the format of
//! `--layout-file`.
//!
//! ```json
//! {
//!  "vllm_version": "0.32.0",
//!  "source": "/venv/lib/python3.11/site-packages/vllm/v1/engine/__init__.py",
//!  "structs": {
//!   "EngineCoreOutput": [
//!    {"name": "request_id"},
//!    {"name": "num_nans_in_logits", "default": 0}
//!   ]
//!  }
//! }
//! ```
//!
//! A field without `default` has none (it is always on the wire); one whose
//! default JSON cannot hold has `default_repr` instead, and is refused here
//! by name. [`LayoutFile::layout`] turns the file into a [`Layout`] and runs
//! the start-up checks of [`super::layout_check`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::layout::{Field, FieldDefault, Layout, Struct, leak_str};
use super::layout_check::{FIXED, LayoutError, LayoutReport};

/// The reader's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutFile {
    /// `vllm.__version__` of the install.
    pub vllm_version: String,
    /// Where the structs were read (`vllm/v1/engine/__init__.py`).
    pub source: String,
    /// Fields of each struct, in declaration (= wire) order, by class name.
    pub structs: BTreeMap<String, Vec<FileField>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileField {
    pub name: String,
    /// Absent: no default. `null` is a default (`None`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<serde_json::Value>,
    /// A default that JSON cannot hold, as Python's `repr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_repr: Option<String>,
    /// The factory that made the default (`list`), for the reader's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_factory: Option<String>,
}

/// Keeps an explicit `null` apart from an absent key.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

impl LayoutFile {
    /// Parses the reader's JSON; `origin` names the file (or install) in errors.
    pub fn parse(json: &str, origin: &str) -> Result<Self, LayoutError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(de).map_err(|e| LayoutError::Parse {
            origin: origin.to_string(),
            path: e.path().to_string(),
            reason: e.inner().to_string(),
        })
    }

    pub fn read(path: &Path) -> Result<Self, LayoutError> {
        let origin = path.display().to_string();
        let json = std::fs::read_to_string(path).map_err(|e| LayoutError::Io {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&json, &origin)
    }

    /// The fields of one struct, with their defaults as the mock sends them.
    fn fields(&self, class: &str) -> Result<Vec<Field>, LayoutError> {
        let fields = self
            .structs
            .get(class)
            .ok_or_else(|| LayoutError::MissingStruct {
                class: class.to_string(),
                version: self.vllm_version.clone(),
                from: self.source.clone(),
            })?;
        fields
            .iter()
            .map(|f| {
                let default = match (&f.default, &f.default_repr) {
                    (None, None) => FieldDefault::Required,
                    (Some(json), _) => FieldDefault::from_json(json).ok_or_else(|| {
                        LayoutError::Unrepresentable {
                            class: class.to_string(),
                            field: f.name.clone(),
                            default: json.to_string(),
                            version: self.vllm_version.clone(),
                            from: self.source.clone(),
                        }
                    })?,
                    (None, Some(repr)) => {
                        return Err(LayoutError::Unrepresentable {
                            class: class.to_string(),
                            field: f.name.clone(),
                            default: repr.clone(),
                            version: self.vllm_version.clone(),
                            from: self.source.clone(),
                        });
                    }
                };
                Ok(Field {
                    name: leak_str(&f.name),
                    default,
                })
            })
            .collect()
    }

    /// The layout to speak, after the start-up checks: an error names the
    /// field, the struct and the versions; the report lists the fields the
    /// mock has no meaning for (it sends their defaults).
    pub fn layout(&self) -> Result<(&'static Layout, LayoutReport), LayoutError> {
        let [request, output, outputs] =
            Struct::ALL.map(|s| self.fields(s.name()).map(|f| &*Vec::leak(f)));
        let layout = Layout {
            version: leak_str(&self.vllm_version),
            verified: true,
            source: leak_str(&self.source),
            request: request?,
            output: output?,
            outputs: outputs?,
        };
        // The structs the mock writes by fixed position must be as it writes them.
        for (class, expected) in FIXED {
            let got = self.fields(class)?;
            let names: Vec<&str> = got.iter().map(|f| f.name).collect();
            if names != *expected {
                return Err(LayoutError::FixedMoved {
                    class: class.to_string(),
                    expected: expected.join(", "),
                    got: names.join(", "),
                    version: self.vllm_version.clone(),
                    from: self.source.clone(),
                });
            }
        }
        let report = super::layout_check::check(&layout)?;
        Ok((layout.leak(), report))
    }

    /// The file of a layout (a hand-written table, for comparing).
    pub fn of(layout: &Layout) -> Self {
        let to_json = |d: FieldDefault| match d {
            FieldDefault::Required => None,
            FieldDefault::Nil => Some(serde_json::Value::Null),
            FieldDefault::Int(i) => Some(i.into()),
            FieldDefault::Bool(b) => Some(b.into()),
            FieldDefault::Float(x) => Some(x.into()),
            FieldDefault::EmptyArray => Some(serde_json::Value::Array(Vec::new())),
        };
        Self {
            vllm_version: layout.version.to_string(),
            source: layout.source.to_string(),
            structs: Struct::ALL
                .into_iter()
                .map(|s| {
                    let fields = layout
                        .fields(s)
                        .iter()
                        .map(|f| FileField {
                            name: f.name.to_string(),
                            default: to_json(f.default),
                            default_repr: None,
                            default_factory: None,
                        })
                        .collect();
                    (s.name().to_string(), fields)
                })
                .collect(),
        }
    }
}
