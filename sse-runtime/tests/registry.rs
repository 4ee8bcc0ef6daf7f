//! The registry's delivery guarantees, each proven by a test.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use sse_runtime::{EncodedEvent, LagPolicy, MessageEvent, Registry, RegistryConfig};

/// `(id, event type, data)` of one encoded event. The registry writes the id,
/// then the event's own fields; this reads that layout.
fn fields(event: &EncodedEvent) -> (String, String, String) {
    let text = std::str::from_utf8(event.as_bytes()).unwrap();
    let (mut id, mut event_type, mut data) = (String::new(), String::new(), Vec::new());
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.to_owned();
        } else if let Some(v) = line.strip_prefix("event: ") {
            event_type = v.to_owned();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push(v);
        }
    }
    (id, event_type, data.join("\n"))
}

fn sequence_of(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

async fn next(stream: &mut (impl Stream<Item = EncodedEvent> + Unpin)) -> Option<EncodedEvent> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("timed out")
}

async fn next_fields(
    stream: &mut (impl Stream<Item = EncodedEvent> + Unpin),
) -> (String, String, String) {
    fields(&next(stream).await.expect("stream ended"))
}

fn key(name: &str) -> String {
    name.to_owned()
}

#[tokio::test]
async fn ids_increase_per_key_and_replace_the_events_own_id() {
    let registry = Registry::new();
    let mut a = registry.subscribe(&key("a"));
    let mut last = 0;
    for n in 0..5 {
        let event = MessageEvent::new(format!("{n}")).with_id("app-id").unwrap();
        registry.send(&key("a"), event).await.unwrap();
        registry
            .send(&key("other"), MessageEvent::new("x"))
            .await
            .unwrap();
        let (id, _, data) = next_fields(&mut a).await;
        assert_eq!(data, n.to_string());
        assert!(sequence_of(&id) > last, "{id} after {last}");
        last = sequence_of(&id);
    }
}

