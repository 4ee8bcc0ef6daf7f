//! The `Broker` contract (see its docs) as one test suite, generic over the
//! broker, run against every implementation: the in-memory broker, and the
//! Redis broker against a real `redis-server` started for the test. What the
//! docs promise is what these tests check, for each broker alike.

use std::future::Future;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use sse_runtime::testing::{fields, next_event};
use sse_runtime::{EncodedEvent, LagPolicy, MessageEvent, Registry, RegistryConfig, Subscription};
use sse_tests::redis_cluster::{self, RedisCluster};
use sse_tests::redis_server::{self, RedisServer};

/// A broker under test: it makes registries over fresh keys.
trait Backend {
    fn registry(&self, config: RegistryConfig) -> impl Future<Output = Registry<String>>;

    /// How many keys hold memory in the broker's store (for Redis, in Redis
    /// itself), whether or not this instance subscribes to them.
    fn stored_keys(&self, registry: &Registry<String>) -> impl Future<Output = usize>;
}

struct Memory;

impl Backend for Memory {
    async fn registry(&self, config: RegistryConfig) -> Registry<String> {
        Registry::with_config(config)
    }

    async fn stored_keys(&self, registry: &Registry<String>) -> usize {
        registry.key_count()
    }
}

struct Redis(RedisServer);

impl Backend for Redis {
    async fn registry(&self, config: RegistryConfig) -> Registry<String> {
        self.0.registry(config).await
    }

    async fn stored_keys(&self, _: &Registry<String>) -> usize {
        let client = ::redis::Client::open(self.0.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("DBSIZE")
            .query_async(&mut connection)
            .await
            .unwrap()
    }
}

struct Cluster(RedisCluster);

impl Backend for Cluster {
    async fn registry(&self, config: RegistryConfig) -> Registry<String> {
        self.0.registry(config).await
    }

    async fn stored_keys(&self, _: &Registry<String>) -> usize {
        self.0.keys_per_node().await.iter().sum()
    }
}

/// Ids are opaque to clients; both brokers write `<a>-<b>` with `b` counting
/// up, and `a` either fixed (memory: the run's epoch, hex) or a time in
/// milliseconds (Redis: decimal digits of one length). Read as hex, `a` keeps
/// its order in both. After a broadcast, Redis writes its position in the key
/// and in the broadcast stream, `<a>-<b>.<c>-<d>`: both parts only grow, so
/// ranked as a pair they only grow too.
fn id_rank(id: &str) -> ((u128, u64), (u128, u64)) {
    let part = |part: &str| {
        let (a, b) = part.split_once('-').expect("an id of two parts");
        (u128::from_str_radix(a, 16).unwrap(), b.parse().unwrap())
    };
    match id.split_once('.') {
        Some((key, broadcast)) => (part(key), part(broadcast)),
        None => (part(id), (0, 0)),
    }
}

/// The next item, resume points included.
async fn next_item(
    stream: &mut (impl Stream<Item = EncodedEvent> + Unpin),
) -> Option<EncodedEvent> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("timed out")
}

async fn next_fields(
    stream: &mut (impl Stream<Item = EncodedEvent> + Unpin),
) -> (String, String, String) {
    fields(&next_event(stream).await.expect("the stream ended"))
}

/// Polls `subscription` (a subscription joins its broker as it is first
/// polled) until `key` counts `expected` subscribers: from then on it
/// receives everything sent.
async fn joined(
    registry: &Registry<String>,
    subscription: &mut Subscription,
    key: &str,
    expected: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(item) = subscription.next().now_or_never() {
            assert!(
                item.is_some_and(|event| event.is_resume_point()),
                "nothing sent yet"
            );
        }
        if registry.subscriber_count(&key.to_owned()) >= expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription never joined"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A Redis instance's reader picks up a key new to it at its next read.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn send(registry: &Registry<String>, key: &str, data: &str) -> usize {
    registry
        .send(&key.to_owned(), MessageEvent::new(data))
        .await
        .expect("send")
}

// ---- the contract, one function per promise ----

