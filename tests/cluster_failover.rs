//! The Redis broker on a Redis Cluster's worst days (issue 21): failovers
//! with no silent gap and no stuck sends. Each test starts its own cluster
//! of 3 masters and 3 replicas on free loopback ports and stops it.

use futures_util::StreamExt;
use sse_runtime::testing::{fields, next_event};
use sse_runtime::{MessageEvent, RegistryConfig};
use sse_tests::redis_cluster;

fn keys() -> Vec<String> {
    // Spread over the 16 hash tags, so every master has some.
    (0..32).map(|n| format!("k{n}")).collect()
}

/// Finding 2: a master fails over while nothing is sent to its slots and
/// stays on as a replica. Sends to those slots failed with `503` after 5 s
/// for as long as anyone watched: the broker's connections are in
/// `READONLY` mode, so the demoted node ran the send script (a read, to
/// it) and refused its writes, and that answer was retried without a fresh
/// slot map. A resume across the failover is exact (finding 4: streams
/// opened just after a node rejoined started from a stale position).
#[tokio::test]
async fn after_every_master_is_demoted_while_idle_sends_and_resumes_work() {
    let Some(cluster) = redis_cluster::start_with_replicas(1).await else {
        return;
    };
    let registry = cluster.registry(RegistryConfig::default()).await;
    let mut resume_from = Vec::new();
    for key in keys() {
        let mut subscription = registry.subscribe(&key);
        let resume_point = fields(&subscription.next().await.unwrap()).0;
        registry
            .send(&key, MessageEvent::new("before"))
            .await
            .unwrap();
        let (id, _, data) = fields(&next_event(&mut subscription).await.unwrap());
        assert_eq!(data, "before");
        assert_ne!(id, resume_point);
        resume_from.push(id);
    }

    cluster.fail_over_every_master().await;

    for key in keys() {
        registry
            .send(&key, MessageEvent::new("after"))
            .await
            .unwrap_or_else(|error| panic!("a send to {key} after the failover: {error}"));
    }
    for (key, id) in keys().iter().zip(&resume_from) {
        let mut resumed = registry.subscribe_from(key, Some(id));
        let (_, event_type, data) = fields(&next_event(&mut resumed).await.unwrap());
        assert_eq!(
            (event_type.as_str(), data.as_str()),
            ("", "after"),
            "{key} resumed from {id}"
        );
    }
}
