//! A [`Broker`] on Redis Streams, so that several server instances share keys,
//! history and ids (feature `redis`).
//!
//! - `send` is `XADD <prefix>:<key> MAXLEN ~ <history_len> * e <fields>`: the
//!   entry id Redis assigns (`<ms>-<n>`) is the SSE id, the same on every
//!   instance, so a `Last-Event-ID` from one instance resumes on any other.
//!   In the same round trip, `XTRIM … MINID` drops entries older than
//!   `history_ttl` and `PEXPIRE` removes the key once nothing in it is younger.
//! - `broadcast` is one `XADD` to the broadcast stream (`<prefix>!broadcast`),
//!   whatever the number of keys: it touches no key and keeps none alive.
//!   Every instance's readers follow that stream too and hand each entry to
//!   every key subscribed on the instance. A subscription's SSE id is its
//!   position in both streams (`<key entry>.<broadcast entry>`, or the key
//!   entry alone before any broadcast), so a resume replays both exactly.
//! - Live delivery: reader tasks run `XREAD BLOCK` over the keys that have
//!   subscribers on this instance and fan each entry out locally: one reader
//!   (one connection) per about 256 keys, never one per subscriber, so no single
//!   `XREAD` grows with the number of keys.
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
use tokio::sync::Notify;

use crate::broker::{Broker, BrokerError, RegistryConfig, ResetReason};
use crate::event::{EncodedEvent, MessageEvent};
use crate::fanout::{Cursor, Delivery, DeliveryKind, Fanout, Next};
use crate::redis_connection::{Client, Connection};
pub(crate) use crate::redis_ids::EntryId;
use crate::redis_ids::Position;

/// How long the reader's `XREAD` blocks waiting for entries.
const READ_BLOCK: Duration = Duration::from_millis(200);
/// The most entries the reader takes from one stream per `XREAD`.
const READ_COUNT: usize = 1000;
/// The reader's response timeout: well above its `BLOCK`, so a large reply
/// is never cut off and asked for again (the client's default is 500 ms).
const READER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A gap this long between two reads means the instance was paused (a VM
/// pause, a stalled host): the reader checks that it missed nothing.
const PAUSE: Duration = Duration::from_secs(1);
/// A resuming subscription reads its history in pages of this many entries,
/// so its memory is bounded whatever the history length.
const REPLAY_PAGE: usize = 500;
/// One reader's `XREAD` names at most about this many keys: past it the keys
/// are shared among more readers, each on its own connection, so no single
/// command grows with the number of keys.
const KEYS_PER_READER: usize = 256;
/// The most reader connections one instance opens; also how many buckets
/// the keys followed here are kept in (by a fixed hash), so each reader
/// walks only its own buckets' keys.
const MAX_READERS: usize = 64;
/// On a Redis Cluster, keys are spread over this many hash tags
/// (`<prefix>:{<n>}:<key>`): the keys of one tag share a hash slot, so one
/// `XREAD` can name them all, and the tags spread over the cluster's nodes.
/// An instance runs one reader (one cluster connection) per tag it follows.
const CLUSTER_SHARDS: usize = 16;
/// A reader drops the keys nobody here listens to at most this often.
const FORGET_IDLE_EVERY: Duration = Duration::from_millis(250);
/// An entry the broker did not write is logged at most once per key per this.
const FOREIGN_ENTRY_LOG_EVERY: Duration = Duration::from_secs(60);

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
    client: Client,
    /// Reconnects by itself after Redis comes back; on a cluster, routes each
    /// command to the node of its key.
    commands: Connection,
    prefix: String,
    config: RegistryConfig,
    /// The keys subscribed on this instance, and where the readers are.
    local: Mutex<Fanouts>,
    /// The stream every broadcast goes to.
    broadcast_stream: Arc<str>,
    /// Set when the broadcast key holds another type (someone wrote it):
    /// readers stop naming it, so keys keep flowing.
    broadcast_unreadable: AtomicBool,
    /// Wakes the readers when the set of keys changes.
    keys_changed: Notify,
    /// How many reader tasks run; reader `i` reads the keys of shard `i`.
    readers: Mutex<usize>,
    shut_down: AtomicBool,
}

struct Fanouts {
    /// Stream key → local fan-out and the reader's position in that stream,
    /// in [`MAX_READERS`] buckets (on a cluster, one per hash tag).
    buckets: Vec<HashMap<Arc<str>, Local>>,
    cluster: bool,
    /// The last broadcast entry handed to the fan-outs; `None` while no key
    /// is subscribed here (the next subscription reads it from Redis).
    broadcast_at: Option<EntryId>,
}

