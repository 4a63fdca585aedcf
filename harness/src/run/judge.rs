//! Judging one row of the grid: each target's case of one fixture against
//! the baseline's (the first target), through the divergence registry, and
//! against the reviewed snapshots.

use std::collections::BTreeMap;

use mock_engine::LoadedFixture;

use super::case::{CaseResult, Judged, Outcome};
use super::{Done, Progress, RunOptions};
use crate::diff::{self, Layer};
use crate::divergence::Compared;
use crate::divergence::facts::CaseFacts;
use crate::snapshot::{self, Store};

/// Judges row `i` (its cases taken out of `ended`, one map per column),
/// tells the progress, and returns the row's cases, bounded.
pub(super) fn judge_row_at(
    i: usize,
    loaded: &LoadedFixture,
    ended: &mut [BTreeMap<usize, Done>],
    names: &[String],
    options: &RunOptions,
    progress: &dyn Progress,
) -> Vec<CaseResult> {
    let mut row: Vec<Done> = ended
        .iter_mut()
        .filter_map(|column| column.remove(&i))
        .collect();
    judge_row(loaded, &mut row, names, options);
    row.into_iter()
        .map(|(mut case, _)| {
            case.bound();
            progress.case_done(&case);
            case
        })
        .collect()
}

/// Compares each case of one fixture with the baseline (the first target
/// that produced a transcript is not enough: the baseline is the first named
/// target), classifies differences, and checks snapshots.
fn judge_row(loaded: &LoadedFixture, row: &mut [Done], names: &[String], options: &RunOptions) {
    let fixture = &loaded.fixture.name;
    let facts = CaseFacts::of(&loaded.fixture);
    let paced = loaded.fixture.chunks_comparable();
    let (baseline, others) = row.split_at_mut(1);
    let (base_case, base_text) = &baseline[0];
    for (case, text) in others.iter_mut() {
        let (Some(a), Some(b)) = (&base_case.transcript, &case.transcript) else {
            continue;
        };
        let compared = Compared {
            baseline: &names[0],
            target: &case.target,
            facts: &facts,
            endpoint: loaded.fixture.request.endpoint,
            version: &options.vllm.version,
        };
        let explained = |ds: &[diff::Difference]| {
            ds.iter().all(|d| {
                d.layer == Layer::KeyOrder || options.registry.find(&compared, d).is_some()
            })
        };
        let mut differences = diff::compare(a, b, paced);
        // A frontend that merges the engine steps it finds queued (Python)
        // may merge paced ones too when the machine is loaded. When the
        // chunk-for-chunk comparison leaves something unexplained, the
        // streams are compared again with the chunks' boundaries as one
        // difference, `stream.chunks` (everything they amount to is still
        // compared); if the registry explains that, it stands. Otherwise,
        // and whenever the first comparison is explained, each difference
        // keeps the entry that describes it.
        let merges = options
            .targets
            .iter()
            .any(|s| s.name() == case.target && s.merges_queued_steps());
        if paced && merges && !explained(&differences) {
            let merged = crate::record::fidelity::differences(a, b);
            if explained(&merged) {
                differences = merged;
            }
        }
        let mut new = false;
        let mut known = false;
        case.unshown_evidence = options
            .registry
            .evidence_unshown(fixture, &compared, &differences);
        case.differences = differences
            .into_iter()
            .map(|d| {
                let entry = options.registry.find(&compared, &d);
                match (entry, d.layer) {
                    (Some(_), _) => known = true,
                    (None, Layer::KeyOrder) => {}
                    (None, _) => new = true,
                }
                Judged {
                    known: entry.map(|e| e.id.clone()),
                    difference: d,
                }
            })
            .collect();
        if new || known {
            case.text_diff = match (base_text, text) {
                (Some(x), Some(y)) => Some(diff::render_text_diff(&names[0], x, &case.target, y)),
                _ => None,
            };
        }
        if case.outcome == Outcome::Pass {
            case.outcome = if new {
                Outcome::New
            } else if known {
                Outcome::Known
            } else {
                Outcome::Pass
            };
        }
    }
    if !options.check_snapshots {
        return;
    }
    for (case, text) in row.iter_mut() {
        let Some(text) = text else { continue };
        let Some(spec) = options.targets.iter().find(|s| s.name() == case.target) else {
            continue;
        };
        if !spec.has_snapshots() {
            continue;
        }
        // A real frontend's answers depend on its release; the reference's do not.
        let store = match spec.frontend() {
            Some(_) => Store::for_release(&options.snapshots, &case.target, &options.vllm.version),
            None => Store::new(&options.snapshots, &case.target),
        };
        // A frontend that merges queued steps: paced or not, a merge may
        // take chunks (paced) or an event shape (either) away.
        let merges = spec.merges_queued_steps();
        match store.check(fixture, text, options.accept_snapshots) {
            Ok(snapshot::Status::Changed(_))
                if merges
                    && store
                        .read(fixture)
                        .ok()
                        .flatten()
                        .is_some_and(|reviewed| snapshot::merged_chunks_only(&reviewed, text)) =>
            {
                // See `merged_chunks_only`: a race, not a change. The pending
                // snapshot is left for a reader who wants to look.
                case.snapshot = Some(snapshot::Status::Unchanged);
                case.notes.push(
                    "snapshot: this stream merged engine steps that the reviewed snapshot has \
                     apart (fewer chunks or event shapes, everything else equal); timing, not a change"
                        .to_string(),
                );
            }
            Ok(status) => {
                let changed =
                    matches!(status, snapshot::Status::New | snapshot::Status::Changed(_));
                if changed && matches!(case.outcome, Outcome::Pass | Outcome::Known) {
                    case.outcome = Outcome::SnapshotChanged;
                }
                case.snapshot = Some(status);
            }
            Err(e) => {
                case.outcome = Outcome::Error;
                case.reason = Some(format!("snapshot {}: {e}", store.path(fixture).display()));
            }
        }
    }
}
