//! `genconform layout`: the wire layout read from an install, checked as a
//! run would check it, and compared field by field with a hand-written table.
//!
//! ```text
//! $ genconform layout --vllm-python ~/src/vllm/.venv/bin/python
//! vLLM 0.35.0.dev12+g1234, read with ~/src/vllm/.venv/bin/python
//!   EngineCoreRequest   23 fields
//!   EngineCoreOutput    21 fields
//!   EngineCoreOutputs    9 fields
//! start-up check: ...
//!   unknown field EngineCoreOutput.my_field (position 20): no meaning to the mock engine; sends its default: nil
//! compared with the hand-written table of 0.34.0 (there is none for 0.35.0.dev12+g1234: the nearest older release's): 1 difference
//!   EngineCoreOutput.my_field   only in the install (position 20, default nil)
//! ```

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use mock_engine::wire::{Field, FieldDefault, Layout, Struct, VllmVersion};

use super::{DEFAULT_VERSION, Install};

#[derive(Debug, Args)]
pub struct LayoutArgs {
    /// The install to read (`~/.cache/genconform/vllm-<V>`), and the table to
    /// compare with (default: the install's own version's, else the nearest
    /// older release's).
    #[arg(long)]
    pub vllm_version: Option<String>,
    /// Read the vLLM this interpreter imports instead (your own build).
    #[arg(long)]
    pub vllm_python: Option<PathBuf>,
    /// Print the layout as JSON (the format of `--layout-file`) and nothing else.
    #[arg(long)]
    pub json: bool,
}

/// One way a layout differs from a table.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldDiff {
    /// A field one side has and the other has not.
    OnlyIn {
        side: Side,
        class: Struct,
        name: String,
        position: usize,
        default: FieldDefault,
    },
    /// The order among the fields both have changed: `after_*` is the
    /// field both have that precedes it (none: it comes first).
    Moved {
        class: Struct,
        name: String,
        install: usize,
        table: usize,
        after_install: Option<String>,
        after_table: Option<String>,
    },
    Default {
        class: Struct,
        name: String,
        install: FieldDefault,
        table: FieldDefault,
    },
}

/// Which side of a comparison: the layout read from an install, or the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Install,
    Table,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Install => "install",
            Self::Table => "table",
        })
    }
}

fn render(d: FieldDefault) -> String {
    match d {
        FieldDefault::Required => "none".into(),
        FieldDefault::Nil => "nil".into(),
        FieldDefault::Int(i) => i.to_string(),
        FieldDefault::Bool(b) => b.to_string(),
        FieldDefault::Float(x) => format!("{x:?}"),
        FieldDefault::EmptyArray => "[]".into(),
    }
}

impl fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (class, name, what) = match self {
            Self::OnlyIn {
                side,
                class,
                name,
                position,
                default,
            } => (
                class,
                name,
                format!(
                    "only in the {side} (position {position}, default {})",
                    render(*default)
                ),
            ),
            Self::Moved {
                class,
                name,
                install,
                table,
                after_install,
                after_table,
            } => {
                let after = |a: &Option<String>| {
                    a.as_deref()
                        .map_or("first".into(), |a| format!("after {a}"))
                };
                (
                    class,
                    name,
                    format!(
                        "moved: {} in the install (position {install}), {} in the table (position {table})",
                        after(after_install),
                        after(after_table)
                    ),
                )
            }
            Self::Default {
                class,
                name,
                install,
                table,
            } => (
                class,
                name,
                format!(
                    "default {} in the install, {} in the table",
                    render(*install),
                    render(*table)
                ),
            ),
        };
        write!(f, "{:<44} {what}", format!("{class}.{name}"))
    }
}

/// The differences of `install` from `table`, struct by struct, field by field.
pub fn diff(install: &Layout, table: &Layout) -> Vec<FieldDiff> {
    let mut diffs = Vec::new();
    for class in Struct::ALL {
        let (ours, theirs) = (install.fields(class), table.fields(class));
        let find = |fields: &[Field], name: &str| fields.iter().position(|f| f.name == name);
        for (side, these, other) in [(Side::Install, ours, theirs), (Side::Table, theirs, ours)] {
            for (position, f) in these.iter().enumerate() {
                if find(other, f.name).is_none() {
                    diffs.push(FieldDiff::OnlyIn {
                        side,
                        class,
                        name: f.name.into(),
                        position,
                        default: f.default,
                    });
                }
            }
        }
        // Order among the common fields: an insertion shifts the later
        // fields' positions without moving them relative to each other.
        let common = |a: &[Field], b: &[Field]| -> Vec<&'static str> {
            a.iter()
                .filter(|f| find(b, f.name).is_some())
                .map(|f| f.name)
                .collect()
        };
        let (ours_common, theirs_common) = (common(ours, theirs), common(theirs, ours));
        for (i, name) in ours_common.iter().enumerate() {
            if theirs_common[i] != *name {
                diffs.push(FieldDiff::Moved {
                    class,
                    name: (*name).into(),
                    install: find(ours, name).unwrap_or_default(),
                    table: find(theirs, name).unwrap_or_default(),
                    after_install: i.checked_sub(1).map(|p| ours_common[p].to_string()),
                    after_table: theirs_common
                        .iter()
                        .position(|n| n == name)
                        .and_then(|p| p.checked_sub(1))
                        .map(|p| theirs_common[p].to_string()),
                });
            }
        }
        for f in ours {
            if let Some(t) = theirs.iter().find(|t| t.name == f.name)
                && t.default != f.default
            {
                diffs.push(FieldDiff::Default {
                    class,
                    name: f.name.into(),
                    install: f.default,
                    table: t.default,
                });
            }
        }
    }
    diffs
}