#[tokio::test]
async fn a_key_with_nothing_yet_stays_open_and_receives_later_events() {
    let registry = Registry::new();
    let mut empty = registry.subscribe(&key("quiet"));
    let pending = tokio::time::timeout(Duration::from_millis(100), empty.next()).await;
    assert!(pending.is_err(), "the stream must stay open, not end");
    assert_eq!(
        registry
            .send(&key("quiet"), MessageEvent::new("later"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(next_fields(&mut empty).await.2, "later");
}

#[tokio::test]
async fn replay_after_last_event_id_is_exact_then_live() {
    let registry = Registry::new();
    let mut first = registry.subscribe(&key("room"));
    for n in 0..5 {
        registry
            .send(&key("room"), MessageEvent::new(n.to_string()))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next_fields(&mut first).await);
    }
    drop(first);
    // While away, two more.
    for n in 5..7 {
        registry
            .send(&key("room"), MessageEvent::new(n.to_string()))
            .await
            .unwrap();
    }
    let mut resumed = registry.subscribe_from(&key("room"), Some(&seen[1].0));
    registry
        .send(&key("room"), MessageEvent::new("7"))
        .await
        .unwrap();
    let mut data = Vec::new();
    for _ in 0..6 {
        data.push(next_fields(&mut resumed).await.2);
    }
    assert_eq!(data, ["2", "3", "4", "5", "6", "7"]);
}

#[tokio::test]
async fn replay_resumes_without_gap_under_concurrent_sends() {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 600;
    const SUBSCRIBERS: usize = 8;
    let registry: Registry<String> = Registry::with_config(
        RegistryConfig::default()
            .history_len(SENDERS * PER_SENDER)
            .buffer(64),
    );
    let total = SENDERS * PER_SENDER;

    // Subscribers connect before anything is sent, then drop and resume at
    // pseudo-random points (at least one event in, so they have an id).
    let mut checkers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let registry = registry.clone();
        let mut subscription = registry.subscribe(&key("hot"));
        checkers.push(tokio::spawn(async move {
            let mut rng = 0x9e37_79b9_u64.wrapping_mul(s as u64 + 1);
            let mut seen: Vec<(u64, String)> = Vec::with_capacity(total);
            let mut reconnects = 0;
            while seen.len() < total {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let take = 1 + (rng % 97) as usize;
                for _ in 0..take {
                    match next(&mut subscription).await {
                        Some(event) => {
                            let (id, _, data) = fields(&event);
                            seen.push((sequence_of(&id), data));
                        }
                        // Disconnected by the lag policy: resume like a browser.
                        None => break,
                    }
                    if seen.len() == total {
                        break;
                    }
                }
                let last_id = format!("{}-{}", epoch_of(&registry).await, seen.last().unwrap().0);
                subscription = registry.subscribe_from(&key("hot"), Some(&last_id));
                reconnects += 1;
            }
            (seen, reconnects)
        }));
    }
    tokio::task::yield_now().await;
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let registry = registry.clone();
            tokio::spawn(async move {
                for n in 0..PER_SENDER {
                    registry
                        .send(&key("hot"), MessageEvent::new(format!("{sender}:{n}")))
                        .await
                        .unwrap();
                    if n % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    for checker in checkers {
        let (seen, reconnects) = tokio::time::timeout(Duration::from_secs(20), checker)
            .await
            .unwrap()
            .unwrap();
        assert!(
            reconnects > 5,
            "the test must exercise resuming ({reconnects})"
        );
        // Strictly increasing ids: in order, no duplicate.
        assert!(
            seen.windows(2).all(|w| w[0].0 < w[1].0),
            "ids out of order or repeated"
        );
        // Every sender's events, each exactly once, in that sender's order.
        for sender in 0..SENDERS {
            let mine: Vec<&str> = seen
                .iter()
                .map(|(_, d)| d.as_str())
                .filter(|d| d.starts_with(&format!("{sender}:")))
                .collect();
            let expected: Vec<String> = (0..PER_SENDER).map(|n| format!("{sender}:{n}")).collect();
            assert_eq!(mine, expected, "sender {sender}");
        }
    }
}

/// The epoch part of this registry's ids, read off a real event.
async fn epoch_of(registry: &Registry<String>) -> String {
    let mut probe = registry.subscribe(&key("epoch-probe"));
    registry
        .send(&key("epoch-probe"), MessageEvent::new(""))
        .await
        .unwrap();
    let (id, _, _) = next_fields(&mut probe).await;
    id.split_once('-').unwrap().0.to_owned()
}

#[tokio::test]
async fn unknown_garbage_and_future_ids_get_the_reset_signal() {
    let registry = Registry::new();
    registry
        .send(&key("k"), MessageEvent::new("old"))
        .await
        .unwrap();
    let epoch = epoch_of(&registry).await;
    let cases = [
        ("00000000-1".to_owned(), "unknown_id"),
        (format!("{epoch}-999999"), "unknown_id"),
        ("not an id".to_owned(), "invalid_id"),
        (String::new(), "invalid_id"),
    ];
    for (last_id, reason) in cases {
        let mut subscription = registry.subscribe_from(&key("k"), Some(&last_id));
        let (id, event_type, data) = next_fields(&mut subscription).await;
        assert_eq!(event_type, "reset", "{last_id:?}");
        assert_eq!(data, format!("{{\"reason\":\"{reason}\"}}"), "{last_id:?}");
        // The reset carries the current position, then live events follow, no replay.
        assert!(id.starts_with(&epoch));
        registry
            .send(&key("k"), MessageEvent::new("live"))
            .await
            .unwrap();
        assert_eq!(next_fields(&mut subscription).await.2, "live");
    }
}

#[tokio::test]
async fn an_id_older_than_the_history_gets_the_reset_signal() {
    let registry = Registry::with_config(RegistryConfig::default().history_len(3));
    let mut subscription = registry.subscribe(&key("k"));
    registry
        .send(&key("k"), MessageEvent::new("0"))
        .await
        .unwrap();
    let (first_id, _, _) = next_fields(&mut subscription).await;
    drop(subscription);
    for n in 1..10 {
        registry
            .send(&key("k"), MessageEvent::new(n.to_string()))
            .await
            .unwrap();
    }
    let mut resumed = registry.subscribe_from(&key("k"), Some(&first_id));
    let (_, event_type, data) = next_fields(&mut resumed).await;
    assert_eq!(
        (event_type.as_str(), data.as_str()),
        ("reset", "{\"reason\":\"history_expired\"}")
    );
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
    assert!(next(&mut stalled).await.is_none());
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
        pointers.push(next(subscriber).await.unwrap().as_bytes().as_ptr() as usize);
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
    assert!(next(&mut open).await.is_none());
    assert_eq!(registry.producer_count(), 0);
    assert!(
        registry
            .send(&key("k"), MessageEvent::new("late"))
            .await
            .is_err()
    );
    assert!(next(&mut registry.subscribe(&key("k"))).await.is_none());
}
