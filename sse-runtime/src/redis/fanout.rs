//! The local fan-out of one key for the Redis broker: a bounded ring of what
//! the reader delivered, and subscribers that are cursors into it.
//!
//! The reader appends once per entry and wakes whoever waits; each subscriber
//! copies out, under one lock, everything after its cursor. So a burst of N
//! entries costs a subscriber one lock and N clones of shared bytes, where a
//! broadcast channel cost it N receives, each with its own locking and
//! counting. (The in-memory broker works the same way; there the ring is also
//! the history.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use crate::event::EncodedEvent;
use crate::redis::ids::Position;
use crate::registry::waiters::Waiters;

/// What the reader hands a key's local subscribers: an event, stamped with
/// the fan-out's position after it (a subscriber whose own position differs
/// restamps it with `EncodedEvent::with_id`).
#[derive(Clone)]
pub(crate) struct Delivery {
    pub(crate) kind: DeliveryKind,
    pub(crate) position: Position,
    pub(crate) event: EncodedEvent,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum DeliveryKind {
    /// An entry of the key's own stream.
    Entry,
    /// An entry of the broadcast stream.
    Broadcast,
    /// The reader found that entries after the last one it delivered are
    /// gone (trimmed while it lagged, or lost in a Redis restart): the reset
    /// signal, positioned at the streams' current ends.
    Reset,
}

/// One key's ring and its waiting subscribers.
pub(crate) struct Fanout {
    state: Mutex<State>,
    next_subscriber: AtomicU64,
}

struct State {
    ring: VecDeque<Delivery>,
    /// The position of `ring[0]`; positions count every delivery ever pushed.
    first: u64,
    capacity: usize,
    waiting: Waiters,
    subscribers: usize,
    /// Of those, the ones that take broadcasts: one per stream.
    streams: usize,
    closed: bool,
}

/// What a subscriber's next look at the ring found.
pub(crate) enum Next {
    /// Deliveries were copied into the caller's buffer.
    Some,
    /// Deliveries it had not read were overwritten: it was moved to the end.
    Lagged,
    /// The key was closed (shutdown, or a key of the wrong type).
    Closed,
}

impl Fanout {
    /// A fan-out keeping at most `capacity` deliveries a subscriber may be behind by.
    pub(crate) fn new(capacity: usize) -> Arc<Fanout> {
        Arc::new(Fanout {
            state: Mutex::new(State {
                ring: VecDeque::new(),
                first: 0,
                capacity: capacity.max(1),
                waiting: Waiters::default(),
                subscribers: 0,
                streams: 0,
                closed: false,
            }),
            next_subscriber: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Appends `delivery` and wakes every waiting subscriber.
    #[cfg(test)]
    pub(crate) fn push(&self, delivery: Delivery) {
        self.push_all(std::iter::once(delivery));
    }

    /// Appends `deliveries` in order and wakes the waiting subscribers once,
    /// so a reader's whole reply reaches each subscriber as one batch (one
    /// wake-up, one write) rather than one by one.
    pub(crate) fn push_all(&self, deliveries: impl IntoIterator<Item = Delivery>) {
        let mut state = self.lock();
        for delivery in deliveries {
            if state.ring.len() == state.capacity {
                state.ring.pop_front();
                state.first += 1;
            }
            state.ring.push_back(delivery);
        }
        state.waiting.wake_all();
    }

    /// Ends every subscription of this key.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.waiting.wake_all();
    }

    /// A cursor after everything pushed so far, for a subscription that
    /// takes broadcasts (a stream of its own) or not (a multi-key stream's
    /// other keys).
    pub(crate) fn subscribe(self: &Arc<Self>, with_broadcasts: bool) -> Cursor {
        let mut state = self.lock();
        state.subscribers += 1;
        state.streams += usize::from(with_broadcasts);
        Cursor {
            next: state.first + state.ring.len() as u64,
            id: self.next_subscriber.fetch_add(1, Ordering::Relaxed),
            with_broadcasts,
            fanout: Arc::clone(self),
        }
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        self.lock().subscribers
    }

    /// The subscriptions that take broadcasts.
    pub(crate) fn stream_count(&self) -> usize {
        self.lock().streams
    }
}

/// One subscriber's place in a key's ring. Dropping it unsubscribes.
pub(crate) struct Cursor {
    fanout: Arc<Fanout>,
    /// The position of the next delivery to read.
    next: u64,
    id: u64,
    with_broadcasts: bool,
}

impl Cursor {
    /// Copies every delivery after the cursor into `into`, or waits for one.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Delivery>,
    ) -> Poll<Next> {
        let mut state = self.fanout.lock();
        let end = state.first + state.ring.len() as u64;
        if self.next < state.first {
            self.next = end;
            return Poll::Ready(Next::Lagged);
        }
        if self.next < end {
            let from = (self.next - state.first) as usize;
            into.extend(state.ring.range(from..).cloned());
            self.next = end;
            return Poll::Ready(Next::Some);
        }
        if state.closed {
            return Poll::Ready(Next::Closed);
        }
        state.waiting.register(self.id, cx);
        Poll::Pending
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        let mut state = self.fanout.lock();
        state.subscribers -= 1;
        state.streams -= usize::from(self.with_broadcasts);
        state.waiting.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    use crate::redis::ids::EntryId;

    fn event(n: u64) -> Delivery {
        Delivery {
            kind: DeliveryKind::Entry,
            position: Position {
                key: EntryId::new(n, 0),
                broadcast: EntryId::default(),
            },
            event: crate::MessageEvent::new(n.to_string()).encode(),
        }
    }

    fn ids(batch: &VecDeque<Delivery>) -> Vec<u64> {
        batch
            .iter()
            .map(|delivery| delivery.position.key.millis())
            .collect()
    }

    #[test]
    fn a_cursor_reads_everything_after_it_in_one_look_then_waits() {
        let fanout = Fanout::new(8);
        fanout.push(event(0));
        let mut cursor = fanout.subscribe(true);
        let mut cx = Context::from_waker(Waker::noop());
        let mut batch = VecDeque::new();
        assert!(
            cursor.poll_next(&mut cx, &mut batch).is_pending(),
            "only what comes after it"
        );
        for n in 1..4 {
            fanout.push(event(n));
        }
        assert!(matches!(
            cursor.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Some)
        ));
        assert_eq!(ids(&batch), [1, 2, 3]);
        assert!(cursor.poll_next(&mut cx, &mut batch).is_pending());
        assert_eq!(fanout.subscriber_count(), 1);
        drop(cursor);
        assert_eq!(fanout.subscriber_count(), 0);
    }

    #[test]
    fn a_cursor_overtaken_by_the_ring_is_told_and_moved_to_the_end() {
        let fanout = Fanout::new(4);
        let mut cursor = fanout.subscribe(true);
        for n in 0..10 {
            fanout.push(event(n));
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut batch = VecDeque::new();
        assert!(matches!(
            cursor.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Lagged)
        ));
        assert!(batch.is_empty());
        fanout.push(event(10));
        assert!(matches!(
            cursor.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Some)
        ));
        assert_eq!(ids(&batch), [10], "live again from the end");
        fanout.close();
        batch.clear();
        assert!(matches!(
            cursor.poll_next(&mut cx, &mut batch),
            Poll::Ready(Next::Closed)
        ));
    }
}
