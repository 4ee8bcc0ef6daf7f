//! A [`Broker`] on Redis Streams, so that several server instances share keys,
//! history and ids (feature `redis`).
//!
//! - `send` is `XADD <prefix>:<key> MAXLEN ~ <history_len> * e <fields>`: the
//!   entry id Redis assigns (`<ms>-<n>`) is the SSE id, the same on every
//!   instance, so a `Last-Event-ID` from one instance resumes on any other.
//!   In the same script (one round trip, atomic), `XTRIM … MINID` drops
//!   entries older than `history_ttl`, `PEXPIRE` removes the key once nothing
//!   in it is younger, and the event is appended, with its key and entry id,
//!   to its bucket's bell (`<prefix>!bell:<n>`, one of 16).
//! - `broadcast` is one `XADD` to the broadcast stream (`<prefix>!broadcast`),
//!   whatever the number of keys: it touches no key and keeps none alive.
//!   Every instance's readers follow that stream too and hand each entry to
//!   every key subscribed on the instance. A subscription's SSE id is its
//!   position in both streams (`<key entry>.<broadcast entry>`, or the key
//!   entry alone before any broadcast), so a resume replays both exactly.
//! - Live delivery: one reader task (one connection; on a cluster one per
//!   bucket) runs `XREAD BLOCK` over the bells of the buckets that have keys
//!   on this instance and fans each entry of those keys out locally. A read
//!   names at most 16 bells, whatever the number of keys, and a reply carries
//!   the entries of every key, so a busy instance reads in large batches.
//!   Bells keep 10,000 entries: a reader held back further catches each key
//!   up from its own stream, or gives it the reset signal where that no
//!   longer holds what it missed. Every instance that follows a bucket reads
//!   all of its bell, keys it does not follow included: the price of a read
//!   that does not grow with the keys (see `SCALING.md`).
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

mod connection;
mod fanout;
mod ids;

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::sync::Notify;

use crate::event::{EncodedEvent, MessageEvent};
use crate::redis::connection::{Client, Connection};
use crate::redis::fanout::{Cursor, Delivery, DeliveryKind, Fanout, Next};
pub(crate) use crate::redis::ids::EntryId;
use crate::redis::ids::Position;
use crate::registry::broker::{Broker, BrokerError, RegistryConfig, ResetReason};

/// How long the reader's `XREAD` blocks waiting for entries.
const READ_BLOCK: Duration = Duration::from_millis(200);
/// The most entries the reader takes from one stream per `XREAD`.
const READ_COUNT: usize = 1000;
/// The reader's response timeout: well above its `BLOCK`, so a large reply
/// is never cut off and asked for again (the client's default is 500 ms).
const READER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `send` waits between tries of a command Redis did not run.
const SEND_RETRY_WAIT: Duration = Duration::from_millis(100);
/// A gap this long between two reads means the instance was paused (a VM
/// pause, a stalled host): the reader checks that it missed nothing.
const PAUSE: Duration = Duration::from_secs(1);
/// A resuming subscription reads its history in pages of this many entries,
/// so its memory is bounded whatever the history length.
const REPLAY_PAGE: usize = 500;
/// Keys fall in this many buckets (by a fixed hash; on a Redis Cluster, by
/// hash tag, `<prefix>:{<n>}:<key>`, so a bucket's keys share a slot and the
/// buckets spread over the nodes). Each bucket has a bell stream that every
/// `send` to one of its keys also appends the event to, with the key and its
/// entry id: readers follow the bells, never the keys, so a read costs the
/// same whatever the number of keys.
const BUCKETS: usize = 16;
/// The entries a bell keeps (`MAXLEN ~`): how far a reader may fall behind
/// before it catches up from the keys' own streams.
const BELL_LEN: usize = 10_000;
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
    /// Each bucket's bell stream, and whether it holds another type.
    bells: Vec<Arc<str>>,
    bells_unreadable: Vec<AtomicBool>,
    /// `send`: the entry, its bounds, and its copy on the bell, atomically.
    send_script: redis::Script,
    /// Wakes the readers when the set of keys changes.
    keys_changed: Notify,
    shut_down: AtomicBool,
}

