//! The instance's broadcast reader: `XREAD BLOCK` on the broadcast stream
//! while any key is subscribed here, handing each entry to every key; the
//! gap checks after an error, a reconnect or a pause. (Keys' own entries
//! come live, by interest: see `live.rs`.)

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Inner;
use super::connection::Connection;
use super::fanout::DeliveryKind;
use super::history::{is_wrong_type, stored_fields};
use super::ids::EntryId;
use super::local::Local;
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
/// An entry the broker did not write is logged at most once per this.
const FOREIGN_ENTRY_LOG_EVERY: Duration = Duration::from_secs(60);

impl Inner {
    /// Whether the broadcast stream still holds entry `at`.
    async fn broadcast_holds(&self, at: EntryId) -> redis::RedisResult<bool> {
        let mut connection = self.commands.clone();
        let found: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(&*self.broadcast_stream)
            .arg(at.to_string())
            .arg(at.to_string())
            .query_async(&mut connection)
            .await?;
        Ok(!found.is_empty())
    }

    /// After a reader error, a reconnect or a pause: whether the last
    /// broadcast the reader handed on is still in the broadcast stream.
    /// Trimming removes the oldest entries first, so while it is there
    /// nothing after it was lost; where it is gone (trimmed while the reader
    /// lagged, or lost in a restart without persistence), every key here
    /// gets the reset signal that a reconnecting client would get. Answers
    /// where to read on from.
    async fn check_broadcast_gap(&self, at: EntryId) -> redis::RedisResult<EntryId> {
        if at.is_start() || self.broadcast_holds(at).await? {
            return Ok(at);
        }
        // A node that is behind for a moment after a failover must not cost
        // subscribers a reset: asked again, as a resume is.
        if self.settled_for_recheck().await && self.broadcast_holds(at).await? {
            return Ok(at);
        }
        let reason = match self.covers(&self.broadcast_stream, at).await? {
            Ok(()) => return Ok(at),
            Err(reason) => reason,
        };
        // Lost with a failed master (later entries are there): told, then
        // read on from here. Trimmed or gone: from the end.
        let position = if reason == ResetReason::UnknownId {
            at
        } else {
            self.last_id(&self.broadcast_stream).await?.max(at)
        };
        tracing::warn!(
            reason = reason.as_str(),
            "SSE Redis reader missed broadcasts (trimmed while it lagged, or lost in a restart \
             or a failover); every subscriber here gets the reset signal"
        );
        let reset = self.reset_signal(reason);
        let mut local = lock(&self.local);
        local.broadcast_at = Some(position);
        for key in local.values_mut() {
            key.push_reset(key.position(Some(position)), &reset);
            key.flush();
        }
        Ok(position)
    }
}

type StreamReply = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;

/// What the reader remembers between reads.
struct ReaderState {
    connection: Option<Connection>,
    /// The commands' topology generation when the connection was made: on
    /// a cluster, a change (a failover seen) makes the reader reconnect, so
    /// it reads from the new master, not from a demoted one.
    topology: u64,
    /// Set after an error or a reconnect: check for a gap before reading on.
    check_gaps: bool,
    last_read: Option<std::time::Instant>,
    /// When a foreign entry was last logged.
    foreign_logged: Option<std::time::Instant>,
}

