//! A [`Broker`] on Redis Streams, so that several server instances share keys,
//! history and ids (feature `redis`).
//!
//! - `send` is `XADD <prefix>:<key> MAXLEN ~ <history_len> * e <fields>`: the
//!   entry id Redis assigns (`<ms>-<n>`) is the SSE id, the same on every
//!   instance, so a `Last-Event-ID` from one instance resumes on any other.
//! - `broadcast` finds the streams with `SCAN … TYPE stream` and adds the
//!   event to each, pipelined 256 streams to a round trip.
//! - Live delivery: one reader task per instance runs `XREAD BLOCK` over every
//!   key that has subscribers on this instance (one connection, not one per
//!   subscriber) and fans each entry out locally.
//! - Resume: the subscription first joins the local fan-out, then reads what it
//!   missed with `XRANGE`, and skips live entries it already replayed: no gap, no
//!   duplicate. The history covers the client's id while the client's own last
//!   entry is still in the stream (trimming removes the oldest first); when it
//!   is not, the id is ahead of the stream (`XINFO STREAM`), or the stream is
//!   gone, the subscription starts with the reset signal.
//! - Failure: `send` returns [`BrokerError::Unavailable`] when Redis does not
//!   acknowledge the entry. Open subscriptions keep waiting while Redis is
//!   unreachable; the reader reconnects by itself and resumes from the last id
//!   it delivered, so entries that Redis kept are delivered once it is back.
//!
//! Guarantees by Redis setting: with `appendonly yes` and `appendfsync always`,
//! an event acknowledged by `send` survives a Redis restart and a client that
//! resumes gets it. With persistence off, a restart loses the history, and a
//! client that resumes with an id from before gets the reset signal, never a
//! silent gap.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::{Notify, broadcast};

use crate::broker::{Broker, BrokerError, RegistryConfig, ResetReason};
use crate::event::{EncodedEvent, MessageEvent};

/// `broadcast` sends its `XADD`s in pipelines of this many streams: one round
/// trip each, and a bounded request.
const BROADCAST_CHUNK: usize = 256;

/// A Redis stream entry id, `<milliseconds>-<sequence>`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct EntryId(u64, u64);

impl EntryId {
    fn parse(id: &str) -> Option<EntryId> {
        let (ms, seq) = id.split_once('-')?;
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        Some(EntryId(number(ms)?, number(seq)?))
    }
}

impl Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A [`Broker`] on Redis Streams. Connection settings come from a URL such
/// as `redis://127.0.0.1:6379/` (for example `REDIS_URL`).
///
/// ```no_run
/// use sse_runtime::{RedisBroker, Registry, RegistryConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1/".into());
/// let broker = RedisBroker::connect(&url, RegistryConfig::default()).await?;
/// let registry: Registry<String> = Registry::with_broker(broker);
/// # Ok(()) }
/// ```
pub struct RedisBroker<K> {
    inner: Arc<Inner>,
    _keys: PhantomData<fn(K)>,
}

struct Inner {
    client: redis::Client,
    /// Reconnects by itself after Redis comes back.
    commands: ConnectionManager,
    prefix: String,
    config: RegistryConfig,
    /// Stream key → local fan-out and the reader's position in that stream.
    local: Mutex<HashMap<String, Local>>,
    /// Wakes the reader when the set of keys changes.
    keys_changed: Notify,
    shut_down: AtomicBool,
    closed: tokio::sync::watch::Sender<bool>,
}

struct Local {
    sender: broadcast::Sender<(EntryId, EncodedEvent)>,
    /// The last entry the reader delivered for this key.
    read_from: EntryId,
}

