//! How cost grows with load: fan-out at every combination of subscribers and
//! publish rate, ours and the baseline in the same run, drawn as curves.

use std::fmt::Write as _;
use std::path::Path;

use plotters::style::RGBColor;

use crate::chart::{Line, Panel, draw_panels};
use crate::scenario::{self, Figures};
use crate::server_process::start;

/// The loads of a sweep.
#[derive(Clone, Copy)]
pub struct SweepSizes {
    pub subscribers: &'static [usize],
    /// Events per second; `None`: as fast as the publisher can.
    pub rates: &'static [Option<u64>],
    /// How long each paced point publishes for.
    pub seconds: u64,
    /// The most deliveries one point asks for (subscribers × events).
    pub max_deliveries: u64,
}

/// The measured sweep: 100, 1,000 and 10,000 subscribers at 10, 100 and 1,000
/// events/s and as fast as possible.
pub const SWEEP: SweepSizes = SweepSizes {
    subscribers: &[100, 1_000, 10_000],
    rates: &[Some(10), Some(100), Some(1_000), None],
    seconds: 4,
    max_deliveries: 4_000_000,
};

/// CI's smoke test of the sweep.
pub const SWEEP_SMOKE: SweepSizes = SweepSizes {
    subscribers: &[10, 30],
    rates: &[Some(100), None],
    seconds: 1,
    max_deliveries: 2_000,
};

/// One point: the load and what each server measured.
pub struct Point {
    pub subscribers: usize,
    pub rate: Option<u64>,
    pub ours: Figures,
    pub baseline: Figures,
}

fn rate_label(rate: Option<u64>) -> String {
    rate.map_or_else(|| "max".to_owned(), |rate| rate.to_string())
}

/// Events published at one point: `seconds` at the rate, or a fixed count
/// as fast as possible, bounded by `max_deliveries`.
fn events_at(sizes: &SweepSizes, subscribers: usize, rate: Option<u64>) -> u64 {
    let wanted = rate.map_or(2_000, |rate| rate * sizes.seconds);
    wanted
        .min(sizes.max_deliveries / subscribers as u64)
        .max(10)
}

/// Runs every point against a fresh server of each kind, alternating which
/// goes first.
pub async fn sweep(sizes: SweepSizes) -> Vec<Point> {
    let mut points = Vec::new();
    for (index, (&subscribers, &rate)) in sizes
        .subscribers
        .iter()
        .flat_map(|s| sizes.rates.iter().map(move |r| (s, r)))
        .enumerate()
    {
        let events = events_at(&sizes, subscribers, rate);
        eprintln!(
            "sweep: {subscribers} subscribers at {} events/s, {events} events",
            rate_label(rate)
        );
        let one = |binary: &'static str| async move {
            let server = start(binary).await;
            let figures =
                scenario::fan_out(server.addr, server.pid, subscribers, events, rate).await;
            server.stop().await;
            eprintln!("  {binary:<17} {figures:?}");
            figures
        };
        let (ours, baseline) = if index % 2 == 0 {
            let ours = one("bench-ours").await;
            (ours, one("bench-baseline").await)
        } else {
            let baseline = one("bench-baseline").await;
            (one("bench-ours").await, baseline)
        };
        points.push(Point {
            subscribers,
            rate,
            ours,
            baseline,
        });
    }
    points
}

/// The sweep as a Markdown table.
pub fn render(points: &[Point], command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Command: `{command}`\n");
    let _ = writeln!(
        out,
        "| subscribers | events/s | p50 ours / axum (ms) | p99 ours / axum (ms) | CPU per delivered event ours / axum (µs) | CPU ratio | lost ours / axum |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for p in points {
        let ms = |us: f64| us / 1_000.0;
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2}× | {} / {} |",
            p.subscribers,
            rate_label(p.rate),
            ms(p.ours.latency_p50_us),
            ms(p.baseline.latency_p50_us),
            ms(p.ours.latency_p99_us),
            ms(p.baseline.latency_p99_us),
            p.ours.cpu_ns_per_event / 1_000.0,
            p.baseline.cpu_ns_per_event / 1_000.0,
            p.ours.cpu_ns_per_event / p.baseline.cpu_ns_per_event,
            crate::report::loss(&p.ours),
            crate::report::loss(&p.baseline),
        );
    }
    out
}

