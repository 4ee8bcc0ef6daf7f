//! What a key's stream and the broadcast stream hold: their ends, whether
//! they still cover a client's position, and pages of entries to replay or
//! catch up from.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Inner;
use super::ids::{EntryId, Position};
use crate::event::{EncodedEvent, MessageEvent};
use crate::registry::broker::ResetReason;
use crate::registry::reset;
use crate::sync::lock;

/// The most entries one read of a stream's history takes: the reader's
/// catch-up reads pages of this many, so its memory is bounded whatever the
/// history length.
pub(super) const REPLAY_PAGE: usize = 500;

/// About how many bytes of events a resuming subscription holds at a time:
/// it reads its history in pages sized to this (see [`replay_page_entries`]),
/// each read when the one before has been handed to its connection, so a
/// client that resumes and reads slowly pins one page, not the history.
pub(super) const REPLAY_PAGE_BYTES: usize = 64 * 1024;

/// The entries the next replay page asks for, after a page whose largest
/// event was `largest` bytes (`None` before the first page, which asks for
/// few): as many as fit [`REPLAY_PAGE_BYTES`], at least one, at most
/// [`REPLAY_PAGE`].
pub(super) fn replay_page_entries(largest: Option<usize>) -> usize {
    match largest {
        None => 16,
        Some(largest) => (REPLAY_PAGE_BYTES / largest.max(1)).clamp(1, REPLAY_PAGE),
    }
}

