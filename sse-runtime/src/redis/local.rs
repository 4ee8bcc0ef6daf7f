//! The keys subscribed on this instance: each one's local fan-out, the
//! position delivered in its stream, and the state of its live channel.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::fanout::{Delivery, DeliveryKind, Fanout};
use super::ids::{EntryId, Position};
use crate::event::MessageEvent;

pub(super) struct Fanouts {
    /// Stream key (which is also its channel's name) → local fan-out.
    keys: HashMap<Arc<str>, Local>,
    /// The last broadcast entry handed to the fan-outs; `None` while no key
    /// is subscribed here (the next subscription reads it from Redis).
    pub(super) broadcast_at: Option<EntryId>,
}

impl Fanouts {
    pub(super) fn new() -> Fanouts {
        Fanouts {
            keys: HashMap::new(),
            broadcast_at: None,
        }
    }

    pub(super) fn get(&self, stream: &str) -> Option<&Local> {
        self.keys.get(stream)
    }

    pub(super) fn get_mut(&mut self, stream: &str) -> Option<&mut Local> {
        self.keys.get_mut(stream)
    }

    pub(super) fn insert(&mut self, stream: Arc<str>, local: Local) -> &mut Local {
        self.keys.entry(stream).or_insert(local)
    }

    pub(super) fn remove(&mut self, stream: &str) -> Option<Local> {
        self.keys.remove(stream)
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys that are open (have a position): a key still opening has
    /// no subscription to count yet.
    pub(super) fn open_keys(&self) -> impl Iterator<Item = &Local> {
        self.keys.values().filter(|local| local.ready)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Local> {
        self.keys.values_mut()
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = (Arc<str>, Local)> + '_ {
        self.keys.drain()
    }

    /// Drops the fan-outs of keys nobody here listens to, and answers
    /// their channels, to leave.
    pub(super) fn forget_idle(&mut self) -> Vec<Arc<str>> {
        let mut idle = Vec::new();
        self.keys.retain(|stream, local| {
            let keep = local.fanout.subscriber_count() > 0;
            if !keep {
                idle.push(Arc::clone(stream));
            }
            keep
        });
        if self.keys.is_empty() {
            // Nobody reads broadcasts here now: the next subscription
            // starts from the broadcast stream's end, not from here.
            self.broadcast_at = None;
        }
        idle
    }
}

/// Where a key's live messages come from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Channel {
    /// Its subscription is not confirmed yet.
    Joining,
    /// Confirmed by this link: messages from it count, from others not.
    Confirmed(u64),
    /// Its link broke, or its slot moved: messages may have been missed
    /// since. The next confirmation catches the key up from its stream.
    Lost,
}

pub(super) struct Local {
    pub(super) fanout: Arc<Fanout>,
    /// The last entry delivered for this key (meaningless until `ready`).
    pub(super) read_from: EntryId,
    /// Whether `read_from` is known: set once the first subscription read
    /// the stream's end after its channel was confirmed.
    pub(super) ready: bool,
    pub(super) channel: Channel,
    /// Set when the channel was lost: the key must catch up from its stream
    /// once the channel is confirmed again.
    pub(super) missed: bool,
    /// While the key joins or catches up from its stream, the live messages
    /// received meanwhile (each with the entry before it), handed on after.
    pub(super) catching_up: Option<Vec<LiveEntry>>,
    /// Deliveries made but not yet handed to the fan-out: what one look at
    /// the received messages found goes to the subscribers as one batch
    /// ([`Local::flush`]).
    pub(super) staged: Vec<Delivery>,
}

/// One live message: an entry, the entry before it in the stream (`0-0` for
/// a stream's first), and the event's fields.
#[derive(Debug, Clone)]
pub(super) struct LiveEntry {
    pub(super) before: EntryId,
    pub(super) id: EntryId,
    pub(super) fields: Bytes,
}

/// What a live message did to its key.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// Delivered, passed over as delivered already, or kept until the key
    /// has caught up.
    Taken,
    /// The entry before it is not the last one delivered: the key missed
    /// some and must catch up from its stream (the message is kept).
    Gap,
}

impl Local {
    /// A key joining: no position yet, live messages kept until it has one.
    pub(super) fn joining(buffer: usize) -> Local {
        Local {
            fanout: Fanout::new(buffer),
            read_from: EntryId::default(),
            ready: false,
            channel: Channel::Joining,
            missed: false,
            catching_up: Some(Vec::new()),
            staged: Vec::new(),
        }
    }

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

