//! The promises about broadcasts and about one stream over many keys.

use std::time::Duration;

use futures_util::StreamExt;

use super::*;
use crate::testing::fields;
use crate::{LagPolicy, MessageEvent, RegistryConfig};

/// Broadcast costs nothing per idle key: keys whose history expired go away
/// while broadcasts go on, and the subscribed key receives every broadcast.
pub async fn broadcast_neither_touches_nor_keeps_alive_idle_keys(backend: &impl BrokerUnderTest) {
    let registry = backend
        .registry(RegistryConfig::default().history_ttl(Duration::from_millis(400)))
        .await;
    let mut live = registry.subscribe(&"live".to_owned());
    joined(&registry, &mut live, "live", 1).await;
    for n in 0..20 {
        send(&registry, &format!("idle-{n}"), "once").await;
    }
    assert!(backend.stored_keys(&registry).await >= 20);
    // Read as a browser does, while the broadcasts go on.
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(700), next_event(&mut live)).await
        {
            got.push(fields(&event).2);
        }
        got
    });
    let started = tokio::time::Instant::now();
    let mut broadcasts = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        registry
            .broadcast(MessageEvent::new(broadcasts.to_string()))
            .await
            .unwrap();
        broadcasts += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The subscribed key and the broadcast log remain, nothing else.
    let stored = backend.stored_keys(&registry).await;
    assert!(stored <= 2, "{stored} keys kept while broadcasting");
    let expected: Vec<String> = (0..broadcasts).map(|n| n.to_string()).collect();
    assert_eq!(reader.await.unwrap(), expected);
}

/// A client away while broadcasts were made gets them when it resumes, once:
/// a later resume from its newest id replays nothing it had, and a new
/// stream gets no broadcast from before it started.
pub async fn a_client_away_during_broadcasts_gets_them_on_resume_once(
    backend: &impl BrokerUnderTest,
) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let key = "away".to_owned();
    let mut first = registry.subscribe(&key);
    let point = next_item(&mut first).await.expect("open");
    assert!(point.is_resume_point());
    drop(first);
    registry.broadcast(MessageEvent::new("b1")).await.unwrap();
    send(&registry, "away", "k1").await;
    registry.broadcast(MessageEvent::new("b2")).await.unwrap();
    let mut back = registry.subscribe_from(&key, Some(&fields(&point).0));
    let mut got = Vec::new();
    let mut last_id = String::new();
    for _ in 0..3 {
        let (id, _, data) = next_fields(&mut back).await;
        last_id = id;
        got.push(data);
    }
    let position = |data: &str| got.iter().position(|d| d == data).unwrap();
    assert!(
        position("b1") < position("b2"),
        "broadcasts in order: {got:?}"
    );
    assert!(got.contains(&"k1".to_owned()), "{got:?}");
    drop(back);
    registry.broadcast(MessageEvent::new("b3")).await.unwrap();
    let mut again = registry.subscribe_from(&key, Some(&last_id));
    assert_eq!(next_fields(&mut again).await.2, "b3", "only what is new");
    let mut fresh = registry.subscribe(&key);
    joined(&registry, &mut fresh, "away", 2).await;
    registry.broadcast(MessageEvent::new("b4")).await.unwrap();
    assert_eq!(next_fields(&mut fresh).await.2, "b4", "nothing from before");
    assert_eq!(next_fields(&mut again).await.2, "b4");
}

/// Broadcast: every key with subscribers gets the event, once each.
pub async fn broadcast_reaches_every_subscribed_key_once(backend: &impl BrokerUnderTest) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let mut subscriptions = Vec::new();
    for n in 0..5 {
        let key = format!("user-{n}");
        let mut subscription = registry.subscribe(&key);
        joined(&registry, &mut subscription, &key, 1).await;
        subscriptions.push(subscription);
    }
    registry
        .broadcast(MessageEvent::new("to all"))
        .await
        .unwrap();
    for subscription in &mut subscriptions {
        assert_eq!(next_fields(subscription).await.2, "to all");
        let extra = tokio::time::timeout(Duration::from_millis(50), subscription.next()).await;
        assert!(extra.is_err(), "once: {extra:?}");
    }
}

/// A stream over several keys is one stream: a broadcast reaches it once and
/// says so, and `total_streams` counts it once, while `total_subscribers`
/// counts each of its keys.
pub async fn a_stream_for_many_keys_counts_once_as_a_stream(backend: &impl BrokerUnderTest) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let keys = ["many-a".to_owned(), "many-b".to_owned()];
    let mut both = registry.subscribe_many(&keys, None);
    joined_many(&registry, &mut both, &["many-a", "many-b"]).await;
    let mut alone = registry.subscribe(&"alone".to_owned());
    joined(&registry, &mut alone, "alone", 1).await;
    assert_eq!(registry.total_streams(), 2);
    assert_eq!(registry.total_subscribers(), 3);
    let reached = registry.broadcast(MessageEvent::new("to all")).await;
    assert_eq!(reached.unwrap(), 2);
    assert_eq!(next_fields(&mut both).await.2, "to all");
    assert_eq!(next_fields(&mut alone).await.2, "to all");
    drop(both);
    assert_eq!(registry.total_streams(), 1);
    assert_eq!(registry.total_subscribers(), 1);
}

