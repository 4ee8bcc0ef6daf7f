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

fn drain(response: axum::response::Response, runtime: &tokio::runtime::Runtime) -> usize {
    runtime.block_on(async {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len()
    })
}

fn ours_json(runtime: &tokio::runtime::Runtime) -> usize {
    let events =
        stream::iter((0..EVENTS).map(|_| sse_runtime::MessageEvent::json(&quote()).unwrap()));
    drain(
        sse_runtime::Sse::new(events)
            .keep_alive(sse_runtime::KeepAlive::disabled())
            .into_response(),
        runtime,
    )
}

fn axum_json(runtime: &tokio::runtime::Runtime) -> usize {
    use axum::response::sse::{Event, Sse};
    let events = stream::iter(
        (0..EVENTS).map(|_| Ok::<_, Infallible>(Event::default().json_data(quote()).unwrap())),
    );
    let response = Sse::new(events).into_response();
    runtime.block_on(async {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len()
    })
}

fn ours_text(runtime: &tokio::runtime::Runtime, text: &str) -> usize {
    let events = stream::iter((0..EVENTS).map(|_| sse_runtime::MessageEvent::new(text)));
    drain(
        sse_runtime::Sse::new(events)
            .keep_alive(sse_runtime::KeepAlive::disabled())
            .into_response(),
        runtime,
    )
}

fn axum_text(runtime: &tokio::runtime::Runtime, text: &str) -> usize {
    use axum::response::sse::{Event, Sse};
    let events =
        stream::iter((0..EVENTS).map(|_| Ok::<_, Infallible>(Event::default().data(text))));
    let response = Sse::new(events).into_response();
    runtime.block_on(async {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len()
    })
}

fn encode(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = text();
    let mut group = c.benchmark_group("json_100_bytes");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("ours", |b| b.iter(|| black_box(ours_json(&runtime))));
    group.bench_function("axum", |b| b.iter(|| black_box(axum_json(&runtime))));
    group.finish();
    let mut group = c.benchmark_group("text_4_kib_multiline");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("ours", |b| b.iter(|| black_box(ours_text(&runtime, &text))));
    group.bench_function("axum", |b| b.iter(|| black_box(axum_text(&runtime, &text))));
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
