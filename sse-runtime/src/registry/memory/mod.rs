//! The in-memory broker: the default, for one server process.
//!
//! Keys are spread over shards, each a mutex around a map of key states. A key
//! state is a ring of encoded events (its history, which is also the live
//! buffer), its subscriber count and the wakers of subscribers waiting for more.
//! A subscriber is only a cursor into that ring: publishing appends once, wakes
//! the waiters and never waits; each subscriber copies out, under the same
//! lock, every entry after its cursor. Because publishing and reading happen
//! under one lock and ids increase in that order, a subscriber can neither skip
//! nor repeat an entry (the no-gap, no-duplicate guarantee).
//!
//! A broadcast is stored once, in the broadcast log, and appended to the ring
//! of each key that has subscribers; keys without subscribers are not
//! touched, so a broadcast costs nothing per idle key and keeps none alive.
//! Sequence numbers are shared by keys and the log, so a resume merges the
//! key's ring with the log by sequence number, once each.

mod subscription;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::sync::lock;
use std::time::{Duration, Instant};

use futures_util::future::{self, BoxFuture};
use futures_util::stream::BoxStream;

use crate::event::id::IdSpace;
use crate::event::{EncodedEvent, MessageEvent};
use crate::registry::broker::{Broker, BrokerError, Key, RegistryConfig, ResetReason};
use crate::registry::history::{Entry, HistoryRing};
use crate::registry::idempotency::{IdempotencyKey, IdempotencyRecords, Sent};
use crate::registry::reset;
use crate::registry::waiters::Waiters;

const SHARDS: usize = 32;

/// The default [`Broker`]: everything in this process's memory.
///
/// ```
/// use sse_runtime::{MemoryBroker, Registry, RegistryConfig};
/// let registry: Registry<u64> = Registry::with_broker(MemoryBroker::new(RegistryConfig::default()));
/// ```
pub struct MemoryBroker<K> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    shards: Box<[Mutex<HashMap<K, KeyState>>]>,
    hasher: RandomState,
    /// The last sequence number handed out. Taken under the lock of the key's
    /// shard, so a key's entries are appended in sequence order.
    sequence: AtomicU64,
    /// The highest sequence number evicted from a key that was then removed:
    /// a new key state starts from it, so a client whose id is older than
    /// events that expired is told so (reset), never silently resumed.
    removed_watermark: AtomicU64,
    ids: IdSpace,
    config: RegistryConfig,
    shut_down: AtomicBool,
    next_subscriber: AtomicU64,
    sweeper_started: AtomicBool,
    /// Bytes of history retained by every key (see [`Entry::cost`]).
    retained_bytes: AtomicUsize,
    /// Whether a thread is evicting across keys (only one at a time).
    evicting: AtomicBool,
    /// Every broadcast, bounded as one key's history. Locked after shard
    /// locks, never before.
    broadcasts: Mutex<HistoryRing>,
    /// The idempotency keys written, with their ids. Locked before shard
    /// locks, so a repeat waits for the first send to finish.
    idempotency: Mutex<IdempotencyRecords<K>>,
}

struct KeyState {
    /// The key's events (and the broadcasts that reached it while it had
    /// subscribers); a cursor below its `evicted_through` missed something.
    history: HistoryRing,
    /// The sequence number of the last entry appended (0: none yet).
    last_sequence: u64,
    subscribers: usize,
    /// Of those, the ones that take broadcasts: one per stream.
    streams: usize,
    /// Subscribers waiting for an entry, by subscriber id.
    waiting: Waiters,
}

impl KeyState {
    fn new(watermark: u64) -> Self {
        KeyState {
            history: HistoryRing::new(watermark),
            last_sequence: 0,
            subscribers: 0,
            streams: 0,
            waiting: Waiters::default(),
        }
    }

    /// Where a subscriber that wants only what comes next starts.
    fn head(&self) -> u64 {
        self.last_sequence.max(self.history.evicted_through())
    }