/// The instance's broadcast reader, started with the broker: `XREAD BLOCK`
/// on the broadcast stream while any key is subscribed here, handing each
/// entry to every key. Reconnects by itself; stops with the broker.
pub(super) async fn read_loop(inner: std::sync::Weak<Inner>) {
    let mut state = ReaderState {
        connection: None,
        topology: 0,
        check_gaps: false,
        last_read: None,
        foreign_logged: None,
    };
    loop {
        let Some(broker) = inner.upgrade() else {
            return;
        };
        if broker.shut_down.load(Ordering::SeqCst) {
            return;
        }
        if let Err(error) = read_once(&broker, &mut state).await {
            tracing::warn!(%error, "SSE Redis reader failed; reconnecting");
            crate::telemetry::redis_reader_error();
            state.connection = None;
            state.check_gaps = true;
            drop(broker);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn read_once(broker: &Inner, state: &mut ReaderState) -> redis::RedisResult<()> {
    // The broadcast stream is followed while any key is subscribed here.
    let at = lock(&broker.local).broadcast_at;
    let Some(mut at) = at.filter(|_| !broker.broadcast_unreadable.load(Ordering::SeqCst)) else {
        // Re-check now and then: the broker may be dropped meanwhile.
        let _ =
            tokio::time::timeout(Duration::from_millis(500), broker.keys_changed.notified()).await;
        state.last_read = None;
        return Ok(());
    };
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
    let paused = state.last_read.is_some_and(|read| read.elapsed() > PAUSE);
    if state.check_gaps || paused {
        at = broker.check_broadcast_gap(at).await?;
        state.check_gaps = false;
    }
    let connection = state.connection.as_mut().expect("connected above");
    let asked = std::time::Instant::now();
    let reply: StreamReply = match redis::cmd("XREAD")
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(READ_BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(&*broker.broadcast_stream)
        .arg(at.to_string())
        .query_async(connection)
        .await
    {
        Ok(reply) => reply,
        Err(error) if is_wrong_type(&error) => {
            broker.mark_broadcast_unreadable();
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    state.last_read = Some(std::time::Instant::now());
    if broker.commands.topology_generation() != state.topology {
        // The cluster failed over while the read waited: the node that
        // answered may be a master no more (a frozen one, woken, answers
        // with what it wrote on waking and then drops as it becomes a
        // replica). Nothing of it is handed on; the reader reconnects,
        // checks for a gap, and reads again where the slot is now.
        state.connection = None;
        state.check_gaps = true;
        return Ok(());
    }
    let entries = reply
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(_, entries)| entries)
        .collect::<Vec<_>>();
    // A reply that took far longer than the block (this process or Redis
    // was paused meanwhile), or one as long as the history (only then can
    // trimming have passed the reader), may start after entries trimmed
    // before the read: check before handing any of it on.
    let slow = asked.elapsed() > READ_BLOCK + PAUSE;
    let full = entries.len() >= READ_COUNT.min(broker.config.history_len);
    state.check_gaps |= entries.len() >= READ_COUNT;
    if (slow || full) && broker.check_broadcast_gap(at).await? != at {
        // Reset past them: read again from the end.
        return Ok(());
    }
    let mut local = lock(&broker.local);
    for (id, fields) in entries {
        let Some(entry_id) = EntryId::parse(&id) else {
            continue;
        };
        // The next XREAD starts after the last entry seen, whether it is
        // one of ours or not: an entry that does not decode is passed,
        // never read again and again.
        if local.broadcast_at.is_none_or(|at| entry_id <= at) {
            continue;
        }
        local.broadcast_at = Some(entry_id);
        let Some(fields) = stored_fields(&fields) else {
            log_foreign_entry(&mut state.foreign_logged, &broker.broadcast_stream, &id);
            continue;
        };
        for key in local.values_mut() {
            key.push(
                DeliveryKind::Broadcast,
                key.position(Some(entry_id)),
                &fields,
            );
        }
    }
    local.values_mut().for_each(Local::flush);
    Ok(())
}

fn log_foreign_entry(logged: &mut Option<std::time::Instant>, stream: &str, id: &str) {
    let now = std::time::Instant::now();
    if logged.is_none_or(|at| now.duration_since(at) >= FOREIGN_ENTRY_LOG_EVERY) {
        *logged = Some(now);
        tracing::warn!(
            stream,
            id,
            "SSE Redis stream holds an entry without the broker's `e` field (written by another \
             program?); it is skipped"
        );
    }
}
