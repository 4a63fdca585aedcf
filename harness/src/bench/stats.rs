//! Latency distributions and the ratios between targets.
//!
//! Samples are kept whole (microseconds, one `i64` each) rather than in a
//! bucketed histogram: a run of a few million events fits in memory, and the
//! percentiles are then exact, which the pacing figures need.
//!
//! ```
//! use harness::bench::stats::Distribution;
//!
//! let d = Distribution::from_samples((1..=100).collect());
//! let s = d.summary();
//! assert_eq!((s.p50_us, s.p99_us, s.max_us), (50, 99, 100));
//! ```

use serde::Serialize;

/// Samples of one quantity, in microseconds (signed: an overhead can be
/// negative when a frontend's clock and the engine's disagree by a hair).
#[derive(Debug, Clone, Default)]
pub struct Distribution {
    samples: Vec<i64>,
    sorted: bool,
}

/// The figures a report shows for one distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub min_us: i64,
    pub p50_us: i64,
    pub p90_us: i64,
    pub p99_us: i64,
    pub max_us: i64,
    pub mean_us: f64,
}

impl Distribution {
    pub fn from_samples(samples: Vec<i64>) -> Self {
        Self {
            samples,
            sorted: false,
        }
    }

    pub fn push(&mut self, sample: i64) {
        self.samples.push(sample);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: &[i64]) {
        self.samples.extend_from_slice(other);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
    }

    /// The sorted samples (for plotting the distribution).
    pub fn sorted(&mut self) -> &[i64] {
        self.sort();
        &self.samples
    }

    /// Nearest-rank percentile, `q` in 0..=100; `None` without samples.
    pub fn percentile(&mut self, q: f64) -> Option<i64> {
        self.sort();
        percentile_of_sorted(&self.samples, q)
    }

    pub fn summary(&self) -> Summary {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        summarize_sorted(&sorted)
    }
}

/// Nearest-rank percentile of already sorted samples: the smallest sample
/// with at least `q`% of the samples at or below it.
pub fn percentile_of_sorted(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 100.0);
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn summarize_sorted(sorted: &[i64]) -> Summary {
    let Some((&min, &max)) = sorted.first().zip(sorted.last()) else {
        return Summary::default();
    };
    let p = |q| percentile_of_sorted(sorted, q).unwrap_or_default();
    let sum: i128 = sorted.iter().map(|&s| i128::from(s)).sum();
    Summary {
        count: sorted.len() as u64,
        min_us: min,
        p50_us: p(50.0),
        p90_us: p(90.0),
        p99_us: p(99.0),
        max_us: max,
        mean_us: sum as f64 / sorted.len() as f64,
    }
}

/// `value / baseline`, when both are meaningful.
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline.is_finite() && value.is_finite() && baseline != 0.0).then(|| value / baseline)
}

/// Relative error of an observed delay against the scripted one, in percent
/// (`None` for a scripted delay of zero, where only absolute error means anything).
pub fn relative_error_pct(observed_us: i64, scripted_us: i64) -> Option<f64> {
    (scripted_us > 0).then(|| (observed_us - scripted_us).abs() as f64 * 100.0 / scripted_us as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile_of_sorted(&sorted, 50.0), Some(5));
        assert_eq!(percentile_of_sorted(&sorted, 90.0), Some(9));
        assert_eq!(percentile_of_sorted(&sorted, 99.0), Some(10));
        assert_eq!(percentile_of_sorted(&sorted, 0.0), Some(1));
        assert_eq!(percentile_of_sorted(&sorted, 100.0), Some(10));
        assert_eq!(percentile_of_sorted(&[], 50.0), None);
        assert_eq!(percentile_of_sorted(&[7], 99.9), Some(7));
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let d = Distribution::from_samples(vec![30, -5, 10, 20, 1000]);
        let s = d.summary();
        assert_eq!(s.count, 5);
        assert_eq!((s.min_us, s.max_us), (-5, 1000));
        assert_eq!(s.p50_us, 20);
        assert_eq!(s.p99_us, 1000);
        assert!((s.mean_us - 211.0).abs() < 1e-9);
        assert_eq!(Distribution::default().summary(), Summary::default());
    }

    #[test]
    fn percentile_after_push_resorts() {
        let mut d = Distribution::default();
        d.extend(&[5, 1]);
        assert_eq!(d.percentile(100.0), Some(5));
        d.push(9);
        assert_eq!(d.percentile(100.0), Some(9));
        assert_eq!(d.sorted(), &[1, 5, 9]);
    }

    #[test]
    fn ratios_and_relative_errors() {
        assert_eq!(ratio(300.0, 150.0), Some(2.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(relative_error_pct(10_500, 10_000), Some(5.0));
        assert_eq!(relative_error_pct(9_000, 10_000), Some(10.0));
        assert_eq!(relative_error_pct(100, 0), None);
    }
}
