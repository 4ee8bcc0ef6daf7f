//! The broker behind a [`Registry`](crate::Registry): where events are stamped,
//! kept for replay and fanned out. In memory by default; the trait is what a
//! broker shared by several server instances implements.

use std::hash::Hash;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::event::{EncodedEvent, MessageEvent};
use crate::registry::idempotency::{IdempotencyKey, Sent};

/// What a registry key can be: any type that hashes, compares, clones and
/// crosses threads (`String`, `u64`, a tuple, an id type of your own). It is
/// implemented for every such type; there is nothing to implement by hand.
///
/// ```
/// use sse_runtime::{Key, Registry};
///
/// #[derive(Clone, PartialEq, Eq, Hash)]
/// struct UserId(u64);
///
/// fn is_key<K: Key>() {}
/// is_key::<UserId>();
/// let _registry: Registry<UserId> = Registry::new();
/// ```
pub trait Key: Hash + Eq + Clone + Send + Sync + 'static {}

impl<T: Hash + Eq + Clone + Send + Sync + 'static> Key for T {}

/// Where a registry's events live.
///
/// # Contract
///
/// Every implementation gives these guarantees. The suite in
/// `sse_runtime::testing::broker_contract` (feature `testing`) checks each of
/// them, one test per promise; this crate runs it against every broker it
/// ships, and a broker of your own runs it with one macro call.
///
/// - **Ids.** `publish` stamps the event with an id (the SSE `id:` field,
///   replacing any id the event had) that is unique for the broker's lifetime
///   and increases with every event of a key. Ids are opaque strings to clients.
/// - **Ordering.** A subscription sees the events of its key in id order, each
///   at most once.
/// - **Replay.** `subscribe(key, Some(last_id))` first yields exactly the
///   events of `key` published after `last_id`, then live events, with no gap
///   and no duplicate, whatever is published concurrently. When the history no
///   longer covers `last_id`, or the id is unknown or malformed, the
///   subscription starts with the **reset signal** (see [`ResetReason`]) and
///   continues live: never a silent gap.
/// - **Resume point.** `subscribe(key, None)` first yields an id-only event
///   (`id: <current position>`), which a browser keeps as its `lastEventId`
///   without firing a handler. A client that drops before any event then
///   reconnects with it and gets what was sent while it was away.
/// - **Bounds.** History is bounded by count and by age ([`RegistryConfig`]);
///   an in-process broker also bounds it in bytes.
///   Publishing never waits for a subscriber; a subscriber that falls behind by
///   more than its buffer is dealt with by the [`LagPolicy`].
/// - **Cleanup.** A key with no subscriber and no retained history holds no
///   memory. Dropping a subscription releases everything it held.
/// - **Errors.** `publish` fails with a [`BrokerError`] when it cannot
///   guarantee the event was recorded; it never drops an event silently.
/// - **Broadcast.** A broadcast reaches every subscription once, live or on
///   resume, and replays as exactly as a key's own events: a subscription's
///   id covers its position among broadcasts too. It costs nothing per key
///   without subscribers and keeps no key's history alive.
/// - **Shutdown.** After `shutdown`, every subscription ends promptly and
///   `publish` fails with [`BrokerError::ShutDown`].
pub trait Broker<K>: Send + Sync + 'static {
    /// Stamps `event` with the next id, records it in `key`'s history and
    /// delivers it to `key`'s subscriptions. Returns how many subscriptions of
    /// this instance it reached.
    fn publish<'a>(
        &'a self,
        key: &'a K,
        event: MessageEvent,
    ) -> BoxFuture<'a, Result<usize, BrokerError>>;

    /// Publishes `event` to every subscription: it is recorded once, in a
    /// broadcast history bounded as a key's is, and takes its place in the
    /// sequence of every subscription, live or resuming (see "Broadcast").
    /// Returns how many streams of this instance it reached (see
    /// [`total_streams`](Broker::total_streams)).
    fn publish_to_all(&self, event: MessageEvent) -> BoxFuture<'_, Result<usize, BrokerError>>;

    /// As [`publish`](Broker::publish), at most once per
    /// `idempotency_key` and `key` within
    /// [`RegistryConfig::idempotency_ttl`]: a repeat records and delivers
    /// nothing and answers the first publish's id, marked a duplicate.
    /// Atomic with the publish itself, so concurrent repeats (two instances
    /// retrying the same request) write once.
    fn publish_idempotent<'a>(
        &'a self,
        key: &'a K,
        event: MessageEvent,
        idempotency_key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<Sent, BrokerError>>;

    /// A subscription to `key`: the replay after `last_event_id` (if given),
    /// then live events.
    fn subscribe(&self, key: &K, last_event_id: Option<&str>) -> BoxStream<'static, EncodedEvent>;

    /// As [`subscribe`](Broker::subscribe), but without broadcasts: the
    /// events of `key` alone, with ids that resume the same. A subscription
    /// over several keys ([`Registry::subscribe_many`](crate::Registry::subscribe_many))
    /// takes broadcasts from one of its keys only, so each arrives once. The
    /// default (for a broker that cannot tell broadcasts apart) includes them.
    fn subscribe_key_only(
        &self,
        key: &K,
        last_event_id: Option<&str>,
    ) -> BoxStream<'static, EncodedEvent> {
        self.subscribe(key, last_event_id)
    }

    /// The event type of this broker's reset signal (see
    /// [`RegistryConfig::reset_event_type`]).
    fn reset_event_type(&self) -> &str {
        "reset"
    }

    /// How many keys hold state (subscribers or history).
    fn key_count(&self) -> usize;

    /// How many open subscriptions `key` has on this instance.
    fn subscriber_count(&self, key: &K) -> usize;

    /// How many open subscriptions all keys together have on this instance:
    /// the sum of [`subscriber_count`](Broker::subscriber_count) over the
    /// keys, so a stream over several keys counts once per key.
    fn total_subscribers(&self) -> usize;

    /// How many open streams this instance has: the subscriptions that take
    /// broadcasts ([`subscribe`](Broker::subscribe)), so a stream over
    /// several keys, whose other keys are [`subscribe_key_only`](Broker::subscribe_key_only),
    /// counts once. The default, for a broker without key-only
    /// subscriptions, is [`total_subscribers`](Broker::total_subscribers).
    fn total_streams(&self) -> usize {
        self.total_subscribers()
    }

    /// Ends every subscription and refuses further publishing.
    fn shutdown(&self);
}

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The registry was shut down.
    #[error("the SSE registry is shut down")]
    ShutDown,
    /// The broker's backing service did not record the event: it refused
    /// it, or could not be reached. Nothing was written; a retry cannot make
    /// a duplicate.
    #[error("the SSE broker is unavailable: {0}")]
    Unavailable(String),
    /// The event went to the backing service and no answer came (a timeout,
    /// or the connection broke mid-request): it may have been recorded, and
    /// delivered, or not. A blind retry may duplicate it; a client should
    /// retry with the same idempotency key, or check.
    #[error("the SSE broker may or may not have recorded the event: {0}")]
    OutcomeUnknown(String),
    /// A typed event could not be made into an event (its payload's
    /// `Serialize` failed); nothing was sent.
    #[error("the event could not be encoded: {0}")]
    InvalidEvent(#[from] crate::event::EventError),
}

