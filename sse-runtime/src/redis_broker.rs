//! A [`Broker`] on Redis Streams, so that several server instances share keys,
//! history and ids (feature `redis`).
//!
//! - `send` is `XADD <prefix>:<key> MAXLEN ~ <history_len> * e <fields>`: the
//!   entry id Redis assigns (`<ms>-<n>`) is the SSE id, the same on every
//!   instance, so a `Last-Event-ID` from one instance resumes on any other.
//!   In the same round trip, `XTRIM … MINID` drops entries older than
//!   `history_ttl` and `PEXPIRE` removes the key once nothing in it is younger.
//! - `broadcast` finds the streams with `SCAN … TYPE stream` and adds the
//!   event to each, pipelined 256 streams to a round trip.
//! - Live delivery: reader tasks run `XREAD BLOCK` over the keys that have
//!   subscribers on this instance and fan each entry out locally: one reader
//!   (one connection) per 256 keys, never one per subscriber, so no single
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
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::Notify;

use crate::broker::{Broker, BrokerError, RegistryConfig, ResetReason};
use crate::event::{EncodedEvent, MessageEvent};
use crate::fanout::{Cursor, Delivery, Fanout, Next};

/// `broadcast` sends its `XADD`s in pipelines of this many streams: one round
/// trip each, and a bounded request.
const BROADCAST_CHUNK: usize = 256;

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
/// The most reader connections one instance opens.
const MAX_READERS: usize = 64;
/// An entry the broker did not write is logged at most once per key per this.
const FOREIGN_ENTRY_LOG_EVERY: Duration = Duration::from_secs(60);

/// A Redis stream entry id, `<milliseconds>-<sequence>`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct EntryId(u64, u64);

impl EntryId {
    #[cfg(test)]
    pub(crate) fn new(millis: u64, sequence: u64) -> EntryId {
        EntryId(millis, sequence)
    }

    #[cfg(test)]
    pub(crate) fn millis(self) -> u64 {
        self.0
    }

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
    /// Wakes the readers when the set of keys changes.
    keys_changed: Notify,
    /// How many reader tasks run; reader `i` reads the keys of shard `i`.
    readers: Mutex<usize>,
    shut_down: AtomicBool,
}

