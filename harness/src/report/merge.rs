//! `genconform report merge`: the JSON reports of a run's shards (`run
//! --partition K/N --report-json`) back into the report of the whole run.
//!
//! Every shard records the selection it was cut from ([`Selection`]) and the
//! index of each of its fixtures in it ([`Shard`]), so the merge can refuse
//! what would give a wrong answer: a missing shard, two shards that overlap,
//! shards of different selections, partitions or targets, or a file that is
//! not a shard report.
//!
//! ```no_run
//! let paths = ["s1.json", "s2.json"].map(std::path::PathBuf::from);
//! let whole = harness::report::merge::merge_files(&paths).unwrap();
//! print!("{}", harness::report::terminal(&whole, false));
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::partition::{Partition, Selection};
use crate::run::{CaseResult, RunReport, Shard, Timing};

/// Why shards cannot be merged, naming the file(s) at fault.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no shard reports to merge")]
    Empty,
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a genconform run report: {reason}", path.display())]
    NotAReport { path: PathBuf, reason: String },
    #[error(
        "{} is the report of a run that was not cut into shards (it has no `shard`): \
         run each shard with `genconform run --partition count:K/N --report-json ...`",
        path.display()
    )]
    NotAShard { path: PathBuf },
    #[error(
        "{} is shard {} but {} is shard {}: shards of one run are cut the same way",
        path.display(), partition, first.display(), first_partition
    )]
    Partitions {
        path: PathBuf,
        partition: Partition,
        first: PathBuf,
        first_partition: Partition,
    },
    #[error(
        "{} was cut from another selection than {} ({} fixtures, digest {} vs {} fixtures, \
         digest {}): run every shard with the same fixtures, --filter and --endpoint",
        path.display(), first.display(), selection.size, selection.digest,
        first_selection.size, first_selection.digest
    )]
    Selections {
        path: PathBuf,
        selection: Selection,
        first: PathBuf,
        first_selection: Selection,
    },
    #[error(
        "{} ran targets [{}] but {} ran [{}]: run every shard against the same targets",
        path.display(), targets.join(", "), first.display(), first_targets.join(", ")
    )]
    Targets {
        path: PathBuf,
        targets: Vec<String>,
        first: PathBuf,
        first_targets: Vec<String>,
    },
    #[error("{} and {} overlap: both are shard {partition}", a.display(), b.display())]
    SameShard {
        a: PathBuf,
        b: PathBuf,
        partition: Partition,
    },
    #[error(
        "{} and {} overlap: both ran fixture {fixture} (#{index} of the selection)",
        a.display(), b.display()
    )]
    Overlap {
        a: PathBuf,
        b: PathBuf,
        fixture: String,
        index: u64,
    },
    #[error("shard(s) {} missing: {} reports given for a run cut into {total}", missing.join(", "), given)]
    Missing {
        missing: Vec<String>,
        given: usize,
        total: u64,
    },
    #[error("{}: {problem}", path.display())]
    Inconsistent { path: PathBuf, problem: String },
    #[error(
        "the shards do not add up to their selection: {problem} \
         (were they edited, or made by different genconform versions?)"
    )]
    Incomplete { problem: String },
}

/// Reads and merges shard reports.
pub fn merge_files(paths: &[PathBuf]) -> Result<RunReport, MergeError> {
    let reports = paths
        .iter()
        .map(|path| read(path).map(|r| (path.clone(), r)))
        .collect::<Result<Vec<_>, _>>()?;
    merge(reports)
}

fn read(path: &Path) -> Result<RunReport, MergeError> {
    let text = std::fs::read_to_string(path).map_err(|source| MergeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| MergeError::NotAReport {
        path: path.to_path_buf(),
        reason: match e.path().to_string().as_str() {
            "." => e.inner().to_string(),
            at => format!("at {at}: {}", e.inner()),
        },
    })
}

/// One shard report and the file it came from.
type Named = (PathBuf, RunReport);

