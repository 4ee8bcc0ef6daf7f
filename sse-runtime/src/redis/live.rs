//! Live delivery: the messages the links receive, handed to the keys they
//! are for, and each key's catch-up from its stream when it missed some.
//!
//! PUB/SUB delivers at most once: a message is lost when its link breaks,
//! when its slot moves to another node, or while the channel is not
//! subscribed yet. Each message carries its entry's id and the id of the
//! entry before it in the stream (`<entry before> <entry>\n<the event's
//! fields>`, as the send script writes it), so a key that receives
//! an entry whose predecessor it did not deliver catches up from its
//! stream, or gets the reset signal where the stream no longer holds what
//! it missed. A lost link or a moved channel marks its keys, which catch up
//! the same way once the channel is confirmed again: so a lost message is
//! found even when nothing follows it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::Inner;
use super::ids::EntryId;
use super::interest::Request;
use super::links::Pushed;
use super::local::{Channel, LiveEntry, Received};
use crate::registry::broker::ResetReason;
use crate::sync::lock;

/// The most messages handled under one look at the local keys.
const DISPATCH_BATCH: usize = 1024;

/// How long a catch-up that failed (Redis unreachable) waits to try again.
const CATCH_UP_RETRY: Duration = Duration::from_millis(200);

/// Parses a live message: `<entry before> <entry>\n<the event's fields>`,
/// the entry before written as its distance back from the entry
/// (`<milliseconds back>-<its sequence>`; see the send script).
pub(super) fn parse_live_message(message: &[u8]) -> Option<LiveEntry> {
    let line_end = message.iter().position(|byte| *byte == b'\n')?;
    let line = std::str::from_utf8(&message[..line_end]).ok()?;
    let (before, id) = line.split_once(' ')?;
    let id = EntryId::parse(id)?;
    Some(LiveEntry {
        before: id.back_by(EntryId::parse(before)?)?,
        id,
        fields: Bytes::copy_from_slice(&message[line_end + 1..]),
    })
}

/// Hands what the links receive to the local keys, in order, a batch at a
/// time (each key's deliveries of a batch reach its subscribers as one).
/// Runs while the broker lives.
pub(super) async fn dispatch_loop(
    inner: Weak<Inner>,
    mut received: UnboundedReceiver<Pushed>,
    interest: UnboundedSender<Request>,
) {
    let mut batch = Vec::with_capacity(DISPATCH_BATCH);
    while received.recv_many(&mut batch, DISPATCH_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let to_catch_up = inner.dispatch(batch.drain(..), &interest);
        for stream in to_catch_up {
            tokio::spawn(catch_up_key(Arc::downgrade(&inner), stream));
        }
    }
}

/// The channel name and the bytes that follow it in a push.
fn channel_and_rest(data: &[Value]) -> Option<(&[u8], Option<&[u8]>)> {
    let channel = match data.first()? {
        Value::BulkString(channel) => channel.as_slice(),
        _ => return None,
    };
    let rest = match data.get(1) {
        Some(Value::BulkString(rest)) => Some(rest.as_slice()),
        _ => None,
    };
    Some((channel, rest))
}

impl Inner {
    /// Handles one batch of what the links received; answers the keys that
    /// must catch up from their streams.
    fn dispatch(
        &self,
        batch: impl Iterator<Item = Pushed>,
        interest: &UnboundedSender<Request>,
    ) -> Vec<Arc<str>> {
        let mut local = lock(&self.local);
        let broadcast_at = local.broadcast_at;
        let mut touched: Vec<String> = Vec::new();
        let mut to_catch_up = Vec::new();
        for (link, PushInfo { kind, data }) in batch {
            if kind == PushKind::Disconnection {
                let _ = interest.send(Request::LinkLost(link));
                continue;
            }
            let Some((channel, rest)) = channel_and_rest(&data) else {
                continue;
            };
            let Ok(channel) = std::str::from_utf8(channel) else {
                continue;
            };
            let Some(key) = local.get_mut(channel) else {
                continue;
            };
            match kind {
                PushKind::SMessage if key.channel == Channel::Confirmed(link) => {
                    let Some(entry) = rest.and_then(parse_live_message) else {
                        tracing::warn!(
                            channel,
                            "SSE Redis live message not in the broker's layout (published by \
                             another program?); skipped"
                        );
                        continue;
                    };
                    if key.receive(entry, broadcast_at) == Received::Gap {
                        to_catch_up.push(Arc::from(channel));
                    }
                    if touched.last().is_none_or(|last| last != channel) {
                        touched.push(channel.to_owned());
                    }
                }
                PushKind::SSubscribe => {
                    // Confirmed again after a lost link or a moved slot:
                    // what was published meanwhile came to no link of ours.
                    key.missed |= key.channel != Channel::Joining;
                    key.channel = Channel::Confirmed(link);
                    if key.start_catch_up_if_missed() {
                        to_catch_up.push(Arc::from(channel));
                    }
                }
                PushKind::SUnsubscribe if key.channel == Channel::Confirmed(link) => {
                    // Not asked for: the slot moved (a failover, a reshard).
                    key.channel = Channel::Lost;
                    key.missed = true;
                    let _ = interest.send(Request::Dropped(Arc::from(channel)));
                }
                _ => {}
            }
        }
        for stream in touched {
            if let Some(key) = local.get_mut(&stream) {
                key.flush();
            }
        }
        to_catch_up
    }

