//! One subscription: join the key's local fan-out, replay what the client
//! missed (or start with its resume point or the reset signal), then hand on
//! live entries. Each step is a named function; the stream only strings them
//! together.

use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::stream::BoxStream;

use super::fanout::{Cursor, Delivery, DeliveryKind, Next};
use super::history::{is_wrong_type, replay_page_entries};
use super::ids::{EntryId, Position};
use super::live::catch_up_key;
use super::local::{Local, Received};
use super::{Inner, RedisBroker, shut_down_error};
use crate::event::{EncodedEvent, MessageEvent};
use crate::registry::broker::{LagPolicy, ResetReason};
use crate::response::opening;
use crate::sync::lock;
use crate::telemetry;

impl Inner {
    /// Joins the local fan-out of `stream`. Returns a cursor and the
    /// position it starts after: every later entry of the key, and every
    /// later broadcast, reaches the cursor.
    ///
    /// A key new to this instance is opened ([`open_key`](Self::open_key)):
    /// its position is its stream's last entry as the subscription is first
    /// polled, and what is published after that reaches the cursor. A
    /// subscription to a key that is opening waits for it.
    pub(super) async fn join(
        &self,
        stream: &str,
        with_broadcasts: bool,
    ) -> redis::RedisResult<(Cursor, Position)> {
        loop {
            let changed = self.keys_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let opened = {
                let mut local = lock(&self.local);
                // Checked under the lock that shutdown closes the keys
                // under, so no key is added after it.
                if self.shut_down.load(Ordering::SeqCst) {
                    return Err(shut_down_error());
                }
                let broadcast_at = local.broadcast_at;
                match local.get(stream) {
                    Some(key) if key.ready => {
                        return Ok((
                            key.fanout.subscribe(with_broadcasts),
                            key.position(broadcast_at),
                        ));
                    }
                    // Another subscription is opening it.
                    Some(_) => None,
                    None => {
                        let key =
                            local.insert(Arc::from(stream), Local::joining(self.config.buffer));
                        Some(key.fanout.subscribe(with_broadcasts))
                    }
                }
            };
            match opened {
                Some(cursor) => {
                    // Polled once here, in the subscription's own first
                    // poll, so the key's position is asked for before its
                    // response goes out; then opened in a task of its own,
                    // so it goes on while the subscription is not polled.
                    let me = self.me.upgrade().ok_or_else(shut_down_error)?;
                    let stream: Arc<str> = Arc::from(stream);
                    let mut opening = Box::pin(async move {
                        let opened = me.open_key(&stream).await;
                        me.keys_changed.notify_waiters();
                        opened
                    });
                    let first = std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(opening.as_mut().poll(cx))
                    })
                    .await;
                    let opened = match first {
                        std::task::Poll::Ready(opened) => opened,
                        std::task::Poll::Pending => {
                            tokio::spawn(opening).await.map_err(|_| shut_down_error())?
                        }
                    };
                    return opened.map(|position| (cursor, position));
                }
                None => {
                    // Woken when it is open (or failed), or looked at again.
                    let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
                }
            }
        }
    }

    /// Opens a key new here. Its position is the stream's last entry read
    /// as the subscription is first polled (as its response goes out), not
    /// once its channel is confirmed, which may be later: an event published
    /// in between, after the client saw its stream open, is its to get. So
    /// the position is read beside the subscribe, and read again once the
    /// channel is confirmed: where the two differ, something was published
    /// in between, and the key catches up from its stream (where they are
    /// equal, nothing was, and the live messages follow on). On failure the
    /// key is dropped again (a subscription waiting for it opens it anew).
    async fn open_key(&self, stream: &str) -> redis::RedisResult<Position> {
        let opened = async {
            let known = lock(&self.local).broadcast_at;
            let early = async {
                tokio::try_join!(self.last_id(stream), async {
                    match known {
                        Some(at) => Ok(at),
                        None => self.last_broadcast_id().await,
                    }
                })
            };
            let (joined, early) = tokio::join!(self.interest.join(stream), early);
            joined?;
            let (start, broadcast_start) = early?;
            let confirmed_at = self.last_id(stream).await?;
            redis::RedisResult::Ok((start, broadcast_start, confirmed_at))
        }
        .await;
        let mut local = lock(&self.local);
        let (start, broadcast_start, confirmed_at) = match opened {
            Ok(starts) => starts,
            Err(error) => {
                if local.remove(stream).is_some() {
                    self.interest.leave(Arc::from(stream));
                }
                return Err(error);
            }
        };
        let broadcast_at = *local.broadcast_at.get_or_insert(broadcast_start);
        let Some(key) = local.get_mut(stream) else {
            return Err(shut_down_error());
        };
        key.read_from = start;
        key.ready = true;
        let position = key.position(Some(broadcast_at));
        // Published while the channel was not subscribed yet: caught up
        // from the stream (the live messages stay kept meanwhile).
        let published_meanwhile = confirmed_at != start;
        let catch_up = published_meanwhile
            || key.hand_on_kept(Some(broadcast_at)) == Received::Gap
            || key.start_catch_up_if_missed();
        key.flush();
        if catch_up {
            key.begin_catch_up();
            tokio::spawn(catch_up_key(self.weak_self(), Arc::from(stream)));
        }
        Ok(position)
    }
}

