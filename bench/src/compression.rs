//! Compressed streams against plain ones (issue 23), on the same server
//! binary: `/events/broadcast` and `/events/broadcast-compressed` carry the
//! same topic, so the only difference is the encoder. Each run is a fresh
//! `bench-ours`, the variants alternating (plain, zstd, gzip, then the
//! reverse) so drift on this shared machine hits them all.
//!
//! Measured per variant: latency p50 and p99 and server CPU per delivered
//! event at light load and at saturation, the bytes on the wire per event,
//! and the server's memory per idle stream once its encoder has rested.

use std::time::Duration;

use crate::client::{EventStream, Publisher};
use crate::compare::mean;
use crate::report::{Row, loss_row, ratio_row, row_with};
use crate::sample_process;
use crate::scenario::{self, Figures, StreamSpec};
use crate::server_process::{start, start_with};

/// How big each load is.
#[derive(Clone, Copy)]
pub struct Sizes {
    pub light_subscribers: usize,
    pub light_rate: u64,
    pub light_events: u64,
    pub saturation_subscribers: usize,
    pub saturation_events: u64,
    pub idle_connections: usize,
    pub rounds: usize,
}

/// The measured run.
pub const FULL: Sizes = Sizes {
    light_subscribers: 100,
    light_rate: 100,
    light_events: 600,
    saturation_subscribers: 1_000,
    saturation_events: 2_000,
    idle_connections: 2_000,
    rounds: 2,
};

/// CI's smoke test.
pub const SMOKE: Sizes = Sizes {
    light_subscribers: 10,
    light_rate: 100,
    light_events: 20,
    saturation_subscribers: 20,
    saturation_events: 20,
    idle_connections: 20,
    rounds: 1,
};

/// The variants, plain first (the baseline of every ratio).
const VARIANTS: [(&str, StreamSpec); 3] = [
    (
        "plain",
        StreamSpec {
            path: "/events/broadcast",
            accept_encoding: None,
            json: true,
        },
    ),
    (
        "zstd",
        StreamSpec {
            path: "/events/broadcast-compressed",
            accept_encoding: Some("zstd"),
            json: true,
        },
    ),
    (
        "gzip",
        StreamSpec {
            path: "/events/broadcast-compressed",
            accept_encoding: Some("gzip"),
            json: true,
        },
    ),
];

/// How long the idle streams are left before the memory is read: past the
/// 5 s after which an encoder rests.
const REST_WAIT: Duration = Duration::from_millis(6_500);

/// Every variant under `load`, alternating, averaged over the rounds.
async fn each_variant(
    s: Sizes,
    load: impl Fn(StreamSpec) -> std::pin::Pin<Box<dyn std::future::Future<Output = Figures>>>,
) -> Vec<Figures> {
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..s.rounds.max(1) {
        let mut order: Vec<usize> = (0..VARIANTS.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let (name, spec) = VARIANTS[index];
            let figures = load(spec).await;
            eprintln!("  {name:<5} {figures:?}");
            runs[index].push(figures);
        }
    }
    runs.iter().map(|r| mean(r)).collect()
}

