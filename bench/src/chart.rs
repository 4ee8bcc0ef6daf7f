//! The benchmark's pictures: the comparison as bars (one per figure, ours ÷
//! baseline, with the 1.0 line in blue and each target in black), and the
//! load sweep as lines.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// One bar: a label, the ratio, and the target ratio if any.
pub struct Bar {
    pub label: String,
    pub ratio: f64,
    pub target: Option<f64>,
    pub met: bool,
}

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn draw(bars: &[Bar], path: &Path, title: &str) -> Result<(), String> {
    register_sans_serif()?;
    let height = 100 + 40 * bars.len() as u32;
    let root = BitMapBackend::new(path, (1250, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max = bars
        .iter()
        .map(|b| b.ratio.max(b.target.unwrap_or(0.0)))
        .fold(2.0_f64, f64::max)
        .min(20.0)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(560)
        .build_cartesian_2d(0.0..max, (0..bars.len()).into_segmented())
        .map_err(|e| e.to_string())?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len())
        .y_label_formatter(&|value| match value {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("ours ÷ baseline (same run)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, bar) in bars.iter().enumerate() {
        let color = if bar.met {
            RGBColor(46, 139, 87)
        } else {
            RGBColor(200, 60, 50)
        };
        let ratio = bar.ratio.min(max);
        chart
            .draw_series([Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (ratio, SegmentValue::Exact(i + 1)),
                ],
                color.mix(0.75).filled(),
            )
            .into_dyn()])
            .map_err(|e| e.to_string())?;
        chart
            .draw_series([Text::new(
                format!("{:.2}×", bar.ratio),
                (ratio + max * 0.01, SegmentValue::CenterOf(i)),
                ("sans-serif", 13),
            )])
            .map_err(|e| e.to_string())?;
        if let Some(target) = bar.target {
            chart
                .draw_series(LineSeries::new(
                    [
                        (target, SegmentValue::Exact(i)),
                        (target, SegmentValue::Exact(i + 1)),
                    ],
                    BLACK.stroke_width(3),
                ))
                .map_err(|e| e.to_string())?;
        }
    }
    chart
        .draw_series(LineSeries::new(
            [
                (1.0, SegmentValue::Exact(0)),
                (1.0, SegmentValue::Exact(bars.len())),
            ],
            BLUE.mix(0.5),
        ))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// One line of a panel: its points `(x index, y)`, `None` where there is no
/// figure.
pub struct Line {
    pub name: String,
    pub color: RGBColor,
    pub dashed: bool,
    pub points: Vec<(usize, Option<f64>)>,
}

/// One chart of a row of charts: categories along x, a log-scaled y.
pub struct Panel {
    pub title: String,
    pub x_labels: Vec<String>,
    pub x_desc: String,
    pub y_desc: String,
    pub lines: Vec<Line>,
}

/// Draws `panels` side by side into `path`, y on a log scale shared by all.
pub fn draw_panels(panels: &[Panel], path: &Path, title: &str) -> Result<(), String> {
    register_sans_serif()?;
    let width = 40 + 520 * panels.len() as u32;
    let root = BitMapBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let values = || {
        panels
            .iter()
            .flat_map(|p| &p.lines)
            .flat_map(|l| l.points.iter().filter_map(|(_, y)| *y))
            .filter(|y| y.is_finite() && *y > 0.0)
    };
    let low = values().fold(f64::INFINITY, f64::min).min(1.0) * 0.7;
    let high = values().fold(0.0_f64, f64::max).max(10.0) * 1.5;
    for (panel, area) in panels.iter().zip(root.split_evenly((1, panels.len()))) {
        let categories = panel.x_labels.len();
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (0..categories.saturating_sub(1)).into_segmented(),
                (low..high).log_scale(),
            )
            .map_err(|e| e.to_string())?;
        let labels = &panel.x_labels;
        chart
            .configure_mesh()
            .x_labels(categories)
            .x_label_formatter(&|value| match value {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc(&panel.x_desc)
            .y_desc(&panel.y_desc)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for line in &panel.lines {
            let points: Vec<(SegmentValue<usize>, f64)> = line
                .points
                .iter()
                .filter_map(|(x, y)| {
                    y.filter(|y| *y > 0.0)
                        .map(|y| (SegmentValue::CenterOf(*x), y))
                })
                .collect();
            let style = line.color.stroke_width(2);
            let series = if line.dashed {
                chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))
            } else {
                chart.draw_series(LineSeries::new(points.clone(), style))
            };
            series
                .map_err(|e| e.to_string())?
                .label(&line.name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new(p.clone(), 3, line.color.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Registers DejaVu Sans as `sans-serif` (once per process).
fn register_sans_serif() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let font = std::fs::read(FONT)
                .map_err(|e| format!("{FONT}: {e} (apt-get install fonts-dejavu-core)"))?;
            register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(font.into_boxed_slice()),
            )
            .map_err(|_| "the font could not be loaded".to_owned())
        })
        .clone()
}
