//! The promises about one key: ids, order, replay, resume, reset, bounds,
//! cleanup and shutdown.

use std::cmp::Ordering;
use std::time::Duration;

use futures_util::StreamExt;

use super::*;
use crate::testing::fields;
use crate::{LagPolicy, MessageEvent, RegistryConfig};

/// Ids: stamped on every event (replacing the event's own), increasing per
/// key, identical for every subscriber.
pub async fn ids_are_stamped_increase_per_key_and_are_shared(backend: &impl BrokerUnderTest) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let mut a = registry.subscribe(&"a".to_owned());
    let mut b = registry.subscribe(&"a".to_owned());
    joined(&registry, &mut a, "a", 1).await;
    joined(&registry, &mut b, "a", 2).await;
    let mut last: Option<String> = None;
    for n in 0..5 {
        let event = MessageEvent::new(n.to_string()).with_id("app-id").unwrap();
        registry.send(&"a".to_owned(), event).await.unwrap();
        send(&registry, "other", "x").await;
        let (id, _, data) = next_fields(&mut a).await;
        assert_eq!(data, n.to_string());
        assert_ne!(id, "app-id");
        if let Some(last) = &last {
            assert_eq!(
                backend.id_order(last, &id),
                Ordering::Less,
                "{id} after {last}"
            );
        }
        last = Some(id.clone());
        assert_eq!(
            next_fields(&mut b).await.0,
            id,
            "the same id for every subscriber"
        );
    }
}

/// Ordering: a subscription sees its key's events, in order, once each, and
/// no other key's; a key with nothing yet stays open.
pub async fn a_subscription_sees_its_keys_events_in_order_and_stays_open(
    backend: &impl BrokerUnderTest,
) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let mut quiet = registry.subscribe(&"quiet".to_owned());
    joined(&registry, &mut quiet, "quiet", 1).await;
    let pending = tokio::time::timeout(Duration::from_millis(100), quiet.next()).await;
    assert!(pending.is_err(), "a key with nothing yet stays open");
    for n in 0..20 {
        send(&registry, "noise", "not yours").await;
        send(&registry, "quiet", &n.to_string()).await;
    }
    for n in 0..20 {
        assert_eq!(next_fields(&mut quiet).await.2, n.to_string());
    }
    let extra = tokio::time::timeout(Duration::from_millis(100), quiet.next()).await;
    assert!(extra.is_err(), "nothing more: {extra:?}");
}

/// Replay: exactly what came after the id, then live.
pub async fn replay_after_an_id_is_exact_then_live(backend: &impl BrokerUnderTest) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let mut first = registry.subscribe(&"room".to_owned());
    joined(&registry, &mut first, "room", 1).await;
    for n in 0..5 {
        send(&registry, "room", &n.to_string()).await;
    }
    let mut last_id = String::new();
    for _ in 0..2 {
        last_id = next_fields(&mut first).await.0;
    }
    drop(first);
    for n in 5..7 {
        send(&registry, "room", &n.to_string()).await;
    }
    let mut resumed = registry.subscribe_from(&"room".to_owned(), Some(&last_id));
    let mut data = Vec::new();
    for _ in 0..5 {
        data.push(next_fields(&mut resumed).await.2);
    }
    send(&registry, "room", "7").await;
    data.push(next_fields(&mut resumed).await.2);
    assert_eq!(data, ["2", "3", "4", "5", "6", "7"]);
}

/// Replay under concurrent sends: subscribers that drop and resume at
/// pseudo-random points see every event once, in order.
pub async fn resuming_at_random_points_under_concurrent_sends_leaves_no_gap_or_duplicate(
    backend: &impl BrokerUnderTest,
) {
    resume_at_random_points(backend, false).await;
}

/// The same with one sender broadcasting: a broadcast is part of every
/// subscription's sequence, and resumes as exactly.
pub async fn resuming_at_random_points_under_sends_and_broadcasts_leaves_no_gap_or_duplicate(
    backend: &impl BrokerUnderTest,
) {
    resume_at_random_points(backend, true).await;
}