    /// Evicts the oldest entry, keeping the registry's byte count in step.
    fn evict_oldest(&mut self, retained_bytes: &AtomicUsize) -> bool {
        let Some(freed) = self.history.evict_oldest() else {
            return false;
        };
        retained_bytes.fetch_sub(freed, Ordering::Relaxed);
        true
    }

    fn evict_expired(&mut self, now: Instant, ttl: Duration, retained_bytes: &AtomicUsize) {
        let freed = self.history.evict_expired(now, ttl);
        retained_bytes.fetch_sub(freed, Ordering::Relaxed);
    }

    fn is_idle(&self) -> bool {
        self.subscribers == 0 && self.history.is_empty()
    }
}

impl<K> MemoryBroker<K>
where
    K: Key,
{
    /// A broker keeping history and treating slow subscribers as `config` says.
    pub fn new(config: RegistryConfig) -> Self {
        MemoryBroker {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                hasher: RandomState::new(),
                sequence: AtomicU64::new(0),
                removed_watermark: AtomicU64::new(0),
                ids: IdSpace::random(),
                shut_down: AtomicBool::new(false),
                next_subscriber: AtomicU64::new(0),
                sweeper_started: AtomicBool::new(false),
                retained_bytes: AtomicUsize::new(0),
                evicting: AtomicBool::new(false),
                broadcasts: Mutex::new(HistoryRing::new(0)),
                idempotency: Mutex::new(IdempotencyRecords::new(
                    config.idempotency_ttl,
                    config.max_idempotency_records,
                )),
                config,
            }),
        }
    }
}

impl<K> Inner<K>
where
    K: Key,
{
    fn shard(&self, key: &K) -> &Mutex<HashMap<K, KeyState>> {
        &self.shards[self.shard_index(key)]
    }

    fn shard_index(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Appends `event` to `state` with a fresh sequence number: how many
    /// subscriptions it reached, and its id. Must be called under the lock
    /// of the state's shard.
    fn append(&self, state: &mut KeyState, event: &MessageEvent, now: Instant) -> (usize, String) {
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        let id = self.ids.format(sequence);
        let reached = self.append_encoded(state, sequence, event.encode_with_id(&id), now, false);
        (reached, id)
    }

    /// Publishes `event` to `key` (checked and bounded as every publish):
    /// how many subscriptions it reached, and its id.
    fn publish(&self, key: &K, event: &MessageEvent) -> Result<(usize, String), BrokerError> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(BrokerError::ShutDown);
        }
        self.config.check_size(event)?;
        let mut shard = lock(self.shard(key));
        let state = self.key_state(&mut shard, key);
        let published = self.append(state, event, Instant::now());
        drop(shard);
        self.enforce_total_bound();
        Ok(published)
    }

    fn append_encoded(
        &self,
        state: &mut KeyState,
        sequence: u64,
        event: EncodedEvent,
        now: Instant,
        broadcast: bool,
    ) -> usize {
        let config = &self.config;
        state.evict_expired(now, config.history_ttl, &self.retained_bytes);
        let entry = Entry {
            sequence,
            at: now,
            event,
            broadcast,
        };
        let cost = entry.cost();
        self.retained_bytes.fetch_add(cost, Ordering::Relaxed);
        let freed = state
            .history
            .push(entry, config.history_len, config.history_bytes_per_key);
        self.retained_bytes.fetch_sub(freed, Ordering::Relaxed);
        state.last_sequence = sequence;
        state.waiting.wake_all();
        // A key's event reaches all its subscriptions; a broadcast, the
        // streams (a multi-key stream takes it through one key only).
        if broadcast {
            state.streams
        } else {
            state.subscribers
        }
    }

    fn reset_signal(&self, reason: ResetReason, position: u64) -> EncodedEvent {
        reset::reset_signal(&self.config.reset_event_type, reason, None)
            .encode_with_id(&self.ids.format(position))
    }

    /// `key`'s state in `shard`, created (and its cost counted against the
    /// byte bound) if it has none.
    fn key_state<'a>(&self, shard: &'a mut HashMap<K, KeyState>, key: &K) -> &'a mut KeyState {
        shard.entry(key.clone()).or_insert_with(|| {
            self.retained_bytes
                .fetch_add(Self::KEY_COST, Ordering::Relaxed);
            KeyState::new(self.removed_watermark.load(Ordering::SeqCst))
        })
    }

    /// What a key costs whatever its history, counted against the byte
    /// bounds so that keys minted by the hundred thousand cannot hold memory
    /// the bounds do not see: its entry in its shard's map, twice over (a
    /// map keeps the room it grew to, and grows by doubling), plus its key's
    /// own heap and the allocator's overhead, estimated.
    const KEY_COST: usize = std::mem::size_of::<(K, KeyState)>() * 2 + 96;

    fn remove_if_idle(&self, shard: &mut HashMap<K, KeyState>, key: &K) {
        if shard.get(key).is_some_and(KeyState::is_idle) {
            if let Some(state) = shard.remove(key) {
                self.forget(&state);
            }
        }
    }

    /// Accounts for a removed key state.
    fn forget(&self, state: &KeyState) {
        self.removed_watermark
            .fetch_max(state.history.evicted_through(), Ordering::SeqCst);
        self.retained_bytes
            .fetch_sub(Self::KEY_COST, Ordering::Relaxed);
    }

    /// `count` of every key state, summed.
    fn sum_over_keys(&self, count: impl Fn(&KeyState) -> usize) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).values().map(&count).sum::<usize>())
            .sum()
    }

    /// Evicts expired history everywhere and removes idle keys.
    fn sweep(&self) {
        let now = Instant::now();
        lock(&self.broadcasts).evict_expired(now, self.config.history_ttl);
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.retain(|_, state| {
                state.evict_expired(now, self.config.history_ttl, &self.retained_bytes);
                let idle = state.is_idle();
                if idle {
                    self.forget(state);
                }
                !idle
            });
        }
    }
}

