//! A subscription to the in-memory broker: where it starts (replay, resume
//! point or reset), then a cursor into its key's ring.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::stream::BoxStream;

use super::{Inner, MemoryBroker};
use crate::event::EncodedEvent;
use crate::event::id::ParsedId;
use crate::registry::broker::{Key, LagPolicy, ResetReason};
use crate::sync::lock;
use crate::telemetry;

impl<K> MemoryBroker<K>
where
    K: Key,
{
    /// A subscription to `key`, with or without broadcasts.
    pub(super) fn subscribe_with(
        &self,
        key: &K,
        last_event_id: Option<&str>,
        with_broadcasts: bool,
    ) -> BoxStream<'static, EncodedEvent> {
        let inner = &self.inner;
        let shard_index = inner.shard_index(key);
        let mut shard = lock(&inner.shards[shard_index]);
        let state = inner.key_state(&mut shard, key);
        state.subscribers += 1;
        state.streams += usize::from(with_broadcasts);

        let log = lock(&inner.broadcasts);
        // Where a client that wants only what comes next stands: past the
        // key's events and past every broadcast so far.
        let head = state.head().max(log.last_sequence());
        let resume = last_event_id.map(|id| match inner.ids.parse(id) {
            ParsedId::Ours(last) if last > inner.sequence.load(Ordering::SeqCst) => {
                Err(ResetReason::UnknownId)
            }
            ParsedId::Ours(last)
                if last < state.history.evicted_through()
                    || (with_broadcasts && last < log.evicted_through()) =>
            {
                Err(ResetReason::HistoryExpired)
            }
            ParsedId::Ours(last) => Ok(last),
            ParsedId::OtherEpoch => Err(ResetReason::UnknownId),
            ParsedId::Invalid => Err(ResetReason::InvalidId),
        });
        let mut ready = VecDeque::new();
        let cursor = match resume {
            None => {
                // A client that drops before its first event still resumes
                // from here (see `Broker`, "Resume point").
                ready.push_back(EncodedEvent::resume_point(&inner.ids.format(head)));
                head
            }
            Some(Ok(last)) => {
                // The key's events and the broadcasts after `last`, merged by
                // sequence number; a broadcast that reached the key while it
                // had subscribers is in both, and is taken once.
                let mut own = state
                    .history
                    .after(last)
                    .filter(|entry| with_broadcasts || !entry.broadcast);
                let mut broadcast = log.after(last).filter(|_| with_broadcasts);
                let (mut a, mut b) = (own.next(), broadcast.next());
                while let Some(entry) = match (a, b) {
                    (Some(x), Some(y)) if x.sequence == y.sequence => {
                        (a, b) = (own.next(), broadcast.next());
                        Some(x)
                    }
                    (Some(x), Some(y)) if x.sequence < y.sequence => {
                        a = own.next();
                        Some(x)
                    }
                    (Some(x), None) => {
                        a = own.next();
                        Some(x)
                    }
                    (_, Some(y)) => {
                        b = broadcast.next();
                        Some(y)
                    }
                    (None, None) => None,
                } {
                    ready.push_back(entry.event.clone());
                }
                telemetry::replayed(ready.len());
                tracing::debug!(events = ready.len(), "SSE subscriber resumes: replaying");
                state.last_sequence.max(last)
            }
            Some(Err(reason)) => {
                ready.push_back(inner.reset_signal(reason, head));
                head
            }
        };
        drop(log);
        Box::pin(MemorySubscription {
            id: inner.next_subscriber.fetch_add(1, Ordering::Relaxed),
            shard: shard_index,
            key: key.clone(),
            cursor,
            replay_until: state.last_sequence,
            ready,
            ended: false,
            with_broadcasts,
            inner: Arc::clone(inner),
        })
    }
}

/// One subscriber: a cursor into its key's ring, and the entries copied out
/// but not yet yielded.
struct MemorySubscription<K: Key> {
    id: u64,
    /// The index of the key's shard, hashed once.
    shard: usize,
    key: K,
    /// The sequence number of the last entry taken.
    cursor: u64,
    /// Entries up to here are replay, which the lag limit does not count.
    replay_until: u64,
    ready: VecDeque<EncodedEvent>,
    ended: bool,
    /// Whether broadcasts appended to the key's ring are yielded.
    with_broadcasts: bool,
    inner: Arc<Inner<K>>,
}

/// The most events' room a subscription keeps between batches.
const RETAINED_READY: usize = 32;

// Nothing in a subscription points into itself.
impl<K: Key> Unpin for MemorySubscription<K> {}

impl<K> Stream for MemorySubscription<K>
where
    K: Key,
{
    type Item = EncodedEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EncodedEvent>> {
        let this = &mut *self;
        if let Some(event) = this.ready.pop_front() {
            return Poll::Ready(Some(event));
        }
        if this.ready.capacity() > RETAINED_READY {
            // Drained after a replay or a burst: an idle subscriber keeps
            // no room for the largest batch it ever had.
            this.ready = VecDeque::new();
        }
        if this.ended || this.inner.shut_down.load(Ordering::SeqCst) {
            this.ended = true;
            return Poll::Ready(None);
        }
        let inner = Arc::clone(&this.inner);
        let mut shard = lock(&inner.shards[this.shard]);
        // SAFETY-style invariant: a live subscription counts in `subscribers`,
        // so its key state is never removed while it exists.
        let Some(state) = shard.get_mut(&this.key) else {
            this.ended = true;
            return Poll::Ready(None);
        };
        let start = state.history.first_after(this.cursor);
        let live_from = if this.replay_until > this.cursor {
            state.history.first_after(this.replay_until)
        } else {
            start
        };
        let missed_evicted = state.history.evicted_through() > this.cursor;
        let too_far_behind = state.history.len() - live_from > inner.config.buffer;
        if missed_evicted || too_far_behind {
            match inner.config.lag_policy {
                LagPolicy::Disconnect => {
                    tracing::debug!(
                        "SSE subscriber fell behind its buffer; disconnecting it (it resumes from history)"
                    );
                    telemetry::lag_disconnect();
                    this.ended = true;
                    return Poll::Ready(None);
                }
                LagPolicy::SkipWithNotice => {
                    this.cursor = state.head();
                    this.replay_until = this.cursor;
                    return Poll::Ready(Some(inner.reset_signal(ResetReason::Lagged, this.cursor)));
                }
            }
        }
        if let Some(last) = state.history.back().filter(|_| start < state.history.len()) {
            this.cursor = last.sequence;
            let with_broadcasts = this.with_broadcasts;
            this.ready.extend(
                state
                    .history
                    .starting_at(start)
                    .filter(|entry| with_broadcasts || !entry.broadcast)
                    .map(|entry| entry.event.clone()),
            );
        }
        match this.ready.pop_front() {
            Some(event) => Poll::Ready(Some(event)),
            None => {
                state.waiting.register(this.id, cx);
                Poll::Pending
            }
        }
    }
}

impl<K> Drop for MemorySubscription<K>
where
    K: Key,
{
    fn drop(&mut self) {
        let mut shard = lock(&self.inner.shards[self.shard]);
        if let Some(state) = shard.get_mut(&self.key) {
            state.subscribers -= 1;
            state.streams -= usize::from(self.with_broadcasts);
            state.waiting.remove(self.id);
        }
        self.inner.remove_if_idle(&mut shard, &self.key);
    }
}
