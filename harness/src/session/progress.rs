//! Progress on the console while cases run: a bar on a terminal; on
//! anything else (a CI log), the lines its user logs, so the log shows the
//! run is alive. Progress is a courtesy: a closed or full stderr
//! (`genconform fuzz 2>&1 | head`) fails nothing.
//!
//! ```
//! use harness::session::progress::Bar;
//!
//! let bar = Bar::on_stderr(true, "{pos}/{len}");
//! bar.set_length(100);
//! let done = bar.advance();
//! if !bar.is_drawn() && done % 50 == 0 {
//!     bar.log(&format!("[{done}/{}] cases run", bar.length()));
//! }
//! bar.finish();
//! ```

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar when stderr is a terminal (and progress is wanted), log
/// lines otherwise.
pub struct Bar {
    bar: Option<ProgressBar>,
    /// Whether anything is shown at all.
    enabled: bool,
    done: AtomicU64,
    length: AtomicU64,
}

impl Bar {
    /// `template`: indicatif's, for the bar. With `enabled` off, nothing is
    /// shown.
    pub fn on_stderr(enabled: bool, template: &str) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            enabled,
            done: 0.into(),
            length: 0.into(),
        }
    }

    /// Whether a bar is drawn (else progress is told in log lines).
    pub fn is_drawn(&self) -> bool {
        self.bar.is_some()
    }

    pub fn set_length(&self, length: u64) {
        self.length.store(length, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(length);
        }
    }

    pub fn length(&self) -> u64 {
        self.length.load(Ordering::Relaxed)
    }

    /// One more case done: the bar moves on. Returns the count done.
    pub fn advance(&self) -> u64 {
        self.step();
        self.done.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The bar moves on without counting a case done (one another shard
    /// runs).
    pub fn step(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// The text beside the bar.
    pub fn set_message(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// A line above the bar, or in the log.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => self.log(line),
        }
    }

    /// A line in the log, shown when there is no bar to draw.
    pub fn log(&self, line: &str) {
        if self.enabled && self.bar.is_none() {
            stderr_line(format_args!("{line}"));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A line on stderr, whatever stderr is: unlike `eprintln!`, a closed or
/// full stderr does not panic (inside proptest's runner, a panic would fail
/// the case being run).
pub fn stderr_line(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