impl Fanouts {
    fn new(cluster: bool) -> Fanouts {
        Fanouts {
            buckets: (0..MAX_READERS).map(|_| HashMap::new()).collect(),
            cluster,
            broadcast_at: None,
        }
    }

    /// The bucket of `stream`: on a cluster its hash tag, so one bucket's
    /// keys share a slot; else a fixed hash.
    fn bucket_of(&self, stream: &str) -> usize {
        let tag = self.cluster.then(|| {
            let open = stream.find('{')?;
            let close = open + stream[open..].find('}')?;
            stream[open + 1..close].parse::<usize>().ok()
        });
        match tag.flatten() {
            Some(tag) => tag % MAX_READERS,
            None => (fixed_hash(stream) % MAX_READERS as u64) as usize,
        }
    }

    fn get(&self, stream: &str) -> Option<&Local> {
        self.buckets[self.bucket_of(stream)].get(stream)
    }

    fn get_mut(&mut self, stream: &str) -> Option<&mut Local> {
        let bucket = self.bucket_of(stream);
        self.buckets[bucket].get_mut(stream)
    }

    fn remove(&mut self, stream: &str) -> Option<Local> {
        let bucket = self.bucket_of(stream);
        self.buckets[bucket].remove(stream)
    }

    fn len(&self) -> usize {
        self.buckets.iter().map(HashMap::len).sum()
    }

    fn values(&self) -> impl Iterator<Item = &Local> {
        self.buckets.iter().flat_map(HashMap::values)
    }

    /// Drops the fan-outs of `buckets`' keys nobody here listens to.
    fn forget_idle_in(&mut self, buckets: impl Iterator<Item = usize>) {
        for bucket in buckets {
            self.buckets[bucket].retain(|_, local| local.fanout.subscriber_count() > 0);
        }
        if self.buckets.iter().all(HashMap::is_empty) {
            // Nobody reads broadcasts here now: the next subscription
            // starts from the broadcast stream's end, not from here.
            self.broadcast_at = None;
        }
    }
}

struct Local {
    fanout: Arc<Fanout>,
    /// The last entry the reader delivered for this key.
    read_from: EntryId,
}

impl Local {
    /// The fan-out's position after the last delivery.
    fn position(&self, broadcast_at: Option<EntryId>) -> Position {
        Position {
            key: self.read_from,
            broadcast: broadcast_at.unwrap_or_default(),
        }
    }

    fn push(&self, kind: DeliveryKind, position: Position, fields: &Bytes) {
        self.fanout.push(Delivery {
            kind,
            position,
            event: MessageEvent::assemble_with_id(&position.to_string(), fields),
        });
    }
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
        Self::start(Client::Node(redis::Client::open(url)?), config, prefix).await
    }

    /// Connects to a Redis Cluster through any of its nodes (`urls`, such as
    /// `redis://10.0.0.1:7000/`) and starts this instance's readers.
    ///
    /// Keys are spread over 16 hash tags (`<prefix>:{<n>}:<key>`), so the
    /// keys an `XREAD` names share one slot, and commands follow the slots as
    /// they move. During a failover, Redis replicates asynchronously: an event
    /// `send` reported as recorded may be lost with the old master. A reader
    /// that delivered it notices that its last entry is gone and gives that
    /// key's subscribers the reset signal; a client resuming from it gets the
    /// reset signal too. So a failover can cost events, never a silent gap.
    pub async fn connect_cluster(
        urls: &[&str],
        config: RegistryConfig,
    ) -> Result<Self, RedisConnectError> {
        Self::connect_cluster_with_prefix(urls, config, "sse").await
    }

    /// As [`connect_cluster`](Self::connect_cluster), with stream keys named
    /// `<prefix>:{<n>}:<key>`.
    pub async fn connect_cluster_with_prefix(
        urls: &[&str],
        config: RegistryConfig,
        prefix: &str,
    ) -> Result<Self, RedisConnectError> {
        let client = redis::cluster::ClusterClient::new(urls.to_vec())?;
        Self::start(Client::Cluster(client), config, prefix).await
    }

    async fn start(
        client: Client,
        config: RegistryConfig,
        prefix: &str,
    ) -> Result<Self, RedisConnectError> {
        let commands = client.shared_connection().await?;
        let cluster = client.is_cluster();
        let broadcast_stream = if client.is_cluster() {
            // Under the hash tag 0: read by the reader of tag 0.
            format!("{prefix}!broadcast:{{0}}")
        } else {
            format!("{prefix}!broadcast")
        };
        let inner = Arc::new(Inner {
            client,
            commands,
            prefix: prefix.to_owned(),
            config,
            local: Mutex::new(Fanouts::new(cluster)),
            broadcast_stream: Arc::from(broadcast_stream),
            broadcast_unreadable: AtomicBool::new(false),
            keys_changed: Notify::new(),
            readers: Mutex::new(0),
            shut_down: AtomicBool::new(false),
        });
        Inner::start_readers(&inner);
        Ok(RedisBroker {
            inner,
            _keys: PhantomData,
        })
    }
}

