//! The [`Broker`](crate::Broker) contract as a test suite (feature
//! `testing`), run by this crate against every broker it ships and ready to
//! run against yours, as object_store's `integration` module is for stores.
//!
//! Each promise in the trait's docs is one `async fn` here, generic over a
//! [`BrokerUnderTest`] that makes registries over fresh keys. The
//! [`broker_contract_tests!`](crate::broker_contract_tests) macro writes one
//! `#[tokio::test]` per promise (your crate needs `tokio` with its `macros`
//! and `rt-multi-thread` features as a dev-dependency):
//!
//! ```no_run
//! use sse_runtime::testing::broker_contract::BrokerUnderTest;
//! use sse_runtime::{MemoryBroker, Registry, RegistryConfig};
//!
//! /// Here the in-memory broker; yours makes a registry over your `Broker`.
//! struct Mine;
//!
//! impl BrokerUnderTest for Mine {
//!     async fn registry(&self, config: RegistryConfig) -> Registry<String> {
//!         Registry::with_broker(MemoryBroker::new(config))
//!     }
//!
//!     async fn stored_keys(&self, registry: &Registry<String>) -> usize {
//!         registry.key_count()
//!     }
//! }
//!
//! // In tests/broker_contract.rs: one test per promise, for `Mine`.
//! sse_runtime::broker_contract_tests!(Some(Mine));
//! # fn main() {}
//! ```
//!
//! Every wait is bounded (10 s for an event, 30 s for a whole scenario), and
//! a broken promise fails its test with a message that names it.

mod broadcast;
mod keys;

use std::cmp::Ordering;
use std::future::Future;
use std::time::Duration;

use futures_core::Stream;
use futures_util::{FutureExt, StreamExt};

pub use broadcast::*;
pub use keys::*;

use crate::response::opening::polled_while_opening;
use crate::testing::{fields, next_event};
use crate::{EncodedEvent, MessageEvent, Registry, RegistryConfig, Subscription};

/// A broker under test: it makes registries over fresh keys, and says how
/// its ids order, since ids are opaque to everyone else.
pub trait BrokerUnderTest: Sync {
    /// A registry over a broker with no keys yet (a fresh one, or fresh
    /// storage), configured by `config`.
    fn registry(&self, config: RegistryConfig) -> impl Future<Output = Registry<String>> + Send;

    /// How many keys hold memory in the broker's store, whether or not this
    /// instance subscribes to them (for Redis, the keys in Redis).
    fn stored_keys(&self, registry: &Registry<String>) -> impl Future<Output = usize> + Send;

    /// How two ids the broker stamped order. The default reads this crate's
    /// formats: `<a>-<b>`, with `a` hex (the in-memory broker's epoch) or a
    /// time in milliseconds (a Redis entry id), and `b` counting up; after a
    /// broadcast, Redis's `<key entry>.<broadcast entry>`, ranked as a pair.
    ///
    /// # Panics
    ///
    /// The default panics on an id of another shape: override it then.
    fn id_order(&self, a: &str, b: &str) -> Ordering {
        crate_id_rank(a).cmp(&crate_id_rank(b))
    }

    /// An id of the same key ahead of `id`, which the broker never issued:
    /// resuming from it gets `unknown_id`. The default adds 1,000,000 to the
    /// count of this crate's `<a>-<b>` ids.
    fn id_ahead_of(&self, id: &str) -> String {
        let (a, b) = id.split_once('-').expect("an id of two parts");
        let count: u64 = b.split('.').next().unwrap_or(b).parse().expect("a count");
        format!("{a}-{}", count + 1_000_000)
    }

    /// Ids no broker of this kind issues: resuming from one gets
    /// `invalid_id`. The default suits this crate's brokers.
    fn malformed_ids(&self) -> Vec<String> {
        vec!["not an id".to_owned(), "12-x".to_owned()]
    }
}

/// The default [`BrokerUnderTest::id_order`]: see there.
fn crate_id_rank(id: &str) -> ((u128, u64), (u128, u64)) {
    let part = |part: &str| {
        let (a, b) = part.split_once('-').expect("an id of two parts");
        (
            u128::from_str_radix(a, 16).expect("a hex or decimal first part"),
            b.parse().expect("a count"),
        )
    };
    match id.split_once('.') {
        Some((key, broadcast)) => (part(key), part(broadcast)),
        None => (part(id), (0, 0)),
    }
}

