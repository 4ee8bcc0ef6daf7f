//! The instance's readers: `XREAD BLOCK` over the bells of the buckets with
//! keys here (and the broadcast stream), fanning entries out; the gap checks
//! after an error, a reconnect or a pause.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::connection::Connection;
use super::fanout::DeliveryKind;
use super::history::{is_wrong_type, stored_fields};
use super::ids::EntryId;
use super::local::Local;
use super::{BELL_LEN, Inner};
use crate::registry::broker::ResetReason;
use crate::sync::lock;

/// How long the reader's `XREAD` blocks waiting for entries.
const READ_BLOCK: Duration = Duration::from_millis(200);
/// The most entries the reader takes from one stream per `XREAD`.
const READ_COUNT: usize = 1000;
/// The reader's response timeout: well above its `BLOCK`, so a large reply
/// is never cut off and asked for again (the client's default is 500 ms).
const READER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A gap this long between two reads means the instance was paused (a VM
/// pause, a stalled host): the reader checks that it missed nothing.
const PAUSE: Duration = Duration::from_secs(1);
/// A reader drops the keys nobody here listens to at most this often.
const FORGET_IDLE_EVERY: Duration = Duration::from_millis(250);
/// An entry the broker did not write is logged at most once per key per this.
const FOREIGN_ENTRY_LOG_EVERY: Duration = Duration::from_secs(60);

impl Inner {
    /// The reader lost its place in a bucket's bell (trimmed while it
    /// lagged, or lost in a restart): it goes on from the bell's end, and
    /// each of the bucket's keys here catches up from its own stream, or,
    /// where that no longer holds what the key missed, gets the reset
    /// signal.
    ///
    /// The reader's place moves to the bell's end only once every key has
    /// caught up: if a step fails, the reader's next try finds the same gap
    /// and does it again (keys pass over what they were given already).
    pub(super) async fn catch_up_bucket(&self, bucket: usize) -> redis::RedisResult<()> {
        let end = self.last_id(&self.bells[bucket]).await?;
        let keys: Vec<(Arc<str>, EntryId)> = lock(&self.local).buckets[bucket]
            .iter()
            .map(|(stream, key)| (Arc::clone(stream), key.read_from))
            .collect();
        for (stream, read_from) in keys {
            match self.covers(&stream, read_from).await? {
                Ok(()) => self.deliver_from_stream(&stream, read_from).await?,
                Err(ResetReason::UnknownId) => {
                    // The last entry delivered is gone while later ones are
                    // there: lost with a failed master, with whatever else it
                    // had not replicated. Subscribers are told, then get
                    // everything Redis kept after it.
                    self.reset_key(&stream, ResetReason::UnknownId, None);
                    self.deliver_from_stream(&stream, read_from).await?;
                }
                Err(reason) => {
                    // Never behind where the key was: a stream found missing
                    // would put it at 0-0, from which a resume replays all.
                    let position = self.last_id(&stream).await?.max(read_from);
                    self.reset_key(&stream, reason, Some(position));
                }
            }
        }
        let mut local = lock(&self.local);
        if local.bells_at[bucket].is_some() {
            local.bells_at[bucket] = Some(end);
        }
        Ok(())
    }

    /// Gives the subscribers of `stream` here the reset signal for `reason`
    /// (logged); with `move_to`, the key goes on from there, passing over
    /// what it had staged while catching up.
    fn reset_key(&self, stream: &str, reason: ResetReason, move_to: Option<EntryId>) {
        tracing::warn!(
            stream,
            reason = reason.as_str(),
            "SSE Redis reader missed entries of a key (trimmed while it lagged, or lost in a \
             restart or a failover); its subscribers get the reset signal"
        );
        let reset = self.reset_signal(reason);
        let mut local = lock(&self.local);
        let broadcast_at = local.broadcast_at;
        if let Some(key) = local.get_mut(stream) {
            if let Some(position) = move_to {
                key.read_from = position;
                key.catching_up = None;
            }
            key.push_reset(key.position(broadcast_at), &reset);
            key.flush();
        }
    }

    /// Those of `entries` (a stream and an entry id each) whose entry is not
    /// in its stream.
    async fn missing_entries(
        &self,
        entries: &[(Arc<str>, EntryId)],
    ) -> redis::RedisResult<Vec<(Arc<str>, EntryId)>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.commands.clone();
        let mut pipeline = redis::pipe();
        for (stream, id) in entries {
            pipeline
                .cmd("XRANGE")
                .arg(&**stream)
                .arg(id.to_string())
                .arg(id.to_string());
        }
        let found: Vec<Vec<(String, Vec<Vec<u8>>)>> = pipeline.query_async(&mut connection).await?;
        Ok(entries
            .iter()
            .zip(found)
            .filter(|(_, found)| found.is_empty())
            .map(|(entry, _)| entry.clone())
            .collect())
    }

    /// After a reader error, a reconnect or a pause: for each key, whether
    /// the last entry the reader delivered is still in its stream. Trimming
    /// removes the oldest entries first, so while it is there nothing after it
    /// was lost; where it is gone (trimmed while the reader lagged, or lost in
    /// a restart without persistence), the key's subscribers get the reset
    /// signal that a reconnecting client would get, and the reader carries on
    /// from the stream's current end.
    pub(super) async fn check_for_gaps(
        &self,
        positions: &mut [(Arc<str>, EntryId)],
    ) -> redis::RedisResult<()> {
        let checked: Vec<(Arc<str>, EntryId)> = positions
            .iter()
            .filter(|(_, read_from)| *read_from != EntryId::default())
            .cloned()
            .collect();
        let mut gone = self.missing_entries(&checked).await?;
        if !gone.is_empty() && self.settled_for_recheck().await {
            // A node that is behind for a moment after a failover must not
            // cost subscribers a reset: asked again, as a resume is.
            gone = self.missing_entries(&gone).await?;
        }
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
            // Lost with a failed master (later entries are there): told,
            // then read on from here. Trimmed or gone: from the end.
            let position = if reason == ResetReason::UnknownId {
                read_from
            } else {
                self.last_id(&stream).await?.max(read_from)
            };
            tracing::warn!(
                stream = &*stream,
                reason = reason.as_str(),
                "SSE Redis reader missed entries of a key (trimmed while it lagged, or lost in a \
                 restart or a failover); its subscribers get the reset signal"
            );
            let reset = self.reset_signal(reason);
            let mut local = lock(&self.local);
            if *stream == *self.broadcast_stream {
                // Broadcasts were lost: every key subscribed here is told.
                local.broadcast_at = Some(position);
                for key in local.values_mut() {
                    key.push_reset(key.position(Some(position)), &reset);
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

type StreamReply = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;

/// What the reader remembers between reads.
struct ReaderState {
    connection: Option<Connection>,
    /// The commands' topology generation when the connection was made: on
    /// a cluster, a change (a failover seen) makes the reader reconnect, so
    /// it reads from the new masters, not from demoted ones.
    topology: u64,
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
pub(super) async fn read_loop(inner: std::sync::Weak<Inner>, shard: usize) {
    let mut state = ReaderState {
        connection: None,
        topology: 0,
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
    let topology = broker.commands.topology_generation();
    if state.connection.is_some() && state.topology != topology {
        state.connection = None;
        state.check_gaps = true;
    }
    if state.connection.is_none() {
        state.topology = topology;
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
    if broker.commands.topology_generation() != state.topology {
        // The cluster failed over while the read waited: the node that
        // answered may be a master no more (a frozen one, woken, answers
        // with what it wrote on waking and then drops as it becomes a
        // replica). Nothing of it is handed on; the reader reconnects,
        // checks for gaps, and reads again where the slots are now.
        state.connection = None;
        state.check_gaps = true;
        return Ok(());
    }
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