async fn resume_at_random_points(backend: &impl BrokerUnderTest, sender_0_broadcasts: bool) {
    const SENDERS: usize = 3;
    const PER_SENDER: usize = 200;
    const SUBSCRIBERS: usize = 4;
    let total = SENDERS * PER_SENDER;
    let registry = backend
        .registry(RegistryConfig::default().history_len(total * 2).buffer(64))
        .await;
    let mut checkers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let registry = registry.clone();
        let start = started(registry.subscribe(&"hot".to_owned())).await;
        checkers.push(tokio::spawn(async move {
            let resume = |id: &str| registry.subscribe_from(&"hot".to_owned(), Some(id));
            read_with_random_resumes(start, s as u64 + 1, total, resume).await
        }));
    }
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let registry = registry.clone();
            tokio::spawn(async move {
                for n in 0..PER_SENDER {
                    let data = format!("{sender}:{n}");
                    if sender == 0 && sender_0_broadcasts {
                        registry.broadcast(MessageEvent::new(data)).await.unwrap();
                    } else {
                        send(&registry, "hot", &data).await;
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    for checker in checkers {
        let seen = finished(checker, Duration::from_secs(30)).await;
        assert!(
            seen.windows(2)
                .all(|w| backend.id_order(&w[0].0, &w[1].0) == Ordering::Less),
            "ids out of order or repeated"
        );
        let sources: Vec<String> = (0..SENDERS).map(|sender| sender.to_string()).collect();
        each_source_once_in_order(&seen, &sources, PER_SENDER);
    }
}

/// Resume point: a new stream starts with an id-only event, so a client that
/// drops before any event resumes from it and misses nothing.
pub async fn a_client_that_drops_before_any_event_resumes_from_the_streams_resume_point(
    backend: &impl BrokerUnderTest,
) {
    let registry = backend.registry(RegistryConfig::default()).await;
    for key in ["empty", "busy"] {
        if key == "busy" {
            send(&registry, key, "before").await;
        }
        let mut first = registry.subscribe(&key.to_owned());
        let point = next_item(&mut first).await.expect("open");
        assert!(
            point.is_resume_point(),
            "{:?}",
            std::str::from_utf8(point.as_bytes())
        );
        let (resume_from, event_type, data) = fields(&point);
        assert!(!resume_from.is_empty() && event_type.is_empty() && data.is_empty());
        drop(first);
        for n in 0..3 {
            send(&registry, key, &format!("while away {n}")).await;
        }
        let mut again = registry.subscribe_from(&key.to_owned(), Some(&resume_from));
        for n in 0..3 {
            assert_eq!(
                next_fields(&mut again).await.2,
                format!("while away {n}"),
                "{key}"
            );
        }
    }
}

/// Reset: an id that is malformed or ahead of the broker gets the reset
/// signal, then live events; an empty id is no id.
pub async fn malformed_and_future_ids_get_the_reset_signal_and_an_empty_id_is_none(
    backend: &impl BrokerUnderTest,
) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let mut probe = registry.subscribe(&"k".to_owned());
    joined(&registry, &mut probe, "k", 1).await;
    send(&registry, "k", "old").await;
    let (mut real, _, _) = next_fields(&mut probe).await;
    let mut probes: Vec<(Option<String>, &str)> = backend
        .malformed_ids()
        .into_iter()
        .map(|id| (Some(id), "invalid_id"))
        .collect();
    // An id ahead of the newest one, made from the newest when it is tried.
    probes.push((None, "unknown_id"));
    for (given, reason) in probes {
        let future = backend.id_ahead_of(&real);
        let last_id = given.as_deref().unwrap_or(&future);
        let mut subscription = registry.subscribe_from(&"k".to_owned(), Some(last_id));
        let (id, event_type, data) = next_fields(&mut subscription).await;
        assert_eq!(event_type, "reset", "{last_id:?}");
        assert_eq!(data, format!("{{\"reason\":\"{reason}\"}}"), "{last_id:?}");
        assert!(
            backend.id_order(&id, &real) != Ordering::Less,
            "the reset carries the current position"
        );
        joined(&registry, &mut subscription, "k", 2).await;
        send(&registry, "k", "live").await;
        assert_eq!(
            next_fields(&mut subscription).await.2,
            "live",
            "{last_id:?}"
        );
        let (id, _, data) = next_fields(&mut probe).await;
        assert_eq!(data, "live");
        real = id;
    }
    // An empty Last-Event-ID (a header or `lastEventId=` with no value) is
    // treated as none: live events, no reset.
    let mut empty = registry.subscribe_from(&"k".to_owned(), Some(""));
    joined(&registry, &mut empty, "k", 2).await;
    send(&registry, "k", "after empty").await;
    assert_eq!(next_fields(&mut empty).await.2, "after empty");
}

/// Reset: an id older than the retained history gets the reset signal.
pub async fn an_id_older_than_the_history_gets_the_reset_signal(backend: &impl BrokerUnderTest) {
    let registry = backend
        .registry(RegistryConfig::default().history_len(10))
        .await;
    let mut subscription = registry.subscribe(&"k".to_owned());
    joined(&registry, &mut subscription, "k", 1).await;
    send(&registry, "k", "first").await;
    let (first_id, _, _) = next_fields(&mut subscription).await;
    drop(subscription);
    // Redis trims with `MAXLEN ~`, whole nodes of 100 entries: send well past.
    for n in 0..400 {
        send(&registry, "k", &n.to_string()).await;
    }
    let mut resumed = registry.subscribe_from(&"k".to_owned(), Some(&first_id));
    let (_, event_type, data) = next_fields(&mut resumed).await;
    assert_eq!(
        (event_type.as_str(), data.as_str()),
        ("reset", "{\"reason\":\"history_expired\"}")
    );
}

/// Bounds: history older than its age is gone, and a client that missed
/// some of it gets the reset signal.
pub async fn history_older_than_its_age_gives_the_reset_signal(backend: &impl BrokerUnderTest) {
    let ttl = Duration::from_millis(300);
    let registry = backend
        .registry(RegistryConfig::default().history_ttl(ttl))
        .await;
    let mut subscription = registry.subscribe(&"k".to_owned());
    joined(&registry, &mut subscription, "k", 1).await;
    send(&registry, "k", "seen").await;
    let (seen_id, _, _) = next_fields(&mut subscription).await;
    drop(subscription);
    send(&registry, "k", "missed, then expired").await;
    tokio::time::sleep(ttl * 3).await;
    let mut resumed = registry.subscribe_from(&"k".to_owned(), Some(&seen_id));
    let (_, event_type, data) = next_fields(&mut resumed).await;
    assert_eq!(
        (event_type.as_str(), data.as_str()),
        ("reset", "{\"reason\":\"history_expired\"}")
    );
}

/// Lag policy `Disconnect`: a subscriber that falls behind by more than its
/// buffer is ended (a browser then resumes from history); others are not slowed.
pub async fn a_subscriber_too_far_behind_is_disconnected(backend: &impl BrokerUnderTest) {
    let registry = backend
        .registry(
            RegistryConfig::default()
                .buffer(16)
                .lag_policy(LagPolicy::Disconnect),
        )
        .await;
    let mut slow = registry.subscribe(&"k".to_owned());
    joined(&registry, &mut slow, "k", 1).await;
    overrun_a_slow_subscriber(&registry, "k", 100).await;
    let mut received = 0;
    while next_event(&mut slow).await.is_some() {
        received += 1;
        assert!(received <= 16, "a subscriber past its buffer must be ended");
    }
}

/// Lag policy `SkipWithNotice`: it skips ahead with a `lagged` reset and
/// carries on with live events.
pub async fn a_subscriber_too_far_behind_skips_with_a_notice_under_that_policy(
    backend: &impl BrokerUnderTest,
) {
    let registry = backend
        .registry(
            RegistryConfig::default()
                .buffer(16)
                .lag_policy(LagPolicy::SkipWithNotice),
        )
        .await;
    let mut slow = registry.subscribe(&"k".to_owned());
    joined(&registry, &mut slow, "k", 1).await;
    overrun_a_slow_subscriber(&registry, "k", 100).await;
    let mut skipped_with_notice = false;
    for _ in 0..20 {
        let (_, event_type, data) = next_fields(&mut slow).await;
        if event_type == "reset" {
            assert_eq!(data, "{\"reason\":\"lagged\"}");
            skipped_with_notice = true;
            break;
        }
    }
    assert!(skipped_with_notice, "no lagged reset within the buffer");
    send(&registry, "k", "live again").await;
    loop {
        let (_, _, data) = next_fields(&mut slow).await;
        if data == "live again" {
            break;
        }
        // Entries the notice already covered may still be in flight; never
        // anything from before the 100 sent.
        assert!(data.parse::<usize>().is_ok_and(|n| n < 100), "{data:?}");
    }
}

/// Cleanup: dropping a subscription releases it; a key with no subscriber
/// and no history holds nothing.
pub async fn dropped_subscriptions_are_released(backend: &impl BrokerUnderTest) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let mut subscriptions = Vec::new();
    for n in 0..10 {
        let mut subscription = registry.subscribe(&format!("user-{n}"));
        joined(&registry, &mut subscription, &format!("user-{n}"), 1).await;
        subscriptions.push(subscription);
    }
    assert_eq!(registry.key_count(), 10);
    assert_eq!(registry.total_subscribers(), 10);
    drop(subscriptions);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while registry.key_count() != 0
        || registry.subscriber_count(&"user-0".to_owned()) != 0
        || registry.total_subscribers() != 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} keys left",
            registry.key_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Shutdown: every subscription ends promptly and sending fails.
pub async fn shutdown_ends_every_subscription_and_refuses_sends(backend: &impl BrokerUnderTest) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let mut subscriptions = Vec::new();
    for n in 0..5 {
        let mut subscription = registry.subscribe(&format!("k{}", n % 2));
        joined(
            &registry,
            &mut subscription,
            &format!("k{}", n % 2),
            n / 2 + 1,
        )
        .await;
        subscriptions.push(subscription);
    }
    registry.shutdown();
    for subscription in &mut subscriptions {
        assert!(
            next_event(subscription).await.is_none(),
            "ended by shutdown"
        );
    }
    assert!(
        registry
            .send(&"k0".to_owned(), MessageEvent::new("late"))
            .await
            .is_err(),
        "sending after shutdown fails"
    );
    // A subscription made after shutdown ends at once.
    assert!(
        next_event(&mut registry.subscribe(&"k0".to_owned()))
            .await
            .is_none()
    );
}

