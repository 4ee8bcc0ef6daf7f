//! App instances: the chat over the cluster, each on a runtime of its own,
//! so that killing one ends all of its tasks and sockets at once, as the
//! death of its process would.

use std::time::Duration;

use chat::ChatController;
use sse_runtime::testing::free_port;
use sse_runtime::{MessageEvent, RedisBroker, Registry, RegistryConfig};

/// What every app instance of a run is started with.
pub struct InstanceSetup {
    /// The cluster's nodes, or the single node's URL alone.
    pub urls: Vec<String>,
    /// Whether `urls` is a cluster (otherwise one node).
    pub cluster: bool,
    /// The chat's rooms.
    pub rooms: Vec<String>,
    /// The broker's settings.
    pub config: RegistryConfig,
}

pub struct Instance {
    pub port: u16,
    pub registry: Registry<String>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Instance {
    /// The chat with `setup`'s rooms over its cluster, serving on a free
    /// loopback port.
    pub async fn start(setup: &InstanceSetup) -> Instance {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("an instance's runtime");
        let port = free_port();
        let urls = setup.urls.clone();
        let rooms = setup.rooms.clone();
        let config = setup.config.clone();
        let cluster = setup.cluster;
        let (started, registry) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            let broker = if cluster {
                RedisBroker::connect_cluster(&urls, config).await
            } else {
                RedisBroker::connect(urls[0], config).await
            }
            .expect("connect an instance to Redis");
            let registry = Registry::with_broker(broker);
            let app = ChatController::with_registry(rooms, registry.clone()).app();
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("bind an instance's port");
            let _ = started.send(registry);
            let _ = sse_runtime::serve(listener, app).await;
        });
        let registry = tokio::time::timeout(Duration::from_secs(30), registry)
            .await
            .expect("an instance started within 30 s")
            .expect("an instance started");
        Instance {
            port,
            registry,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Instance {
    /// The instance dies: every task of its runtime ends where it is, and
    /// its sockets close.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Keys of the chaos run's own, spread by their hash tags over the slots:
/// with 32, each of three masters has some (all but certainly: a master
/// with none of 32 is a chance of 3 × (2/3)^32, under one in 100,000).
const PROBES: usize = 32;

/// How many of the probe keys a send keeps failing on for 10 s (retried
/// as a client would, every 100 ms), through each live instance, once the
/// cluster has settled: a slot left failing after a fault (stuck) counts
/// once per instance.
pub async fn stuck_slots(instances: &[Instance]) -> usize {
    let mut stuck = 0;
    for instance in instances {
        for probe in 0..PROBES {
            let key = format!("probe-{probe}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let sent = tokio::time::timeout(
                    Duration::from_secs(10),
                    instance.registry.send(&key, MessageEvent::new("probe")),
                )
                .await;
                if matches!(sent, Ok(Ok(_))) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    eprintln!(
                        "chaos: sends to {key} on port {} still fail: {sent:?}",
                        instance.port
                    );
                    stuck += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    stuck
}