struct Local {
    fanout: Arc<Fanout>,
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
        let wanted = readers_for(lock(&inner.local).len());
        let mut running = lock(&inner.readers);
        while *running < wanted {
            tokio::spawn(read_loop(Arc::downgrade(inner), *running));
            *running += 1;
        }
    }

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
    /// from its current last entry on. Returns a cursor and the position it
    /// starts after: every later entry reaches the cursor.
    async fn join(&self, stream: &str) -> redis::RedisResult<(Cursor, EntryId)> {
        if let Some(local) = lock(&self.local).get(stream) {
            return Ok((local.fanout.subscribe(), local.read_from));
        }
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(shut_down_error());
        }
        let start = self.last_id(stream).await?;
        let mut local = lock(&self.local);
        // Checked under the lock that shutdown closes the keys under, so no
        // key is added after it.
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(shut_down_error());
        }
        let entry = local.entry(stream.to_owned()).or_insert_with(|| Local {
            fanout: Fanout::new(self.config.buffer),
            read_from: start,
        });
        let joined = (entry.fanout.subscribe(), entry.read_from);
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
            .ignore()
            .cmd("PEXPIRE")
            .arg(stream)
            .arg(ttl_ms)
            .ignore();
    }

    /// How many subscriptions on this instance have joined `stream`.
    fn local_subscribers(&self, stream: &str) -> usize {
        lock(&self.local)
            .get(stream)
            .map_or(0, |local| local.fanout.subscriber_count())
    }

    /// Drops the local fan-out of keys nobody on this instance listens to.
    fn forget_idle(&self) {
        lock(&self.local).retain(|_, local| local.fanout.subscriber_count() > 0);
    }

    fn reset_signal(&self, reason: ResetReason, position: EntryId) -> EncodedEvent {
        crate::telemetry::reset(reason);
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

    /// Up to [`REPLAY_PAGE`] entries of `stream` after `last`: the events
    /// among them, and the id of the last entry read (events or not), to
    /// continue from.
    async fn page_after(
        &self,
        stream: &str,
        last: EntryId,
    ) -> redis::RedisResult<(Vec<(EntryId, EncodedEvent)>, Option<EntryId>)> {
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
            .filter_map(|(id, fields)| decode(&id, &fields))
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
    async fn check_for_gaps(&self, positions: &mut [(String, EntryId)]) -> redis::RedisResult<()> {
        let mut connection = self.commands.clone();
        let checked: Vec<&(String, EntryId)> = positions
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
                .arg(stream)
                .arg(read_from.to_string())
                .arg(read_from.to_string());
        }
        let found: Vec<Vec<(String, Vec<Vec<u8>>)>> = pipeline.query_async(&mut connection).await?;
        let gone: Vec<(String, EntryId)> = checked
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
                stream,
                reason = reason.as_str(),
                "SSE Redis reader missed entries of a key (trimmed while it lagged, or lost in a \
                 restart); its subscribers get the reset signal"
            );
            let reset = self.reset_signal(reason, position);
            if let Some(local) = lock(&self.local).get_mut(&stream) {
                local.read_from = position;
                local.fanout.push(Delivery::Reset(position, reset));
            }
            if let Some(entry) = positions.iter_mut().find(|(key, _)| *key == stream) {
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

/// How many readers `keys` followed keys need.
fn readers_for(keys: usize) -> usize {
    keys.div_ceil(KEYS_PER_READER).clamp(1, MAX_READERS)
}

/// The reader shard of `stream` among `shards`: a fixed hash, the same in
/// every reader.
fn shard_of(stream: &str, shards: usize) -> usize {
    use std::hash::BuildHasher;
    let fixed =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    (fixed.hash_one(stream) % shards as u64) as usize
}

/// Whether Redis refused a command because a key holds another type.
fn is_wrong_type(error: &redis::RedisError) -> bool {
    error.code() == Some("WRONGTYPE")
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

/// What the reader remembers between reads.
struct ReaderState {
    connection: Option<MultiplexedConnection>,
    /// Set after an error or a reconnect: check for gaps before reading on.
    check_gaps: bool,
    last_read: Option<std::time::Instant>,
    /// When each key's foreign entries were last logged.
    foreign_logged: HashMap<String, std::time::Instant>,
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
    };
    loop {
        let Some(broker) = inner.upgrade() else {
            return;
        };
        if broker.shut_down.load(Ordering::SeqCst) {
            return;
        }
        let shards = readers_for(lock(&broker.local).len());
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
    broker.forget_idle();
    let mut positions: Vec<(String, EntryId)> = lock(&broker.local)
        .iter()
        .filter(|(key, _)| shard_of(key, shards) == shard)
        .map(|(key, local)| (key.clone(), local.read_from))
        .collect();
    if positions.is_empty() {
        // Re-check now and then: the broker may be dropped meanwhile.
        let _ =
            tokio::time::timeout(Duration::from_millis(500), broker.keys_changed.notified()).await;
        state.last_read = None;
        return Ok(());
    }
    if state.connection.is_none() {
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(READER_RESPONSE_TIMEOUT));
        state.connection = Some(
            broker
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        );
    }
    let paused = state.last_read.is_some_and(|at| at.elapsed() > PAUSE);
    if state.check_gaps || paused {
        broker.check_for_gaps(&mut positions).await?;
        state.check_gaps = false;
    }
    let mut command = redis::cmd("XREAD");
    command
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(READ_BLOCK.as_millis() as u64)
        .arg("STREAMS");
    for (key, _) in &positions {
        command.arg(key);
    }
    for (_, id) in &positions {
        command.arg(id.to_string());
    }
    let connection = state.connection.as_mut().expect("connected above");
    let reply: StreamReply = match command.query_async(connection).await {
        Ok(reply) => reply,
        Err(error) if is_wrong_type(&error) => {
            let keys: Vec<String> = positions.into_iter().map(|(key, _)| key).collect();
            return end_keys_of_the_wrong_type(broker, &keys).await;
        }
        Err(error) => return Err(error),
    };
    state.last_read = Some(std::time::Instant::now());
    let mut local = lock(&broker.local);
    for (key, entries) in reply.unwrap_or_default() {
        let Some(local) = local.get_mut(&key) else {
            continue;
        };
        let full = entries.len() >= READ_COUNT;
        for (id, fields) in entries {
            let Some(entry_id) = EntryId::parse(&id) else {
                continue;
            };
            // The next XREAD starts after the last entry seen, whether it is
            // one of ours or not: an entry that does not decode is passed,
            // never read again and again.
            local.read_from = local.read_from.max(entry_id);
            match decode(&id, &fields) {
                // No subscriber left is fine: the key is forgotten next round.
                Some((_, event)) => local.fanout.push(Delivery::Entry(entry_id, event)),
                None => log_foreign_entry(&mut state.foreign_logged, &key, &id),
            }
        }
        // A full read may mean the reader is behind: check before the next.
        state.check_gaps |= full;
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
async fn end_keys_of_the_wrong_type(broker: &Inner, keys: &[String]) -> redis::RedisResult<()> {
    let mut connection = broker.commands.clone();
    let mut pipeline = redis::pipe();
    for key in keys {
        pipeline.cmd("TYPE").arg(key);
    }
    let types: Vec<String> = pipeline.query_async(&mut connection).await?;
    let mut local = lock(&broker.local);
    for (key, kind) in keys.iter().zip(types) {
        if kind != "stream" && kind != "none" {
            tracing::warn!(
                stream = key,
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
            // Keys subscribed here but never written to have no stream yet.
            let found: std::collections::HashSet<String> = streams.iter().cloned().collect();
            let unwritten: Vec<String> = lock(&inner.local)
                .keys()
                .filter(|key| !found.contains(*key))
                .cloned()
                .collect();
            streams.extend(unwritten);
            let fields = event.encode_without_id();
            let mut reached = 0;
            // One round trip per chunk of streams, not per stream.
            for chunk in streams.chunks(BROADCAST_CHUNK) {
                let mut pipeline = redis::pipe();
                for stream in chunk {
                    inner.append(&mut pipeline, stream, &fields);
                }
                let _ids: Vec<String> = pipeline
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
            // Live entries up to here were replayed already.
            let mut delivered = EntryId::default();
            if last_event_id.is_none() {
                // A client that drops before its first event still resumes
                // from here (see `Broker`, "Resume point").
                delivered = joined_at;
                yield EncodedEvent::resume_point(&joined_at.to_string());
            }
            if let Some(last_event_id) = last_event_id {
                let resume = match EntryId::parse(&last_event_id) {
                    None => Err(ResetReason::InvalidId),
                    Some(last) => match inner.covers(&stream, last).await {
                        Ok(Ok(())) => Ok(last),
                        Ok(Err(reason)) => Err(reason),
                        Err(error) => {
                            // Cannot tell: end, and let the client retry.
                            tracing::warn!(%error, stream, "SSE Redis replay failed; ending the stream");
                            return;
                        }
                    },
                };
                match resume {
                    Ok(last) => {
                        // Page by page, so a long history never sits in memory at once.
                        delivered = last;
                        loop {
                            let page = match inner.page_after(&stream, delivered).await {
                                Ok(page) => page,
                                Err(error) => {
                                    tracing::warn!(%error, stream, "SSE Redis replay failed; ending the stream");
                                    return;
                                }
                            };
                            let (events, read_to) = page;
                            crate::telemetry::replayed(events.len());
                            for (id, event) in events {
                                delivered = id;
                                yield event;
                            }
                            match read_to {
                                Some(read_to) => delivered = delivered.max(read_to),
                                None => break,
                            }
                        }
                    }
                    Err(reason) => {
                        let Ok(position) = inner.last_id(&stream).await else { return };
                        delivered = position;
                        yield inner.reset_signal(reason, position);
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
                            match delivery {
                                Delivery::Entry(id, event) => {
                                    if id > delivered {
                                        delivered = id;
                                        yield event;
                                    }
                                }
                                Delivery::Reset(position, signal) => {
                                    delivered = position;
                                    yield signal;
                                }
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

    fn total_subscribers(&self) -> usize {
        lock(&self.inner.local)
            .values()
            .map(|local| local.fanout.subscriber_count())
            .sum()
    }

    fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        // Closing every key ends every live subscription.
        for (_, local) in lock(&self.inner.local).drain() {
            local.fanout.close();
        }
        self.inner.keys_changed.notify_waiters();
    }
}