impl BrokerError {
    /// The `kind` label of `sse_broker_errors_total`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            BrokerError::ShutDown => "shut_down",
            BrokerError::Unavailable(_) => "unavailable",
            BrokerError::OutcomeUnknown(_) => "outcome_unknown",
            BrokerError::InvalidEvent(_) => "invalid_event",
        }
    }
}

/// A registry that cannot take an event answers `503 Service Unavailable`
/// with the reason when nothing was written (the broker's service is down
/// or refused it, or the server is shutting down: safe to retry), `504
/// Gateway Timeout` when the outcome is unknown (it may have been written:
/// retry only with the same idempotency key), or `500` for a typed event
/// whose payload would not serialise, so `?` works in an axum handler:
///
/// ```
/// use axum::{http::StatusCode, response::IntoResponse};
/// use sse_runtime::{BrokerError, MessageEvent, Registry};
///
/// async fn notify(registry: Registry<String>) -> Result<String, BrokerError> {
///     let reached = registry.send(&"alice".to_owned(), MessageEvent::new("hi")).await?;
///     Ok(format!("reached {reached}"))
/// }
/// assert_eq!(BrokerError::ShutDown.into_response().status(), StatusCode::SERVICE_UNAVAILABLE);
/// ```
impl axum::response::IntoResponse for BrokerError {
    fn into_response(self) -> axum::response::Response {
        let status = match self {
            // The application's event, not the service, is at fault.
            BrokerError::InvalidEvent(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
            BrokerError::OutcomeUnknown(_) => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// What a subscriber that falls behind by more than its buffer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LagPolicy {
    /// End its stream. A browser reconnects with `Last-Event-ID` and replays
    /// from history, so nothing is lost while the history covers the gap.
    #[default]
    Disconnect,
    /// Skip what it has not read yet, send it the reset signal with reason
    /// `lagged`, and continue with live events.
    SkipWithNotice,
}

/// Why a subscription starts with, or receives, the reset signal: an event of
/// type [`RegistryConfig::reset_event_type`] (default `reset`) whose data is
/// `{"reason":"<reason>"}` and whose id is the current position, so that the
/// client resumes from there after reloading its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetReason {
    /// The `Last-Event-ID` is older than the retained history.
    HistoryExpired,
    /// The `Last-Event-ID` was issued by another run of the server, or is ahead of it.
    UnknownId,
    /// The `Last-Event-ID` is not an id this library writes.
    InvalidId,
    /// The subscriber fell behind and events were skipped ([`LagPolicy::SkipWithNotice`]).
    Lagged,
}

impl ResetReason {
    /// The reason as written in the signal's data.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::HistoryExpired => "history_expired",
            ResetReason::UnknownId => "unknown_id",
            ResetReason::InvalidId => "invalid_id",
            ResetReason::Lagged => "lagged",
        }
    }
}