    /// A live message: delivered when it follows the last entry delivered
    /// (or opens a stream that was empty or gone: nothing was between),
    /// passed over when delivered already, kept while the key catches up.
    pub(super) fn receive(&mut self, entry: LiveEntry, broadcast_at: Option<EntryId>) -> Received {
        if let Some(pending) = &mut self.catching_up {
            pending.push(entry);
            return Received::Taken;
        }
        if entry.id <= self.read_from {
            return Received::Taken;
        }
        if entry.before == self.read_from || entry.before.is_start() {
            self.deliver(entry.id, &entry.fields, broadcast_at);
            return Received::Taken;
        }
        self.catching_up = Some(vec![entry]);
        Received::Gap
    }

    /// Whether the key must catch up now: its channel is confirmed again
    /// after it was lost, the key has a position, and no catch-up runs. If
    /// so, it is marked as catching up (live messages are kept from now).
    pub(super) fn start_catch_up_if_missed(&mut self) -> bool {
        let due = self.missed
            && self.ready
            && self.catching_up.is_none()
            && matches!(self.channel, Channel::Confirmed(_));
        if due {
            self.begin_catch_up();
        }
        due
    }

    /// Starts catching up: nothing is missed any more (the catch-up reads
    /// it), and live messages are kept until it is done.
    pub(super) fn begin_catch_up(&mut self) {
        self.missed = false;
        self.catching_up.get_or_insert_with(Vec::new);
    }

    /// After joining or catching up: hands on the live messages kept
    /// meanwhile, in order, while each follows the last one delivered.
    /// `Gap` when one does not (it and those after it stay kept, and the
    /// key is still catching up); else the key takes live messages directly
    /// again.
    pub(super) fn hand_on_kept(&mut self, broadcast_at: Option<EntryId>) -> Received {
        let kept = self.catching_up.take().unwrap_or_default();
        let mut kept = kept.into_iter();
        while let Some(entry) = kept.next() {
            if self.receive(entry, broadcast_at) == Received::Gap {
                if let Some(pending) = &mut self.catching_up {
                    pending.extend(kept);
                }
                return Received::Gap;
            }
        }
        Received::Taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(before: u64, id: u64) -> LiveEntry {
        LiveEntry {
            before: EntryId::new(before, 0),
            id: EntryId::new(id, 0),
            fields: Bytes::from_static(b"data: x\n"),
        }
    }

    fn ready(at: u64) -> Local {
        let mut local = Local::joining(16);
        local.catching_up = None;
        local.ready = true;
        local.read_from = EntryId::new(at, 0);
        local
    }

    #[test]
    fn a_message_that_follows_the_last_delivered_is_delivered_and_one_that_does_not_is_a_gap() {
        let mut local = ready(1);
        assert_eq!(local.receive(entry(1, 2), None), Received::Taken);
        assert_eq!(local.read_from, EntryId::new(2, 0));
        assert_eq!(
            local.receive(entry(2, 2), None),
            Received::Taken,
            "a repeat"
        );
        assert_eq!(
            local.receive(entry(3, 4), None),
            Received::Gap,
            "3 was missed"
        );
        assert_eq!(local.read_from, EntryId::new(2, 0), "nothing skipped");
        assert_eq!(
            local.receive(entry(4, 5), None),
            Received::Taken,
            "kept while catching up"
        );
        assert_eq!(local.catching_up.as_ref().map(Vec::len), Some(2));
        assert_eq!(local.staged.len(), 1);
    }

    #[test]
    fn a_stream_that_was_empty_or_gone_opens_with_no_gap() {
        let mut local = ready(7);
        assert_eq!(local.receive(entry(0, 9), None), Received::Taken);
        assert_eq!(local.read_from, EntryId::new(9, 0));
    }

    #[test]
    fn kept_messages_are_handed_on_until_one_does_not_follow() {
        let mut local = Local::joining(16);
        for (before, id) in [(1, 2), (2, 3), (5, 6), (6, 7)] {
            local.receive(entry(before, id), None);
        }
        local.read_from = EntryId::new(2, 0);
        local.ready = true;
        assert_eq!(local.hand_on_kept(None), Received::Gap, "4 and 5 missed");
        assert_eq!(local.read_from, EntryId::new(3, 0));
        let kept: Vec<_> = local
            .catching_up
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(kept, [EntryId::new(6, 0), EntryId::new(7, 0)]);
        // Caught up from the stream to 5: the rest follows.
        local.read_from = EntryId::new(5, 0);
        assert_eq!(local.hand_on_kept(None), Received::Taken);
        assert_eq!(local.read_from, EntryId::new(7, 0));
        assert!(local.catching_up.is_none());
    }
}
