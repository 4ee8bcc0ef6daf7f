//! The registry: per-user and per-topic streams that fan out, survive
//! reconnects and never leak.

pub(crate) mod broker;
pub(crate) mod history;
pub(crate) mod idempotency;
pub(crate) mod memory;
pub(crate) mod multi;
pub(crate) mod reset;
pub(crate) mod waiters;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::event::typed::IntoEvent;
use crate::event::{EncodedEvent, MessageEvent};
use crate::registry::broker::{Broker, BrokerError, Key, RegistryConfig};
use crate::registry::idempotency::{IdempotencyKey, Sent};
use crate::registry::memory::MemoryBroker;
use crate::telemetry;

/// Streams by key (a user id, a topic, a room): subscribe, send, broadcast,
/// replay after a reconnect. A cheap-to-clone handle for handlers, background
/// tasks and services.
///
/// Every event sent through the registry is stamped with an id (the SSE `id:`
/// field) that increases per key, kept in a bounded history, encoded once and
/// shared by every subscriber. A browser that reconnects sends the last id as
/// `Last-Event-ID`; [`subscribe_from`](Registry::subscribe_from) gives it exactly
/// what it missed, then live events.
///
/// ```
/// use futures_util::StreamExt;
/// use sse_runtime::{MessageEvent, Registry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sse_runtime::BrokerError> {
/// let registry: Registry<String> = Registry::new();
/// let mut alice = registry.subscribe(&"alice".to_owned());
/// assert_eq!(registry.send(&"alice".to_owned(), MessageEvent::new("hi")).await?, 1);
///
/// // First the stream's resume point (`id: ...` alone), then the event.
/// assert!(alice.next().await.unwrap().is_resume_point());
/// let event = alice.next().await.unwrap();
/// let text = std::str::from_utf8(event.as_bytes()).unwrap();
/// assert!(text.starts_with("id: ") && text.ends_with("data: hi\n\n"));
/// # Ok(())
/// # }
/// ```
pub struct Registry<K> {
    broker: Arc<dyn Broker<K>>,
    producers: Arc<Producers<K>>,
    closed: Arc<tokio::sync::watch::Sender<bool>>,
}

struct Producers<K> {
    running: Mutex<HashMap<K, (u64, tokio::task::AbortHandle)>>,
    next_id: AtomicU64,
}

impl<K> Clone for Registry<K> {
    fn clone(&self) -> Self {
        Registry {
            broker: Arc::clone(&self.broker),
            producers: Arc::clone(&self.producers),
            closed: Arc::clone(&self.closed),
        }
    }
}

impl<K> Default for Registry<K>
where
    K: Key,
{
    fn default() -> Self {
        Registry::new()
    }
}

