//! The comparison table: one row per figure, one column per target, each
//! cell with its ratio to the first target's.
//!
//! ```
//! use harness::bench::table::{Cell, Row, render};
//!
//! let rows = vec![Row::new("events/s", vec![Cell::number(1000.0, "{}"), Cell::number(500.0, "{}")])];
//! let text = render(&["reference".into(), "vllm-rs".into()], &rows);
//! assert!(text.contains("500 (0.50x)"));
//! ```

use super::stats::ratio;

/// One figure of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub text: String,
    /// The number the ratio is taken of (none: no ratio shown).
    pub value: Option<f64>,
}

impl Cell {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            value: None,
        }
    }

    /// A number shown with `format` (`{}` is replaced by the rounded value).
    pub fn number(value: f64, format: &str) -> Self {
        Self {
            text: format.replace("{}", &human(value)),
            value: Some(value),
        }
    }

    pub fn missing() -> Self {
        Self::text("-")
    }
}

/// Rounds to what a reader needs: integers above 100, three significant
/// digits below.
pub fn human(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    pub cells: Vec<Cell>,
}

impl Row {
    pub fn new(label: impl Into<String>, cells: Vec<Cell>) -> Self {
        Self {
            label: label.into(),
            cells,
        }
    }
}

/// The table as text, ratios to the first column in parentheses.
pub fn render(targets: &[String], rows: &[Row]) -> String {
    let mut grid: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["".to_string()];
    header.extend(targets.iter().cloned());
    grid.push(header);
    for row in rows {
        let baseline = row.cells.first().and_then(|c| c.value);
        let mut line = vec![row.label.clone()];
        for (i, cell) in row.cells.iter().enumerate() {
            let shown = match (i, cell.value, baseline) {
                (0, _, _) => cell.text.clone(),
                (_, Some(v), Some(b)) => match ratio(v, b) {
                    Some(r) => format!("{} ({r:.2}x)", cell.text),
                    None => cell.text.clone(),
                },
                _ => cell.text.clone(),
            };
            line.push(shown);
        }
        grid.push(line);
    }
    let columns = grid.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            grid.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, line) in grid.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_to_the_first_column() {
        let rows = vec![
            Row::new(
                "tokens/s",
                vec![
                    Cell::number(2000.0, "{}"),
                    Cell::number(1000.0, "{}"),
                    Cell::missing(),
                ],
            ),
            Row::new(
                "ttft p50",
                vec![Cell::number(0.0, "{} ms"), Cell::number(2.5, "{} ms")],
            ),
            Row::new("note", vec![Cell::text("a"), Cell::text("b")]),
        ];
        let text = render(&["ref".into(), "rs".into(), "py".into()], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].contains("ref") && lines[0].contains("py"));
        assert!(lines[1].chars().all(|c| c == '-'));
        assert!(lines[2].starts_with("tokens/s"));
        assert!(lines[2].contains("2000") && lines[2].contains("1000 (0.50x)"));
        assert!(
            lines[2].trim_end().ends_with('-'),
            "missing cell: {}",
            lines[2]
        );
        assert!(
            lines[3].contains("2.50 ms") && !lines[3].contains('x'),
            "no ratio to zero"
        );
        assert!(lines[4].ends_with('b'));
    }

    #[test]
    fn human_rounding() {
        assert_eq!(human(123456.7), "123457");
        assert_eq!(human(42.44), "42.4");
        assert_eq!(human(4.244), "4.24");
        assert_eq!(human(0.04244), "0.042");
        assert_eq!(human(f64::NAN), "-");
    }
}