impl<K: Display> RedisBroker<K> {
    /// A subscription to `key`, with or without broadcasts.
    pub(super) fn subscribe_with(
        &self,
        key: &K,
        last_event_id: Option<&str>,
        with_broadcasts: bool,
    ) -> BoxStream<'static, EncodedEvent> {
        let inner = Arc::clone(&self.inner);
        let stream = inner.stream_key(key);
        let last_event_id = last_event_id.map(str::to_owned);
        Box::pin(async_stream::stream! {
            // Until its position is fixed, the response's head waits.
            let joined = opening::while_opening(Subscription::join(inner, stream, with_broadcasts));
            let Some(mut subscription) = joined.await else {
                return;
            };
            match subscription.start(last_event_id.as_deref()).await {
                Start::With(first) => yield first,
                Start::Replay { reset } => {
                    if let Some(reset) = reset {
                        yield reset;
                    }
                    while let Some(page) = subscription.next_replay_page().await {
                        for event in page {
                            yield event;
                        }
                    }
                }
                Start::Ended => return,
            }
            while let Some(events) = subscription.next_live().await {
                for event in events {
                    yield event;
                }
            }
        })
    }
}

/// The most deliveries' room a subscription keeps between wake-ups.
const RETAINED_BATCH: usize = 32;

/// How a subscription starts.
enum Start {
    /// With this event: the resume point of a new client, or the reset
    /// signal where the client's position cannot be resumed.
    With(EncodedEvent),
    /// With the replay of what the client missed ([`Subscription::next_replay_page`]),
    /// after the reset signal where its own last entry is not in the stream
    /// (lost with a failed master, or an id the stream never had): what it
    /// missed may include events Redis lost, and then comes everything Redis
    /// kept after it.
    Replay { reset: Option<EncodedEvent> },
    /// It ended before it started (Redis failed while checking the history).
    Ended,
}

/// A subscription's state between its steps.
struct Subscription {
    inner: Arc<Inner>,
    stream: String,
    with_broadcasts: bool,
    cursor: Cursor,
    /// What this subscription has handed on: live entries up to here were
    /// replayed already.
    delivered: Position,
    /// While replaying: the sources still to read, key first.
    replay_sources: VecDeque<Source>,
    /// The largest event of the last replay page, which sizes the next.
    largest_replayed: Option<usize>,
    batch: VecDeque<Delivery>,
}

/// One of the two streams a subscription replays from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Key,
    Broadcasts,
}

impl Source {
    /// This source's part of a position.
    fn part_of(self, position: &mut Position) -> &mut EntryId {
        match self {
            Source::Key => &mut position.key,
            Source::Broadcasts => &mut position.broadcast,
        }
    }
}

