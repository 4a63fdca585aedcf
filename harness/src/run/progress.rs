//! The progress of a run: callbacks, so the CLI can show it and tests stay
//! quiet. On a console ([`console_bar`]): a bar on a terminal; on anything
//! else (a CI log), a line per failing case and a count every 50 cases.

use super::CaseResult;
use crate::session::progress::Bar;

/// Progress callbacks, so the CLI can draw a bar and tests stay quiet.
pub trait Progress {
    fn start(&self, _total: u64) {}
    fn case_done(&self, _case: &CaseResult) {}
    fn finish(&self) {}
}

impl Progress for () {}

/// The bar a run shows on stderr.
pub fn console_bar() -> Bar {
    Bar::on_stderr(true, "{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}")
}

/// Without a bar to draw, a count every this many cases.
const LOG_EVERY: u64 = 50;

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.set_length(total);
    }

    fn case_done(&self, case: &CaseResult) {
        self.set_message(format!("{} @ {}", case.fixture, case.target));
        let done = self.advance();
        if case.outcome.fails() {
            self.println(&format!(
                "{:>8} {} @ {}",
                case.outcome.label(),
                case.fixture,
                case.target
            ));
        }
        let total = self.length();
        if done.is_multiple_of(LOG_EVERY) || done == total {
            self.log(&format!("[{done}/{total}] cases run"));
        }
    }

    fn finish(&self) {
        Bar::finish(self);
    }
}