impl<K> Inner<K>
where
    K: Key,
{
    /// Past the registry's byte bound, evicts the oldest entries of all keys
    /// until it is at 90% of it, so that the walk over every key runs once
    /// per tenth of the bound published, not once per event. Must be called
    /// with no shard locked.
    fn enforce_total_bound(&self) {
        let bound = self.config.history_bytes_total;
        if self.retained_bytes.load(Ordering::Relaxed) <= bound
            || self.evicting.swap(true, Ordering::Acquire)
        {
            return;
        }
        let target = bound - bound / 10;
        // Every key's oldest entry, merged by sequence number (the order of
        // publishing): the oldest of all is evicted first.
        let mut keys: Vec<(usize, K)> = Vec::new();
        let mut oldest = BinaryHeap::new();
        for (index, shard) in self.shards.iter().enumerate() {
            for (key, state) in lock(shard).iter() {
                if let Some(front) = state.history.front() {
                    oldest.push(Reverse((front.sequence, keys.len())));
                    keys.push((index, key.clone()));
                }
            }
        }
        while self.retained_bytes.load(Ordering::Relaxed) > target {
            let Some(Reverse((_, at))) = oldest.pop() else {
                break;
            };
            let (index, key) = &keys[at];
            let next_oldest = oldest
                .peek()
                .map_or(u64::MAX, |Reverse((sequence, _))| *sequence);
            let mut shard = lock(&self.shards[*index]);
            let Some(state) = shard.get_mut(key) else {
                continue;
            };
            // This key's entries older than every other key's go in one visit.
            while self.retained_bytes.load(Ordering::Relaxed) > target
                && state
                    .history
                    .front()
                    .is_some_and(|front| front.sequence <= next_oldest)
            {
                state.evict_oldest(&self.retained_bytes);
            }
            match state.history.front() {
                Some(front) => oldest.push(Reverse((front.sequence, at))),
                None => self.remove_if_idle(&mut shard, key),
            }
        }
        self.evicting.store(false, Ordering::Release);
    }
}

