//! Our runtime, the way a user writes it: a controller with the macros, over
//! the registry, served by `sse_runtime::serve`.

use axum::extract::{Path, Query};
use bench::{Fast, SUBSCRIBER_BUFFER, Small, TOPIC};
use futures_util::{Stream, StreamExt, stream};
use sse_runtime::{Registry, RegistryConfig, Subscription, post, sse, sse_controller};

#[derive(Clone)]
struct BenchController {
    registry: Registry<&'static str>,
    /// For `loadgen keys`: one key per subscriber.
    keyed: Registry<u32>,
}

#[sse_controller("/events")]
impl BenchController {
    #[sse("/broadcast")]
    fn subscribe(&self) -> Subscription {
        self.registry.subscribe(&TOPIC)
    }

    /// The broadcast topic, compressed as the client accepts (`loadgen
    /// compression`).
    #[sse("/broadcast-compressed", compress = true)]
    fn subscribe_compressed(&self) -> Subscription {
        self.registry.subscribe(&TOPIC)
    }

    #[sse("/keys/:key")]
    fn key(&self, Path(key): Path<u32>) -> Subscription {
        self.keyed.subscribe(&key)
    }

    #[post("/keys/:key")]
    async fn send_to_key(&self, Path(key): Path<u32>, body: String) -> String {
        let event = sse_runtime::MessageEvent::new(body);
        self.keyed.send(&key, event).await.unwrap_or(0).to_string()
    }

    /// Answers how many keyed subscribers a broadcast reaches (the warm-up).
    #[post("/keys-warmup")]
    async fn warm_keys(&self) -> String {
        let event = sse_runtime::MessageEvent::new("w");
        self.keyed.broadcast(event).await.unwrap_or(0).to_string()
    }

    #[sse("/fast")]
    fn fast(Query(fast): Query<Fast>) -> impl Stream<Item = axum::Json<Small>> {
        stream::iter((0..fast.n).map(|seq| axum::Json(Small { seq, kind: "fast" })))
    }

    #[sse("/sse-stream")]
    fn ping() -> impl Stream<Item = &'static str> {
        let period = std::time::Duration::from_secs(1);
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(period)).map(|_| "ping")
    }
}

#[cfg(feature = "heap-count")]
#[global_allocator]
static HEAP: &stats_alloc::StatsAlloc<std::alloc::System> = &bench::heap::INSTRUMENTED_SYSTEM;

#[tokio::main]
async fn main() {
    let config = RegistryConfig::default()
        .history_len(SUBSCRIBER_BUFFER)
        .buffer(SUBSCRIBER_BUFFER);
    // With REDIS_URL, the same controller over the Redis broker (several
    // instances); with REDIS_CLUSTER_URLS (comma-separated), over a cluster.
    if let Ok(urls) = std::env::var("REDIS_CLUSTER_URLS") {
        let urls: Vec<&str> = urls.split(',').collect();
        let registry = Registry::with_broker(
            sse_runtime::RedisBroker::connect_cluster_with_prefix(&urls, config.clone(), "sse")
                .await
                .expect("connect to the Redis Cluster"),
        );
        let keyed = Registry::with_broker(
            sse_runtime::RedisBroker::connect_cluster_with_prefix(&urls, config, "keys")
                .await
                .expect("connect to the Redis Cluster"),
        );
        return serve_controller(registry, keyed).await;
    }
    let (registry, keyed) = match std::env::var("REDIS_URL") {
        Ok(url) => (
            Registry::with_broker(
                sse_runtime::RedisBroker::connect(&url, config.clone())
                    .await
                    .expect("connect to Redis"),
            ),
            Registry::with_broker(
                sse_runtime::RedisBroker::connect_with_prefix(&url, config, "keys")
                    .await
                    .expect("connect to Redis"),
            ),
        ),
        Err(_) => (
            Registry::with_config(config.clone()),
            Registry::with_config(config),
        ),
    };
    serve_controller(registry, keyed).await;
}

async fn serve_controller(registry: Registry<&'static str>, keyed: Registry<u32>) {
    let publish = axum::Router::new()
        .route("/events/broadcast", axum::routing::post(bench::publish))
        .with_state(registry.clone());
    #[cfg(feature = "heap-count")]
    let publish = publish.route(
        "/debug/heap",
        axum::routing::get(|| async { bench::heap::live_bytes().to_string() }),
    );
    let app = BenchController { registry, keyed }.router().merge(publish);
    bench::serve(app, bench::Server::Ours).await;
}
