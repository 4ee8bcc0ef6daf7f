//! The comparison as a PNG: one bar per figure, ours ÷ baseline, with the 1.0
//! line (blue) and each target (black) marked.

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
    let font = std::fs::read(FONT)
        .map_err(|e| format!("{FONT}: {e} (apt-get install fonts-dejavu-core)"))?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| "the font could not be loaded".to_owned())?;
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
