//! A [`Broker`] on Redis Streams, so that several server instances share keys,
//! history and ids (feature `redis`).
//!
//! - `send` is `XADD <prefix>:<key> MAXLEN ~ <history_len> * e <fields>`: the
//!   entry id Redis assigns (`<ms>-<n>`) is the SSE id, the same on every
//!   instance, so a `Last-Event-ID` from one instance resumes on any other.
//!   In the same script (one round trip, atomic), `XTRIM … MINID` drops
//!   entries older than `history_ttl`, `PEXPIRE` removes the key once nothing
//!   in it is younger, and the entry is published, with its id and the id of
//!   the entry before it, on the key's channel (`SPUBLISH`, sharded PUB/SUB:
//!   on a cluster the channel lives on the key's master).
//! - `broadcast` is one `XADD` to the broadcast stream (`<prefix>!broadcast`),
//!   whatever the number of keys: it touches no key and keeps none alive.
//!   Every instance's reader follows that stream and hands each entry to
//!   every key subscribed on the instance. A subscription's SSE id is its
//!   position in both streams (`<key entry>.<broadcast entry>`, or the key
//!   entry alone before any broadcast), so a resume replays both exactly.
//! - Live delivery, by interest: an instance subscribes (`SSUBSCRIBE`) to the
//!   channels of the keys it has subscribers for, and to nothing else, so it
//!   receives only their events; a key's channel is left when its last
//!   subscriber here leaves. PUB/SUB delivers at most once, so every message
//!   names the entry before it: a key that receives one it cannot follow on
//!   from catches up from its stream, and a lost link or a moved slot makes
//!   its keys catch up once they are subscribed again (see `live.rs`).
//! - Resume: the subscription first joins the local fan-out, then reads what it
//!   missed with `XRANGE`, and skips live entries it already replayed: no gap, no
//!   duplicate. The history covers the client's id while the client's own last
//!   entry is still in the stream (trimming removes the oldest first); when it
//!   is not, the id is ahead of the stream (`XINFO STREAM`), or the stream is
//!   gone, the subscription starts with the reset signal.
//! - Failure: `send` returns [`BrokerError::Unavailable`] when Redis surely
//!   did not write the entry, and [`BrokerError::OutcomeUnknown`] when it may
//!   have (no answer in time; or, with
//!   [`RegistryConfig::replicas_to_acknowledge`], too few replicas confirmed
//!   it). Open subscriptions keep waiting while Redis is
//!   unreachable; the reader reconnects by itself and resumes from the last id
//!   it delivered, so entries that Redis kept are delivered once it is back.
//!
//! Redis 7.0 or newer is needed (sharded PUB/SUB): `connect` to an older
//! server fails with an error that says so.
//!
//! Guarantees by Redis setting: with `appendonly yes` and `appendfsync always`,
//! an event acknowledged by `send` survives a Redis restart and a client that
//! resumes gets it. With persistence off, a restart loses the history, and a
//! client that resumes with an id from before gets the reset signal, never a
//! silent gap.

mod connection;
mod fanout;
mod history;
mod ids;
mod interest;
mod links;
mod live;
mod local;
mod reader;
mod replays;
mod send;
mod subscription;

use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::sync::Notify;

use crate::event::{EncodedEvent, MessageEvent};
use crate::registry::broker::{Broker, BrokerError, Key, RegistryConfig};
use crate::registry::idempotency::{IdempotencyKey, Sent};
use crate::sync::lock;
use connection::{Client, Connection};
use history::is_wrong_type;
use interest::{Interest, interest_loop};
use links::Links;
use live::dispatch_loop;
use local::Fanouts;
use reader::read_loop;
use replays::ReplayReads;
use send::{SEND_SCRIPT, until_run};

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
    /// Resumes' reads: their own connection, a few at a time.
    replays: ReplayReads,
    prefix: String,
    config: RegistryConfig,
    /// The keys subscribed on this instance, and where the readers are.
    local: Mutex<Fanouts>,
    /// The stream every broadcast goes to.
    broadcast_stream: Arc<str>,
    /// Set when the broadcast key holds another type (someone wrote it):
    /// the reader stops naming it, so keys keep flowing.
    broadcast_unreadable: AtomicBool,
    /// Subscribes and unsubscribes the keys' channels.
    interest: Interest,
    /// This broker, for the tasks it starts.
    me: Weak<Inner>,
    /// `send`: the entry, its bounds, and its live message, atomically.
    send_script: redis::Script,
    /// Wakes the readers when the set of keys changes.
    keys_changed: Notify,
    shut_down: AtomicBool,
}

