//! What the mock engine needs of a layout, checked once at start-up.
//!
//! The mock reads and writes positional structs by field name, so a field
//! that moved is simply spoken at its new position. What cannot be spoken
//! right is refused before the first request: a field the mock reads or
//! writes that is gone, a default the mock relies on that changed, and a
//! field of a struct the mock writes that has no default (the mock could
//! only invent its value). A field the mock has never heard of is reported
//! once ([`LayoutReport`]) and its default is sent.

use std::fmt;

use super::layout::{Field, FieldDefault, Layout, Struct, VllmVersion};

/// How the mock uses a field it has a meaning for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Use {
    /// Read or written whatever its default.
    Always,
    /// Written only when set, else the layout's default goes out; read as
    /// this when left off. The install's default must be exactly this:
    /// another (`finish_reason = 0`) would turn "unset" into data.
    Default(FieldDefault),
    /// Like [`Use::Default`], but older releases lack it and the mock then
    /// leaves it out (`weight_version`, new in 0.32.0).
    IfPresent(FieldDefault),
}

use FieldDefault::{Int, Nil};
use Use::{Always, Default, IfPresent};

/// The fields the mock engine reads (requests) or writes (outputs), by struct.
const NEEDS: [(Struct, &[(&str, Use)]); 3] = [
    (
        Struct::Request,
        &[
            ("request_id", Always),
            ("prompt_token_ids", Always),
            ("mm_features", Always),
            ("sampling_params", Always),
            ("pooling_params", Always),
            ("arrival_time", Always),
            ("data_parallel_rank", Always),
            ("client_index", Default(Int(0))),
            ("priority", Default(Int(0))),
            ("external_req_id", Always),
        ],
    ),
    (
        Struct::Output,
        &[
            ("request_id", Always),
            ("new_token_ids", Always),
            ("new_logprobs", Default(Nil)),
            ("new_prompt_logprobs_tensors", Default(Nil)),
            ("finish_reason", Default(Nil)),
            ("stop_reason", Default(Nil)),
            ("kv_transfer_params", Default(Nil)),
            ("prefill_stats", Default(Nil)),
            ("num_nans_in_logits", Always),
        ],
    ),
    (
        Struct::Outputs,
        &[
            ("engine_index", Always),
            ("outputs", Always),
            ("timestamp", Always),
            ("utility_output", Default(Nil)),
            ("finished_requests", Default(Nil)),
            ("weight_version", IfPresent(Nil)),
        ],
    ),
];

/// Structs the mock writes at fixed positions (not through a layout):
/// the install's must be exactly these.
pub(crate) const FIXED: [(&str, &[&str]); 3] = [
    ("UtilityOutput", &["call_id", "failure_message", "result"]),
    (
        "LogprobsLists",
        &[
            "logprob_token_ids",
            "logprobs",
            "sampled_token_ranks",
            "cu_num_generated_tokens",
        ],
    ),
    (
        "LogprobsTensors",
        &[
            "logprob_token_ids",
            "logprobs",
            "selected_token_ranks",
            "cu_num_generated_tokens",
            "cu_num_generated_tokens_tensor",
        ],
    ),
];

/// Why a layout cannot be spoken; names the field, struct and versions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read the layout file {origin}: {reason}")]
    Io { origin: String, reason: String },
    #[error("layout file {origin}: at `{path}`: {reason}")]
    Parse {
        origin: String,
        path: String,
        reason: String,
    },
    #[error("the vLLM {version} layout ({from}) has no struct `{class}`")]
    MissingStruct {
        class: String,
        version: String,
        from: String,
    },
    #[error(
        "{class}.{field} of vLLM {version} ({from}) defaults to {default}, which the mock \
         engine cannot send (it sends nil, integers, floats, booleans and empty lists)"
    )]
    Unrepresentable {
        class: String,
        field: String,
        default: String,
        version: String,
        from: String,
    },
    #[error(
        "{class} of vLLM {version} ({from}) has the fields [{got}]; the mock engine writes \
         [{expected}] at fixed positions"
    )]
    FixedMoved {
        class: String,
        expected: String,
        got: String,
        version: String,
        from: String,
    },
    #[error(
        "{class}.{field} is gone from vLLM {version}'s layout ({from}); the mock engine \
         {uses} it (the tables of {tables} have it)"
    )]
    Gone {
        class: Struct,
        field: &'static str,
        uses: &'static str,
        version: &'static str,
        from: &'static str,
        tables: String,
    },
    #[error(
        "{class}.{field} of vLLM {version} ({from}) defaults to {got}; the mock engine relies \
         on {expected} (the tables of {tables} have it)"
    )]
    DefaultChanged {
        class: Struct,
        field: &'static str,
        got: String,
        expected: String,
        version: &'static str,
        from: &'static str,
        tables: String,
    },
    #[error(
        "{class}.{field} (position {position}) of vLLM {version} ({from}) has no default; \
         the mock engine has no value for it, and would have to invent one"
    )]
    NoDefault {
        class: Struct,
        field: &'static str,
        position: usize,
        version: &'static str,
        from: &'static str,
    },
}

