//! Encoder micro-benchmark: our `MessageEvent` vs axum's `Event`, each through
//! its own SSE response body (the only way axum's `Event` can be encoded), for
//! a 100-byte JSON event and a 4 KiB multi-line text event.
//!
//! `cargo bench -p sse-runtime --bench encode`

use std::convert::Infallible;
use std::hint::black_box;

use axum::response::IntoResponse;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::stream;
use http_body_util::BodyExt;
use serde::Serialize;

const EVENTS: usize = 1_000;

#[derive(Serialize, Clone)]
struct Quote {
    symbol: &'static str,
    price: f64,
    volume: u64,
    venue: &'static str,
    time: &'static str,
}

fn quote() -> Quote {
    // About 100 bytes of JSON.
    Quote {
        symbol: "ACME",
        price: 1234.5678,
        volume: 987_654,
        venue: "XNAS",
        time: "2026-11-25T01:02:03.456Z",
    }
}

fn text() -> String {
    // 4 KiB in 64 lines.
    (0..64)
        .map(|n| format!("{n:02} {}\n", "x".repeat(60)))
        .collect()
}

/// Polls the body to its end and counts its bytes, without copying them: the
/// figure is the response's own cost, not a collector's.
fn drain(response: axum::response::Response, runtime: &tokio::runtime::Runtime) -> usize {
    runtime.block_on(async {
        let mut body = response.into_body();
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            bytes += frame.unwrap().data_ref().map_or(0, |data| data.len());
        }
        bytes
    })
}

fn ours(
    runtime: &tokio::runtime::Runtime,
    event: impl Fn() -> sse_runtime::MessageEvent + Send + 'static,
) -> usize {
    let events = stream::iter((0..EVENTS).map(move |_| event()));
    drain(
        sse_runtime::Sse::new(events)
            .keep_alive(sse_runtime::KeepAlive::disabled())
            .into_response(),
        runtime,
    )
}

fn axum(
    runtime: &tokio::runtime::Runtime,
    event: impl Fn() -> axum::response::sse::Event + Send + 'static,
) -> usize {
    let events = stream::iter((0..EVENTS).map(move |_| Ok::<_, Infallible>(event())));
    drain(
        axum::response::sse::Sse::new(events).into_response(),
        runtime,
    )
}

fn encode(c: &mut Criterion) {
    use axum::response::sse::Event;
    use sse_runtime::MessageEvent;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Built once for the whole run; the response bodies need it for 'static.
    let text: &'static str = Box::leak(text().into_boxed_str());

    let mut group = c.benchmark_group("json_100_bytes");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("ours", |b| {
        b.iter(|| black_box(ours(&runtime, || MessageEvent::json(&quote()).unwrap())))
    });
    group.bench_function("axum", |b| {
        b.iter(|| {
            black_box(axum(&runtime, || {
                Event::default().json_data(quote()).unwrap()
            }))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("text_4_kib_multiline");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("ours", |b| {
        b.iter(|| black_box(ours(&runtime, move || MessageEvent::new(text))))
    });
    group.bench_function("axum", |b| {
        b.iter(|| black_box(axum(&runtime, move || Event::default().data(text))))
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