/// The error `connect` returns.
#[derive(Debug, thiserror::Error)]
#[error("could not connect to Redis: {0}")]
pub struct RedisConnectError(#[from] redis::RedisError);

/// An answer that came after the broker saw the cluster change (a slow
/// node, a failover): the node that wrote may be a master no more. A master
/// frozen past the failover runs what was waiting for it when it wakes,
/// answers, and then becomes a replica, dropping it: such a send is
/// reported as unknown, so that a retry with its idempotency key writes it
/// where the slots are now.
fn changed_while_waiting() -> BrokerError {
    BrokerError::OutcomeUnknown(
        "the Redis Cluster changed while the send waited for its answer: it may be lost with \
         a demoted master; retry with its idempotency key"
            .to_owned(),
    )
}

/// A send written on its master that fewer replicas than
/// [`RegistryConfig::replicas_to_acknowledge`] confirmed in time: the master
/// may lose it (killed before replicating, or demoted after a freeze).
fn not_replicated() -> BrokerError {
    BrokerError::OutcomeUnknown(
        "Redis wrote the event but too few replicas confirmed it in time: it may be lost with \
         its master; retry with its idempotency key"
            .to_owned(),
    )
}

/// What a failed send tells its caller: whether Redis surely did not write
/// it ([`BrokerError::Unavailable`]: refused, unreachable, or a server
/// error before any write), or may have ([`BrokerError::OutcomeUnknown`]:
/// no answer in time, or the connection broke with the command sent).
fn unavailable(error: redis::RedisError) -> BrokerError {
    let unknown = !error.is_connection_refusal()
        && (error.is_timeout() || error.is_io_error() || error.is_connection_dropped());
    if unknown {
        BrokerError::OutcomeUnknown(error.to_string())
    } else {
        BrokerError::Unavailable(error.to_string())
    }
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
    /// Each key has a hash tag (`<prefix>:{<hash>}:<key>`, 16 bits of a
    /// fixed hash of the key, in hex), so keys spread evenly over every slot
    /// and so over any number of masters, and a key's stream, channel and
    /// idempotency records share its slot. Commands follow the slots as they
    /// move. When a master fails, `send` to its slots waits for the
    /// replica that takes over, up to [`RegistryConfig::send_timeout`]
    /// (default 5 s), then fails with [`BrokerError::Unavailable`] (only answers that say Redis did not run
    /// the command are retried, so an event is never written twice). A
    /// master that stops answering is noticed after 500 ms, and the broker
    /// reconnects with a fresh slot map for the commands after.
    ///
    /// Redis replicates asynchronously: an event `send` reported as recorded
    /// may be lost with the old master. Subscribers then get every event
    /// Redis kept, in order, or the reset signal where the reader cannot
    /// tell; a failover can cost events, never a silent gap. With
    /// [`RegistryConfig::replicas_to_acknowledge`], a send is reported
    /// recorded only once a replica holds it, and a failover then costs no
    /// acknowledged event.
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
        links::require_sharded_pubsub(&client).await?;
        let commands = client.shared_connection().await?;
        let replays = ReplayReads::connect(&client).await?;
        let broadcast_stream = if client.is_cluster() {
            // Under a hash tag of its own: one slot, one master.
            format!("{prefix}!broadcast:{{0}}")
        } else {
            format!("{prefix}!broadcast")
        };
        let (received_sender, received) = tokio::sync::mpsc::unbounded_channel();
        let (request_sender, requests) = tokio::sync::mpsc::unbounded_channel();
        let links = Links::new(client.clone(), received_sender)?;
        let inner = Arc::new_cyclic(|me| Inner {
            client,
            commands,
            replays,
            prefix: prefix.to_owned(),
            config,
            local: Mutex::new(Fanouts::new()),
            broadcast_stream: Arc::from(broadcast_stream),
            broadcast_unreadable: AtomicBool::new(false),
            interest: Interest::new(request_sender.clone()),
            me: me.clone(),
            send_script: redis::Script::new(SEND_SCRIPT),
            keys_changed: Notify::new(),
            shut_down: AtomicBool::new(false),
        });
        tokio::spawn(interest_loop(Arc::downgrade(&inner), links, requests));
        tokio::spawn(dispatch_loop(
            Arc::downgrade(&inner),
            received,
            request_sender,
        ));
        tokio::spawn(read_loop(Arc::downgrade(&inner)));
        Ok(RedisBroker {
            inner,
            _keys: PhantomData,
        })
    }
}