/// How long a "not covered" waits before it is asked again on a cluster
/// (see [`Inner::settled_for_recheck`]): about a cluster's time to settle
/// after a node rejoins.
const RECHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl Inner {
    /// Readies a "not covered" to be asked again, and says whether to: on a
    /// cluster, a read during a failover may reach a node that is behind (a
    /// replica still syncing, an old master restarted empty that still
    /// claims its slots for a moment), and a reset sent on its word skips
    /// what the real master holds; so the slot maps are refreshed and the
    /// check waits [`RECHECK_AFTER`]. What is really gone is gone then too.
    /// Off a cluster the one node's answer is the truth: `false`, at once.
    pub(super) async fn settled_for_recheck(&self) -> bool {
        if !self.client.is_cluster() {
            return false;
        }
        self.commands.refresh_topology();
        self.replays.refresh_topology();
        tokio::time::sleep(RECHECK_AFTER).await;
        true
    }

    /// The answer of a coverage check (`ask`), asked once more before a
    /// "not covered" is believed where [`settled_for_recheck`](Self::settled_for_recheck)
    /// says to.
    pub(super) async fn confirmed_cover<F>(
        &self,
        ask: impl Fn() -> F,
    ) -> redis::RedisResult<Result<(), ResetReason>>
    where
        F: Future<Output = redis::RedisResult<Result<(), ResetReason>>>,
    {
        match ask().await? {
            Err(_) if self.settled_for_recheck().await => ask().await,
            covered => Ok(covered),
        }
    }

    /// The last entry id of `stream` (0-0 when it is empty or missing).
    pub(super) async fn last_id(&self, stream: &str) -> redis::RedisResult<EntryId> {
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
    pub(super) async fn last_broadcast_id(&self) -> redis::RedisResult<EntryId> {
        match self.last_id(&self.broadcast_stream).await {
            Err(error) if is_wrong_type(&error) => {
                self.mark_broadcast_unreadable();
                Ok(EntryId::default())
            }
            other => other,
        }
    }

    pub(super) fn mark_broadcast_unreadable(&self) {
        if !self.broadcast_unreadable.swap(true, Ordering::SeqCst) {
            tracing::error!(
                stream = &*self.broadcast_stream,
                "SSE Redis broadcast key is not a stream: broadcasts are not delivered until it \
                 is deleted and the instance restarted"
            );
        }
    }

    /// The reset signal for `reason` (counted in the metrics), without an id.
    pub(super) fn reset_signal(&self, reason: ResetReason) -> MessageEvent {
        reset::reset_signal(&self.config.reset_event_type, reason, None)
    }

    /// The reset signal with `position` as its id.
    pub(super) fn reset_event(&self, reason: ResetReason, position: Position) -> EncodedEvent {
        self.reset_signal(reason)
            .encode_with_id(&position.to_string())
    }

    /// Where the key's stream and the broadcast stream end now.
    pub(super) async fn current_position(&self, stream: &str) -> redis::RedisResult<Position> {
        Ok(Position {
            key: self.last_id(stream).await?,
            broadcast: self.last_broadcast_id().await?,
        })
    }

    /// Whether the history of `stream` still holds everything after `last`:
    /// `last` is `0-0` and nothing was ever trimmed, or `last`'s own entry is
    /// still there, or it is the newest entry ever written. Otherwise the
    /// reason to reset: `unknown_id` for an id beyond or inside the stream
    /// that it does not hold, `history_expired` for one trimmed away.
    pub(super) async fn covers(
        &self,
        stream: &str,
        last: EntryId,
    ) -> redis::RedisResult<Result<(), ResetReason>> {
        self.replays
            .read(
                |mut connection| async move { self.covers_on(&mut connection, stream, last).await },
            )
            .await
    }

    /// [`covers`](Self::covers), on `connection`.
    async fn covers_on(
        &self,
        connection: &mut super::connection::Connection,
        stream: &str,
        last: EntryId,
    ) -> redis::RedisResult<Result<(), ResetReason>> {
        let exists: bool = redis::cmd("EXISTS")
            .arg(stream)
            .query_async(connection)
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
            .query_async(connection)
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
        if before_everything {
            // From before everything: covered while nothing was ever trimmed.
            return Ok(if count_field("entries-added") == count_field("length") {
                Ok(())
            } else {
                Err(ResetReason::HistoryExpired)
            });
        }
        // The client's own last entry. Trimming removes the oldest entries
        // first, so while it is there, nothing after it was removed. Where it
        // is gone, entries after it may be too (trimmed, or lost with a
        // master that failed before replicating them): reset, never a gap.
        let own: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(last.to_string())
            .arg(last.to_string())
            .query_async(&mut *connection)
            .await?;
        if !own.is_empty() || last == generated {
            // There, or the newest ever written (emptied by age since):
            // nothing after it can be missing.
            return Ok(Ok(()));
        }
        let first: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(connection)
            .await?;
        let first = first.first().and_then(|(id, _)| EntryId::parse(id));
        Ok(Err(match first {
            // Inside what the stream holds, yet not in it: an id it never
            // had (made up, or lost in a failover that dropped it).
            Some(first) if last > first => ResetReason::UnknownId,
            _ => ResetReason::HistoryExpired,
        }))
    }

    /// Whether the key's history and the broadcast history both still hold
    /// everything after `last`.
    pub(super) async fn covers_position(
        &self,
        stream: &str,
        last: Position,
    ) -> redis::RedisResult<Result<(), ResetReason>> {
        match self.covers(stream, last.key).await? {
            Ok(()) => self.covers(&self.broadcast_stream, last.broadcast).await,
            not_covered => Ok(not_covered),
        }
    }

    /// Up to `count` entries of `stream` after `last`: the events among
    /// them, and the id of the last entry read (events or not), to continue
    /// from.
    pub(super) async fn page_after(
        &self,
        stream: &str,
        last: EntryId,
        count: usize,
    ) -> redis::RedisResult<(Vec<(EntryId, Bytes)>, Option<EntryId>)> {
        let entries: Vec<(String, Vec<Vec<u8>>)> = self
            .replays
            .read(|mut connection| async move {
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(format!("({last}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        let read_to = entries.last().and_then(|(id, _)| EntryId::parse(id));
        let events = entries
            .into_iter()
            .filter_map(|(id, fields)| Some((EntryId::parse(&id)?, stored_fields(&fields)?)))
            .collect();
        Ok((events, read_to))
    }

    /// Hands on `stream`'s entries after `from`, read page by page from the
    /// stream itself (the live messages kept meanwhile are the caller's).
    pub(super) async fn deliver_from_stream(
        &self,
        stream: &str,
        mut from: EntryId,
    ) -> redis::RedisResult<()> {
        loop {
            let (entries, read_to) = self.page_after(stream, from, REPLAY_PAGE).await?;
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
                    key.flush();
                    return Ok(());
                }
            }
        }
    }
}

/// Whether Redis refused a command because a key holds another type (also
/// from inside a script, where the error comes wrapped).
pub(super) fn is_wrong_type(error: &redis::RedisError) -> bool {
    error.code() == Some("WRONGTYPE") || error.to_string().contains("WRONGTYPE")
}

/// The broker's field (`e`: the event's encoded fields) of an entry, or
/// `None` for an entry another program wrote.
pub(super) fn stored_fields(fields: &[Vec<u8>]) -> Option<Bytes> {
    fields.chunks(2).find_map(|pair| match pair {
        [name, value] if name == b"e" => Some(Bytes::copy_from_slice(value)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_page_holds_about_64_kib_whatever_the_events_size() {
        assert_eq!(replay_page_entries(None), 16);
        assert_eq!(
            replay_page_entries(Some(100)),
            500,
            "small events: a full page"
        );
        assert_eq!(
            replay_page_entries(Some(12 * 1024)),
            5,
            "12 KB events: five"
        );
        assert_eq!(
            replay_page_entries(Some(1 << 20)),
            1,
            "one event larger than a page"
        );
        assert_eq!(replay_page_entries(Some(0)), 500);
    }
}