impl<K> Registry<K>
where
    K: Key,
{
    /// An in-memory registry with the default [`RegistryConfig`].
    pub fn new() -> Self {
        Registry::with_config(RegistryConfig::default())
    }

    /// An in-memory registry.
    pub fn with_config(config: RegistryConfig) -> Self {
        Registry::with_broker(MemoryBroker::new(config))
    }

    /// A registry over any [`Broker`]. Code that uses the registry does not
    /// change with the broker.
    pub fn with_broker(broker: impl Broker<K>) -> Self {
        Registry {
            broker: Arc::new(broker),
            producers: Arc::new(Producers {
                running: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
            closed: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// A stream of `key`'s events from now on. It starts with its resume
    /// point (an `id:` alone, see [`EncodedEvent::is_resume_point`]), so a
    /// client that drops before any event resumes without a gap; it stays
    /// open while `key` has nothing, and receives what comes later.
    pub fn subscribe(&self, key: &K) -> Subscription {
        Subscription(self.broker.subscribe(key, None))
    }

    /// A stream of what `key` had after `last_event_id`, then its live events,
    /// with no gap and no duplicate. With `None` or an empty id, the same as
    /// [`subscribe`](Registry::subscribe). An id older than the history,
    /// unknown, or malformed starts the stream with the reset signal (see
    /// [`ResetReason`](crate::ResetReason)).
    pub fn subscribe_from(&self, key: &K, last_event_id: Option<&str>) -> Subscription {
        // An empty `Last-Event-ID` (a header or `lastEventId=` with no value)
        // is what a client sends before it has seen an id: no id.
        let last_event_id = last_event_id.filter(|id| !id.is_empty());
        Subscription(self.broker.subscribe(key, last_event_id))
    }

    /// One stream for several keys (a user's notifications, two rooms, a
    /// dashboard topic): the events of all of them, in order per key, and
    /// broadcasts once. Its SSE id holds every key's position, so one
    /// `Last-Event-ID` resumes each key exactly, with no gap and no
    /// duplicate, on any broker (over Redis, on any instance).
    ///
    /// - A key whose history no longer covers the id gets the reset signal
    ///   for itself alone, naming it: `data: {"reason":"...","key":"<key>"}`.
    ///   The others carry on.
    /// - An id given for another set of keys (or another order) resets them
    ///   all (`unknown_id`); a malformed one too (`invalid_id`).
    /// - The id grows with the keys, about 15 bytes each in memory and 15 to
    ///   32 over Redis; past [`MAX_LAST_EVENT_ID_LEN`](crate::MAX_LAST_EVENT_ID_LEN)
    ///   (1,024 bytes: some 60 keys in memory, 30 over Redis) a reconnecting
    ///   client's id is not read, and it gets the reset signal for all keys,
    ///   never a silent gap.
    /// - When one key's subscription ends (the lag policy, shutdown), the
    ///   stream ends, and the client resumes every key from its id.
    ///
    /// Repeated keys count once. With no key, the stream stays open and
    /// empty.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use sse_runtime::{MessageEvent, Registry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), sse_runtime::BrokerError> {
    /// let registry: Registry<String> = Registry::new();
    /// let rooms = ["general".to_owned(), "random".to_owned()];
    /// let mut both = registry.subscribe_many(&rooms, None);
    /// assert!(both.next().await.unwrap().is_resume_point());
    /// registry.send(&rooms[1], MessageEvent::new("hi")).await?;
    /// let event = both.next().await.unwrap();
    /// let text = std::str::from_utf8(event.as_bytes()).unwrap();
    /// // One id for both rooms' positions: `<set>:<general>_<random>`.
    /// assert!(text.starts_with("id: ") && text.contains('_') && text.ends_with("\ndata: hi\n\n"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe_many(&self, keys: &[K], last_event_id: Option<&str>) -> Subscription
    where
        K: std::fmt::Display,
    {
        let mut seen = std::collections::HashSet::new();
        let keys: Vec<K> = keys
            .iter()
            .filter(|key| seen.insert(*key))
            .cloned()
            .collect();
        if keys.is_empty() {
            return Subscription(Box::pin(futures_util::stream::pending()));
        }
        let last_event_id = last_event_id.filter(|id| !id.is_empty());
        Subscription(crate::registry::multi::subscribe_many(
            Arc::clone(&self.broker),
            keys,
            last_event_id,
        ))
    }

    /// Sends `event` to every subscriber of `key`, stamping it with the key's
    /// next id (any id the event had is replaced). Returns how many subscribers
    /// it reached; with none, it is still kept for replay.
    pub async fn send(&self, key: &K, event: impl IntoEvent) -> Result<usize, BrokerError> {
        let event = event
            .into_event()
            .map_err(BrokerError::InvalidEvent)
            .inspect_err(|error| telemetry::broker_error(error.kind()))?;
        self.broker
            .publish(key, event)
            .await
            .inspect_err(|error| telemetry::broker_error(error.kind()))
    }

    /// As [`send`](Registry::send), written at most once per
    /// `idempotency_key` and `key` (within
    /// [`RegistryConfig::idempotency_ttl`], 5 minutes by default): a
    /// repeat writes and delivers nothing and answers the first send's id,
    /// with [`Sent::duplicate`] set. So a publisher that got no answer
    /// ([`BrokerError::OutcomeUnknown`], `504`) retries safely, on any
    /// instance. The key's check and the write are one atomic step, on Redis
    /// too.
    pub async fn send_idempotent(
        &self,
        key: &K,
        event: impl IntoEvent,
        idempotency_key: &IdempotencyKey,
    ) -> Result<Sent, BrokerError> {
        let event = event
            .into_event()
            .map_err(BrokerError::InvalidEvent)
            .inspect_err(|error| telemetry::broker_error(error.kind()))?;
        self.broker
            .publish_idempotent(key, event, idempotency_key)
            .await
            .inspect_err(|error| telemetry::broker_error(error.kind()))
    }

    /// Sends `event` to every subscriber of every key. It is kept once, in a
    /// broadcast log with the same bounds as a key's history, so it costs
    /// nothing per key without subscribers and keeps no key alive; a client
    /// that was away gets it when it resumes, once. Returns how many streams
    /// of this instance it reached (a stream over several keys counts once;
    /// see [`total_streams`](Registry::total_streams)).
    pub async fn broadcast(&self, event: impl IntoEvent) -> Result<usize, BrokerError> {
        let event = event
            .into_event()
            .map_err(BrokerError::InvalidEvent)
            .inspect_err(|error| telemetry::broker_error(error.kind()))?;
        self.broker
            .publish_to_all(event)
            .await
            .inspect_err(|error| telemetry::broker_error(error.kind()))
    }

    /// Drives `producer` in a task and sends each of its events to `key`, as
    /// the NestJS tutorial's `register(userId, events$)`. A second producer for
    /// the same key replaces the first. The task ends when the stream does, or
    /// at [`shutdown`](Registry::shutdown).
    ///
    /// Must be called within a Tokio runtime.
    pub fn register<S>(&self, key: K, producer: S)
    where
        S: Stream<Item = MessageEvent> + Send + 'static,
    {
        let id = self.producers.next_id.fetch_add(1, Ordering::Relaxed);
        let broker = Arc::clone(&self.broker);
        let producers = Arc::clone(&self.producers);
        let task_key = key.clone();
        // Held until the task is in the map, so that it cannot finish and remove
        // itself before it was added.
        let mut running = lock(&self.producers.running);
        let task = tokio::spawn(async move {
            let mut producer = std::pin::pin!(producer);
            while let Some(event) = producer.next().await {
                if let Err(error) = broker.publish(&task_key, event).await {
                    tracing::warn!(%error, "SSE producer stopped: its event could not be published");
                    break;
                }
            }
            let mut running = lock(&producers.running);
            if running
                .get(&task_key)
                .is_some_and(|(current, _)| *current == id)
            {
                running.remove(&task_key);
            }
        });
        if let Some((_, previous)) = running.insert(key, (id, task.abort_handle())) {
            previous.abort();
        }
    }

    /// `stream`, ended at [`shutdown`](Registry::shutdown): for streams that do
    /// not come from the registry (a ping, a feed), so they too let a graceful
    /// shutdown complete.
    ///
    /// ```
    /// use futures_util::{StreamExt, stream};
    /// use sse_runtime::Registry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry: Registry<String> = Registry::new();
    /// let mut endless = registry.until_shutdown(stream::repeat("ping"));
    /// assert_eq!(endless.next().await, Some("ping"));
    /// registry.shutdown();
    /// assert_eq!(endless.next().await, None);
    /// # }
    /// ```
    pub fn until_shutdown<S>(&self, stream: S) -> impl Stream<Item = S::Item> + Send + 'static
    where
        S: Stream + Send + 'static,
    {
        // Boxed so the result is `Unpin` whenever `stream` is.
        stream.take_until(Box::pin(self.closed()))
    }

    /// Resolves when [`shutdown`](Registry::shutdown) is called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.subscribe();
        async move {
            // Err: every sender is gone, which only happens once the registry is dropped.
            let _ = closed.wait_for(|closed| *closed).await;
        }
    }

    /// How many keys hold state: subscribers or replayable history.
    pub fn key_count(&self) -> usize {
        self.broker.key_count()
    }

    /// How many producers registered with [`register`](Registry::register) are running.
    pub fn producer_count(&self) -> usize {
        lock(&self.producers.running).len()
    }

    /// How many open subscriptions `key` has.
    pub fn subscriber_count(&self, key: &K) -> usize {
        self.broker.subscriber_count(key)
    }

    /// How many open subscriptions all keys together have (on this instance,
    /// with a broker shared by several): the sum of
    /// [`subscriber_count`](Registry::subscriber_count) over the keys, so a
    /// stream over several keys ([`subscribe_many`](Registry::subscribe_many))
    /// counts once per key. For the number of open streams, see
    /// [`total_streams`](Registry::total_streams).
    ///
    /// ```
    /// use sse_runtime::Registry;
    ///
    /// let registry: Registry<String> = Registry::new();
    /// let alice = registry.subscribe(&"alice".to_owned());
    /// let bob = registry.subscribe(&"bob".to_owned());
    /// assert_eq!(registry.total_subscribers(), 2);
    /// drop((alice, bob));
    /// assert_eq!(registry.total_subscribers(), 0);
    /// ```
    pub fn total_subscribers(&self) -> usize {
        self.broker.total_subscribers()
    }

    /// How many open streams this instance has, a stream over several keys
    /// counting once: for a `/status` endpoint or a gauge, without a guard of
    /// your own around each stream. A [`broadcast`](Registry::broadcast)
    /// reaches this many.
    ///
    /// ```
    /// use sse_runtime::Registry;
    ///
    /// let registry: Registry<String> = Registry::new();
    /// let rooms = ["general".to_owned(), "random".to_owned()];
    /// let both = registry.subscribe_many(&rooms, None);
    /// let alice = registry.subscribe(&"alice".to_owned());
    /// assert_eq!(registry.total_streams(), 2);
    /// assert_eq!(registry.total_subscribers(), 3);
    /// drop((both, alice));
    /// assert_eq!(registry.total_streams(), 0);
    /// ```
    pub fn total_streams(&self) -> usize {
        self.broker.total_streams()
    }

    /// Ends every open stream promptly, stops every producer and refuses
    /// further sends. Call it from `axum::serve(..).with_graceful_shutdown(..)`'s
    /// signal, so open SSE responses end and the server can stop.
    pub fn shutdown(&self) {
        self.closed.send_replace(true);
        self.broker.shutdown();
        for (_, (_, task)) in lock(&self.producers.running).drain() {
            task.abort();
        }
    }
}

/// One client's stream of a key's events, already encoded (with their ids).
/// Return it from an `#[sse]` method, or wrap it in [`Sse`](crate::Sse).
/// Dropping it releases everything it held in the registry.
#[must_use = "a subscription delivers nothing unless it is streamed"]
pub struct Subscription(BoxStream<'static, EncodedEvent>);

impl Subscription {
    /// This subscription once it is open: its position fixed, so that every
    /// event sent from now on is its to deliver. An `#[sse]` route waits
    /// for this by itself before its response's head goes out; a plain
    /// axum handler that returns `Sse::new(subscription)` awaits it first,
    /// so that a client that saw `200` (a page on `EventSource`'s `open`)
    /// misses nothing it then causes. Over the memory broker it is open at
    /// once; over Redis, a key new to the instance takes a round trip.
    ///
    /// ```
    /// use sse_runtime::{Registry, Sse, Subscription};
    ///
    /// async fn handler(registry: Registry<String>, user: String) -> Sse<Subscription> {
    ///     Sse::new(registry.subscribe(&user).opened().await)
    /// }
    /// ```
    pub async fn opened(self) -> Subscription {
        Subscription(Box::pin(crate::response::opening::opened(self.0).await))
    }

    /// This subscription, ended cleanly at `deadline`: for a stream whose
    /// credentials expire (a token, a session), so that an expired client
    /// stops receiving. A browser's `EventSource` then reconnects, and the
    /// route's guard answers with its fresh check (a `401` ends it for good).
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use sse_runtime::Registry;
    /// use std::time::{Duration, Instant};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry: Registry<String> = Registry::new();
    /// let token_expires = Instant::now() + Duration::from_millis(20);
    /// let mut alice = registry.subscribe(&"alice".to_owned()).until(token_expires);
    /// assert!(alice.next().await.unwrap().is_resume_point());
    /// assert!(alice.next().await.is_none()); // ended at the deadline
    /// # }
    /// ```
    pub fn until(self, deadline: impl Into<tokio::time::Instant>) -> Subscription {
        self.end_on(tokio::time::sleep_until(deadline.into()))
    }

    /// This subscription, ended cleanly when `signal` completes: for a
    /// stream whose credentials can be revoked before they expire.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use sse_runtime::Registry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry: Registry<String> = Registry::new();
    /// let (revoke, revoked) = tokio::sync::oneshot::channel::<()>();
    /// let mut alice = registry.subscribe(&"alice".to_owned()).end_on(async move {
    ///     let _ = revoked.await;
    /// });
    /// assert!(alice.next().await.unwrap().is_resume_point());
    /// revoke.send(()).unwrap();
    /// assert!(alice.next().await.is_none());
    /// # }
    /// ```
    pub fn end_on<F>(self, signal: F) -> Subscription
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        // Boxed: the subscription's type stays the same, and a subscription
        // without an end carries no timer.
        Subscription(Box::pin(self.0.take_until(Box::pin(signal))))
    }
}

impl Stream for Subscription {
    type Item = EncodedEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EncodedEvent>> {
        self.0.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}