impl Subscription {
    /// Joins the local fan-out first, so nothing published during the
    /// replay is missed. Waits while Redis is unreachable, as open
    /// subscriptions do; `None` after shutdown or for a key of another type.
    async fn join(
        inner: Arc<Inner>,
        stream: String,
        with_broadcasts: bool,
    ) -> Option<Subscription> {
        let (cursor, joined_at) = loop {
            if inner.shut_down.load(Ordering::SeqCst) {
                return None;
            }
            match inner.join(&stream, with_broadcasts).await {
                Ok(joined) => break joined,
                Err(error) if is_wrong_type(&error) => {
                    tracing::warn!(
                        stream,
                        "SSE Redis key is not a stream; ending the subscription"
                    );
                    telemetry::broker_ended_streams("not_a_stream", 1);
                    return None;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Some(Subscription {
            inner,
            stream,
            with_broadcasts,
            cursor,
            delivered: joined_at,
            replay_sources: VecDeque::new(),
            largest_replayed: None,
            batch: VecDeque::new(),
        })
    }

    /// The first step after joining, from the client's `Last-Event-ID`.
    async fn start(&mut self, last_event_id: Option<&str>) -> Start {
        let Some(last_event_id) = last_event_id else {
            // A client that drops before its first event still resumes from
            // here (see `Broker`, "Resume point").
            return Start::With(EncodedEvent::resume_point(&self.delivered.to_string()));
        };
        let resume = match Position::parse(last_event_id) {
            // Without broadcasts, only the key's part counts.
            Some(last) if !self.with_broadcasts => Ok(Position {
                key: last.key,
                broadcast: EntryId::default(),
            }),
            Some(last) => Ok(last),
            None => Err(ResetReason::InvalidId),
        };
        let covered = match resume {
            Ok(last) => match self.inner.confirmed_cover(|| self.covers(last)).await {
                Ok(covered) => covered.map(|()| last),
                Err(error) => {
                    // Cannot tell: end, and let the client retry.
                    self.replay_failed(&error);
                    return Start::Ended;
                }
            },
            Err(reason) => Err(reason),
        };
        match covered {
            Ok(last) => self.replay_after(last, None),
            Err(ResetReason::UnknownId) if let Ok(last) = resume => {
                // Never after the stream's newest entry: an id beyond it (a
                // lost entry's, on a master whose clock is behind; a made-up
                // one) would otherwise skip, without a word, newer entries
                // whose ids are lower.
                let from = match self.inner.current_position(&self.stream).await {
                    Ok(current) => last.min(current),
                    Err(_) => last,
                };
                let reset = self.inner.reset_event(ResetReason::UnknownId, from);
                self.replay_after(from, Some(reset))
            }
            Err(reason) => match self.inner.current_position(&self.stream).await {
                Ok(position) => {
                    // Never behind the client's own position: a stream
                    // found missing (expired, or read from a node still
                    // empty after a restart) would put it at 0-0, from
                    // which a later resume replays what it had.
                    let position = match resume {
                        Ok(last) => position.max(last),
                        Err(_) => position,
                    };
                    self.delivered = position;
                    Start::With(self.inner.reset_event(reason, position))
                }
                Err(_) => Start::Ended,
            },
        }
    }

    /// Replays from `last`, after `reset` if there is one.
    fn replay_after(&mut self, last: Position, reset: Option<EncodedEvent>) -> Start {
        self.delivered = last;
        self.replay_sources.push_back(Source::Key);
        if self.with_broadcasts {
            self.replay_sources.push_back(Source::Broadcasts);
        }
        Start::Replay { reset }
    }

    /// Whether the history still holds everything after `last`.
    async fn covers(&self, last: Position) -> redis::RedisResult<Result<(), ResetReason>> {
        if self.with_broadcasts {
            self.inner.covers_position(&self.stream, last).await
        } else {
            self.inner.covers(&self.stream, last.key).await
        }
    }

    /// The next page of the replay (the key's entries, then the
    /// broadcasts, after the client's position), so a long history never
    /// sits in memory at once; `None` once it is done, or failed (the
    /// stream then ends, and the client resumes from what it got).
    async fn next_replay_page(&mut self) -> Option<Vec<EncodedEvent>> {
        loop {
            let source = *self.replay_sources.front()?;
            let (name, from) = match source {
                Source::Key => (self.stream.as_str(), self.delivered.key),
                Source::Broadcasts => (&*self.inner.broadcast_stream, self.delivered.broadcast),
            };
            let count = replay_page_entries(self.largest_replayed);
            let (entries, read_to) = match self.inner.page_after(name, from, count).await {
                Ok(page) => page,
                Err(error) => {
                    self.replay_failed(&error);
                    self.replay_sources.clear();
                    return None;
                }
            };
            telemetry::replayed(entries.len());
            let mut page = Vec::with_capacity(entries.len());
            self.largest_replayed = entries.iter().map(|(_, fields)| fields.len()).max();
            for (id, fields) in entries {
                *source.part_of(&mut self.delivered) = id;
                page.push(MessageEvent::assemble_with_id(
                    &self.delivered.to_string(),
                    &fields,
                ));
            }
            match read_to {
                Some(read_to) => {
                    let part = source.part_of(&mut self.delivered);
                    *part = (*part).max(read_to);
                }
                None => {
                    self.replay_sources.pop_front();
                }
            }
            if !page.is_empty() {
                return Some(page);
            }
        }
    }

    fn replay_failed(&self, error: &redis::RedisError) {
        tracing::warn!(%error, stream = self.stream, "SSE Redis replay failed; ending the stream");
        telemetry::broker_ended_streams("replay_failed", 1);
    }

    /// Everything the reader delivered after the cursor, in one look per
    /// wake-up, less what the replay handed on already; `None` when the
    /// subscription ends (closed, or behind under [`LagPolicy::Disconnect`]).
    async fn next_live(&mut self) -> Option<Vec<EncodedEvent>> {
        loop {
            let next = std::future::poll_fn(|cx| self.cursor.poll_next(cx, &mut self.batch)).await;
            match next {
                Next::Closed => return None,
                Next::Some => {
                    let events = self.take_new();
                    if !events.is_empty() {
                        return Some(events);
                    }
                }
                Next::Lagged => return self.lagged().await.map(|reset| vec![reset]),
            }
        }
    }

    /// The batch's deliveries this subscription has not handed on yet.
    fn take_new(&mut self) -> Vec<EncodedEvent> {
        let mut events = Vec::with_capacity(self.batch.len());
        for delivery in self.batch.drain(..) {
            let position = delivery.position;
            let new = match delivery.kind {
                DeliveryKind::Entry => position.key > self.delivered.key,
                DeliveryKind::Broadcast => {
                    self.with_broadcasts && position.broadcast > self.delivered.broadcast
                }
                DeliveryKind::Reset => true,
            };
            if !new {
                continue;
            }
            let after = self.delivered.max(position);
            self.delivered = after;
            if after == position {
                events.push(delivery.event);
            } else {
                // This subscription replayed further than the fan-out had
                // read: its own id, not the shared one.
                events.push(delivery.event.with_id(&after.to_string()));
            }
        }
        if self.batch.capacity() > RETAINED_BATCH {
            // After a burst: an idle subscriber keeps no room for it.
            self.batch = VecDeque::new();
        }
        events
    }

    /// The subscriber fell behind its buffer: the lag policy decides.
    async fn lagged(&mut self) -> Option<EncodedEvent> {
        match self.inner.config.lag_policy {
            LagPolicy::Disconnect => {
                tracing::debug!(
                    stream = self.stream,
                    "SSE subscriber fell behind its buffer; disconnecting it (it resumes from history)"
                );
                telemetry::lag_disconnect();
                None
            }
            _ => {
                // The cursor is at the newest delivery already.
                let position = self
                    .inner
                    .current_position(&self.stream)
                    .await
                    .unwrap_or(self.delivered);
                self.delivered = self.delivered.max(position);
                Some(self.inner.reset_event(ResetReason::Lagged, self.delivered))
            }
        }
    }
}