/// `genconform layout`: 0 when the install equals the table, 1 when it
/// differs or fails the start-up check, 2 when it cannot be read.
pub fn command(args: LayoutArgs) -> ExitCode {
    let python = match (&args.vllm_python, &args.vllm_version) {
        (Some(python), _) => python.clone(),
        (None, version) => {
            let version = version.as_deref().unwrap_or(DEFAULT_VERSION);
            let python = Install::dir_for(version).join("bin/python");
            if !python.is_file() {
                eprintln!(
                    "error: vLLM {version} is not installed ({} is missing).\n  \
                     Install it: genconform setup vllm --version {version}\n  \
                     or read your own build with --vllm-python PATH",
                    python.display()
                );
                return ExitCode::from(2);
            }
            python
        }
    };
    let file = match super::layout::read(&python) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&file).expect("a layout serializes")
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "vLLM {}, read with {} (cached in {})",
        file.vllm_version,
        python.display(),
        super::layout::cache_file(&python).display()
    );
    for class in Struct::ALL {
        let n = file.structs.get(class.name()).map_or(0, Vec::len);
        println!("  {:<20}{n:>3} fields", class.name());
    }
    let (layout, failed) = match file.layout() {
        Ok((layout, report)) => {
            println!("start-up check: {}", report_tail(&report.to_string()));
            (Some(layout), false)
        }
        Err(e) => {
            println!("start-up check: FAILED: {e}");
            (None, true)
        }
    };
    let own: Option<VllmVersion> = file.vllm_version.parse().ok();
    // A release or build with no table of its own is compared with the
    // newest release before it: what changed since is what the diff shows.
    let nearest = |v: &str| {
        (
            VllmVersion::nearest(v),
            format!(" (there is none for {v}: the nearest older release's)"),
        )
    };
    let (table, why) = match (&args.vllm_version, own) {
        (Some(v), _) => match v.parse::<VllmVersion>() {
            Ok(v) => (v, String::new()),
            Err(_) => nearest(v),
        },
        (None, Some(own)) => (own, String::new()),
        (None, None) => nearest(&file.vllm_version),
    };
    let Some(layout) = layout else {
        return ExitCode::from(1);
    };
    let diffs = diff(layout, table.layout());
    if diffs.is_empty() {
        println!("compared with the hand-written table of {table}{why}: equal");
        return if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }
    println!(
        "compared with the hand-written table of {table}{why}: {} difference{}",
        diffs.len(),
        if diffs.len() == 1 { "" } else { "s" }
    );
    for d in &diffs {
        println!("  {d}");
    }
    ExitCode::from(1)
}

/// The report without its first line's "wire layout of ..." prefix.
fn report_tail(report: &str) -> &str {
    report
        .split_once("): ")
        .filter(|(head, _)| !head.contains('\n'))
        .map_or(report, |(_, tail)| tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_differ_by_the_trailing_error_field_only() {
        let diffs = diff(VllmVersion::V0_33_0.layout(), VllmVersion::V0_32_0.layout());
        assert_eq!(
            diffs,
            vec![FieldDiff::OnlyIn {
                side: Side::Install,
                class: Struct::Output,
                name: "error".into(),
                position: 18,
                default: FieldDefault::Nil,
            }]
        );
        assert_eq!(
            diffs[0].to_string(),
            format!(
                "{:<44} only in the install (position 18, default nil)",
                "EngineCoreOutput.error"
            )
        );
        assert!(diff(VllmVersion::V0_32_0.layout(), VllmVersion::V0_32_0.layout()).is_empty());
    }

    #[test]
    fn a_swap_is_two_moves_and_an_insertion_none() {
        let table = VllmVersion::V0_32_0.layout();
        let mut output = table.output.to_vec();
        output.swap(5, 6);
        output.insert(
            1,
            Field {
                name: "inserted",
                default: FieldDefault::Int(3),
            },
        );
        output[10].default = FieldDefault::Bool(true);
        let install = Layout {
            output: output.leak(),
            ..*table
        };
        let diffs: Vec<String> = diff(&install, table)
            .iter()
            .map(ToString::to_string)
            .collect();
        let expected = [
            "EngineCoreOutput.inserted",
            "EngineCoreOutput.stop_reason",
            "EngineCoreOutput.finish_reason",
            "EngineCoreOutput.ec_transfer_params",
        ];
        assert_eq!(diffs.len(), expected.len(), "{diffs:#?}");
        for (d, name) in diffs.iter().zip(expected) {
            assert!(d.starts_with(name), "{d} is not about {name}");
        }
        assert!(
            diffs[1].ends_with(
                "moved: after pooling_output in the install (position 6), \
                 after finish_reason in the table (position 6)"
            ),
            "{}",
            diffs[1]
        );
        assert!(diffs[3].ends_with("default true in the install, nil in the table"));
    }
}