const OURS: RGBColor = RGBColor(46, 139, 87);
const AXUM: RGBColor = RGBColor(200, 60, 50);

/// Latency (p50 and p99) against rate, one panel per subscriber count; and
/// CPU per delivered event against subscribers, one line per rate.
pub fn draw(points: &[Point], latency_path: &Path, cpu_path: &Path) -> Result<(), String> {
    let mut subscribers: Vec<usize> = points.iter().map(|p| p.subscribers).collect();
    subscribers.dedup();
    let mut rates: Vec<Option<u64>> = Vec::new();
    for p in points {
        if !rates.contains(&p.rate) {
            rates.push(p.rate);
        }
    }
    let figure = |subs: usize, rate: Option<u64>, pick: &dyn Fn(&Point) -> f64| {
        points
            .iter()
            .find(|p| p.subscribers == subs && p.rate == rate)
            .map(pick)
            .filter(|value| value.is_finite())
    };

    let latency_panels: Vec<Panel> = subscribers
        .iter()
        .map(|&subs| {
            let line = |name: &str, color, dashed, pick: &dyn Fn(&Point) -> f64| Line {
                name: name.to_owned(),
                color,
                dashed,
                points: rates
                    .iter()
                    .enumerate()
                    .map(|(x, &rate)| (x, figure(subs, rate, pick)))
                    .collect(),
            };
            Panel {
                title: format!("{subs} subscribers"),
                x_labels: rates.iter().map(|&r| rate_label(r)).collect(),
                x_desc: "published events/s".to_owned(),
                y_desc: "latency (ms, log)".to_owned(),
                lines: vec![
                    line("ours p50", OURS, false, &|p| p.ours.latency_p50_us / 1e3),
                    line("ours p99 (dashed)", OURS, true, &|p| {
                        p.ours.latency_p99_us / 1e3
                    }),
                    line("axum p50", AXUM, false, &|p| {
                        p.baseline.latency_p50_us / 1e3
                    }),
                    line("axum p99 (dashed)", AXUM, true, &|p| {
                        p.baseline.latency_p99_us / 1e3
                    }),
                ],
            }
        })
        .collect();
    draw_panels(
        &latency_panels,
        latency_path,
        "Delivery latency against publish rate: sse-runtime vs plain axum (same run)",
    )?;

    let cpu_panels: Vec<Panel> = rates
        .iter()
        .map(|&rate| {
            let line = |name: &str, color, dashed, pick: &dyn Fn(&Point) -> f64| Line {
                name: name.to_owned(),
                color,
                dashed,
                points: subscribers
                    .iter()
                    .enumerate()
                    .map(|(x, &subs)| (x, figure(subs, rate, pick)))
                    .collect(),
            };
            Panel {
                title: format!("{} events/s", rate_label(rate)),
                x_labels: subscribers.iter().map(usize::to_string).collect(),
                x_desc: "subscribers".to_owned(),
                y_desc: "server CPU per delivered event (µs, log)".to_owned(),
                lines: vec![
                    line("ours", OURS, false, &|p| p.ours.cpu_ns_per_event / 1e3),
                    line("axum (dashed)", AXUM, true, &|p| {
                        p.baseline.cpu_ns_per_event / 1e3
                    }),
                ],
            }
        })
        .collect();
    draw_panels(
        &cpu_panels,
        cpu_path,
        "Server CPU per delivered event against subscribers: sse-runtime vs plain axum",
    )
}