/// One stream for three keys, while each key gets its own sender and a
/// broadcaster runs too: subscribers that drop and resume at pseudo-random
/// points, each with the one combined id, see every key's events once and
/// in order, and every broadcast once.
pub async fn a_stream_for_many_keys_resumes_every_key_exactly_under_concurrent_sends(
    backend: &impl BrokerUnderTest,
) {
    const PER_SENDER: usize = 120;
    const SUBSCRIBERS: usize = 3;
    let sources = ["a", "b", "c", "broadcast"];
    let keys: Vec<String> = ["a", "b", "c"].iter().map(|k| (*k).to_owned()).collect();
    let total = sources.len() * PER_SENDER;
    let registry = backend
        .registry(RegistryConfig::default().history_len(total * 2).buffer(64))
        .await;
    let mut checkers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let registry = registry.clone();
        let keys = keys.clone();
        let start = started(registry.subscribe_many(&keys, None)).await;
        checkers.push(tokio::spawn(async move {
            let resume = |id: &str| registry.subscribe_many(&keys, Some(id));
            read_with_random_resumes(start, s as u64 + 7, total, resume).await
        }));
    }
    let senders: Vec<_> = sources
        .iter()
        .map(|source| {
            let registry = registry.clone();
            let source = (*source).to_owned();
            tokio::spawn(async move {
                for n in 0..PER_SENDER {
                    let data = format!("{source}:{n}");
                    if source == "broadcast" {
                        registry.broadcast(MessageEvent::new(data)).await.unwrap();
                    } else {
                        send(&registry, &source, &data).await;
                    }
                    send(&registry, "elsewhere", "not for this stream").await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let sources: Vec<String> = sources.iter().map(|source| (*source).to_owned()).collect();
    for checker in checkers {
        let seen = finished(checker, Duration::from_secs(60)).await;
        each_source_once_in_order(&seen, &sources, PER_SENDER);
    }
}

/// A key whose history no longer covers the combined id gets the reset
/// signal for itself alone, naming it; the other keys resume exactly.
pub async fn in_a_stream_for_many_keys_a_key_past_its_history_resets_alone(
    backend: &impl BrokerUnderTest,
) {
    let registry = backend
        .registry(RegistryConfig::default().history_len(5))
        .await;
    let keys = ["a".to_owned(), "b".to_owned()];
    let mut first = registry.subscribe_many(&keys, None);
    joined_many(&registry, &mut first, &["a", "b"]).await;
    send(&registry, "b", "b0").await;
    let (id, _, _) = next_fields(&mut first).await;
    drop(first);
    // Well past the history (Redis trims `MAXLEN ~` a node of entries at a time).
    for n in 0..400 {
        send(&registry, "a", &format!("a{n}")).await;
    }
    send(&registry, "b", "b1").await;
    let mut resumed = registry.subscribe_many(&keys, Some(&id));
    let mut got = Vec::new();
    for _ in 0..2 {
        let (_, event_type, data) = next_fields(&mut resumed).await;
        got.push((event_type, data));
    }
    assert!(
        got.contains(&(
            "reset".to_owned(),
            "{\"reason\":\"history_expired\",\"key\":\"a\"}".to_owned()
        )),
        "a reset for `a`, naming it: {got:?}"
    );
    assert!(
        got.contains(&(String::new(), "b1".to_owned())),
        "b resumes exactly: {got:?}"
    );
    // And both go on live.
    send(&registry, "a", "a-live").await;
    assert_eq!(next_fields(&mut resumed).await.2, "a-live");
}

/// An id of another set of keys (or another order) resets them all; so does
/// a malformed one. A dropped stream releases every key.
pub async fn a_combined_id_of_other_keys_resets_them_all_and_drops_release_every_key(
    backend: &impl BrokerUnderTest,
) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let keys = ["x".to_owned(), "y".to_owned()];
    let mut stream = registry.subscribe_many(&keys, None);
    let point = next_item(&mut stream).await.unwrap();
    let id = fields(&point).0;
    for (other, given, reason) in [
        (vec!["y", "x"], id.as_str(), "unknown_id"),
        (vec!["x", "y", "z"], id.as_str(), "unknown_id"),
        (vec!["x", "y"], "not-an-id", "invalid_id"),
    ] {
        let other: Vec<String> = other.into_iter().map(str::to_owned).collect();
        let mut resumed = registry.subscribe_many(&other, Some(given));
        let (_, event_type, data) = fields(&next_item(&mut resumed).await.unwrap());
        assert_eq!(
            (event_type.as_str(), data),
            ("reset", format!("{{\"reason\":\"{reason}\"}}")),
            "{other:?} from {given}"
        );
    }
    joined_many(&registry, &mut stream, &["x", "y"]).await;
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ["x", "y"]
        .iter()
        .any(|key| registry.subscriber_count(&(*key).to_owned()) > 0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a key kept a subscriber"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The lag policy holds per key: one key overrunning the buffer ends the
/// whole stream (`Disconnect`), and the client resumes every key.
pub async fn a_stream_for_many_keys_ends_when_one_key_falls_too_far_behind(
    backend: &impl BrokerUnderTest,
) {
    let registry = backend
        .registry(
            RegistryConfig::default()
                .buffer(16)
                .lag_policy(LagPolicy::Disconnect),
        )
        .await;
    let keys = ["p".to_owned(), "q".to_owned()];
    let mut slow = registry.subscribe_many(&keys, None);
    joined_many(&registry, &mut slow, &["p", "q"]).await;
    overrun_a_slow_subscriber(&registry, "p", 100).await;
    let mut read = 0;
    while next_item(&mut slow).await.is_some() {
        read += 1;
        assert!(read <= 100, "the stream was never ended");
    }
}