/// A field of the install's layout the mock engine has no meaning for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnknownField {
    pub class: Struct,
    pub name: &'static str,
    pub position: usize,
    /// What goes on the wire for it (requests: how a left-off one reads).
    pub default: FieldDefault,
}

/// What the start-up check found that does not stop the run.
#[derive(Debug, Clone, PartialEq)]
pub struct LayoutReport {
    pub version: &'static str,
    pub source: &'static str,
    pub unknown: Vec<UnknownField>,
}

impl fmt::Display for LayoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wire layout of vLLM {} ({})", self.version, self.source)?;
        if self.unknown.is_empty() {
            return write!(f, ": every field known to the mock engine");
        }
        for u in &self.unknown {
            let what = match u.class {
                Struct::Request => "ignored when read",
                Struct::Output | Struct::Outputs => "sends its default",
            };
            write!(
                f,
                "\n  unknown field {}.{} (position {}): no meaning to the mock engine; {what}: {}",
                u.class,
                u.name,
                u.position,
                render(u.default)
            )?;
        }
        Ok(())
    }
}

fn render(d: FieldDefault) -> String {
    match d {
        FieldDefault::Required => "(no default)".into(),
        FieldDefault::Nil => "nil".into(),
        FieldDefault::Int(i) => i.to_string(),
        FieldDefault::Bool(b) => b.to_string(),
        FieldDefault::Float(x) => format!("{x:?}"),
        FieldDefault::EmptyArray => "[]".into(),
    }
}

/// The hand-written tables that have `name` in `class`, for error messages.
fn tables_with(class: Struct, name: &str) -> String {
    let versions: Vec<&str> = VllmVersion::ALL
        .into_iter()
        .filter(|v| Layout::position(v.layout().fields(class), name).is_some())
        .map(VllmVersion::as_str)
        .collect();
    if versions.is_empty() {
        "no release".into()
    } else {
        versions.join(", ")
    }
}

/// Whether any hand-written table names this field: the mock knows it (and
/// leaves it at its default on purpose) even when it does not use it.
fn in_a_table(class: Struct, name: &str) -> bool {
    VllmVersion::ALL
        .into_iter()
        .any(|v| Layout::position(v.layout().fields(class), name).is_some())
}

/// The start-up check of a layout: see the module docs.
pub fn check(layout: &Layout) -> Result<LayoutReport, LayoutError> {
    let mut unknown = Vec::new();
    for (class, needs) in NEEDS {
        let fields: &[Field] = layout.fields(class);
        for &(name, use_) in needs {
            let found = fields.iter().find(|f| f.name == name);
            let field = match (found, use_) {
                (Some(f), _) => f,
                (None, IfPresent(_)) => continue,
                (None, _) => {
                    return Err(LayoutError::Gone {
                        class,
                        field: name,
                        uses: if class == Struct::Request {
                            "reads"
                        } else {
                            "writes"
                        },
                        version: layout.version,
                        from: layout.source,
                        tables: tables_with(class, name),
                    });
                }
            };
            if let Default(expected) | IfPresent(expected) = use_
                && field.default != expected
            {
                return Err(LayoutError::DefaultChanged {
                    class,
                    field: name,
                    got: render(field.default),
                    expected: render(expected),
                    version: layout.version,
                    from: layout.source,
                    tables: tables_with(class, name),
                });
            }
        }
        for (position, f) in fields.iter().enumerate() {
            let needed = needs.iter().any(|(n, _)| *n == f.name);
            if !needed && class != Struct::Request && f.default == FieldDefault::Required {
                return Err(LayoutError::NoDefault {
                    class,
                    field: f.name,
                    position,
                    version: layout.version,
                    from: layout.source,
                });
            }
            if !needed && !in_a_table(class, f.name) {
                unknown.push(UnknownField {
                    class,
                    name: f.name,
                    position,
                    default: f.default,
                });
            }
        }
    }
    Ok(LayoutReport {
        version: layout.version,
        source: layout.source,
        unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hand_written_table_passes_with_nothing_unknown() {
        for version in VllmVersion::ALL {
            let report = check(version.layout()).unwrap();
            assert!(report.unknown.is_empty(), "{version}: {report}");
        }
    }
}