/// The report the unsharded run would have written: fixtures and cases in
/// the selection's order, the longest shard's time (shards run side by
/// side), and the first shard's interruption, if any.
pub fn merge(reports: Vec<Named>) -> Result<RunReport, MergeError> {
    let mut shards: Vec<(PathBuf, RunReport, Shard)> = Vec::new();
    for (path, mut report) in reports {
        let Some(shard) = report.shard.take() else {
            return Err(MergeError::NotAShard { path });
        };
        if shard.indices.len() != report.fixtures.len()
            || report.endpoints.len() != report.fixtures.len()
        {
            return Err(MergeError::Inconsistent {
                path,
                problem: format!(
                    "{} fixtures, {} endpoints and {} selection indices: one of each per fixture",
                    report.fixtures.len(),
                    report.endpoints.len(),
                    shard.indices.len()
                ),
            });
        }
        shards.push((path, report, shard));
    }
    let Some((first, first_report, first_shard)) = shards.first() else {
        return Err(MergeError::Empty);
    };
    let cut = first_shard.partition;
    let mut by_number: BTreeMap<u64, &PathBuf> = BTreeMap::new();
    for (path, report, shard) in &shards {
        let p = shard.partition;
        if (p.kind, p.total) != (cut.kind, cut.total) {
            return Err(MergeError::Partitions {
                path: path.clone(),
                partition: p,
                first: first.clone(),
                first_partition: cut,
            });
        }
        if report.selection != first_report.selection {
            return Err(MergeError::Selections {
                path: path.clone(),
                selection: report.selection.clone(),
                first: first.clone(),
                first_selection: first_report.selection.clone(),
            });
        }
        if report.targets != first_report.targets {
            return Err(MergeError::Targets {
                path: path.clone(),
                targets: report.targets.clone(),
                first: first.clone(),
                first_targets: first_report.targets.clone(),
            });
        }
        if let Some(other) = by_number.insert(p.shard, path) {
            return Err(MergeError::SameShard {
                a: other.clone(),
                b: path.clone(),
                partition: p,
            });
        }
    }
    let missing: Vec<String> = cut
        .all()
        .filter(|p| !by_number.contains_key(&p.shard))
        .map(|p| p.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing {
            missing,
            given: shards.len(),
            total: cut.total,
        });
    }

    // Each fixture of the selection, with the shard that ran it.
    let selection = first_report.selection.clone();
    let targets = first_report.targets.clone();
    let mut rows: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for (s, (path, report, shard)) in shards.iter().enumerate() {
        for (f, &index) in shard.indices.iter().enumerate() {
            if index >= selection.size {
                return Err(MergeError::Inconsistent {
                    path: path.clone(),
                    problem: format!(
                        "fixture {} is #{index} of a selection of {}",
                        report.fixtures[f], selection.size
                    ),
                });
            }
            if let Some((other, _)) = rows.insert(index, (s, f)) {
                return Err(MergeError::Overlap {
                    a: shards[other].0.clone(),
                    b: path.clone(),
                    fixture: report.fixtures[f].clone(),
                    index,
                });
            }
        }
    }
    if rows.len() as u64 != selection.size {
        let gaps: Vec<String> = (0..selection.size)
            .filter(|i| !rows.contains_key(i))
            .take(5)
            .map(|i| format!("#{i}"))
            .collect();
        return Err(MergeError::Incomplete {
            problem: format!(
                "{} of {} fixtures ran; none ran {}",
                rows.len(),
                selection.size,
                gaps.join(", ")
            ),
        });
    }

    // A shard's cases, per fixture, in the order it ran them.
    let mut cases_of: Vec<BTreeMap<String, Vec<CaseResult>>> = Vec::new();
    let mut elapsed_ms: f64 = 0.0;
    let mut timing = Timing::default();
    let mut interrupted = None;
    for (_, report, _) in &mut shards {
        let mut map: BTreeMap<String, Vec<CaseResult>> = BTreeMap::new();
        for case in std::mem::take(&mut report.cases) {
            map.entry(case.fixture.clone()).or_default().push(case);
        }
        cases_of.push(map);
        elapsed_ms = elapsed_ms.max(report.elapsed_ms);
        timing.add(&report.timing);
        interrupted = interrupted.or_else(|| report.interrupted.clone());
    }
    let mut merged = RunReport {
        targets,
        fixtures: Vec::new(),
        endpoints: Vec::new(),
        cases: Vec::new(),
        elapsed_ms,
        interrupted,
        selection,
        shard: None,
        timing,
    };
    for (s, f) in rows.into_values() {
        let report = &shards[s].1;
        let fixture = report.fixtures[f].clone();
        merged
            .cases
            .extend(cases_of[s].remove(&fixture).unwrap_or_default());
        merged.fixtures.push(fixture);
        merged.endpoints.push(report.endpoints[f]);
    }
    if let Some((s, fixture)) = cases_of
        .iter()
        .enumerate()
        .find_map(|(s, m)| m.keys().next().map(|f| (s, f)))
    {
        return Err(MergeError::Inconsistent {
            path: shards[s].0.clone(),
            problem: format!("it has cases of fixture {fixture}, which is not among its fixtures"),
        });
    }
    let digest = Selection::of(merged.fixtures.iter().map(String::as_str));
    if digest != merged.selection {
        return Err(MergeError::Incomplete {
            problem: format!(
                "the fixtures, in selection order, digest to {} but the shards recorded {}",
                digest.digest, merged.selection.digest
            ),
        });
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::diff::{Difference, Kind, Layer};
    use crate::run::Judged;

    /// A merged report says what the shard said: a `null` value and no
    /// value at all stay apart when a report is read back.
    #[test]
    fn null_and_absent_survive_a_round_trip() {
        let judged = Judged {
            difference: Difference {
                layer: Layer::Json,
                path: "body.service_tier".into(),
                kind: Kind::NullVsAbsent,
                baseline: None,
                other: Some(Value::Null),
            },
            known: Some("python-null-fields".into()),
        };
        let text = serde_json::to_string(&judged).unwrap();
        let back: Judged = serde_json::from_str(&text).unwrap();
        assert_eq!(back.difference, judged.difference, "{text}");
        assert_eq!(back.difference.to_string(), judged.difference.to_string());
        assert!(back.difference.to_string().ends_with("(absent) -> null"));
    }
}