/// Size: an event carrying more than `max_event_bytes` is refused, sent or
/// broadcast, and nothing of it is stored or delivered; one at the limit
/// goes through.
pub async fn an_event_over_the_size_limit_is_refused_and_nothing_is_kept(
    backend: &impl BrokerUnderTest,
) {
    let registry = backend
        .registry(RegistryConfig::default().max_event_bytes(1024))
        .await;
    let mut subscription = registry.subscribe(&"k".to_owned());
    joined(&registry, &mut subscription, "k", 1).await;
    let too_large = || MessageEvent::new("x".repeat(1000)).with_comment("c".repeat(25));
    let refused = [
        registry.send(&"k".to_owned(), too_large()).await,
        registry.broadcast(too_large()).await,
    ];
    for outcome in refused {
        assert!(
            matches!(
                outcome,
                Err(crate::BrokerError::InvalidEvent(
                    crate::EventError::TooLarge {
                        size: 1025,
                        max: 1024
                    }
                ))
            ),
            "{outcome:?}"
        );
    }
    let fits = "y".repeat(1024);
    send(&registry, "k", &fits).await;
    assert_eq!(
        next_fields(&mut subscription).await.2,
        fits,
        "the refused events were neither stored nor delivered"
    );
}

/// Idempotency: a send repeated with its idempotency key is written and
/// delivered once, and every repeat (concurrent ones too) answers the first
/// send's id; the same idempotency key on another key, and another
/// idempotency key, are sends of their own.
pub async fn a_send_repeated_with_its_idempotency_key_is_written_once(
    backend: &impl BrokerUnderTest,
) {
    use crate::IdempotencyKey;
    let registry = backend.registry(RegistryConfig::default()).await;
    let a = "a".to_owned();
    let mut subscription = registry.subscribe(&a);
    joined(&registry, &mut subscription, "a", 1).await;
    let order = IdempotencyKey::new("order-1").unwrap();
    let first = registry
        .send_idempotent(&"a".to_owned(), MessageEvent::new("first"), &order)
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.reached, 1);
    let repeats = futures_util::future::join_all(
        (0..5).map(|_| registry.send_idempotent(&a, MessageEvent::new("repeat"), &order)),
    )
    .await;
    for repeat in repeats {
        let repeat = repeat.unwrap();
        assert!(repeat.duplicate, "a repeat is marked so");
        assert_eq!(repeat.id, first.id, "a repeat answers the first id");
        assert_eq!(repeat.reached, 0);
    }
    let elsewhere = registry
        .send_idempotent(&"b".to_owned(), MessageEvent::new("b"), &order)
        .await
        .unwrap();
    assert!(!elsewhere.duplicate, "idempotency keys are per key");
    // Concurrent first sends under one new idempotency key: one writes.
    let race = IdempotencyKey::new("order-2").unwrap();
    let racing = futures_util::future::join_all(
        (0..8).map(|_| registry.send_idempotent(&a, MessageEvent::new("second"), &race)),
    )
    .await;
    let racing: Vec<_> = racing.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        racing.iter().filter(|sent| !sent.duplicate).count(),
        1,
        "one of the racing sends writes"
    );
    assert!(racing.iter().all(|sent| sent.id == racing[0].id));

    let (id, _, data) = next_fields(&mut subscription).await;
    assert_eq!((id.as_str(), data.as_str()), (first.id.as_str(), "first"));
    let (id, _, data) = next_fields(&mut subscription).await;
    assert_eq!(
        (id.as_str(), data.as_str()),
        (racing[0].id.as_str(), "second")
    );
    send(&registry, "a", "after").await;
    assert_eq!(
        next_fields(&mut subscription).await.2,
        "after",
        "no repeat was delivered"
    );
}