impl Inner {
    /// Publishes `event` to `key` (under `idempotency_key`, if given),
    /// checked as every publish is: see [`publish`](Self::publish).
    async fn publish_event(
        &self,
        key: &impl Display,
        event: &MessageEvent,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Sent, BrokerError> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(BrokerError::ShutDown);
        }
        self.config.check_size(event)?;
        let stream = self.stream_key(key);
        let record =
            idempotency_key.map(|idempotency_key| self.idempotency_record(key, idempotency_key));
        let fields: Bytes = event.encode_without_id();
        self.publish(&stream, &fields, record.as_deref()).await
    }

    /// Sends `fields` to `stream` (under `record`'s idempotency key, if
    /// given).
    async fn publish(
        &self,
        stream: &str,
        fields: &[u8],
        record: Option<&str>,
    ) -> Result<Sent, BrokerError> {
        let topology = self.commands.topology_generation();
        let asked = std::time::Instant::now();
        let sent = self.send(stream, fields, record).await;
        if sent.is_ok() && self.answered_across_a_change(topology, asked) {
            return Err(changed_while_waiting());
        }
        match sent {
            Ok(written) if !written.replicated => Err(not_replicated()),
            Ok(written) if written.repeat => Ok(Sent::new(written.id, true, 0)),
            // The id is empty without a record: [`Broker::publish`] does
            // not answer it.
            Ok(written) => Ok(Sent::new(written.id, false, self.local_subscribers(stream))),
            Err(error) => {
                if is_wrong_type(&error) {
                    // The key holds another type: its streams here end
                    // (another instance's end when it sends to it).
                    tracing::warn!(
                        stream,
                        "SSE Redis key is not a stream; its subscriptions are ended"
                    );
                    let ended = self.end_key(stream);
                    crate::telemetry::broker_ended_streams("not_a_stream", ended);
                }
                Err(unavailable(error))
            }
        }
    }

    /// Whether an answer to a command asked at `asked` came slowly (past
    /// one attempt's timeout: the node stalled) and after the broker saw
    /// the cluster change since `topology`: then the node that answered may
    /// be a master no more. A quick answer, or one with no change, is
    /// trusted, so a failover elsewhere costs healthy slots nothing.
    fn answered_across_a_change(&self, topology: u64, asked: std::time::Instant) -> bool {
        asked.elapsed() > connection::CLUSTER_ATTEMPT_TIMEOUT
            && self.commands.topology_generation() != topology
    }

    fn stream_key(&self, key: &impl Display) -> String {
        match self.hash_tag(key) {
            Some(tag) => format!("{}:{{{tag}}}:{key}", self.prefix),
            None => format!("{}:{key}", self.prefix),
        }
    }

    /// On a cluster, the hash tag that puts `key`'s Redis keys (its
    /// stream, its channel, its idempotency records) in one slot (see
    /// [`cluster_hash_tag`]); `None` on one node.
    fn hash_tag(&self, key: &impl Display) -> Option<String> {
        self.client
            .is_cluster()
            .then(|| cluster_hash_tag(&key.to_string()))
    }

    /// Where the record of `idempotency_key` for `key` lives: beside the
    /// key's stream (the same hash tag on a cluster, so the send script
    /// touches one slot), in a name space of its own. The idempotency key
    /// comes before the app's key, with its length, so no two pairs share
    /// a name, and after the tag, so its braces cannot pick the slot.
    fn idempotency_record(&self, key: &impl Display, idempotency_key: &IdempotencyKey) -> String {
        let idempotency_key = idempotency_key.as_str();
        let length = idempotency_key.len();
        match self.hash_tag(key) {
            Some(tag) => format!(
                "{}!idem:{{{tag}}}:{length}:{idempotency_key}:{key}",
                self.prefix
            ),
            None => format!("{}!idem:{length}:{idempotency_key}:{key}", self.prefix),
        }
    }

    /// This broker, for a task it starts.
    fn weak_self(&self) -> Weak<Inner> {
        self.me.clone()
    }

    /// How many subscriptions on this instance have joined `stream` (a key
    /// still opening has none yet: its subscriptions have no position).
    fn local_subscribers(&self, stream: &str) -> usize {
        lock(&self.local)
            .get(stream)
            .filter(|local| local.ready)
            .map_or(0, |local| local.fanout.subscriber_count())
    }

    /// Drops the local fan-out of keys nobody on this instance listens to,
    /// and answers their channels (the caller leaves them).
    fn forget_idle_keys(&self) -> Vec<Arc<str>> {
        lock(&self.local).forget_idle()
    }

    /// Drops the keys nobody on this instance listens to, and leaves
    /// their channels.
    fn forget_idle(&self) {
        for channel in self.forget_idle_keys() {
            self.interest.leave(channel);
        }
    }

    /// Ends every subscription of `stream` here, and leaves its channel.
    fn end_key(&self, stream: &str) -> usize {
        let Some(key) = lock(&self.local).remove(stream) else {
            return 0;
        };
        let ended = key.fanout.subscriber_count();
        key.fanout.close();
        self.interest.leave(Arc::from(stream));
        ended
    }
}