impl Inner {
    /// Starts readers until there are enough for the keys followed here.
    fn start_readers(inner: &Arc<Inner>) {
        let wanted = inner.readers_for(lock(&inner.local).len());
        let mut running = lock(&inner.readers);
        while *running < wanted {
            tokio::spawn(read_loop(Arc::downgrade(inner), *running));
            *running += 1;
        }
    }

    fn stream_key(&self, key: &impl Display) -> String {
        if self.client.is_cluster() {
            let key = key.to_string();
            let tag = fixed_hash(&key) % CLUSTER_SHARDS as u64;
            format!("{}:{{{tag}}}:{key}", self.prefix)
        } else {
            format!("{}:{key}", self.prefix)
        }
    }

    /// How many readers `keys` followed keys need: a power of two, so the
    /// buckets split evenly among them; on a cluster, one per hash tag (a
    /// reader with no key of its tag opens no connection).
    fn readers_for(&self, keys: usize) -> usize {
        if self.client.is_cluster() {
            CLUSTER_SHARDS
        } else {
            keys.div_ceil(KEYS_PER_READER)
                .next_power_of_two()
                .clamp(1, MAX_READERS)
        }
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

    /// The broadcast stream's last id; `0-0` when the key holds another type
    /// (marked unreadable, so subscriptions still start and keys flow).
    async fn last_broadcast_id(&self) -> redis::RedisResult<EntryId> {
        match self.last_id(&self.broadcast_stream).await {
            Err(error) if is_wrong_type(&error) => {
                self.mark_broadcast_unreadable();
                Ok(EntryId::default())
            }
            other => other,
        }
    }

    fn mark_broadcast_unreadable(&self) {
        if !self.broadcast_unreadable.swap(true, Ordering::SeqCst) {
            tracing::error!(
                stream = &*self.broadcast_stream,
                "SSE Redis broadcast key is not a stream: broadcasts are not delivered until it \
                 is deleted and the instance restarted"
            );
        }
    }

    /// Joins the local fan-out of `stream`; a key new to this instance is read
    /// from its current last entry on. Returns a cursor and the position it
    /// starts after: every later entry, and every later broadcast, reaches
    /// the cursor.
    async fn join(&self, stream: &str) -> redis::RedisResult<(Cursor, Position)> {
        {
            let local = lock(&self.local);
            if let Some(key) = local.get(stream) {
                return Ok((key.fanout.subscribe(), key.position(local.broadcast_at)));
            }
        }
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(shut_down_error());
        }
        // Both asked at once: the position is where both streams were at one
        // moment, as near as Redis allows.
        let known = lock(&self.local).broadcast_at;
        let (start, broadcast_start) = tokio::try_join!(self.last_id(stream), async {
            match known {
                Some(at) => Ok(at),
                None => self.last_broadcast_id().await,
            }
        })?;
        let mut local = lock(&self.local);
        // Checked under the lock that shutdown closes the keys under, so no
        // key is added after it.
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(shut_down_error());
        }
        let broadcast_at = *local.broadcast_at.get_or_insert(broadcast_start);
        let bucket = local.bucket_of(stream);
        let key = local.buckets[bucket]
            .entry(Arc::from(stream))
            .or_insert_with(|| Local {
                fanout: Fanout::new(self.config.buffer),
                read_from: start,
            });
        let joined = (key.fanout.subscribe(), key.position(Some(broadcast_at)));
        drop(local);
        self.keys_changed.notify_waiters();
        Ok(joined)
    }

    /// Appends one event to `pipeline`, with the history's bounds: `XADD
    /// <stream> MAXLEN ~ <history_len> * e <fields>` trims the oldest past the
    /// history length, `XTRIM <stream> MINID <now - history_ttl>` the entries
    /// older than the history's age, and `PEXPIRE <stream> <history_ttl>`
    /// removes a key nobody writes to once its newest entry has expired.
    /// Three commands, one round trip. The age is reckoned by this server's
    /// clock against Redis's entry ids, which are Redis's time: keep the
    /// clocks in sync (NTP) or the history's age is off by their skew.
    ///
    /// The broadcast stream gets no `PEXPIRE`: emptied by age, it keeps its
    /// last id, against which clients' positions are checked.
    fn append(&self, pipeline: &mut redis::Pipeline, stream: &str, fields: &[u8]) {
        let ttl_ms = u64::try_from(self.config.history_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |now| now.as_millis() as u64);
        pipeline
            .cmd("XADD")
            .arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.history_len)
            .arg("*")
            .arg("e")
            .arg(fields)
            .cmd("XTRIM")
            .arg(stream)
            .arg("MINID")
            .arg(now_ms.saturating_sub(ttl_ms))
            .ignore();
        if *stream != *self.broadcast_stream {
            pipeline.cmd("PEXPIRE").arg(stream).arg(ttl_ms).ignore();
        }
    }

    /// How many subscriptions on this instance have joined `stream`.
    fn local_subscribers(&self, stream: &str) -> usize {
        lock(&self.local)
            .get(stream)
            .map_or(0, |local| local.fanout.subscriber_count())
    }

    /// Drops the local fan-out of keys nobody on this instance listens to.
    fn forget_idle(&self) {
        lock(&self.local).forget_idle_in(0..MAX_READERS);
    }

    /// The reset signal's fields, without an id.
    fn reset_fields(&self, reason: ResetReason) -> Bytes {
        crate::telemetry::reset(reason);
        MessageEvent::new(format!("{{\"reason\":\"{}\"}}", reason.as_str()))
            .with_event_type(self.config.reset_event_type.as_str())
            .unwrap_or_else(|_| MessageEvent::new(""))
            .encode_without_id()
    }

    /// Where the key's stream and the broadcast stream end now.
    async fn current_position(&self, stream: &str) -> redis::RedisResult<Position> {
        Ok(Position {
            key: self.last_id(stream).await?,
            broadcast: self.last_broadcast_id().await?,
        })
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
        let before_everything = last == EntryId::default();
        if !exists {
            // No such stream: its history is gone, unless the client's
            // position is before anything was ever written (a resume point
            // given while the key was empty), where nothing can be missing.
            return Ok(if before_everything {
                Ok(())
            } else {
                Err(ResetReason::HistoryExpired)
            });
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
        let count_field = |name: &str| -> Option<i64> {
            let redis::Value::Array(items) = &info else {
                return None;
            };
            items.chunks(2).find_map(|pair| match pair {
                [redis::Value::BulkString(k), redis::Value::Int(v)] if k == name.as_bytes() => {
                    Some(*v)
                }
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
            // From before everything: covered while nothing was ever trimmed.
            Some(_) if before_everything => count_field("entries-added") == count_field("length"),
            Some(first) => last >= first,
            None => last == generated,
        };
        Ok(if covered {
            Ok(())
        } else {
            Err(ResetReason::HistoryExpired)
        })
    }

    /// Whether the key's history and the broadcast history both still hold
    /// everything after `last`.
    async fn covers_position(
        &self,
        stream: &str,
        last: Position,
    ) -> redis::RedisResult<Result<(), ResetReason>> {
        match self.covers(stream, last.key).await? {
            Ok(()) => self.covers(&self.broadcast_stream, last.broadcast).await,
            not_covered => Ok(not_covered),
        }
    }

    /// Up to [`REPLAY_PAGE`] entries of `stream` after `last`: the events
    /// among them, and the id of the last entry read (events or not), to
    /// continue from.
    async fn page_after(
        &self,
        stream: &str,
        last: EntryId,
    ) -> redis::RedisResult<(Vec<(EntryId, Bytes)>, Option<EntryId>)> {
        let mut connection = self.commands.clone();
        let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(format!("({last}"))
            .arg("+")
            .arg("COUNT")
            .arg(REPLAY_PAGE)
            .query_async(&mut connection)
            .await?;
        let read_to = entries.last().and_then(|(id, _)| EntryId::parse(id));
        let events = entries
            .into_iter()
            .filter_map(|(id, fields)| Some((EntryId::parse(&id)?, stored_fields(&fields)?)))
            .collect();
        Ok((events, read_to))
    }

    /// After a reader error, a reconnect or a pause: for each key, whether
    /// the last entry the reader delivered is still in its stream. Trimming
    /// removes the oldest entries first, so while it is there nothing after it
    /// was lost; where it is gone (trimmed while the reader lagged, or lost in
    /// a restart without persistence), the key's subscribers get the reset
    /// signal that a reconnecting client would get, and the reader carries on
    /// from the stream's current end.
    async fn check_for_gaps(
        &self,
        positions: &mut [(Arc<str>, EntryId)],
    ) -> redis::RedisResult<()> {
        let mut connection = self.commands.clone();
        let checked: Vec<&(Arc<str>, EntryId)> = positions
            .iter()
            .filter(|(_, read_from)| *read_from != EntryId::default())
            .collect();
        if checked.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for (stream, read_from) in &checked {
            pipeline
                .cmd("XRANGE")
                .arg(&**stream)
                .arg(read_from.to_string())
                .arg(read_from.to_string());
        }
        let found: Vec<Vec<(String, Vec<Vec<u8>>)>> = pipeline.query_async(&mut connection).await?;
        let gone: Vec<(Arc<str>, EntryId)> = checked
            .iter()
            .zip(found)
            .filter(|(_, found)| found.is_empty())
            .map(|((stream, read_from), _)| (stream.clone(), *read_from))
            .collect();
        for (stream, read_from) in gone {
            let reason = match self.covers(&stream, read_from).await? {
                Ok(()) => continue,
                Err(reason) => reason,
            };
            let position = self.last_id(&stream).await?;
            tracing::warn!(
                stream = &*stream,
                reason = reason.as_str(),
                "SSE Redis reader missed entries of a key (trimmed while it lagged, or lost in a \
                 restart); its subscribers get the reset signal"
            );
            let reset = self.reset_fields(reason);
            let mut local = lock(&self.local);
            if *stream == *self.broadcast_stream {
                // Broadcasts were lost: every key subscribed here is told.
                local.broadcast_at = Some(position);
                for key in local.values() {
                    key.push(DeliveryKind::Reset, key.position(Some(position)), &reset);
                }
            } else {
                let broadcast_at = local.broadcast_at;
                if let Some(key) = local.get_mut(&stream) {
                    key.read_from = position;
                    key.push(DeliveryKind::Reset, key.position(broadcast_at), &reset);
                }
            }
            drop(local);
            if let Some(entry) = positions.iter_mut().find(|(key, _)| **key == *stream) {
                entry.1 = position;
            }
        }
        Ok(())
    }
}

/// What `join` answers after shutdown.
fn shut_down_error() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "the SSE registry is shut down"))
}