/// How a registry keeps history and treats slow subscribers.
///
/// # Worst-case memory
///
/// With the in-memory broker, the history a registry retains, and the keys
/// that hold it, are bounded in bytes, whatever clients or the application
/// send:
///
/// ```text
/// history ≤ min(history_bytes_total, keys × history_bytes_per_key) + largest event
/// ```
///
/// where each retained event counts its encoded size plus 128 bytes of
/// bookkeeping (the encoder may reserve up to a quarter more than it writes,
/// and that spare capacity stays with the event), each key counts what its
/// map entry and key cost (about 350 bytes for a `String` key) against
/// `history_bytes_total`, and `keys` are the keys with history. So 100,000
/// one-event keys under a 4 MiB total hold 3.9 MB (`memory_bounds.rs`). A
/// key always keeps its newest event, so one event larger than the bounds is
/// still delivered and replayable. On top: per subscriber its cursor plus
/// what its connection has not yet written (at most one 64 KiB batch, see
/// [`Sse`](crate::Sse)), and keys with subscribers but no history, which
/// their connections bound.
/// Defaults: 4 MiB per key, 256 MiB in all, which also caps the
/// `history_len × keys` count bound.
///
/// Eviction is oldest first: past the total, the oldest events of all keys
/// go until the registry is at 90% of it. A client whose `Last-Event-ID` was
/// evicted gets the reset signal, as for an expired one.
///
/// ```
/// use sse_runtime::{LagPolicy, Registry, RegistryConfig};
/// use std::time::Duration;
///
/// let registry: Registry<String> = Registry::with_config(
///     RegistryConfig::default()
///         .history_len(500)
///         .history_ttl(Duration::from_secs(60))
///         .buffer(64)
///         .lag_policy(LagPolicy::SkipWithNotice),
/// );
/// ```
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub(crate) history_len: usize,
    pub(crate) history_ttl: Duration,
    pub(crate) history_bytes_per_key: usize,
    pub(crate) history_bytes_total: usize,
    pub(crate) buffer: usize,
    pub(crate) lag_policy: LagPolicy,
    pub(crate) reset_event_type: String,
    pub(crate) send_timeout: Duration,
    pub(crate) max_event_bytes: usize,
    pub(crate) idempotency_ttl: Duration,
    pub(crate) max_idempotency_records: usize,
    pub(crate) replicas_to_acknowledge: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            history_len: 1000,
            history_ttl: Duration::from_secs(300),
            history_bytes_per_key: Self::DEFAULT_HISTORY_BYTES_PER_KEY,
            history_bytes_total: Self::DEFAULT_HISTORY_BYTES_TOTAL,
            buffer: 256,
            lag_policy: LagPolicy::Disconnect,
            reset_event_type: "reset".to_owned(),
            send_timeout: Duration::from_secs(5),
            max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES,
            idempotency_ttl: Duration::from_secs(300),
            max_idempotency_records: Self::DEFAULT_MAX_IDEMPOTENCY_RECORDS,
            replicas_to_acknowledge: 0,
        }
    }
}