/// The rows of `figures` (plain first) against plain, one per compressed
/// variant.
fn against_plain(figures: &[Figures]) -> impl Iterator<Item = (&'static str, [Figures; 2])> + '_ {
    VARIANTS
        .iter()
        .zip(figures)
        .skip(1)
        .map(|((name, _), compressed)| (*name, [compressed.clone(), figures[0].clone()]))
}

/// The comparison, as report rows ("ours" is the compressed variant, the
/// "baseline" the same stream plain).
pub async fn comparison(s: Sizes) -> Vec<Row> {
    let mut rows = Vec::new();

    eprintln!(
        "{} subscribers at {} events/s, plain and compressed",
        s.light_subscribers, s.light_rate
    );
    let light = fan_out_each(s, s.light_subscribers, s.light_events, Some(s.light_rate)).await;
    for (name, pair) in against_plain(&light) {
        let scenario = format!(
            "{name}, {} subscribers at {} events/s (vs plain)",
            s.light_subscribers, s.light_rate
        );
        rows.push(row_with(
            &scenario,
            "latency p50 (µs)",
            &pair,
            |f| f.latency_p50_us,
            "≤ plain + 0.2 ms",
            |ours, plain| ours <= plain + 200.0,
        ));
        rows.push(row_with(
            &scenario,
            "latency p99 (µs)",
            &pair,
            |f| f.latency_p99_us,
            "≤ plain + 0.2 ms",
            |ours, plain| ours <= plain + 200.0,
        ));
        // The same, to when the bytes reached the client, before it
        // decoded them: the server's delay alone (the client decodes on
        // the same cores here; a browser decodes on its own).
        rows.push(row_with(
            &scenario,
            "latency p50 to arrival, before decoding (µs)",
            &pair,
            |f| f.arrival_latency_p50_us,
            "≤ plain + 0.2 ms",
            |ours, plain| ours <= plain + 200.0,
        ));
        rows.push(row_with(
            &scenario,
            "latency p99 to arrival, before decoding (µs)",
            &pair,
            |f| f.arrival_latency_p99_us,
            "≤ plain + 0.2 ms",
            |ours, plain| ours <= plain + 200.0,
        ));
        rows.extend(cost_rows(&scenario, &pair));
    }

    eprintln!(
        "fan-out, {} subscribers, one publisher as fast as it can, plain and compressed",
        s.saturation_subscribers
    );
    let saturated = fan_out_each(s, s.saturation_subscribers, s.saturation_events, None).await;
    for (name, pair) in against_plain(&saturated) {
        let scenario = format!(
            "{name}, fan-out to {} subscribers as fast as it can (vs plain)",
            s.saturation_subscribers
        );
        rows.push(ratio_row(
            &scenario,
            "delivered events/s",
            &pair,
            |f| f.events_per_second,
            "(info)",
            |_| true,
        ));
        rows.extend(cost_rows(&scenario, &pair));
    }

    eprintln!(
        "{} idle streams, each after one event, plain and compressed",
        s.idle_connections
    );
    let idle = each_variant(s, |spec| {
        Box::pin(async move {
            // Allocations of 32 KiB and more (an encoder's state) are
            // mapped and returned on free, so RSS counts what the server
            // holds, not what glibc keeps of what it freed. Plain streams
            // run the same way.
            let server = start_with(
                "bench-ours",
                &[("MALLOC_MMAP_THRESHOLD_", "32768".to_owned())],
            )
            .await;
            let figures =
                idle_after_one_event(server.addr, server.pid, s.idle_connections, spec).await;
            server.stop().await;
            figures
        })
    })
    .await;
    for (name, pair) in against_plain(&idle) {
        let scenario = format!(
            "{name}, {} streams idle for {} s after one event (vs plain)",
            s.idle_connections,
            REST_WAIT.as_secs_f64()
        );
        rows.push(row_with(
            &scenario,
            "server RSS per stream (bytes)",
            &pair,
            |f| f.rss_per_connection_bytes,
            "≤ plain + 256 B",
            |ours, plain| ours <= plain + 256.0,
        ));
        if pair.iter().all(|f| f.heap_per_connection_bytes.is_finite()) {
            rows.push(row_with(
                &scenario,
                "server live heap per stream (bytes; `heap-count` build)",
                &pair,
                |f| f.heap_per_connection_bytes,
                "≤ plain + 256 B",
                |ours, plain| ours <= plain + 256.0,
            ));
        }
    }
    rows
}

/// A fan-out of `events` to `subscribers` at `rate` (or as fast as one
/// publisher can), on a fresh server per variant.
async fn fan_out_each(
    s: Sizes,
    subscribers: usize,
    events: u64,
    rate: Option<u64>,
) -> Vec<Figures> {
    each_variant(s, |spec| {
        Box::pin(async move {
            let server = start("bench-ours").await;
            let figures =
                scenario::fan_out_over(server.addr, server.pid, subscribers, events, rate, spec)
                    .await;
            server.stop().await;
            figures
        })
    })
    .await
}

/// What compressing costs and saves: CPU and bytes per delivered event, and
/// the loss row.
fn cost_rows(scenario: &str, pair: &[Figures]) -> [Row; 3] {
    [
        ratio_row(
            scenario,
            "server CPU per delivered event (ns)",
            pair,
            |f| f.cpu_ns_per_event,
            "(info)",
            |_| true,
        ),
        ratio_row(
            scenario,
            "bytes on the wire per event",
            pair,
            |f| f.wire_bytes_per_event,
            "≤ 0.35×",
            |r| r <= 0.35,
        ),
        loss_row(scenario, pair),
    ]
}

/// `connections` streams of `spec`; one event to all (so a compressed one
/// builds its encoder), then quiet past the encoder's rest: the server's
/// RSS growth per stream.
async fn idle_after_one_event(
    server: std::net::SocketAddr,
    pid: u32,
    connections: usize,
    spec: StreamSpec,
) -> Figures {
    let mut publisher = Publisher::connect(server)
        .await
        .expect("publisher connects");
    let before = sample_process(pid).unwrap_or_default();
    let heap_before = live_heap(server).await;
    let mut streams = Vec::with_capacity(connections);
    for index in 0..connections {
        if let Ok(stream) =
            EventStream::open_accepting(server, index, spec.path, spec.accept_encoding).await
        {
            streams.push(stream);
        }
    }
    crate::keyed::warm_up(
        std::slice::from_mut(&mut publisher),
        "/events/broadcast",
        "w",
        streams.len(),
    )
    .await;
    tokio::time::sleep(REST_WAIT).await;
    let heap_after = live_heap(server).await;
    let mut figures = scenario::memory_per_stream(pid, before, streams, connections);
    figures.heap_per_connection_bytes = match (heap_before, heap_after) {
        (Some(before), Some(after)) => (after - before) as f64 / figures.connected.max(1) as f64,
        _ => f64::NAN,
    };
    figures
}

/// The server's live heap (`GET /debug/heap`), if it counts it: `bench-ours`
/// built with the `heap-count` feature.
async fn live_heap(server: std::net::SocketAddr) -> Option<i128> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server).await.ok()?;
    stream
        .write_all(b"GET /debug/heap HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    if !answer.starts_with("HTTP/1.1 200") {
        return None;
    }
    let (_, body) = answer.split_once("\r\n\r\n")?;
    // The body, plain or as one chunk (its size line has at most 2 hex
    // digits; the heap's size in bytes has more digits than that).
    body.lines()
        .map(str::trim)
        .filter(|line| line.len() > 2)
        .find_map(|line| line.parse().ok())
}