/// FNV-1a: a hash fixed by its definition, the same in every process, run
/// and version, so every instance puts a key under the same cluster hash tag.
fn fixed_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether Redis refused a command because a key holds another type.
fn is_wrong_type(error: &redis::RedisError) -> bool {
    error.code() == Some("WRONGTYPE")
}

/// The broker's field (`e`: the event's encoded fields) of an entry, or
/// `None` for an entry another program wrote.
fn stored_fields(fields: &[Vec<u8>]) -> Option<Bytes> {
    fields.chunks(2).find_map(|pair| match pair {
        [name, value] if name == b"e" => Some(Bytes::copy_from_slice(value)),
        _ => None,
    })
}

type StreamReply = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;

/// What the reader remembers between reads.
struct ReaderState {
    connection: Option<Connection>,
    /// Set after an error or a reconnect: check for gaps before reading on.
    check_gaps: bool,
    last_read: Option<std::time::Instant>,
    /// When each key's foreign entries were last logged.
    foreign_logged: HashMap<String, std::time::Instant>,
    /// When this reader last dropped its keys nobody listens to.
    forgot_idle_at: Option<std::time::Instant>,
}

/// One of the instance's readers: `XREAD BLOCK` over the keys of its shard
/// that have local subscribers, fanning entries out. Reconnects by itself;
/// stops with the broker, or when fewer readers are needed and it is the
/// last one. While the number of shards changes, a key may be read by two
/// readers for a moment: subscribers drop entries they already have.
async fn read_loop(inner: std::sync::Weak<Inner>, shard: usize) {
    let mut state = ReaderState {
        connection: None,
        check_gaps: false,
        last_read: None,
        foreign_logged: HashMap::new(),
        forgot_idle_at: None,
    };
    loop {
        let Some(broker) = inner.upgrade() else {
            return;
        };
        if broker.shut_down.load(Ordering::SeqCst) {
            return;
        }
        let shards = broker.readers_for(lock(&broker.local).len());
        if shard >= shards {
            let mut running = lock(&broker.readers);
            if *running == shard + 1 {
                // The last reader, and not needed: stop.
                *running -= 1;
                return;
            }
        }
        if let Err(error) = read_once(&broker, &mut state, shard, shards).await {
            tracing::warn!(%error, "SSE Redis reader failed; reconnecting");
            state.connection = None;
            state.check_gaps = true;
            drop(broker);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn read_once(
    broker: &Inner,
    state: &mut ReaderState,
    shard: usize,
    shards: usize,
) -> redis::RedisResult<()> {
    // This reader's buckets: `shards` is a power of two that divides them.
    let mine = || (shard..MAX_READERS).step_by(shards);
    let mut positions: Vec<(Arc<str>, EntryId)> = {
        let mut local = lock(&broker.local);
        // Not at every read: a busy reader reads thousands of times a second.
        if state
            .forgot_idle_at
            .is_none_or(|at| at.elapsed() >= FORGET_IDLE_EVERY)
        {
            local.forget_idle_in(mine());
            state.forgot_idle_at = Some(std::time::Instant::now());
        }
        let mut positions: Vec<(Arc<str>, EntryId)> = mine()
            .flat_map(|bucket| local.buckets[bucket].iter())
            .map(|(key, local)| (Arc::clone(key), local.read_from))
            .collect();
        // The broadcast stream is followed while any key is subscribed here.
        if let Some(at) = local.broadcast_at {
            if local.bucket_of(&broker.broadcast_stream) % shards == shard
                && !broker.broadcast_unreadable.load(Ordering::SeqCst)
            {
                positions.push((Arc::clone(&broker.broadcast_stream), at));
            }
        }
        positions
    };
    if positions.is_empty() {
        // Re-check now and then: the broker may be dropped meanwhile.
        let _ =
            tokio::time::timeout(Duration::from_millis(500), broker.keys_changed.notified()).await;
        state.last_read = None;
        return Ok(());
    }
    if state.connection.is_none() {
        state.connection = Some(
            broker
                .client
                .reader_connection(READER_RESPONSE_TIMEOUT)
                .await?,
        );
    }
    let paused = state.last_read.is_some_and(|at| at.elapsed() > PAUSE);
    if state.check_gaps || paused {
        broker.check_for_gaps(&mut positions).await?;
        state.check_gaps = false;
    }
    let mut command = redis::Cmd::with_capacity(6 + 2 * positions.len(), 48 * positions.len());
    command
        .arg("XREAD")
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(READ_BLOCK.as_millis() as u64)
        .arg("STREAMS");
    for (key, _) in &positions {
        command.arg(&**key);
    }
    let mut id_text = String::with_capacity(48);
    for (_, id) in &positions {
        use std::fmt::Write;
        id_text.clear();
        let _ = write!(id_text, "{id}");
        command.arg(id_text.as_str());
    }
    let connection = state.connection.as_mut().expect("connected above");
    let asked = std::time::Instant::now();
    let reply: StreamReply = match command.query_async(connection).await {
        Ok(reply) => reply,
        Err(error) if is_wrong_type(&error) => {
            let keys: Vec<Arc<str>> = positions.into_iter().map(|(key, _)| key).collect();
            return end_keys_of_the_wrong_type(broker, &keys).await;
        }
        Err(error) => return Err(error),
    };
    state.last_read = Some(std::time::Instant::now());
    let reply = reply.unwrap_or_default();
    // A reply that took far longer than the block (this process or Redis
    // was paused meanwhile), or one as long as the history (only then can
    // trimming have passed the reader: what `MAXLEN ~` keeps would all be
    // after it), may start after entries trimmed before the read: check
    // each replying key's last delivered entry before handing any of the
    // reply on. A key found short gets the reset signal and its position
    // moves to the stream's end, so the reply's entries for it are passed
    // over below.
    let slow = asked.elapsed() > READ_BLOCK + PAUSE;
    let as_long_as_history = READ_COUNT.min(broker.config.history_len);
    let full = reply
        .iter()
        .any(|(_, entries)| entries.len() >= as_long_as_history);
    if slow || full {
        let mut replied: Vec<(Arc<str>, EntryId)> = positions
            .iter()
            .filter(|(key, _)| reply.iter().any(|(stream, _)| **stream == **key))
            .cloned()
            .collect();
        broker.check_for_gaps(&mut replied).await?;
    }
    let mut local = lock(&broker.local);
    for (stream, entries) in reply {
        // A full read means the reader is behind: check before the next.
        state.check_gaps |= entries.len() >= READ_COUNT;
        for (id, fields) in entries {
            let Some(entry_id) = EntryId::parse(&id) else {
                continue;
            };
            let stored = stored_fields(&fields);
            if stored.is_none() {
                log_foreign_entry(&mut state.foreign_logged, &stream, &id);
            }
            // The next XREAD starts after the last entry seen, whether it is
            // one of ours or not: an entry that does not decode is passed,
            // never read again and again. An entry already handed on (by
            // another reader, while the shards change) is not handed twice.
            if *stream == *broker.broadcast_stream {
                if local.broadcast_at.is_none_or(|at| entry_id <= at) {
                    continue;
                }
                local.broadcast_at = Some(entry_id);
                if let Some(fields) = stored {
                    for key in local.values() {
                        key.push(
                            DeliveryKind::Broadcast,
                            key.position(Some(entry_id)),
                            &fields,
                        );
                    }
                }
            } else {
                let broadcast_at = local.broadcast_at;
                // No key: no subscriber left, it was forgotten.
                let Some(key) = local.get_mut(&stream) else {
                    break;
                };
                if entry_id <= key.read_from {
                    continue;
                }
                key.read_from = entry_id;
                if let Some(fields) = stored {
                    key.push(DeliveryKind::Entry, key.position(broadcast_at), &fields);
                }
            }
        }
    }
    Ok(())
}

fn log_foreign_entry(logged: &mut HashMap<String, std::time::Instant>, key: &str, id: &str) {
    let now = std::time::Instant::now();
    let due = logged
        .get(key)
        .is_none_or(|at| now.duration_since(*at) >= FOREIGN_ENTRY_LOG_EVERY);
    if due {
        logged.insert(key.to_owned(), now);
        tracing::warn!(
            stream = key,
            id,
            "SSE Redis stream holds an entry without the broker's `e` field (written by another \
             program?); it is skipped"
        );
    }
}

/// `XREAD` failed because some key is not a stream (`WRONGTYPE`): finds
/// which, and ends the local subscriptions of those keys only, so every other
/// key keeps flowing.
async fn end_keys_of_the_wrong_type(broker: &Inner, keys: &[Arc<str>]) -> redis::RedisResult<()> {
    let mut connection = broker.commands.clone();
    let mut pipeline = redis::pipe();
    for key in keys {
        pipeline.cmd("TYPE").arg(&**key);
    }
    let types: Vec<String> = pipeline.query_async(&mut connection).await?;
    let mut local = lock(&broker.local);
    for (key, kind) in keys.iter().zip(types) {
        if **key == *broker.broadcast_stream {
            if kind != "stream" && kind != "none" {
                broker.mark_broadcast_unreadable();
            }
            continue;
        }
        if kind != "stream" && kind != "none" {
            tracing::warn!(
                stream = &**key,
                kind,
                "SSE Redis key holds a {kind}, not a stream; its subscriptions are ended"
            );
            if let Some(removed) = local.remove(key) {
                removed.fanout.close();
            }
        }
    }
    Ok(())
}

impl<K: Display> RedisBroker<K> {
    /// A subscription to `key`, with or without broadcasts.
    fn subscribe_with(
        &self,
        key: &K,
        last_event_id: Option<&str>,
        with_broadcasts: bool,
    ) -> BoxStream<'static, EncodedEvent> {
        let inner = Arc::clone(&self.inner);
        let stream = inner.stream_key(key);
        let last_event_id = last_event_id.map(str::to_owned);
        Box::pin(async_stream::stream! {
            // Join the local fan-out first, so nothing published during the replay is missed.
            let (mut cursor, joined_at) = loop {
                if inner.shut_down.load(Ordering::SeqCst) {
                    return;
                }
                match inner.join(&stream).await {
                    Ok(joined) => {
                        Inner::start_readers(&inner);
                        break joined;
                    }
                    Err(error) if is_wrong_type(&error) => {
                        tracing::warn!(stream, "SSE Redis key is not a stream; ending the subscription");
                        return;
                    }
                    // Redis unreachable: keep waiting, as open subscriptions do.
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            // What this subscription has handed on: live entries up to
            // here were replayed already.
            let mut delivered = joined_at;
            let parsed = last_event_id.as_deref().map(|id| {
                Position::parse(id)
                    .ok_or(ResetReason::InvalidId)
                    // Without broadcasts, only the key's part counts.
                    .map(|last| if with_broadcasts { last } else { Position { key: last.key, broadcast: EntryId::default() } })
            });
            match parsed {
                None => {
                    // A client that drops before its first event still
                    // resumes from here (see `Broker`, "Resume point").
                    yield EncodedEvent::resume_point(&joined_at.to_string());
                }
                Some(resume) => {
                    let resume = match resume {
                        Ok(last) => match if with_broadcasts {
                            inner.covers_position(&stream, last).await
                        } else {
                            inner.covers(&stream, last.key).await
                        } {
                            Ok(covered) => covered.map(|()| last),
                            Err(error) => {
                                // Cannot tell: end, and let the client retry.
                                tracing::warn!(%error, stream, "SSE Redis replay failed; ending the stream");
                                return;
                            }
                        },
                        Err(reason) => Err(reason),
                    };
                    match resume {
                        Ok(last) => {
                            // The key's entries, then the broadcasts, after
                            // `last`, page by page, so a long history never
                            // sits in memory at once.
                            delivered = last;
                            let sources = if with_broadcasts {
                                vec![stream.clone(), inner.broadcast_stream.to_string()]
                            } else {
                                vec![stream.clone()]
                            };
                            for source in sources {
                                let is_key = source == stream;
                                loop {
                                    let from = if is_key { delivered.key } else { delivered.broadcast };
                                    let (events, read_to) = match inner.page_after(&source, from).await {
                                        Ok(page) => page,
                                        Err(error) => {
                                            tracing::warn!(%error, stream, "SSE Redis replay failed; ending the stream");
                                            return;
                                        }
                                    };
                                    crate::telemetry::replayed(events.len());
                                    for (id, fields) in events {
                                        if is_key { delivered.key = id } else { delivered.broadcast = id }
                                        yield MessageEvent::assemble_with_id(&delivered.to_string(), &fields);
                                    }
                                    match read_to {
                                        Some(read_to) if is_key => delivered.key = delivered.key.max(read_to),
                                        Some(read_to) => delivered.broadcast = delivered.broadcast.max(read_to),
                                        None => break,
                                    }
                                }
                            }
                        }
                        Err(reason) => {
                            let Ok(position) = inner.current_position(&stream).await else { return };
                            delivered = position;
                            yield MessageEvent::assemble_with_id(&position.to_string(), &inner.reset_fields(reason));
                        }
                    }
                }
            }
            // Live: everything the reader delivered after the cursor, in one
            // look per wake-up.
            let mut batch = std::collections::VecDeque::new();
            loop {
                match std::future::poll_fn(|cx| cursor.poll_next(cx, &mut batch)).await {
                    Next::Closed => return,
                    Next::Some => {
                        for delivery in batch.drain(..) {
                            let position = delivery.position;
                            let new = match delivery.kind {
                                DeliveryKind::Entry => position.key > delivered.key,
                                DeliveryKind::Broadcast => with_broadcasts && position.broadcast > delivered.broadcast,
                                DeliveryKind::Reset => true,
                            };
                            if !new {
                                continue;
                            }
                            let after = delivered.max(position);
                            delivered = after;
                            if after == position {
                                yield delivery.event;
                            } else {
                                // This subscription replayed further than the
                                // fan-out had read: its own id, not the shared one.
                                yield MessageEvent::assemble_with_id(&after.to_string(), delivery.fields());
                            }
                        }
                    }
                    Next::Lagged => match inner.config.lag_policy {
                        crate::broker::LagPolicy::Disconnect => {
                            tracing::debug!(stream, "SSE subscriber fell behind its buffer; disconnecting it (it resumes from history)");
                            crate::telemetry::lag_disconnect();
                            return;
                        }
                        _ => {
                            // The cursor is at the newest delivery already.
                            let position = inner.current_position(&stream).await.unwrap_or(delivered);
                            delivered = delivered.max(position);
                            yield MessageEvent::assemble_with_id(&delivered.to_string(), &inner.reset_fields(ResetReason::Lagged));
                        }
                    },
                }
            }
        })
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
            let mut pipeline = redis::pipe();
            inner.append(&mut pipeline, &stream, &fields);
            let (_id,): (String,) = pipeline
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
            let fields: Bytes = event.encode_without_id();
            let mut connection = inner.commands.clone();
            let mut pipeline = redis::pipe();
            inner.append(&mut pipeline, &inner.broadcast_stream, &fields);
            let (_id,): (String,) = pipeline
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(self.total_subscribers())
        })
    }

    fn subscribe(&self, key: &K, last_event_id: Option<&str>) -> BoxStream<'static, EncodedEvent> {
        self.subscribe_with(key, last_event_id, true)
    }

    fn subscribe_key_only(
        &self,
        key: &K,
        last_event_id: Option<&str>,
    ) -> BoxStream<'static, EncodedEvent> {
        self.subscribe_with(key, last_event_id, false)
    }

    fn reset_event_type(&self) -> &str {
        &self.inner.config.reset_event_type
    }

    fn key_count(&self) -> usize {
        self.inner.forget_idle();
        lock(&self.inner.local).len()
    }

    fn subscriber_count(&self, key: &K) -> usize {
        self.inner.local_subscribers(&self.inner.stream_key(key))
    }

    fn total_subscribers(&self) -> usize {
        lock(&self.inner.local)
            .values()
            .map(|local| local.fanout.subscriber_count())
            .sum()
    }

    fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        // Closing every key ends every live subscription.
        for bucket in &mut lock(&self.inner.local).buckets {
            for (_, local) in bucket.drain() {
                local.fanout.close();
            }
        }
        self.inner.keys_changed.notify_waiters();
    }
}