/// Ids: stamped on every event (replacing the event's own), increasing per
/// key, identical for every subscriber.
async fn ids_are_stamped_increase_per_key_and_are_shared(backend: &impl Backend) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let mut a = registry.subscribe(&"a".to_owned());
    let mut b = registry.subscribe(&"a".to_owned());
    joined(&registry, &mut a, "a", 1).await;
    joined(&registry, &mut b, "a", 2).await;
    let mut last = ((0, 0), (0, 0));
    for n in 0..5 {
        let event = MessageEvent::new(n.to_string()).with_id("app-id").unwrap();
        registry.send(&"a".to_owned(), event).await.unwrap();
        send(&registry, "other", "x").await;
        let (id, _, data) = next_fields(&mut a).await;
        assert_eq!(data, n.to_string());
        assert_ne!(id, "app-id");
        assert!(id_rank(&id) > last, "{id} after {last:?}");
        last = id_rank(&id);
        assert_eq!(
            next_fields(&mut b).await.0,
            id,
            "the same id for every subscriber"
        );
    }
}

/// Ordering: a subscription sees its key's events, in order, once each, and
/// no other key's; a key with nothing yet stays open.
async fn a_subscription_sees_its_keys_events_in_order_and_stays_open(backend: &impl Backend) {
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
async fn replay_after_an_id_is_exact_then_live(backend: &impl Backend) {
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
async fn resuming_at_random_points_under_concurrent_sends_leaves_no_gap_or_duplicate(
    backend: &impl Backend,
) {
    resume_at_random_points(backend, false).await;
}

/// The same with one sender broadcasting: a broadcast is part of every
/// subscription's sequence, and resumes as exactly.
async fn resuming_at_random_points_under_sends_and_broadcasts_leaves_no_gap_or_duplicate(
    backend: &impl Backend,
) {
    resume_at_random_points(backend, true).await;
}

async fn resume_at_random_points(backend: &impl Backend, sender_0_broadcasts: bool) {
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
            seen.windows(2).all(|w| id_rank(&w[0].0) < id_rank(&w[1].0)),
            "ids out of order or repeated"
        );
        let sources: Vec<String> = (0..SENDERS).map(|sender| sender.to_string()).collect();
        each_source_once_in_order(&seen, &sources, PER_SENDER);
    }
}

/// What a [`read_with_random_resumes`] task saw, once it has seen it all
/// (within `limit`): it resumed more than 5 times, and never needed the
/// reset signal. The `(id, data)` of each event.
async fn finished(
    checker: tokio::task::JoinHandle<ResumedReads>,
    limit: Duration,
) -> Vec<(String, String)> {
    let (seen, reconnects) = tokio::time::timeout(limit, checker)
        .await
        .expect("a subscriber did not see every event in time")
        .unwrap();
    assert!(
        reconnects > 5,
        "the test must exercise resuming ({reconnects})"
    );
    seen.into_iter()
        .map(|(id, event_type, data)| {
            assert_ne!(event_type, "reset", "no reset: the history covers it");
            (id, data)
        })
        .collect()
}

/// Each source's events (data `<source>:<n>`) appear once each, `0..per`
/// in order, and nothing else does.
fn each_source_once_in_order(seen: &[(String, String)], sources: &[String], per: usize) {
    for source in sources {
        let mine: Vec<&str> = seen
            .iter()
            .map(|(_, data)| data.as_str())
            .filter(|data| data.starts_with(&format!("{source}:")))
            .collect();
        let expected: Vec<String> = (0..per).map(|n| format!("{source}:{n}")).collect();
        assert_eq!(mine, expected, "{source}: once each, in order");
    }
    assert_eq!(seen.len(), sources.len() * per, "nothing else");
}

/// What a client of [`read_with_random_resumes`] saw: the `(id, event type,
/// data)` of each event, and how often it resumed.
type ResumedReads = (Vec<(String, String, String)>, usize);

/// A new subscription's first item, once it has joined: its resume point.
async fn started(mut subscription: Subscription) -> (Subscription, String) {
    let point = next_item(&mut subscription).await.expect("open");
    assert!(point.is_resume_point());
    (subscription, fields(&point).0)
}