/// One `#[tokio::test]` per promise of the [`Broker`](crate::Broker)
/// contract, for the [`BrokerUnderTest`] that `$backend` makes: an
/// `Option`, so a backend that cannot start here (a missing server outside
/// CI) returns `None` after saying why, and the tests end there.
///
/// See [`testing::broker_contract`](crate::testing::broker_contract).
#[macro_export]
macro_rules! broker_contract_tests {
    ($backend:expr) => {
        $crate::broker_contract_tests!(@each $backend;
            ids_are_stamped_increase_per_key_and_are_shared,
            a_subscription_sees_its_keys_events_in_order_and_stays_open,
            replay_after_an_id_is_exact_then_live,
            resuming_at_random_points_under_concurrent_sends_leaves_no_gap_or_duplicate,
            resuming_at_random_points_under_sends_and_broadcasts_leaves_no_gap_or_duplicate,
            a_client_that_drops_before_any_event_resumes_from_the_streams_resume_point,
            malformed_and_future_ids_get_the_reset_signal_and_an_empty_id_is_none,
            an_id_older_than_the_history_gets_the_reset_signal,
            history_older_than_its_age_gives_the_reset_signal,
            a_subscriber_too_far_behind_is_disconnected,
            a_subscriber_too_far_behind_skips_with_a_notice_under_that_policy,
            dropped_subscriptions_are_released,
            shutdown_ends_every_subscription_and_refuses_sends,
            an_event_over_the_size_limit_is_refused_and_nothing_is_kept,
            a_send_repeated_with_its_idempotency_key_is_written_once,
            broadcast_neither_touches_nor_keeps_alive_idle_keys,
            a_client_away_during_broadcasts_gets_them_on_resume_once,
            broadcast_reaches_every_subscribed_key_once,
            a_stream_for_many_keys_counts_once_as_a_stream,
            a_stream_for_many_keys_resumes_every_key_exactly_under_concurrent_sends,
            in_a_stream_for_many_keys_a_key_past_its_history_resets_alone,
            a_combined_id_of_other_keys_resets_them_all_and_drops_release_every_key,
            a_stream_for_many_keys_ends_when_one_key_falls_too_far_behind
        );
    };
    (@each $backend:expr; $($promise:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $promise() {
                let Some(backend) = $backend else { return };
                $crate::testing::broker_contract::$promise(&backend).await;
            }
        )*
    };
}

pub(super) async fn next_item(
    stream: &mut (impl Stream<Item = EncodedEvent> + Unpin),
) -> Option<EncodedEvent> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("timed out")
}

pub(super) async fn next_fields(
    stream: &mut (impl Stream<Item = EncodedEvent> + Unpin),
) -> (String, String, String) {
    fields(&next_event(stream).await.expect("the stream ended"))
}

/// Polls `subscription` (a subscription joins its broker as it is first
/// polled) until `key` counts `expected` subscribers and the subscription
/// is open (its position fixed: a Redis subscription to a key new to its
/// instance takes a round trip): from then on it receives everything sent.
pub(super) async fn joined(
    registry: &Registry<String>,
    subscription: &mut Subscription,
    key: &str,
    expected: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (item, opening) = polled_while_opening(|| subscription.next().now_or_never());
        if let Some(item) = item {
            assert!(
                item.is_some_and(|event| event.is_resume_point()),
                "nothing sent yet"
            );
        }
        if !opening && registry.subscriber_count(&key.to_owned()) >= expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription never joined"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) async fn send(registry: &Registry<String>, key: &str, data: &str) -> usize {
    registry
        .send(&key.to_owned(), MessageEvent::new(data))
        .await
        .expect("send")
}

/// What a [`read_with_random_resumes`] task saw, once it has seen it all
/// (within `limit`): it resumed more than 5 times, and never needed the
/// reset signal. The `(id, data)` of each event.
pub(super) async fn finished(
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
pub(super) fn each_source_once_in_order(seen: &[(String, String)], sources: &[String], per: usize) {
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
pub(super) type ResumedReads = (Vec<(String, String, String)>, usize);

/// A new subscription's first item, once it has joined: its resume point.
pub(super) async fn started(mut subscription: Subscription) -> (Subscription, String) {
    let point = next_item(&mut subscription).await.expect("open");
    assert!(point.is_resume_point());
    (subscription, fields(&point).0)
}

/// A client that reads a pseudo-random number of items (from `seed`), drops
/// its stream and resumes from the last id it saw (as a browser's
/// `Last-Event-ID`), until it has `total` events. `started` is its stream
/// and where it started. Returns the `(id, event type, data)` of each event,
/// in the order received, and how often it resumed.
pub(super) async fn read_with_random_resumes(
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

/// Waits until each of `keys` counts at least one subscriber (the stream
/// `subscription` has joined them all), reading nothing but resume points.
pub(super) async fn joined_many(
    registry: &Registry<String>,
    subscription: &mut Subscription,
    keys: &[&str],
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (item, opening) = polled_while_opening(|| subscription.next().now_or_never());
        if let Some(item) = item {
            assert!(item.is_some_and(|event| event.is_resume_point()));
        }
        if !opening
            && keys
                .iter()
                .all(|key| registry.subscriber_count(&(*key).to_owned()) >= 1)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never joined");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `count` events to `key` while a fast subscriber keeps up, so that
/// a slow one (which reads nothing) falls behind by all of them.
pub(super) async fn overrun_a_slow_subscriber(
    registry: &Registry<String>,
    key: &str,
    count: usize,
) {
    let already = registry.subscriber_count(&key.to_owned());
    let mut fast = registry.subscribe(&key.to_owned());
    joined(registry, &mut fast, key, already + 1).await;
    for n in 0..count {
        send(registry, key, &n.to_string()).await;
        assert_eq!(next_fields(&mut fast).await.2, n.to_string());
    }
}
