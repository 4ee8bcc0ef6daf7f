//! The history ring of the in-memory broker: one per key, and one for the
//! broadcasts. Events in sequence order, bounded by count, bytes and age,
//! oldest evicted first, with the highest sequence evicted remembered so a
//! client that missed something is told.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::event::EncodedEvent;

/// What a retained event costs beyond its encoded bytes: its entry in the
/// ring (96 bytes) and its buffer's allocation overhead. Counted against the
/// byte bounds.
pub(crate) const ENTRY_OVERHEAD: usize = 128;

/// One retained event.
pub(crate) struct Entry {
    pub(crate) sequence: u64,
    pub(crate) at: Instant,
    pub(crate) event: EncodedEvent,
    /// A broadcast appended to a key's ring (a key-only subscription
    /// passes it).
    pub(crate) broadcast: bool,
}

impl Entry {
    /// What this entry counts against the byte bounds.
    pub(crate) fn cost(&self) -> usize {
        self.event.as_bytes().len() + ENTRY_OVERHEAD
    }
}

/// Events in sequence order, with what they cost and what was evicted.
pub(crate) struct HistoryRing {
    entries: VecDeque<Entry>,
    /// The highest sequence number evicted (or the watermark the ring
    /// started from): a cursor below it has missed something.
    evicted_through: u64,
    /// What `entries` cost (see [`Entry::cost`]).
    bytes: usize,
}

impl HistoryRing {
    /// An empty ring; a cursor below `evicted_through` has missed something.
    pub(crate) fn new(evicted_through: u64) -> HistoryRing {
        HistoryRing {
            entries: VecDeque::new(),
            evicted_through,
            bytes: 0,
        }
    }

    pub(crate) fn evicted_through(&self) -> u64 {
        self.evicted_through
    }

    /// The newest sequence number held, or evicted when none is held.
    pub(crate) fn last_sequence(&self) -> u64 {
        self.entries
            .back()
            .map_or(self.evicted_through, |entry| entry.sequence)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    pub(crate) fn back(&self) -> Option<&Entry> {
        self.entries.back()
    }

    /// Appends `entry`, first evicting the oldest entries until at most
    /// `max_len - 1` remain and it fits `max_bytes`. The new entry is kept
    /// whatever its size: it is what live subscribers wait for. Returns the
    /// bytes evicted.
    pub(crate) fn push(&mut self, entry: Entry, max_len: usize, max_bytes: usize) -> usize {
        let cost = entry.cost();
        let mut freed = 0;
        while self.entries.len() >= max_len || self.bytes + cost > max_bytes {
            match self.evict_oldest() {
                Some(bytes) => freed += bytes,
                None => break,
            }
        }
        self.bytes += cost;
        if self.entries.capacity() == 0 {
            // Most keys hold a few events: room for one, not the four a
            // first push would make.
            self.entries.reserve_exact(1);
        }
        self.entries.push_back(entry);
        freed
    }

    /// Evicts the oldest entry; returns what it cost, `None` when empty.
    pub(crate) fn evict_oldest(&mut self) -> Option<usize> {
        let oldest = self.entries.pop_front()?;
        self.evicted_through = self.evicted_through.max(oldest.sequence);
        self.bytes -= oldest.cost();
        Some(oldest.cost())
    }

    /// Evicts the entries at least `ttl` old at `now`; returns the bytes evicted.
    pub(crate) fn evict_expired(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut freed = 0;
        while self
            .entries
            .front()
            .is_some_and(|front| now.duration_since(front.at) >= ttl)
        {
            freed += self.evict_oldest().unwrap_or(0);
        }
        freed
    }

    /// The index of the first entry after sequence number `cursor`.
    /// A subscriber that keeps up is a few entries from the end, so look
    /// there first; one far behind gets a binary search.
    pub(crate) fn first_after(&self, cursor: u64) -> usize {
        const SCAN: usize = 8;
        let entries = &self.entries;
        let mut index = entries.len();
        while index > 0 && entries.len() - index < SCAN {
            if entries[index - 1].sequence <= cursor {
                return index;
            }
            index -= 1;
        }
        if index == 0 {
            return 0;
        }
        entries.partition_point(|entry| entry.sequence <= cursor)
    }

    /// The entries from index `from` on.
    pub(crate) fn starting_at(&self, from: usize) -> impl Iterator<Item = &Entry> {
        self.entries.range(from..)
    }

    /// The entries after sequence number `cursor`.
    pub(crate) fn after(&self, cursor: u64) -> impl Iterator<Item = &Entry> {
        self.starting_at(self.first_after(cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sequence: u64, at: Instant) -> Entry {
        Entry {
            sequence,
            at,
            event: crate::MessageEvent::new("x").encode(),
            broadcast: false,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_within_its_bounds_and_remembers_what_went() {
        let now = Instant::now();
        let mut ring = HistoryRing::new(0);
        let cost = entry(0, now).cost();
        for sequence in 1..=5 {
            ring.push(entry(sequence, now), 3, usize::MAX);
        }
        assert_eq!(
            (ring.len(), ring.evicted_through(), ring.last_sequence()),
            (3, 2, 5)
        );
        assert_eq!(
            ring.after(3).map(|e| e.sequence).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(ring.push(entry(6, now), 10, 2 * cost), 2 * cost);
        assert_eq!(ring.len(), 2);
        // One entry larger than the byte bound is still kept.
        assert_eq!(ring.push(entry(7, now), 10, 1), 2 * cost);
        assert_eq!(ring.len(), 1);
        let later = now + Duration::from_secs(10);
        assert_eq!(ring.evict_expired(later, Duration::from_secs(5)), cost);
        assert!(ring.is_empty());
        assert_eq!(ring.last_sequence(), 7);
    }
}