    /// Gives the subscribers of `stream` here the reset signal for `reason`
    /// (logged); with `move_to`, the key goes on from there.
    pub(super) fn reset_key(&self, stream: &str, reason: ResetReason, move_to: Option<EntryId>) {
        tracing::warn!(
            stream,
            reason = reason.as_str(),
            "SSE Redis instance missed entries of a key (trimmed while it was away, or lost in \
             a restart or a failover); its subscribers get the reset signal"
        );
        let reset = self.reset_signal(reason);
        let mut local = lock(&self.local);
        let broadcast_at = local.broadcast_at;
        if let Some(key) = local.get_mut(stream) {
            if let Some(position) = move_to {
                key.read_from = key.read_from.max(position);
            }
            key.push_reset(key.position(broadcast_at), &reset);
            key.flush();
        }
    }

    /// One round of a key's catch-up: everything after the last entry
    /// delivered, from the stream itself; or the reset signal where the
    /// stream no longer holds it.
    async fn catch_up_once(&self, stream: &str, read_from: EntryId) -> redis::RedisResult<()> {
        let covered = self
            .confirmed_cover(|| self.covers(stream, read_from))
            .await?;
        match covered {
            Ok(()) => self.deliver_from_stream(stream, read_from).await,
            Err(ResetReason::UnknownId) => {
                // The last entry delivered is gone while later ones are
                // there: lost with a failed master, with whatever else it
                // had not replicated. Subscribers are told, then get
                // everything Redis kept after it.
                self.reset_key(stream, ResetReason::UnknownId, None);
                self.deliver_from_stream(stream, read_from).await
            }
            Err(reason) => {
                // Never behind where the key was: a stream found missing
                // would put it at 0-0, from which a resume replays all.
                let position = self.last_id(stream).await?.max(read_from);
                self.reset_key(stream, reason, Some(position));
                Ok(())
            }
        }
    }
}

/// Catches `stream` up from its stream until the live messages kept
/// meanwhile follow on; retried while Redis is unreachable, for as long as
/// the key has subscribers here.
pub(super) async fn catch_up_key(inner: Weak<Inner>, stream: Arc<str>) {
    loop {
        let Some(broker) = inner.upgrade() else {
            return;
        };
        let Some(read_from) = lock(&broker.local).get(&stream).map(|key| key.read_from) else {
            return;
        };
        if let Err(error) = broker.catch_up_once(&stream, read_from).await {
            tracing::warn!(%error, stream = &*stream, "SSE Redis catch-up failed; retrying");
            crate::telemetry::redis_reader_error();
            drop(broker);
            tokio::time::sleep(CATCH_UP_RETRY).await;
            continue;
        }
        let mut local = lock(&broker.local);
        let broadcast_at = local.broadcast_at;
        let Some(key) = local.get_mut(&stream) else {
            return;
        };
        let followed = key.hand_on_kept(broadcast_at);
        key.flush();
        if followed == Received::Taken && !key.start_catch_up_if_missed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_message_reads_back_its_ids_and_fields() {
        let entry = parse_live_message(b"1-3 1700000000002-5\ndata: a\ndata: b\n\n").unwrap();
        assert_eq!(entry.before, EntryId::new(1_700_000_000_001, 3));
        assert_eq!(entry.id, EntryId::new(1_700_000_000_002, 5));
        assert_eq!(&entry.fields[..], b"data: a\ndata: b\n\n");
        let first = parse_live_message(b"1700000000002-0 1700000000002-0\n").unwrap();
        assert!(first.before.is_start(), "a stream's first entry");
        for bad in [
            &b""[..],
            b"1-0\n",
            b"1-0 x\n",
            b"1-0 2-0",
            b"\xff 2-0\n",
            b"3-0 2-0\n",
        ] {
            assert!(parse_live_message(bad).is_none(), "{bad:?}");
        }
    }
}
