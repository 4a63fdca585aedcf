//! Where a run's time went: starting targets, restarting servers after a
//! scripted engine death, the cases, stopping.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mock_engine::Fixture;
use serde::{Deserialize, Serialize};

use crate::targets::{Target, Unavailable};

/// Where a run's time went, in milliseconds: the parts add up to
/// [`RunReport::elapsed_ms`](super::RunReport::elapsed_ms) (in a merged report, they are the shards'
/// parts added up, while its `elapsed_ms` is the slowest shard's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Starting targets, then the wall time while some target was starting
    /// the first server of some server options (a real frontend's start-up,
    /// a cold Python import); the targets' columns run together.
    pub startup_ms: f64,
    /// The rest of the wall time while some target was starting a server
    /// again after it had died (a scripted engine death).
    pub restart_ms: f64,
    /// How many servers were started again.
    pub restarts: u32,
    /// Sending the cases and judging what came back.
    pub cases_ms: f64,
    /// Stopping the targets.
    pub stop_ms: f64,
}

impl Timing {
    /// The parts of several shards' runs, added up.
    pub fn add(&mut self, other: &Timing) {
        self.startup_ms += other.startup_ms;
        self.restart_ms += other.restart_ms;
        self.restarts += other.restarts;
        self.cases_ms += other.cases_ms;
        self.stop_ms += other.stop_ms;
    }
}

/// The start-up clock of one target: which server options it has started
/// a server for, and when starts ran (the targets' columns run together, so
/// the run's parts are measured as spans of wall time, see [`wall_time`]).
#[derive(Debug, Default)]
pub(super) struct StartClock {
    started: BTreeSet<String>,
    /// First starts of some server options.
    pub(super) startup: Vec<(Instant, Instant)>,
    /// Starts after a server had died.
    pub(super) restart: Vec<(Instant, Instant)>,
    pub(super) restarts: u32,
}

/// The wall time covered by at least one of `spans`.
pub(super) fn wall_time(mut spans: Vec<(Instant, Instant)>) -> Duration {
    spans.sort();
    let mut total = Duration::ZERO;
    let mut open: Option<(Instant, Instant)> = None;
    for (from, to) in spans {
        open = match open {
            Some((a, b)) if from <= b => Some((a, b.max(to))),
            Some((a, b)) => {
                total += b - a;
                Some((from, to))
            }
            None => Some((from, to)),
        };
    }
    total + open.map_or(Duration::ZERO, |(a, b)| b - a)
}

impl StartClock {
    /// `target.endpoint(fixture)`, timed: when it started a server, its
    /// time counts as start-up the first time these server options are
    /// served, as a restart after.
    pub(super) async fn endpoint(
        &mut self,
        target: &mut Target,
        fixture: &Fixture,
    ) -> Result<String, Unavailable> {
        let (before, clock) = (target.generation(), Instant::now());
        let base = target.endpoint(fixture).await;
        let (after, span) = (target.generation(), (clock, Instant::now()));
        let options = serde_json::to_string(&fixture.server).unwrap_or_default();
        let first = self.started.insert(options);
        if after > before || (first && base.is_err()) {
            if first {
                self.startup.push(span);
            } else {
                self.restart.push(span);
                self.restarts += after - before;
            }
        }
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_counts_overlapping_spans_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Two targets starting together (0-100, 20-150), a later restart
        // (300-350) and one inside another (310-320).
        let spans = vec![
            (at(300), at(350)),
            (at(0), at(100)),
            (at(310), at(320)),
            (at(20), at(150)),
        ];
        assert_eq!(wall_time(spans), Duration::from_millis(200));
        assert_eq!(wall_time(Vec::new()), Duration::ZERO);
        // Touching spans are one.
        let touching = vec![(at(0), at(10)), (at(10), at(30))];
        assert_eq!(wall_time(touching), Duration::from_millis(30));
    }
}
