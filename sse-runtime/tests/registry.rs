//! The in-memory registry's own guarantees: expiry by age, encoding once,
//! producers, and the lag policies here at full size. What every broker
//! promises is proven once for all of them in `tests/broker_contract.rs`.

use std::time::Duration;

use futures_util::Stream;
use sse_runtime::testing::{fields, next_event};
use sse_runtime::{EncodedEvent, LagPolicy, MessageEvent, Registry, RegistryConfig};

async fn next_fields(
    stream: &mut (impl Stream<Item = EncodedEvent> + Unpin),
) -> (String, String, String) {
    fields(&next_event(stream).await.expect("stream ended"))
}

fn key(name: &str) -> String {
    name.to_owned()
}

#[tokio::test]
async fn expired_history_resets_resumers_and_the_idle_key_is_removed() {
    let registry =
        Registry::with_config(RegistryConfig::default().history_ttl(Duration::from_millis(50)));
    let mut subscription = registry.subscribe(&key("k"));
    registry
        .send(&key("k"), MessageEvent::new("seen by everyone"))
        .await
        .unwrap();
    let (seen_id, _, _) = next_fields(&mut subscription).await;
    let mut up_to_date = registry.subscribe(&key("k"));
    drop(subscription);
    // Sent while the first client is away; the second one sees it.
    registry
        .send(&key("k"), MessageEvent::new("missed"))
        .await
        .unwrap();
    let (latest_id, _, _) = next_fields(&mut up_to_date).await;
    drop(up_to_date);
    assert_eq!(
        registry.key_count(),
        1,
        "history keeps the key while it is replayable"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        registry.key_count(),
        0,
        "the sweeper removes the expired, idle key"
    );

    // The key is gone, yet an id from before the expired event is not mistaken
    // for a fresh start: that client missed "missed".
    let mut resumed = registry.subscribe_from(&key("k"), Some(&seen_id));
    assert_eq!(
        next_fields(&mut resumed).await.2,
        "{\"reason\":\"history_expired\"}"
    );
    // The client that saw everything resumes without a reset.
    let mut resumed = registry.subscribe_from(&key("k"), Some(&latest_id));
    registry
        .send(&key("k"), MessageEvent::new("next"))
        .await
        .unwrap();
    assert_eq!(next_fields(&mut resumed).await.2, "next");
}

#[tokio::test]
async fn a_subscriber_that_never_reads_does_not_slow_others_and_is_disconnected() {
    let registry = Registry::with_config(RegistryConfig::default().history_len(100).buffer(10));
    let mut stalled = registry.subscribe(&key("k"));
    let mut reader = registry.subscribe(&key("k"));
    for n in 0..10_000 {
        // Never waits: each send returns at once, whatever `stalled` does.
        assert_eq!(
            registry
                .send(&key("k"), MessageEvent::new(n.to_string()))
                .await
                .unwrap(),
            2
        );
        assert_eq!(next_fields(&mut reader).await.2, n.to_string());
    }
    // The laggard's stream ends (a browser would reconnect and replay).
    assert!(next_event(&mut stalled).await.is_none());
}

#[tokio::test]
async fn a_laggard_skips_ahead_with_a_notice_under_that_policy() {
    let registry = Registry::with_config(
        RegistryConfig::default()
            .history_len(100)
            .buffer(10)
            .lag_policy(LagPolicy::SkipWithNotice),
    );
    let mut slow = registry.subscribe(&key("k"));
    for n in 0..50 {
        registry
            .send(&key("k"), MessageEvent::new(n.to_string()))
            .await
            .unwrap();
    }
    let (_, event_type, data) = next_fields(&mut slow).await;
    assert_eq!(
        (event_type.as_str(), data.as_str()),
        ("reset", "{\"reason\":\"lagged\"}")
    );
    registry
        .send(&key("k"), MessageEvent::new("fresh"))
        .await
        .unwrap();
    assert_eq!(next_fields(&mut slow).await.2, "fresh");
}

#[tokio::test]
async fn an_event_is_encoded_once_and_shared_by_every_subscriber() {
    let registry = Registry::new();
    let mut subscribers: Vec<_> = (0..50).map(|_| registry.subscribe(&key("k"))).collect();
    registry
        .send(&key("k"), MessageEvent::new("x".repeat(4096)))
        .await
        .unwrap();
    let mut pointers = Vec::new();
    for subscriber in &mut subscribers {
        pointers.push(next_event(subscriber).await.unwrap().as_bytes().as_ptr() as usize);
    }
    pointers.dedup();
    assert_eq!(pointers.len(), 1, "every subscriber got the same bytes");
}

#[tokio::test]
async fn broadcast_reaches_every_key() {
    let registry = Registry::new();
    let mut streams: Vec<_> = (0..40)
        .map(|n| registry.subscribe(&format!("user-{n}")))
        .collect();
    assert_eq!(
        registry
            .broadcast(MessageEvent::new("to all"))
            .await
            .unwrap(),
        40
    );
    for stream in &mut streams {
        assert_eq!(next_fields(stream).await.2, "to all");
    }
}

#[tokio::test]
async fn a_registered_producer_fans_out_and_is_removed_when_it_ends() {
    let registry = Registry::new();
    let mut a = registry.subscribe(&key("feed"));
    let mut b = registry.subscribe(&key("feed"));
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    registry.register(key("feed"), tokio_stream::wrappers::ReceiverStream::new(rx));
    assert_eq!(registry.producer_count(), 1);
    tx.send(MessageEvent::new("produced")).await.unwrap();
    assert_eq!(next_fields(&mut a).await.2, "produced");
    assert_eq!(next_fields(&mut b).await.2, "produced");
    drop(tx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while registry.producer_count() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "producer not removed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn shutdown_ends_streams_stops_producers_and_refuses_sends() {
    let registry = Registry::new();
    let mut open = registry.subscribe(&key("k"));
    registry.register(key("p"), futures_util::stream::pending());
    registry.shutdown();
    assert!(next_event(&mut open).await.is_none());
    assert_eq!(registry.producer_count(), 0);
    assert!(
        registry
            .send(&key("k"), MessageEvent::new("late"))
            .await
            .is_err()
    );
    assert!(
        next_event(&mut registry.subscribe(&key("k")))
            .await
            .is_none()
    );
}