/// One shared task per broker expires history of keys nobody touches. It holds
/// only a weak reference and stops when the broker is dropped or shut down.
fn start_sweeper<K>(inner: &Arc<Inner<K>>)
where
    K: Key,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // Not in a runtime: expiry then happens on each publish of a key.
    };
    if inner.sweeper_started.swap(true, Ordering::SeqCst) {
        return;
    }
    let period =
        (inner.config.history_ttl / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
    let weak: Weak<Inner<K>> = Arc::downgrade(inner);
    runtime.spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            match weak.upgrade() {
                Some(inner) if !inner.shut_down.load(Ordering::SeqCst) => inner.sweep(),
                _ => return,
            }
        }
    });
}

impl<K> Broker<K> for MemoryBroker<K>
where
    K: Key,
{
    fn publish<'a>(
        &'a self,
        key: &'a K,
        event: MessageEvent,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        start_sweeper(&self.inner);
        let result = self.inner.publish(key, &event).map(|(reached, _)| reached);
        Box::pin(future::ready(result))
    }

    fn publish_idempotent<'a>(
        &'a self,
        key: &'a K,
        event: MessageEvent,
        idempotency_key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<Sent, BrokerError>> {
        start_sweeper(&self.inner);
        let now = Instant::now();
        let mut records = lock(&self.inner.idempotency);
        let result = match records.get(key, idempotency_key, now) {
            Some(id) => Ok(Sent::new(id, true, 0)),
            None => self.inner.publish(key, &event).map(|(reached, id)| {
                records.insert(key, idempotency_key, id.clone(), now);
                Sent::new(id, false, reached)
            }),
        };
        Box::pin(future::ready(result))
    }

    fn publish_to_all(&self, event: MessageEvent) -> BoxFuture<'_, Result<usize, BrokerError>> {
        let inner = &self.inner;
        if inner.shut_down.load(Ordering::SeqCst) {
            return Box::pin(future::ready(Err(BrokerError::ShutDown)));
        }
        if let Err(refused) = inner.config.check_size(&event) {
            return Box::pin(future::ready(Err(refused)));
        }
        start_sweeper(inner);
        let now = Instant::now();
        // Every shard at once, so that the broadcast takes one place in the
        // sequence of every key, and a subscription that starts meanwhile
        // finds it either in the log or in its key's ring.
        let mut shards: Vec<_> = inner.shards.iter().map(lock).collect();
        let sequence = inner.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        let encoded = event.encode_with_id(&inner.ids.format(sequence));
        let mut log = lock(&inner.broadcasts);
        log.evict_expired(now, inner.config.history_ttl);
        log.push(
            Entry {
                sequence,
                at: now,
                event: encoded.clone(),
                broadcast: true,
            },
            inner.config.history_len,
            inner.config.history_bytes_per_key,
        );
        drop(log);
        let mut reached = 0;
        for shard in &mut shards {
            for state in shard.values_mut().filter(|state| state.streams > 0) {
                reached += inner.append_encoded(state, sequence, encoded.clone(), now, true);
            }
        }
        drop(shards);
        inner.enforce_total_bound();
        Box::pin(future::ready(Ok(reached)))
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
        self.inner
            .shards
            .iter()
            .map(|shard| lock(shard).len())
            .sum()
    }

    fn subscriber_count(&self, key: &K) -> usize {
        lock(self.inner.shard(key))
            .get(key)
            .map_or(0, |state| state.subscribers)
    }

    fn total_streams(&self) -> usize {
        self.inner.sum_over_keys(|state| state.streams)
    }

    fn total_subscribers(&self) -> usize {
        self.inner.sum_over_keys(|state| state.subscribers)
    }

    fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        for shard in self.inner.shards.iter() {
            for state in lock(shard).values_mut() {
                state.waiting.wake_all();
            }
        }
    }
}
