//! Latency distributions per target as an SVG: the cumulative distribution
//! of time to first token and of the gap between stream events, one line
//! per target (a line further left is faster; a long flat tail is jitter).

use std::path::Path;

use plotters::prelude::*;

/// One target's sorted samples, microseconds.
pub struct Series<'a> {
    pub name: &'a str,
    pub ttft_us: &'a [i64],
    pub inter_event_us: &'a [i64],
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// At most this many points per line: enough for the shape, small files.
const POINTS: usize = 400;

/// The points of a cumulative distribution, in milliseconds, thinned.
pub fn cdf_points(sorted_us: &[i64]) -> Vec<(f64, f64)> {
    let n = sorted_us.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(POINTS).max(1);
    let mut points: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sorted_us[i] as f64 / 1000.0, (i + 1) as f64 / n as f64))
        .collect();
    if points.last().is_some_and(|p| p.1 < 1.0) {
        points.push((sorted_us[n - 1] as f64 / 1000.0, 1.0));
    }
    points
}

/// Where the x axis ends: the largest p99.9 over the series (the last few
/// outliers would squash everything else against the axis).
fn x_limit(series: impl Iterator<Item = Vec<(f64, f64)>>) -> f64 {
    series
        .filter_map(|pts| pts.iter().find(|p| p.1 >= 0.999).map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(0.01)
        * 1.05
}

pub fn write_svg(path: &Path, series: &[Series<'_>]) -> Result<(), String> {
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let panels = root.split_evenly((1, 2));
    let titles = ["time to first token (ms)", "gap between stream events (ms)"];
    for (k, (panel, title)) in panels.iter().zip(titles).enumerate() {
        let curves: Vec<Vec<(f64, f64)>> = series
            .iter()
            .map(|s| cdf_points(if k == 0 { s.ttft_us } else { s.inter_event_us }))
            .collect();
        let x_max = x_limit(curves.iter().cloned());
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..x_max, 0.0..1.0)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .y_desc("fraction at or below")
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, (s, points)) in series.iter().zip(curves).enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    points.into_iter().filter(|p| p.0 <= x_max),
                    color.stroke_width(2),
                ))
                .map_err(|e| fail(&e))?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_thinned_and_ends_at_one() {
        let samples: Vec<i64> = (1..=10_000).collect();
        let pts = cdf_points(&samples);
        assert!(pts.len() <= POINTS + 1);
        assert_eq!(pts.last(), Some(&(10.0, 1.0)));
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert!(cdf_points(&[]).is_empty());
    }

    #[test]
    fn writes_an_svg_with_one_line_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lat.svg");
        let a: Vec<i64> = (100..200).collect();
        let b: Vec<i64> = (150..400).collect();
        let series = [
            Series {
                name: "first",
                ttft_us: &a,
                inter_event_us: &b,
            },
            Series {
                name: "second",
                ttft_us: &b,
                inter_event_us: &a,
            },
        ];
        write_svg(&path, &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("first") && svg.contains("second"));
        assert!(svg.matches("<polyline").count() >= 4, "two lines per panel");
    }
}