/// What `join` answers after shutdown.
fn shut_down_error() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "the SSE registry is shut down"))
}

/// A key's hash tag on a cluster: 16 bits of its fixed hash, in hex.
/// 65,536 tags, four or so per slot, so keys spread evenly over all the
/// slots; and short, because the channel name travels with every live
/// message.
fn cluster_hash_tag(key: &str) -> String {
    format!("{:04x}", fixed_hash(key) & 0xffff)
}

/// FNV-1a: a hash fixed by its definition, the same in every process, run
/// and version, so every instance puts a key under the same cluster hash tag.
fn fixed_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl<K> Broker<K> for RedisBroker<K>
where
    K: Key + Display,
{
    fn publish<'a>(
        &'a self,
        key: &'a K,
        event: MessageEvent,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let sent = self.inner.publish_event(key, &event, None).await?;
            Ok(sent.reached)
        })
    }

    fn publish_idempotent<'a>(
        &'a self,
        key: &'a K,
        event: MessageEvent,
        idempotency_key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<Sent, BrokerError>> {
        Box::pin(async move {
            self.inner
                .publish_event(key, &event, Some(idempotency_key))
                .await
        })
    }

    fn publish_to_all(&self, event: MessageEvent) -> BoxFuture<'_, Result<usize, BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if inner.shut_down.load(Ordering::SeqCst) {
                return Err(BrokerError::ShutDown);
            }
            inner.config.check_size(&event)?;
            let fields: Bytes = event.encode_without_id();
            let mut pipeline = redis::pipe();
            inner.append_broadcast(&mut pipeline, &fields);
            inner.wait_for_replicas(&mut pipeline);
            let topology = inner.commands.topology_generation();
            let asked = std::time::Instant::now();
            let answer: Vec<redis::Value> = until_run(inner.config.send_timeout, || {
                let mut connection = inner.commands.clone();
                let pipeline = &pipeline;
                async move { pipeline.query_async(&mut connection).await }
            })
            .await
            .map_err(unavailable)?;
            if inner.answered_across_a_change(topology, asked) {
                return Err(changed_while_waiting());
            }
            if !inner.replicated(answer.last()) {
                return Err(not_replicated());
            }
            Ok(self.total_streams())
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

    fn total_streams(&self) -> usize {
        lock(&self.inner.local)
            .open_keys()
            .map(|local| local.fanout.stream_count())
            .sum()
    }

    fn total_subscribers(&self) -> usize {
        lock(&self.inner.local)
            .open_keys()
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

#[cfg(test)]
mod spread_tests {
    use super::*;

    /// Issue 22: keys spread evenly over the masters of any cluster, 64
    /// included (Centrifugo found bare-index tags such as `{0}`..`{15}` skew
    /// badly: their slots bunch). 64,000 keys over 64 equal slot ranges (how
    /// `redis-cli --cluster create` shares slots out): each within 12% of
    /// the mean.
    #[test]
    fn keys_spread_evenly_over_64_masters() {
        const MASTERS: usize = 64;
        const KEYS: usize = 64_000;
        let mut per_master = [0usize; MASTERS];
        for n in 0..KEYS {
            let tag = cluster_hash_tag(&format!("user-{n}"));
            let slot = usize::from(links::key_slot(format!("{{{tag}}}").as_bytes()));
            per_master[slot * MASTERS / 16_384] += 1;
        }
        let mean = KEYS / MASTERS;
        for (master, keys) in per_master.iter().enumerate() {
            assert!(
                keys.abs_diff(mean) * 100 <= mean * 12,
                "master {master} holds {keys} keys, the mean is {mean}"
            );
        }
    }
}

#[cfg(test)]
mod send_error_tests {
    use super::*;

    #[test]
    fn a_failed_send_says_whether_it_may_have_been_written() {
        let io = |kind| redis::RedisError::from(std::io::Error::new(kind, "x"));
        let unknown = |error| matches!(unavailable(error), BrokerError::OutcomeUnknown(_));
        assert!(
            unknown(io(std::io::ErrorKind::TimedOut)),
            "no answer in time"
        );
        assert!(
            unknown(io(std::io::ErrorKind::BrokenPipe)),
            "broke mid-request"
        );
        assert!(unknown(io(std::io::ErrorKind::ConnectionReset)));
        assert!(
            !unknown(io(std::io::ErrorKind::ConnectionRefused)),
            "never reached"
        );
        let refused = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert!(!unknown(refused), "refused: not written");
    }
}