/// The error `connect` returns.
#[derive(Debug, thiserror::Error)]
#[error("could not connect to Redis: {0}")]
pub struct RedisConnectError(#[from] redis::RedisError);

fn unavailable(error: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(error.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K> RedisBroker<K> {
    /// Connects to Redis at `url` and starts this instance's reader task.
    /// History per key is bounded by `config`'s history length (`MAXLEN ~`).
    pub async fn connect(url: &str, config: RegistryConfig) -> Result<Self, RedisConnectError> {
        Self::connect_with_prefix(url, config, "sse").await
    }

    /// As [`connect`](Self::connect), with stream keys named `<prefix>:<key>`.
    pub async fn connect_with_prefix(
        url: &str,
        config: RegistryConfig,
        prefix: &str,
    ) -> Result<Self, RedisConnectError> {
        let client = redis::Client::open(url)?;
        let commands = client.get_connection_manager().await?;
        let inner = Arc::new(Inner {
            client,
            commands,
            prefix: prefix.to_owned(),
            config,
            local: Mutex::new(HashMap::new()),
            keys_changed: Notify::new(),
            shut_down: AtomicBool::new(false),
            closed: tokio::sync::watch::Sender::new(false),
        });
        tokio::spawn(read_loop(Arc::downgrade(&inner)));
        Ok(RedisBroker {
            inner,
            _keys: PhantomData,
        })
    }
}

impl Inner {
    fn stream_key(&self, key: &impl Display) -> String {
        format!("{}:{key}", self.prefix)
    }

    /// The last entry id of `stream` (0-0 when it is empty or missing).
    async fn last_id(&self, stream: &str) -> redis::RedisResult<EntryId> {
        let mut connection = self.commands.clone();
        let last: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await?;
        Ok(last
            .first()
            .and_then(|(id, _)| EntryId::parse(id))
            .unwrap_or_default())
    }

    /// Joins the local fan-out of `stream`; a key new to this instance is read
    /// from its current last entry on.
    async fn join(
        &self,
        stream: &str,
    ) -> redis::RedisResult<broadcast::Receiver<(EntryId, EncodedEvent)>> {
        if let Some(local) = lock(&self.local).get(stream) {
            return Ok(local.sender.subscribe());
        }
        let start = self.last_id(stream).await?;
        let mut local = lock(&self.local);
        let entry = local.entry(stream.to_owned()).or_insert_with(|| Local {
            sender: broadcast::channel(self.config.buffer.max(16)).0,
            read_from: start,
        });
        let receiver = entry.sender.subscribe();
        drop(local);
        self.keys_changed.notify_one();
        Ok(receiver)
    }

    /// `XADD <stream> MAXLEN ~ <history_len> * e <fields>`: appends one event,
    /// trimming the oldest past the history length.
    fn xadd(&self, stream: &str, fields: &[u8]) -> redis::Cmd {
        let mut command = redis::cmd("XADD");
        command
            .arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.history_len)
            .arg("*")
            .arg("e")
            .arg(fields);
        command
    }

    /// How many subscriptions on this instance have joined `stream`.
    fn local_subscribers(&self, stream: &str) -> usize {
        lock(&self.local)
            .get(stream)
            .map_or(0, |local| local.sender.receiver_count())
    }

    /// Drops the local fan-out of keys nobody on this instance listens to.
    fn forget_idle(&self) {
        lock(&self.local).retain(|_, local| local.sender.receiver_count() > 0);
    }

    fn reset_signal(&self, reason: ResetReason, position: EntryId) -> EncodedEvent {
        let event = MessageEvent::new(format!("{{\"reason\":\"{}\"}}", reason.as_str()))
            .with_event_type(self.config.reset_event_type.as_str())
            .unwrap_or_else(|_| MessageEvent::new(""));
        MessageEvent::assemble_with_id(&position.to_string(), &event.encode_without_id())
    }

    /// Whether the history of `stream` still holds everything after `last`.
    async fn covers(
        &self,
        stream: &str,
        last: EntryId,
    ) -> redis::RedisResult<Result<(), ResetReason>> {
        let mut connection = self.commands.clone();
        let exists: bool = redis::cmd("EXISTS")
            .arg(stream)
            .query_async(&mut connection)
            .await?;
        if !exists {
            // No such stream: its history is gone (or never was).
            return Ok(Err(ResetReason::HistoryExpired));
        }
        let info: redis::Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(stream)
            .query_async(&mut connection)
            .await?;
        let field = |name: &str| -> Option<EntryId> {
            let redis::Value::Array(items) = &info else {
                return None;
            };
            items.chunks(2).find_map(|pair| match pair {
                [redis::Value::BulkString(k), value] if k == name.as_bytes() => match value {
                    redis::Value::BulkString(v) => EntryId::parse(std::str::from_utf8(v).ok()?),
                    redis::Value::SimpleString(v) => EntryId::parse(v),
                    _ => None,
                },
                _ => None,
            })
        };
        let generated = field("last-generated-id").unwrap_or_default();
        if last > generated {
            return Ok(Err(ResetReason::UnknownId));
        }
        // Trimming removes the oldest entries first, so while the client's own
        // last entry is still there, nothing after it was removed. Once it is
        // gone, entries after it may be too: reset (conservative, never a gap).
        let first: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await?;
        let covered = match first.first().and_then(|(id, _)| EntryId::parse(id)) {
            Some(first) => last >= first,
            None => last == generated,
        };
        Ok(if covered {
            Ok(())
        } else {
            Err(ResetReason::HistoryExpired)
        })
    }

    async fn entries_after(
        &self,
        stream: &str,
        last: EntryId,
    ) -> redis::RedisResult<Vec<(EntryId, EncodedEvent)>> {
        let mut connection = self.commands.clone();
        let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(format!("({last}"))
            .arg("+")
            .query_async(&mut connection)
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| decode(&id, &fields))
            .collect())
    }
}

