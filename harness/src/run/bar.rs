//! The progress of a run on a console: a bar on a terminal; on anything
//! else (a CI log), a line per failing case and a count every 50 cases.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

use super::{CaseResult, Progress};

/// A bar on a terminal; on anything else, a line per failing case and a
/// count every so often, so a CI log shows the run is alive.
pub struct Bar {
    bar: Option<ProgressBar>,
    done: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl Bar {
    /// A bar when stderr is a terminal, log lines otherwise.
    pub fn on_stderr() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            done: 0.into(),
            total: 0.into(),
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.total
            .store(total, std::sync::atomic::Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    fn case_done(&self, case: &CaseResult) {
        let done = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let total = self.total.load(std::sync::atomic::Ordering::Relaxed);
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{} @ {}", case.fixture, case.target));
                bar.inc(1);
                if case.outcome.fails() {
                    bar.println(format!(
                        "{:>8} {} @ {}",
                        case.outcome.label(),
                        case.fixture,
                        case.target
                    ));
                }
            }
            None => {
                if case.outcome.fails() {
                    eprintln!(
                        "{:>8} {} @ {}",
                        case.outcome.label(),
                        case.fixture,
                        case.target
                    );
                }
                if done.is_multiple_of(50) || done == total {
                    eprintln!("[{done}/{total}] cases run");
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
