//! The same routes as `bench-ours`, wired by hand with the runtime (no macros),
//! to measure what the macros cost.

use axum::extract::{Query, State};
use axum::routing::get;
use bench::{Fast, SUBSCRIBER_BUFFER, Small, TOPIC};
use futures_util::{StreamExt, stream};
use sse_runtime::{Registry, RegistryConfig, Sse};

#[tokio::main]
async fn main() {
    let registry: Registry<&'static str> = Registry::with_config(
        RegistryConfig::default()
            .history_len(SUBSCRIBER_BUFFER)
            .buffer(SUBSCRIBER_BUFFER),
    );
    let app = axum::Router::new()
        .route(
            "/events/broadcast",
            get(
                |State(registry): State<Registry<&'static str>>| async move {
                    Sse::new(registry.subscribe(&TOPIC))
                },
            )
            .post(bench::publish),
        )
        .route(
            "/events/fast",
            get(|Query(fast): Query<Fast>| async move {
                Sse::new(stream::iter(
                    (0..fast.n).map(|seq| axum::Json(Small { seq, kind: "fast" })),
                ))
            }),
        )
        .route(
            "/events/sse-stream",
            get(|| async {
                let period = std::time::Duration::from_secs(1);
                Sse::new(
                    tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(period))
                        .map(|_| "ping"),
                )
            }),
        )
        .with_state(registry);
    bench::serve(app, bench::Server::Ours).await;
}