impl RegistryConfig {
    /// The default [`history_bytes_per_key`](Self::history_bytes_per_key): 4 MiB.
    pub const DEFAULT_HISTORY_BYTES_PER_KEY: usize = 4 << 20;
    /// The default [`history_bytes_total`](Self::history_bytes_total): 256 MiB.
    pub const DEFAULT_HISTORY_BYTES_TOTAL: usize = 256 << 20;
    /// The default [`max_event_bytes`](Self::max_event_bytes): 1 MiB.
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;
    /// The default [`max_idempotency_records`](Self::max_idempotency_records): 100,000.
    pub const DEFAULT_MAX_IDEMPOTENCY_RECORDS: usize = 100_000;

    /// How long a send's idempotency key is remembered (default 5 minutes,
    /// as Centrifugo's publish API; at least 1 ms): a send repeated with
    /// the same key within it is not written again (see
    /// [`Registry::send_idempotent`](crate::Registry::send_idempotent)).
    pub fn idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// The most idempotency keys the in-memory broker remembers at once
    /// (default 100,000, about 25 MB at their largest; at least 1): past
    /// it, the oldest are forgotten before their time, so a flood of keys
    /// cannot grow memory. Redis keeps each for
    /// [`idempotency_ttl`](Self::idempotency_ttl), about 150 bytes apiece.
    pub fn max_idempotency_records(mut self, records: usize) -> Self {
        self.max_idempotency_records = records.max(1);
        self
    }

