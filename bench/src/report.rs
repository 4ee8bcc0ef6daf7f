//! The comparison's report: its rows, the Markdown table, and the bar chart.

use std::fmt::Write as _;
use std::path::Path;

use crate::scenario::Figures;

/// One line of the comparison table.
pub struct Row {
    pub scenario: String,
    pub figure: &'static str,
    pub ours: String,
    pub baseline: String,
    pub ratio: f64,
    pub target: &'static str,
    pub met: bool,
}

/// The `fraction` percentile of `sorted` durations (zero with none).
pub fn percentile(sorted: &[std::time::Duration], fraction: f64) -> std::time::Duration {
    sorted
        .get(((sorted.len() as f64 * fraction) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Events expected but not delivered.
pub fn loss(f: &Figures) -> u64 {
    f.expected.saturating_sub(f.delivered)
}

/// The scenario's name, shortened for a chart label.
fn short(scenario: &str) -> String {
    scenario
        .split(',')
        .take(2)
        .collect::<Vec<_>>()
        .join(",")
        .chars()
        .take(44)
        .collect()
}

/// A row comparing `value` of ours (`figures[0]`) with the baseline
/// (`figures[1]`), its target met when `met(ratio)`.
pub fn ratio_row(
    scenario: &str,
    figure: &'static str,
    figures: &[Figures],
    value: fn(&Figures) -> f64,
    target: &'static str,
    met: impl Fn(f64) -> bool,
) -> Row {
    row_with(
        scenario,
        figure,
        figures,
        value,
        target,
        |ours, baseline| met(ours / baseline),
    )
}

/// [`ratio_row`] with a target on the two values, not their ratio.
pub fn row_with(
    scenario: &str,
    figure: &'static str,
    figures: &[Figures],
    value: fn(&Figures) -> f64,
    target: &'static str,
    met: impl Fn(f64, f64) -> bool,
) -> Row {
    let (ours, other) = (value(&figures[0]), value(&figures[1]));
    Row {
        scenario: scenario.to_owned(),
        figure,
        ours: format!("{ours:.1}"),
        baseline: format!("{other:.1}"),
        ratio: ours / other,
        target,
        met: met(ours, other),
    }
}

/// A row of events lost, ours and baseline.
pub fn loss_row(scenario: &str, figures: &[Figures]) -> Row {
    Row {
        scenario: scenario.to_owned(),
        figure: "events lost (of expected)",
        ours: format!("{} of {}", loss(&figures[0]), figures[0].expected),
        baseline: format!("{} of {}", loss(&figures[1]), figures[1].expected),
        ratio: f64::NAN,
        target: "zero loss",
        met: loss(&figures[0]) == 0,
    }
}

/// The Markdown section: the command, the machine and the table.
pub fn render(title: &str, rows: &[Row], smoke: bool, command: &str) -> String {
    let mut out = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "## {title}{}\n",
        if smoke {
            " (smoke sizes: not a measurement)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "Command: `{command}`\n");
    let _ = writeln!(
        out,
        "Machine: {cores} cores ({cpu}), {rustc}, loopback only; the load generator shares the cores with the server.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | figure | ours | baseline | ratio | target | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for row in rows {
        let ratio = if row.ratio.is_nan() {
            "—".to_owned()
        } else {
            format!("{:.2}×", row.ratio)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.figure,
            row.ours,
            row.baseline,
            ratio,
            row.target,
            match (row.target.starts_with("(info)"), row.met) {
                (true, _) => "—",
                (false, true) => "yes",
                (false, false) => "**no**",
            }
        );
    }
    out
}

/// Draws the rows with a target as bars (ours ÷ baseline) into `path`.
pub fn draw_bars(rows: &[Row], path: &Path) {
    let bars: Vec<crate::chart::Bar> = rows
        .iter()
        .filter(|row| row.ratio.is_finite() && !row.target.starts_with("(info)"))
        .map(|row| crate::chart::Bar {
            label: format!(
                "{}: {}",
                short(&row.scenario),
                row.figure.split(" (").next().unwrap_or(row.figure)
            ),
            ratio: row.ratio,
            target: row
                .target
                .split_whitespace()
                .find_map(|w| w.trim_end_matches('×').parse().ok()),
            met: row.met,
        })
        .collect();
    create_parent(path);
    match crate::chart::draw(
        &bars,
        path,
        "sse-runtime vs plain axum: ratio per figure (green: target met)",
    ) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(error) => panic!("could not draw the chart: {error}"),
    }
}

/// Replaces the section between `<!-- NAME:start -->` and `<!-- NAME:end -->`
/// of the Markdown file `path` with `text` (the rest of the file is prose),
/// or writes the section alone if the file has none.
pub fn write_section(path: &Path, name: &str, text: &str) {
    create_parent(path);
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let previous = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (previous.find(&start), previous.find(&end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{start}\n{text}{}", &previous[..a], &previous[b..])
        }
        _ => format!("{previous}{start}\n{text}{end}\n"),
    };
    std::fs::write(path, updated).unwrap();
    eprintln!("wrote {}", path.display());
}

/// Creates the folder `path` goes in.
pub fn create_parent(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).unwrap();
    }
}
