//! One fuzz round: a seed's case stream drawn, its cases tried against the
//! targets (several in flight, judged in stream order), and its first
//! failure shrunk by proptest and recorded as a fixture.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt as _;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};

use super::cases::{self, Case, Scope};
use super::oracle::{Property, Violation};
use super::trial::trial;
use super::verdict::Failure;
use super::{Found, FuzzOptions, FuzzReport, found, shard};
use crate::interrupt::Interrupt;
use crate::prompt_lock::PromptLocks;
use crate::session::progress::Bar;
use crate::session::targets::TargetSet;

/// What every round of a run shares: the runtime, the targets and how
/// they take scripts.
pub(super) struct Shared<'a> {
    pub(super) runtime: &'a tokio::runtime::Runtime,
    pub(super) set: &'a tokio::sync::Mutex<TargetSet>,
    pub(super) locks: &'a PromptLocks,
    pub(super) scope: Scope,
    pub(super) channels: Vec<(String, &'static str)>,
    pub(super) names: Vec<String>,
    pub(super) interrupted: &'a dyn Fn() -> Option<Interrupt>,
}

/// One round: the seed's case stream, judged, and its first failure shrunk.
pub(super) fn round(shared: &Shared<'_>, options: &FuzzOptions) -> FuzzReport {
    let Shared {
        runtime,
        set,
        locks,
        scope,
        ..
    } = *shared;
    let interrupted = shared.interrupted;
    let names = shared.names.clone();
    let channels = shared.channels.clone();
    let exchanged = Cell::new(0u64);
    let mut ran = Vec::new();
    let bar = RoundBar::new(options.progress, u64::from(options.cases));
    let started = Instant::now();

    // 1. The case stream, drawn as proptest's runner draws it: the runner
    // draws the next case the same way whatever the last one's verdict (it
    // only shrinks after a failure), so this is the stream a serial run sees.
    let stream = shard::Sharded::new(cases::case(scope), options.partition);
    let drawn = RefCell::new(Vec::new());
    let drawing = TestRunner::new_with_rng(config(options), rng(options.seed)).run(
        &stream,
        |(mine, case)| {
            drawn.borrow_mut().push((mine, case));
            Ok(())
        },
    );
    let drawn = drawn.into_inner();

    // 2. This shard's cases, up to `jobs` in flight, judged in stream order:
    // the first failure in the stream is the one reported, whichever case
    // finished first.
    let mut first_failure = None;
    let mut judged = 0usize;
    // Per registry entry, the cases where it explained a target's break of
    // the contract.
    let mut known: BTreeMap<String, u64> = BTreeMap::new();
    // The last failure an exchange showed, proptest's minimal case's: if the
    // case passes when run again, it still names the property and target.
    let last_seen: RefCell<Option<Failure>> = RefCell::default();
    runtime.block_on(async {
        let mut verdicts = futures::stream::iter(drawn.iter())
            .map(|(mine, case)| async move {
                if !mine || interrupted().is_some() {
                    return None;
                }
                Some(trial(set, locks, options, case).await)
            })
            .buffered(options.jobs.max(1));
        while let Some(verdict) = verdicts.next().await {
            if interrupted().is_some() {
                break;
            }
            let case = &drawn[judged].1;
            judged += 1;
            match verdict {
                // Another shard's: a pass here, so the stream goes on as it
                // would unsharded.
                None => bar.skipped(),
                Some(verdict) => {
                    exchanged.set(exchanged.get() + 1);
                    ran.push(case.digest());
                    match verdict {
                        Ok(explained) => {
                            for id in explained {
                                *known.entry(id).or_insert(0) += 1;
                            }
                            bar.passed()
                        }
                        Err(failure) => {
                            bar.failing(&failure);
                            first_failure = Some((judged - 1, failure));
                            break;
                        }
                    }
                }
            }
        }
    });

    // 3. A failure is shrunk serially by proptest, on the same stream: the
    // cases before it pass from step 2's verdicts, the failing one fails
    // with its verdict, and every shrink is exchanged.
    let stopped_early = first_failure.is_some() || interrupted().is_some();
    let result = match first_failure {
        None => drawing.map_err(|e| match e {
            TestError::Abort(reason) => TestError::Abort(reason),
            // The drawing pass fails nothing; kept total all the same.
            TestError::Fail(reason, _) => TestError::Abort(reason),
        }),
        Some((at, failure)) => {
            last_seen.replace(Some(failure.clone()));
            let calls = Cell::new(0usize);
            let strategy = shard::Sharded::new(cases::case(scope), options.partition);
            let mut runner = TestRunner::new_with_rng(config(options), rng(options.seed));
            runner.run(&strategy, |(mine, case)| {
                let call = calls.replace(calls.get() + 1);
                let same = drawn
                    .get(call)
                    .is_some_and(|(_, seen)| seen.digest() == case.digest());
                if same && call < at {
                    return Ok(());
                }
                if same && call == at {
                    return Err(TestCaseError::fail(failure.to_string()));
                }
                if interrupted().is_some() {
                    return Err(TestCaseError::reject("interrupted"));
                }
                if !mine {
                    return Ok(());
                }
                exchanged.set(exchanged.get() + 1);
                match runtime.block_on(trial(set, locks, options, &case)) {
                    Ok(_) => Ok(()),
                    Err(failure) => {
                        bar.failing(&failure);
                        let reason = failure.to_string();
                        last_seen.replace(Some(failure));
                        Err(TestCaseError::fail(reason))
                    }
                }
            })
        }
    };
    bar.finish();
    let elapsed = started.elapsed();
    let (found, aborted) = match result {
        Ok(()) => (None, None),
        Err(TestError::Abort(reason)) => (None, Some(reason.to_string())),
        Err(TestError::Fail(reason, (_, case))) => {
            // Run the minimal case (the smallest so far, if interrupted) once
            // more, for its violation in full.
            let again = runtime.block_on(trial(set, locks, options, &case));
            (
                Some(record(
                    options,
                    case,
                    again.err(),
                    last_seen.take(),
                    reason.to_string(),
                )),
                None,
            )
        }
    };

    FuzzReport {
        seed: options.seed,
        targets: names,
        channels,
        scope,
        exchanged: exchanged.get(),
        elapsed,
        found,
        // The rejects that ended an interrupted run are ours, not a finding.
        aborted: aborted.filter(|_| interrupted().is_none()),
        interrupted: interrupted(),
        partition: options.partition,
        // The stream as far as it was judged: all of it, unless a failure
        // or a signal ended the run.
        generated: if stopped_early {
            judged as u64
        } else {
            stream.generated()
        },
        ran,
        known,
    }
}