/// An entry's id and stored fields as one event.
fn decode(id: &str, fields: &[Vec<u8>]) -> Option<(EntryId, EncodedEvent)> {
    let entry_id = EntryId::parse(id)?;
    let stored = fields.chunks(2).find_map(|pair| match pair {
        [name, value] if name == b"e" => Some(value),
        _ => None,
    })?;
    Some((entry_id, MessageEvent::assemble_with_id(id, stored)))
}

type StreamReply = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;

/// The instance's one reader: `XREAD BLOCK` over every key with local
/// subscribers, fanning entries out. Reconnects by itself; stops with the broker.
async fn read_loop(inner: std::sync::Weak<Inner>) {
    let mut connection: Option<MultiplexedConnection> = None;
    loop {
        let Some(broker) = inner.upgrade() else {
            return;
        };
        if broker.shut_down.load(Ordering::SeqCst) {
            return;
        }
        broker.forget_idle();
        let positions: Vec<(String, EntryId)> = lock(&broker.local)
            .iter()
            .map(|(key, local)| (key.clone(), local.read_from))
            .collect();
        if positions.is_empty() {
            // Re-check now and then: the broker may be dropped meanwhile.
            let _ =
                tokio::time::timeout(Duration::from_millis(500), broker.keys_changed.notified())
                    .await;
            continue;
        }
        if connection.is_none() {
            match broker.client.get_multiplexed_async_connection().await {
                Ok(fresh) => connection = Some(fresh),
                Err(error) => {
                    tracing::warn!(%error, "SSE Redis reader cannot connect; retrying");
                    drop(broker);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(200)
            .arg("STREAMS");
        for (key, _) in &positions {
            command.arg(key);
        }
        for (_, id) in &positions {
            command.arg(id.to_string());
        }
        let conn = connection.as_mut().expect("connected above");
        let reply: redis::RedisResult<StreamReply> = command.query_async(conn).await;
        match reply {
            Ok(streams) => {
                let mut local = lock(&broker.local);
                for (key, entries) in streams.unwrap_or_default() {
                    let Some(local) = local.get_mut(&key) else {
                        continue;
                    };
                    for (id, fields) in entries {
                        if let Some((entry_id, event)) = decode(&id, &fields) {
                            // The next XREAD starts after the last entry seen, delivered or not.
                            local.read_from = local.read_from.max(entry_id);
                            // No receiver left is fine: the key is forgotten next round.
                            let _ = local.sender.send((entry_id, event));
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "SSE Redis reader failed; reconnecting");
                connection = None;
                drop(broker);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl<K> Broker<K> for RedisBroker<K>
where
    K: Display + Hash + Eq + Clone + Send + Sync + 'static,
{
    fn publish<'a>(
        &'a self,
        key: &'a K,
        event: MessageEvent,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if inner.shut_down.load(Ordering::SeqCst) {
                return Err(BrokerError::ShutDown);
            }
            let stream = inner.stream_key(key);
            let fields: Bytes = event.encode_without_id();
            let mut connection = inner.commands.clone();
            let _id: String = inner
                .xadd(&stream, &fields)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(inner.local_subscribers(&stream))
        })
    }

    fn publish_to_all(&self, event: MessageEvent) -> BoxFuture<'_, Result<usize, BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if inner.shut_down.load(Ordering::SeqCst) {
                return Err(BrokerError::ShutDown);
            }
            let mut connection = inner.commands.clone();
            let mut streams: Vec<String> = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}:*", inner.prefix))
                    .arg("TYPE")
                    .arg("stream")
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                streams.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            let fields = event.encode_without_id();
            let mut reached = 0;
            // One round trip per chunk of streams, not per stream.
            for chunk in streams.chunks(BROADCAST_CHUNK) {
                let mut pipeline = redis::pipe();
                for stream in chunk {
                    pipeline.add_command(inner.xadd(stream, &fields)).ignore();
                }
                let () = pipeline
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                reached += chunk
                    .iter()
                    .map(|stream| inner.local_subscribers(stream))
                    .sum::<usize>();
            }
            Ok(reached)
        })
    }

    fn subscribe(&self, key: &K, last_event_id: Option<&str>) -> BoxStream<'static, EncodedEvent> {
        let inner = Arc::clone(&self.inner);
        let stream = inner.stream_key(key);
        let last_event_id = last_event_id.map(str::to_owned);
        let mut closed = inner.closed.subscribe();
        Box::pin(async_stream::stream! {
            // Join the local fan-out first, so nothing published during the replay is missed.
            let mut receiver = loop {
                if inner.shut_down.load(Ordering::SeqCst) {
                    return;
                }
                match inner.join(&stream).await {
                    Ok(receiver) => break receiver,
                    // Redis unreachable: keep waiting, as open subscriptions do.
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            // Live entries up to here were replayed already.
            let mut delivered = EntryId::default();
            if let Some(last_event_id) = last_event_id {
                let resume = match EntryId::parse(&last_event_id) {
                    None => Err(ResetReason::InvalidId),
                    Some(last) => match inner.covers(&stream, last).await {
                        Ok(Ok(())) => Ok(last),
                        Ok(Err(reason)) => Err(reason),
                        // Cannot tell: end, and let the client retry.
                        Err(_) => return,
                    },
                };
                match resume {
                    Ok(last) => {
                        let Ok(missed) = inner.entries_after(&stream, last).await else { return };
                        delivered = last;
                        for (id, event) in missed {
                            delivered = id;
                            yield event;
                        }
                    }
                    Err(reason) => {
                        let Ok(position) = inner.last_id(&stream).await else { return };
                        delivered = position;
                        yield inner.reset_signal(reason, position);
                    }
                }
            }
            loop {
                let next = tokio::select! {
                    received = receiver.recv() => Some(received),
                    _ = closed.wait_for(|closed| *closed) => None,
                };
                match next {
                    None | Some(Err(broadcast::error::RecvError::Closed)) => return,
                    Some(Ok((id, event))) => {
                        if id > delivered {
                            delivered = id;
                            yield event;
                        }
                    }
                    Some(Err(broadcast::error::RecvError::Lagged(_))) => match inner.config.lag_policy {
                        crate::broker::LagPolicy::Disconnect => return,
                        _ => {
                            let position = inner.last_id(&stream).await.unwrap_or(delivered);
                            yield inner.reset_signal(ResetReason::Lagged, position);
                            delivered = delivered.max(position);
                        }
                    },
                }
            }
        })
    }

    fn key_count(&self) -> usize {
        self.inner.forget_idle();
        lock(&self.inner.local).len()
    }

    fn subscriber_count(&self, key: &K) -> usize {
        self.inner.local_subscribers(&self.inner.stream_key(key))
    }

    fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        self.inner.closed.send_replace(true);
        self.inner.keys_changed.notify_one();
    }
}