struct Fanouts {
    /// Stream key → local fan-out and the position delivered in that
    /// stream, in [`BUCKETS`] buckets.
    buckets: Vec<HashMap<Arc<str>, Local>>,
    /// The last entry of each bucket's bell the reader took; `None` while
    /// the bucket has no key here.
    bells_at: Vec<Option<EntryId>>,
    cluster: bool,
    /// The last broadcast entry handed to the fan-outs; `None` while no key
    /// is subscribed here (the next subscription reads it from Redis).
    broadcast_at: Option<EntryId>,
}

impl Fanouts {
    fn new(cluster: bool) -> Fanouts {
        Fanouts {
            buckets: (0..BUCKETS).map(|_| HashMap::new()).collect(),
            bells_at: vec![None; BUCKETS],
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
            Some(tag) => tag % BUCKETS,
            None => (fixed_hash(stream) % BUCKETS as u64) as usize,
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

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Local> {
        self.buckets.iter_mut().flat_map(HashMap::values_mut)
    }

    /// Drops the fan-outs of `buckets`' keys nobody here listens to.
    fn forget_idle_in(&mut self, buckets: impl Iterator<Item = usize>) {
        for bucket in buckets {
            self.buckets[bucket].retain(|_, local| local.fanout.subscriber_count() > 0);
            if self.buckets[bucket].is_empty() {
                // Its bell is not followed now: the next key starts afresh.
                self.bells_at[bucket] = None;
            }
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
    /// The last entry delivered for this key.
    read_from: EntryId,
    /// While the key's first subscription catches up from its stream, what
    /// the reader took for it from the bell, handed on after the catch-up.
    catching_up: Option<Vec<(EntryId, Bytes)>>,
    /// Deliveries made but not yet handed to the fan-out: a reader's reply
    /// goes to the subscribers as one batch ([`Local::flush`]).
    staged: Vec<Delivery>,
}

impl Local {
    /// The fan-out's position after the last delivery.
    fn position(&self, broadcast_at: Option<EntryId>) -> Position {
        Position {
            key: self.read_from,
            broadcast: broadcast_at.unwrap_or_default(),
        }
    }

    /// Stages a delivery; [`flush`](Self::flush) hands the staged ones on.
    fn push(&mut self, kind: DeliveryKind, position: Position, fields: &Bytes) {
        self.staged.push(Delivery {
            kind,
            position,
            event: MessageEvent::assemble_with_id(&position.to_string(), fields),
        });
    }

    /// Hands the staged deliveries to the subscribers, in order, as one batch.
    fn flush(&mut self) {
        if !self.staged.is_empty() {
            self.fanout.push_all(self.staged.drain(..));
        }
    }

    /// Hands on the key's entry `id` unless it was delivered already.
    fn deliver(&mut self, id: EntryId, fields: &Bytes, broadcast_at: Option<EntryId>) {
        if id > self.read_from {
            self.read_from = id;
            self.push(DeliveryKind::Entry, self.position(broadcast_at), fields);
        }
    }
}

/// `send`, atomically (so a bell's order is its keys' order): the entry, its
/// bounds by count, age and key expiry, and its copy on the bucket's bell
/// (which expires as its keys do, so nothing stays that nobody writes to).
/// KEYS: the key's stream, its bell. ARGV: history length, the fields, the
/// oldest id kept, the key's expiry in ms, the bell's length.
const SEND_SCRIPT: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'k', KEYS[1], 'i', id, 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return id
";

/// The error `connect` returns.
#[derive(Debug, thiserror::Error)]
#[error("could not connect to Redis: {0}")]
pub struct RedisConnectError(#[from] redis::RedisError);

fn unavailable(error: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(error.to_string())
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
    /// they move. When a master fails, `send` to its slots waits for the
    /// replica that takes over, up to [`RegistryConfig::send_timeout`]
    /// (default 5 s), then fails with [`BrokerError::Unavailable`] (only answers that say Redis did not run
    /// the command are retried, so an event is never written twice). A
    /// master that stops answering is noticed after 500 ms, and the broker
    /// reconnects with a fresh slot map for the commands after.
    ///
    /// Redis replicates asynchronously: an event `send` reported as recorded
    /// may be lost with the old master. Subscribers then get every event
    /// Redis kept, in order, or the reset signal where the reader cannot
    /// tell; a failover can cost events, never a silent gap.
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
        let client = Client::cluster(urls, config.send_timeout)?;
        Self::start(client, config, prefix).await
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
            bells: (0..BUCKETS)
                .map(|bucket| {
                    // The bucket's hash tag on a cluster: the slot of its keys.
                    Arc::from(if cluster {
                        format!("{prefix}!bell:{{{bucket}}}")
                    } else {
                        format!("{prefix}!bell:{bucket}")
                    })
                })
                .collect(),
            bells_unreadable: (0..BUCKETS).map(|_| AtomicBool::new(false)).collect(),
            send_script: redis::Script::new(SEND_SCRIPT),
            keys_changed: Notify::new(),
            shut_down: AtomicBool::new(false),
        });
        for reader in 0..inner.readers() {
            tokio::spawn(read_loop(Arc::downgrade(&inner), reader));
        }
        Ok(RedisBroker {
            inner,
            _keys: PhantomData,
        })
    }
}

impl Inner {
    fn stream_key(&self, key: &impl Display) -> String {
        if self.client.is_cluster() {
            let key = key.to_string();
            let tag = fixed_hash(&key) % BUCKETS as u64;
            format!("{}:{{{tag}}}:{key}", self.prefix)
        } else {
            format!("{}:{key}", self.prefix)
        }
    }

    /// How many readers there are: one, which follows every bell in one
    /// `XREAD`; on a cluster one per bucket (a bell per slot), each opening
    /// its connection once its bucket has a key here.
    fn readers(&self) -> usize {
        if self.client.is_cluster() { BUCKETS } else { 1 }
    }

    /// The buckets reader `shard` follows.
    fn buckets_of_reader(&self, shard: usize) -> std::ops::Range<usize> {
        if self.client.is_cluster() {
            shard..shard + 1
        } else {
            0..BUCKETS
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

    /// Joins the local fan-out of `stream`. Returns a cursor and the
    /// position it starts after: every later entry of the key, and every
    /// later broadcast, reaches the cursor.
    ///
    /// A key new to this instance starts at its stream's last entry, taken
    /// in one atomic step with its bell's last entry. When the reader
    /// follows that bell from further on already, it may have passed entries
    /// of the key: the key then catches up from its own stream before the
    /// reader's entries for it are handed on.
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
        let (bucket, known) = {
            let local = lock(&self.local);
            (local.bucket_of(stream), local.broadcast_at)
        };
        let bell = &self.bells[bucket];
        let snapshot = async {
            let mut connection = self.commands.clone();
            let mut both = redis::pipe();
            both.atomic();
            for stream in [stream, &**bell] {
                both.cmd("XREVRANGE")
                    .arg(stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1);
            }
            type Last = Vec<(String, Vec<Vec<u8>>)>;
            let (key_last, bell_last): (Last, Last) = both.query_async(&mut connection).await?;
            let last = |entries: Last| {
                entries
                    .first()
                    .and_then(|(id, _)| EntryId::parse(id))
                    .unwrap_or_default()
            };
            redis::RedisResult::Ok((last(key_last), last(bell_last)))
        };
        let ((start, bell_start), broadcast_start) = tokio::try_join!(snapshot, async {
            match known {
                Some(at) => Ok(at),
                None => self.last_broadcast_id().await,
            }
        })?;
        let (joined, catch_up) = {
            let mut local = lock(&self.local);
            // Checked under the lock that shutdown closes the keys under, so no
            // key is added after it.
            if self.shut_down.load(Ordering::SeqCst) {
                return Err(shut_down_error());
            }
            let broadcast_at = *local.broadcast_at.get_or_insert(broadcast_start);
            let bell_at = *local.bells_at[bucket].get_or_insert(bell_start);
            let mut created = false;
            let key = local.buckets[bucket]
                .entry(Arc::from(stream))
                .or_insert_with(|| {
                    created = true;
                    Local {
                        fanout: Fanout::new(self.config.buffer),
                        read_from: start,
                        catching_up: (bell_at > bell_start).then(Vec::new),
                        staged: Vec::new(),
                    }
                });
            let joined = (key.fanout.subscribe(), key.position(Some(broadcast_at)));
            (joined, created && key.catching_up.is_some())
        };
        self.keys_changed.notify_waiters();
        if catch_up {
            self.catch_up(stream, start).await?;
        }
        Ok(joined)
    }

    /// Hands on `stream`'s entries after `from`, read from the stream
    /// itself, then what the reader took for it meanwhile; the reader hands
    /// the key's entries on directly again from then on.
    async fn catch_up(&self, stream: &str, from: EntryId) -> redis::RedisResult<()> {
        let result = self.deliver_from_stream(stream, from).await;
        if result.is_err() {
            // Not caught up: let no stream of the key carry on with a gap.
            if let Some(key) = lock(&self.local).remove(stream) {
                key.fanout.close();
            }
        }
        result
    }

    /// The history's age bound now: the oldest entry id kept, and the
    /// expiry of a key nobody writes to, in ms. Reckoned by this server's
    /// clock against Redis's entry ids, which are Redis's time: keep the
    /// clocks in sync (NTP) or the history's age is off by their skew.
    fn age_bounds(&self) -> (u64, u64) {
        let ttl_ms = u64::try_from(self.config.history_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |now| now.as_millis() as u64);
        (now_ms.saturating_sub(ttl_ms), ttl_ms)
    }

    /// Sends one event to `stream` ([`SEND_SCRIPT`]): `XADD … MAXLEN ~
    /// <history_len>`, `XTRIM … MINID <now - history_ttl>`, `PEXPIRE`, and
    /// the copy on the bell, in one round trip (retried as [`until_run`]
    /// says).
    async fn send(&self, stream: &str, fields: &[u8]) -> redis::RedisResult<String> {
        until_run(self.config.send_timeout, || self.send_once(stream, fields)).await
    }

    /// One try of [`send`](Self::send): `EVALSHA`, or, where the node does
    /// not have the script (a replica promoted by a failover, while loading
    /// it on every master fails because one is down), `EVAL` with its source,
    /// which the node then keeps.
    async fn send_once(&self, stream: &str, fields: &[u8]) -> redis::RedisResult<String> {
        let bucket = lock(&self.local).bucket_of(stream);
        let (min_id, ttl_ms) = self.age_bounds();
        let mut connection = self.commands.clone();
        let command = |verb: &str, script: &str| {
            let mut command = redis::cmd(verb);
            command
                .arg(script)
                .arg(2)
                .arg(stream)
                .arg(&*self.bells[bucket])
                .arg(self.config.history_len)
                .arg(fields)
                .arg(min_id)
                .arg(ttl_ms)
                .arg(BELL_LEN);
            command
        };
        let by_hash = command("EVALSHA", self.send_script.get_hash())
            .query_async(&mut connection)
            .await;
        match by_hash {
            Err(error) if error.code() == Some("NOSCRIPT") => {
                command("EVAL", SEND_SCRIPT)
                    .query_async(&mut connection)
                    .await
            }
            answer => answer,
        }
    }

    /// Appends one broadcast to `pipeline`, with the history's bounds by
    /// count and age. No `PEXPIRE`: emptied by age, the broadcast stream
    /// keeps its last id, against which clients' positions are checked.
    fn append_broadcast(&self, pipeline: &mut redis::Pipeline, fields: &[u8]) {
        let (min_id, _) = self.age_bounds();
        pipeline
            .cmd("XADD")
            .arg(&*self.broadcast_stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.history_len)
            .arg("*")
            .arg("e")
            .arg(fields)
            .cmd("XTRIM")
            .arg(&*self.broadcast_stream)
            .arg("MINID")
            .arg(min_id)
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
        lock(&self.local).forget_idle_in(0..BUCKETS);
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

    /// Hands on `stream`'s entries after `from`, read page by page from the
    /// stream itself, then what the reader took for it while it caught up.
    async fn deliver_from_stream(&self, stream: &str, mut from: EntryId) -> redis::RedisResult<()> {
        loop {
            let (entries, read_to) = self.page_after(stream, from).await?;
            let mut local = lock(&self.local);
            let broadcast_at = local.broadcast_at;
            let Some(key) = local.get_mut(stream) else {
                return Ok(());
            };
            for (id, fields) in &entries {
                key.deliver(*id, fields, broadcast_at);
            }
            match read_to {
                Some(read_to) => {
                    key.flush();
                    from = read_to;
                }
                None => {
                    for (id, fields) in key.catching_up.take().unwrap_or_default() {
                        key.deliver(id, &fields, broadcast_at);
                    }
                    key.flush();
                    return Ok(());
                }
            }
        }
    }

    /// The reader lost its place in a bucket's bell (trimmed while it
    /// lagged, or lost in a restart): it goes on from the bell's end, and
    /// each of the bucket's keys here catches up from its own stream, or,
    /// where that no longer holds what the key missed, gets the reset
    /// signal.
    async fn catch_up_bucket(&self, bucket: usize) -> redis::RedisResult<()> {
        let end = self.last_id(&self.bells[bucket]).await?;
        let keys: Vec<(Arc<str>, EntryId)> = {
            let mut local = lock(&self.local);
            if local.bells_at[bucket].is_some() {
                local.bells_at[bucket] = Some(end);
            }
            local.buckets[bucket]
                .iter()
                .map(|(stream, key)| (Arc::clone(stream), key.read_from))
                .collect()
        };
        for (stream, read_from) in keys {
            match self.covers(&stream, read_from).await? {
                Ok(()) => self.deliver_from_stream(&stream, read_from).await?,
                Err(reason) => {
                    let position = self.last_id(&stream).await?;
                    tracing::warn!(
                        stream = &*stream,
                        reason = reason.as_str(),
                        "SSE Redis reader missed entries of a key (trimmed while it lagged, or \
                         lost in a restart); its subscribers get the reset signal"
                    );
                    let reset = self.reset_fields(reason);
                    let mut local = lock(&self.local);
                    let broadcast_at = local.broadcast_at;
                    if let Some(key) = local.get_mut(&stream) {
                        key.read_from = position;
                        key.catching_up = None;
                        key.push(DeliveryKind::Reset, key.position(broadcast_at), &reset);
                        key.flush();
                    }
                }
            }
        }
        Ok(())
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
            if let Some(bucket) = self.bells.iter().position(|bell| **bell == *stream) {
                self.catch_up_bucket(bucket).await?;
                let at = lock(&self.local).bells_at[bucket].unwrap_or_default();
                if let Some(entry) = positions.iter_mut().find(|(key, _)| **key == *stream) {
                    entry.1 = at;
                }
                continue;
            }
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
                for key in local.values_mut() {
                    key.push(DeliveryKind::Reset, key.position(Some(position)), &reset);
                    key.flush();
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

/// Runs `attempt` until Redis runs it, for up to `limit` in all
/// ([`RegistryConfig::send_timeout`]): an answer that says it did not
/// ([`not_run`]) is retried every [`SEND_RETRY_WAIT`]; nothing else is, so an
/// event is never written twice.
async fn until_run<T, F: Future<Output = redis::RedisResult<T>>>(
    limit: Duration,
    mut attempt: impl FnMut() -> F,
) -> redis::RedisResult<T> {
    let started = std::time::Instant::now();
    loop {
        let remaining = limit.saturating_sub(started.elapsed());
        let error = match tokio::time::timeout(remaining, attempt()).await {
            Ok(Err(error)) if not_run(&error) => error,
            Ok(answer) => return answer,
            Err(_elapsed) => {
                return Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer from Redis in time",
                )));
            }
        };
        // The last try goes out just before the limit.
        let remaining = limit.saturating_sub(started.elapsed());
        if remaining < SEND_RETRY_WAIT / 10 {
            return Err(error);
        }
        tokio::time::sleep(SEND_RETRY_WAIT.min(remaining - SEND_RETRY_WAIT / 10)).await;
    }
}

/// Whether Redis answered `error` without running the command: a write to a
/// replica (one not yet promoted in a failover), a cluster that is down or
/// mid-resharding, a master without its replicas, a node loading its data.
/// Retrying such a command cannot write it twice.
fn not_run(error: &redis::RedisError) -> bool {
    matches!(
        error.code(),
        Some("READONLY" | "CLUSTERDOWN" | "TRYAGAIN" | "MASTERDOWN" | "LOADING")
    )
}

/// Whether Redis refused a command because a key holds another type (also
/// from inside a script, where the error comes wrapped).
fn is_wrong_type(error: &redis::RedisError) -> bool {
    error.code() == Some("WRONGTYPE") || error.to_string().contains("WRONGTYPE")
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

/// One of the instance's readers, started with the broker: `XREAD BLOCK`
/// over the bells of its buckets that have keys here (and the broadcast
/// stream), fanning entries out. Reconnects by itself; stops with the broker.
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
        if let Err(error) = read_once(&broker, &mut state, shard).await {
            tracing::warn!(%error, "SSE Redis reader failed; reconnecting");
            crate::telemetry::redis_reader_error();
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
) -> redis::RedisResult<()> {
    let mine = broker.buckets_of_reader(shard);
    let mut positions: Vec<(Arc<str>, EntryId)> = {
        let mut local = lock(&broker.local);
        // Not at every read: a busy reader reads thousands of times a second.
        if state
            .forgot_idle_at
            .is_none_or(|at| at.elapsed() >= FORGET_IDLE_EVERY)
        {
            local.forget_idle_in(mine.clone());
            state.forgot_idle_at = Some(std::time::Instant::now());
        }
        // The bells of this reader's buckets that have keys here.
        let mut positions: Vec<(Arc<str>, EntryId)> = mine
            .clone()
            .filter(|bucket| !broker.bells_unreadable[*bucket].load(Ordering::SeqCst))
            .filter_map(|bucket| Some((Arc::clone(&broker.bells[bucket]), local.bells_at[bucket]?)))
            .collect();
        // The broadcast stream is followed while any key is subscribed here,
        // by the reader of its bucket.
        if let Some(at) = local.broadcast_at {
            if mine.contains(&local.bucket_of(&broker.broadcast_stream))
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
            return stop_reading_the_wrong_type(broker, &keys).await;
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
    let full = reply.iter().any(|(stream, entries)| {
        let kept = if **stream == *broker.broadcast_stream {
            broker.config.history_len
        } else {
            BELL_LEN
        };
        entries.len() >= READ_COUNT.min(kept)
    });
    if slow || full {
        let mut replied: Vec<(Arc<str>, EntryId)> = positions
            .iter()
            .filter(|(key, _)| reply.iter().any(|(stream, _)| **stream == **key))
            .cloned()
            .collect();
        broker.check_for_gaps(&mut replied).await?;
    }
    let mut local = lock(&broker.local);
    // Keys given deliveries by this reply: each gets them as one batch.
    let mut touched: Vec<String> = Vec::new();
    let mut flush_all = false;
    for (stream, entries) in reply {
        // A full read means the reader is behind: check before the next.
        state.check_gaps |= entries.len() >= READ_COUNT;
        let bell = broker.bells.iter().position(|bell| **bell == *stream);
        for (id, fields) in entries {
            let Some(entry_id) = EntryId::parse(&id) else {
                continue;
            };
            // The next XREAD starts after the last entry seen, whether it is
            // one of ours or not: an entry that does not decode is passed,
            // never read again and again.
            match bell {
                Some(bucket) => {
                    if local.bells_at[bucket].is_none_or(|at| entry_id <= at) {
                        continue;
                    }
                    local.bells_at[bucket] = Some(entry_id);
                    let Some((key, key_entry, fields)) = rung(&fields) else {
                        log_foreign_entry(&mut state.foreign_logged, &stream, &id);
                        continue;
                    };
                    let broadcast_at = local.broadcast_at;
                    // A key nobody follows here is passed over.
                    if let Some(local_key) = local.get_mut(&key) {
                        match &mut local_key.catching_up {
                            Some(pending) => pending.push((key_entry, fields)),
                            None => {
                                local_key.deliver(key_entry, &fields, broadcast_at);
                                touched.push(key);
                            }
                        }
                    }
                }
                None => {
                    if local.broadcast_at.is_none_or(|at| entry_id <= at) {
                        continue;
                    }
                    local.broadcast_at = Some(entry_id);
                    let Some(fields) = stored_fields(&fields) else {
                        log_foreign_entry(&mut state.foreign_logged, &stream, &id);
                        continue;
                    };
                    for key in local.values_mut() {
                        key.push(
                            DeliveryKind::Broadcast,
                            key.position(Some(entry_id)),
                            &fields,
                        );
                    }
                    flush_all = true;
                }
            }
        }
    }
    if flush_all {
        local.values_mut().for_each(Local::flush);
    } else {
        for key in touched {
            if let Some(key) = local.get_mut(&key) {
                key.flush();
            }
        }
    }
    Ok(())
}

/// A bell entry: the key's stream, its entry id, the event's fields; `None`
/// for an entry another program wrote.
fn rung(fields: &[Vec<u8>]) -> Option<(String, EntryId, Bytes)> {
    let field = |name: &[u8]| {
        fields.chunks(2).find_map(|pair| match pair {
            [field, value] if field == name => Some(value),
            _ => None,
        })
    };
    let key = String::from_utf8(field(b"k")?.clone()).ok()?;
    let id = EntryId::parse(std::str::from_utf8(field(b"i")?).ok()?)?;
    Some((key, id, Bytes::copy_from_slice(field(b"e")?)))
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

/// `XREAD` failed because a stream it names is not a stream (`WRONGTYPE`):
/// finds which bell or broadcast key, and stops reading it (logged once), so
/// every other bucket keeps flowing.
async fn stop_reading_the_wrong_type(
    broker: &Inner,
    streams: &[Arc<str>],
) -> redis::RedisResult<()> {
    let mut connection = broker.commands.clone();
    let mut pipeline = redis::pipe();
    for stream in streams {
        pipeline.cmd("TYPE").arg(&**stream);
    }
    let types: Vec<String> = pipeline.query_async(&mut connection).await?;
    for (stream, kind) in streams.iter().zip(types) {
        if kind == "stream" || kind == "none" {
            continue;
        }
        if **stream == *broker.broadcast_stream {
            broker.mark_broadcast_unreadable();
        } else if let Some(bucket) = broker.bells.iter().position(|bell| bell == stream) {
            if !broker.bells_unreadable[bucket].swap(true, Ordering::SeqCst) {
                tracing::error!(
                    stream = &**stream,
                    kind,
                    "SSE Redis bell key holds a {kind}, not a stream: live events of its \
                     bucket's keys are not delivered until it is deleted and the instance \
                     restarted"
                );
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
                    Ok(joined) => break joined,
                    Err(error) if is_wrong_type(&error) => {
                        tracing::warn!(stream, "SSE Redis key is not a stream; ending the subscription");
                        crate::telemetry::broker_ended_streams("not_a_stream", 1);
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
                                crate::telemetry::broker_ended_streams("replay_failed", 1);
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
                                crate::telemetry::broker_ended_streams("replay_failed", 1);
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
                        crate::registry::broker::LagPolicy::Disconnect => {
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
            match inner.send(&stream, &fields).await {
                Ok(_id) => Ok(inner.local_subscribers(&stream)),
                Err(error) => {
                    if is_wrong_type(&error) {
                        // The key holds another type: its streams here end
                        // (another instance's end when it sends to it).
                        tracing::warn!(
                            stream,
                            "SSE Redis key is not a stream; its subscriptions are ended"
                        );
                        let ended = inner.local_subscribers(&stream);
                        if let Some(key) = lock(&inner.local).remove(&stream) {
                            key.fanout.close();
                            crate::telemetry::broker_ended_streams("not_a_stream", ended);
                        }
                    }
                    Err(unavailable(error))
                }
            }
        })
    }

    fn publish_to_all(&self, event: MessageEvent) -> BoxFuture<'_, Result<usize, BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if inner.shut_down.load(Ordering::SeqCst) {
                return Err(BrokerError::ShutDown);
            }
            let fields: Bytes = event.encode_without_id();
            let mut pipeline = redis::pipe();
            inner.append_broadcast(&mut pipeline, &fields);
            let (_id,): (String,) = until_run(inner.config.send_timeout, || {
                let mut connection = inner.commands.clone();
                let pipeline = &pipeline;
                async move { pipeline.query_async(&mut connection).await }
            })
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