/// A client that reads a pseudo-random number of items (from `seed`), drops
/// its stream and resumes from the last id it saw (as a browser's
/// `Last-Event-ID`), until it has `total` events. `started` is its stream
/// and where it started. Returns the `(id, event type, data)` of each event,
/// in the order received, and how often it resumed.
async fn read_with_random_resumes(
    started: (Subscription, String),
    seed: u64,
    total: usize,
    resume: impl Fn(&str) -> Subscription,
) -> ResumedReads {
    let (mut subscription, mut resume_from) = started;
    let mut rng = 0x9e37_79b9_u64.wrapping_mul(seed);
    let mut seen = Vec::with_capacity(total);
    let mut reconnects = 0;
    while seen.len() < total {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        for _ in 0..1 + (rng % 37) as usize {
            match next_item(&mut subscription).await {
                Some(event) => {
                    let (id, event_type, data) = fields(&event);
                    resume_from = id.clone();
                    // A resume point only moves where to resume from.
                    if !event.is_resume_point() {
                        seen.push((id, event_type, data));
                    }
                }
                None => break, // The lag policy ended it: resume.
            }
            if seen.len() == total {
                break;
            }
        }
        subscription = resume(&resume_from);
        reconnects += 1;
    }
    (seen, reconnects)
}

/// Resume point: a new stream starts with an id-only event, so a client that
/// drops before any event resumes from it and misses nothing.
async fn a_client_that_drops_before_any_event_resumes_from_the_streams_resume_point(
    backend: &impl Backend,
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
async fn malformed_and_future_ids_get_the_reset_signal_and_an_empty_id_is_none(
    backend: &impl Backend,
) {
    let registry = backend.registry(RegistryConfig::default()).await;
    let mut probe = registry.subscribe(&"k".to_owned());
    joined(&registry, &mut probe, "k", 1).await;
    send(&registry, "k", "old").await;
    let (mut real, _, _) = next_fields(&mut probe).await;
    for (last_id, reason) in [
        ("not an id", "invalid_id"),
        ("12-x", "invalid_id"),
        ("future", "unknown_id"),
    ] {
        // An id ahead of the newest one: the same first part, a later count.
        let (a, b) = real.split_once('-').unwrap();
        let future = format!("{a}-{}", b.parse::<u64>().unwrap() + 1_000_000);
        let last_id = if last_id == "future" {
            future.as_str()
        } else {
            last_id
        };
        let mut subscription = registry.subscribe_from(&"k".to_owned(), Some(last_id));
        let (id, event_type, data) = next_fields(&mut subscription).await;
        assert_eq!(event_type, "reset", "{last_id:?}");
        assert_eq!(data, format!("{{\"reason\":\"{reason}\"}}"), "{last_id:?}");
        assert!(
            id_rank(&id) >= id_rank(&real),
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
async fn an_id_older_than_the_history_gets_the_reset_signal(backend: &impl Backend) {
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
async fn history_older_than_its_age_gives_the_reset_signal(backend: &impl Backend) {
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

/// Sends `count` events to `key` while a fast subscriber keeps up, so that
/// a slow one (which reads nothing) falls behind by all of them.
async fn overrun_a_slow_subscriber(registry: &Registry<String>, key: &str, count: usize) {
    let already = registry.subscriber_count(&key.to_owned());
    let mut fast = registry.subscribe(&key.to_owned());
    joined(registry, &mut fast, key, already + 1).await;
    for n in 0..count {
        send(registry, key, &n.to_string()).await;
        assert_eq!(next_fields(&mut fast).await.2, n.to_string());
    }
}

/// Lag policy `Disconnect`: a subscriber that falls behind by more than its
/// buffer is ended (a browser then resumes from history); others are not slowed.
async fn a_subscriber_too_far_behind_is_disconnected(backend: &impl Backend) {
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
async fn a_subscriber_too_far_behind_skips_with_a_notice_under_that_policy(backend: &impl Backend) {
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
async fn dropped_subscriptions_are_released(backend: &impl Backend) {
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
async fn shutdown_ends_every_subscription_and_refuses_sends(backend: &impl Backend) {
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

/// Broadcast costs nothing per idle key: keys whose history expired go away
/// while broadcasts go on, and the subscribed key receives every broadcast.
async fn broadcast_neither_touches_nor_keeps_alive_idle_keys(backend: &impl Backend) {
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
async fn a_client_away_during_broadcasts_gets_them_on_resume_once(backend: &impl Backend) {
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
async fn broadcast_reaches_every_subscribed_key_once(backend: &impl Backend) {
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

// ---- one stream for many keys ----

/// A stream over several keys is one stream: a broadcast reaches it once and
/// says so, and `total_streams` counts it once, while `total_subscribers`
/// counts each of its keys.
async fn a_stream_for_many_keys_counts_once_as_a_stream(backend: &impl Backend) {
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

/// Waits until each of `keys` counts at least one subscriber (the stream
/// `subscription` has joined them all), reading nothing but resume points.
async fn joined_many(registry: &Registry<String>, subscription: &mut Subscription, keys: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(item) = subscription.next().now_or_never() {
            assert!(item.is_some_and(|event| event.is_resume_point()));
        }
        if keys
            .iter()
            .all(|key| registry.subscriber_count(&(*key).to_owned()) >= 1)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never joined");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// One stream for three keys, while each key gets its own sender and a
/// broadcaster runs too: subscribers that drop and resume at pseudo-random
/// points, each with the one combined id, see every key's events once and
/// in order, and every broadcast once.
async fn a_stream_for_many_keys_resumes_every_key_exactly_under_concurrent_sends(
    backend: &impl Backend,
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
async fn in_a_stream_for_many_keys_a_key_past_its_history_resets_alone(backend: &impl Backend) {
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
async fn a_combined_id_of_other_keys_resets_them_all_and_drops_release_every_key(
    backend: &impl Backend,
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
async fn a_stream_for_many_keys_ends_when_one_key_falls_too_far_behind(backend: &impl Backend) {
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

// ---- the suite, once per broker ----

macro_rules! contract {
    ($broker:ident, $backend:expr) => {
        mod $broker {
            use super::*;

            contract!(@tests $backend;
                ids_are_stamped_increase_per_key_and_are_shared,
                a_subscription_sees_its_keys_events_in_order_and_stays_open,
                replay_after_an_id_is_exact_then_live,
                a_client_that_drops_before_any_event_resumes_from_the_streams_resume_point,
                resuming_at_random_points_under_concurrent_sends_leaves_no_gap_or_duplicate,
                malformed_and_future_ids_get_the_reset_signal_and_an_empty_id_is_none,
                an_id_older_than_the_history_gets_the_reset_signal,
                history_older_than_its_age_gives_the_reset_signal,
                a_subscriber_too_far_behind_is_disconnected,
                a_subscriber_too_far_behind_skips_with_a_notice_under_that_policy,
                dropped_subscriptions_are_released,
                shutdown_ends_every_subscription_and_refuses_sends,
                broadcast_reaches_every_subscribed_key_once,
                resuming_at_random_points_under_sends_and_broadcasts_leaves_no_gap_or_duplicate,
                broadcast_neither_touches_nor_keeps_alive_idle_keys,
                a_client_away_during_broadcasts_gets_them_on_resume_once,
                a_stream_for_many_keys_counts_once_as_a_stream,
                a_stream_for_many_keys_resumes_every_key_exactly_under_concurrent_sends,
                in_a_stream_for_many_keys_a_key_past_its_history_resets_alone,
                a_combined_id_of_other_keys_resets_them_all_and_drops_release_every_key,
                a_stream_for_many_keys_ends_when_one_key_falls_too_far_behind,
            );
        }
    };
    (@tests $backend:expr; $($promise:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $promise() {
                let Some(backend) = $backend else { return };
                super::$promise(&backend).await;
            }
        )*
    };
}

contract!(memory, Some(Memory));
contract!(redis, redis_server::start(false).await.map(Redis));
contract!(cluster, redis_cluster::start().await.map(Cluster));
