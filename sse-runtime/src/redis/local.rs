//! The keys subscribed on this instance: each one's local fan-out and the
//! position delivered in its stream, in buckets that follow the bells.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::fanout::{Delivery, DeliveryKind, Fanout};
use super::ids::{EntryId, Position};
use super::{BUCKETS, fixed_hash};
use crate::event::MessageEvent;

pub(super) struct Fanouts {
    /// Stream key → local fan-out and the position delivered in that
    /// stream, in [`BUCKETS`] buckets.
    pub(super) buckets: Vec<HashMap<Arc<str>, Local>>,
    /// The last entry of each bucket's bell the reader took; `None` while
    /// the bucket has no key here.
    pub(super) bells_at: Vec<Option<EntryId>>,
    pub(super) cluster: bool,
    /// The last broadcast entry handed to the fan-outs; `None` while no key
    /// is subscribed here (the next subscription reads it from Redis).
    pub(super) broadcast_at: Option<EntryId>,
}

impl Fanouts {
    pub(super) fn new(cluster: bool) -> Fanouts {
        Fanouts {
            buckets: (0..BUCKETS).map(|_| HashMap::new()).collect(),
            bells_at: vec![None; BUCKETS],
            cluster,
            broadcast_at: None,
        }
    }

    /// The bucket of `stream`: on a cluster its hash tag, so one bucket's
    /// keys share a slot; else a fixed hash.
    pub(super) fn bucket_of(&self, stream: &str) -> usize {
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

    pub(super) fn get(&self, stream: &str) -> Option<&Local> {
        self.buckets[self.bucket_of(stream)].get(stream)
    }

    pub(super) fn get_mut(&mut self, stream: &str) -> Option<&mut Local> {
        let bucket = self.bucket_of(stream);
        self.buckets[bucket].get_mut(stream)
    }

    pub(super) fn remove(&mut self, stream: &str) -> Option<Local> {
        let bucket = self.bucket_of(stream);
        self.buckets[bucket].remove(stream)
    }

    pub(super) fn len(&self) -> usize {
        self.buckets.iter().map(HashMap::len).sum()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Local> {
        self.buckets.iter().flat_map(HashMap::values)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Local> {
        self.buckets.iter_mut().flat_map(HashMap::values_mut)
    }

    /// Drops the fan-outs of `buckets`' keys nobody here listens to.
    pub(super) fn forget_idle_in(&mut self, buckets: impl Iterator<Item = usize>) {
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

pub(super) struct Local {
    pub(super) fanout: Arc<Fanout>,
    /// The last entry delivered for this key.
    pub(super) read_from: EntryId,
    /// While the key's first subscription catches up from its stream, what
    /// the reader took for it from the bell, handed on after the catch-up.
    pub(super) catching_up: Option<Vec<(EntryId, Bytes)>>,
    /// Deliveries made but not yet handed to the fan-out: a reader's reply
    /// goes to the subscribers as one batch ([`Local::flush`]).
    pub(super) staged: Vec<Delivery>,
}

impl Local {
    /// The fan-out's position after the last delivery.
    pub(super) fn position(&self, broadcast_at: Option<EntryId>) -> Position {
        Position {
            key: self.read_from,
            broadcast: broadcast_at.unwrap_or_default(),
        }
    }

    /// Stages a delivery; [`flush`](Self::flush) hands the staged ones on.
    pub(super) fn push(&mut self, kind: DeliveryKind, position: Position, fields: &Bytes) {
        self.staged.push(Delivery {
            kind,
            position,
            event: MessageEvent::assemble_with_id(&position.to_string(), fields),
        });
    }

    /// Stages the reset signal, stamped with `position`.
    pub(super) fn push_reset(&mut self, position: Position, reset: &MessageEvent) {
        self.staged.push(Delivery {
            kind: DeliveryKind::Reset,
            position,
            event: reset.encode_with_id(&position.to_string()),
        });
    }

    /// Hands the staged deliveries to the subscribers, in order, as one batch.
    pub(super) fn flush(&mut self) {
        if !self.staged.is_empty() {
            self.fanout.push_all(self.staged.drain(..));
        }
    }

    /// Hands on the key's entry `id` unless it was delivered already.
    pub(super) fn deliver(&mut self, id: EntryId, fields: &Bytes, broadcast_at: Option<EntryId>) {
        if id > self.read_from {
            self.read_from = id;
            self.push(DeliveryKind::Entry, self.position(broadcast_at), fields);
        }
    }
}