    /// The most bytes one event may carry in its data, event type and
    /// comment together (default 1 MiB; at least 1). A larger one is
    /// refused: `send` and `broadcast` fail with
    /// [`BrokerError::InvalidEvent`] ([`EventError::TooLarge`](crate::EventError::TooLarge),
    /// answered `500`) and nothing is stored. It bounds what one event can
    /// make a broker keep: on Redis, a key's history holds at most
    /// `history_len` of them.
    ///
    /// ```
    /// use sse_runtime::RegistryConfig;
    /// // Chat messages of up to 2,000 characters fit with room to spare.
    /// let config = RegistryConfig::default().max_event_bytes(16 * 1024);
    /// ```
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes.max(1);
        self
    }

    /// `event`, or the error that refuses it for its size.
    pub(crate) fn check_size(&self, event: &MessageEvent) -> Result<(), BrokerError> {
        let size = event.content_len();
        if size > self.max_event_bytes {
            return Err(BrokerError::InvalidEvent(crate::EventError::TooLarge {
                size,
                max: self.max_event_bytes,
            }));
        }
        Ok(())
    }

    /// Events kept per key for replay, and the most a key holds at once
    /// (default 1000; at least 1).
    pub fn history_len(mut self, events: usize) -> Self {
        self.history_len = events.max(1);
        self
    }

    /// How long an event stays replayable (default 5 minutes).
    pub fn history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = ttl;
        self
    }

    /// The most bytes of history one key keeps (default 4 MiB); its oldest
    /// events go first. A key always keeps its newest event. In-memory broker
    /// only: Redis bounds its memory with `history_len` and its own
    /// `maxmemory`.
    ///
    /// ```
    /// use sse_runtime::RegistryConfig;
    /// let config = RegistryConfig::default().history_bytes_per_key(256 * 1024);
    /// ```
    pub fn history_bytes_per_key(mut self, bytes: usize) -> Self {
        self.history_bytes_per_key = bytes;
        self
    }

    /// The most bytes of history the whole registry keeps (default 256 MiB).
    /// Past it, the oldest events of all keys are evicted until the registry
    /// is at 90% of it. In-memory broker only.
    ///
    /// ```
    /// use sse_runtime::RegistryConfig;
    /// let config = RegistryConfig::default().history_bytes_total(64 << 20);
    /// ```
    pub fn history_bytes_total(mut self, bytes: usize) -> Self {
        self.history_bytes_total = bytes;
        self
    }

    /// How many live events a subscriber may fall behind by before the
    /// [`LagPolicy`] applies (default 256; at least 1). Replay after a
    /// reconnect does not count against it.
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = events.max(1);
        self
    }

    /// What happens to a subscriber that falls behind (default: disconnect).
    pub fn lag_policy(mut self, policy: LagPolicy) -> Self {
        self.lag_policy = policy;
        self
    }

    /// How long a `send` or `broadcast` may wait for an external broker
    /// before it fails (default 5 s; at least 1 ms): with
    /// [`BrokerError::Unavailable`] if nothing was written, or
    /// [`BrokerError::OutcomeUnknown`] if the command went out and no answer
    /// came. On Redis this covers the retries through a failover:
    /// answers that say Redis did not run the command (a replica not yet
    /// promoted, a cluster that is down) are retried within it, nothing else.
    /// Raise it above the failover time (about `cluster-node-timeout` plus a
    /// second) for sends that wait a failover out; lower it for sends that
    /// fail fast. The in-memory broker never waits.
    ///
    /// ```
    /// use sse_runtime::RegistryConfig;
    /// use std::time::Duration;
    /// let config = RegistryConfig::default().send_timeout(Duration::from_secs(20));
    /// ```
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Redis: how many replicas must hold an event before `send` or
    /// `broadcast` reports it written (default 0: the master's answer is
    /// enough). Each send is followed, in the same round trip, by Redis's
    /// `WAIT <replicas> 400`; when fewer replicas than that confirm within
    /// 400 ms, the send fails with [`BrokerError::OutcomeUnknown`] (`504`):
    /// the master wrote it, and may lose it. A retry with the same
    /// idempotency key then writes it once, where the slots are.
    ///
    /// This is what closes the windows in which Redis, which replicates
    /// asynchronously, loses an acknowledged event: a master killed before
    /// its replica had the event, and a master frozen past its failover that
    /// wakes, answers and is then demoted (see `RELIABILITY.md`). Set it to
    /// the number of replicas each master has (1 for the usual cluster),
    /// and only where every master has them: with a replica down, every
    /// send to its master fails until the replica is back. It costs a
    /// replica round trip per send, and the node holds the connection's
    /// other commands meanwhile (figures in `BENCHMARKS.md`). The in-memory
    /// broker has no replicas and ignores it.
    ///
    /// ```
    /// use sse_runtime::RegistryConfig;
    /// let config = RegistryConfig::default().replicas_to_acknowledge(1);
    /// ```
    pub fn replicas_to_acknowledge(mut self, replicas: usize) -> Self {
        self.replicas_to_acknowledge = replicas;
        self
    }

    /// The event type of the reset signal (default `reset`). A value with a
    /// line break is refused and the current type kept.
    pub fn reset_event_type(mut self, event_type: impl Into<String>) -> Self {
        let event_type = event_type.into();
        if !event_type.contains(['\r', '\n']) {
            self.reset_event_type = event_type;
        }
        self
    }
}