fn config(options: &FuzzOptions) -> Config {
    let persistence = options.regressions.as_ref().map(|path| {
        // proptest wants a 'static path; one per run is a small, bounded leak.
        let path: &'static str = Box::leak(path.display().to_string().into_boxed_str());
        Box::new(FileFailurePersistence::Direct(path))
            as Box<dyn proptest::test_runner::FailurePersistence>
    });
    Config {
        cases: options.cases,
        max_shrink_iters: options.max_shrink_iters,
        failure_persistence: persistence,
        source_file: None,
        ..Config::default()
    }
}

/// A ChaCha generator seeded from `--seed`, so a seed names a run.
pub(super) fn rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    let mut state = seed;
    for chunk in bytes.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// `again`: the minimal case's failure when run once more; `seen`: the last
/// failure shrinking saw, for a case that passes when run again.
fn record(
    options: &FuzzOptions,
    case: Case,
    again: Option<Failure>,
    seen: Option<Failure>,
    reason: String,
) -> Found {
    let failure = again.unwrap_or_else(|| {
        // The minimal case passed when run again: the failure depends on
        // timing. It keeps the property and target it failed on.
        let flaky = |detail: &str| {
            format!("did not fail again when re-run (flaky); it failed with: {detail}")
        };
        match seen {
            Some(seen) => Failure {
                violation: Violation {
                    property: seen.violation.property,
                    detail: flaky(&seen.violation.detail),
                },
                ..seen
            },
            None => Failure {
                violation: Violation {
                    property: Property::Transport,
                    detail: flaky(&reason),
                },
                target: "?".into(),
                twin: false,
            },
        }
    });
    let primary = case.request_spec(&options.model);
    let request = if failure.twin {
        cases::twin(&primary).unwrap_or(primary)
    } else {
        primary
    };
    let name = found::name(&case, Some(&failure.violation));
    let description = found::describe(&failure.violation, &failure.target, failure.twin);
    let fixture = found::fixture(&case, request, name, description);
    let written = found::write(&options.found_dir, &fixture).map_err(|e| e.to_string());
    Found {
        violation: failure.violation,
        target: failure.target,
        case,
        twin: failure.twin,
        fixture,
        written,
        reason,
    }
}

/// A round's progress: the cases passed; once a case fails, the shrinking
/// of it (its steps are not counted).
struct RoundBar {
    bar: Bar,
    shrinking: Cell<bool>,
}

impl RoundBar {
    fn new(enabled: bool, total: u64) -> Self {
        let bar = Bar::on_stderr(
            enabled,
            "{spinner} [{elapsed}] {bar:30} {pos}/{len} {per_sec} {msg}",
        );
        bar.set_length(total);
        Self {
            bar,
            shrinking: Cell::new(false),
        }
    }

    fn passed(&self) {
        if self.shrinking.get() {
            return;
        }
        let passed = self.bar.advance();
        if passed.is_multiple_of(100) {
            self.bar.log(&format!("[{passed}] cases passed"));
        }
    }

    /// Another shard's case went by.
    fn skipped(&self) {
        if !self.shrinking.get() {
            self.bar.step();
        }
    }

    fn failing(&self, failure: &Failure) {
        if !self.shrinking.replace(true) {
            if self.bar.is_drawn() {
                self.bar.println(&format!("failed: {failure}"));
            } else {
                self.bar.log(&format!("failed: {failure}; shrinking"));
            }
        }
        self.bar
            .set_message(format!("shrinking: {}", failure.violation.property));
    }

    fn finish(&self) {
        self.bar.finish();
    }
}
