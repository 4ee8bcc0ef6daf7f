//! The response body: drives the stream, batches what is ready, keeps the
//! connection alive when idle.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http_body::Frame;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::pacer;
use crate::event::encode;
use crate::event::item::SseItem;
use crate::telemetry;

/// Past this many buffered bytes a frame is sent even if more events are ready,
/// so one fast producer cannot grow the buffer without bound.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// When a connection holds what became ready after a write, to send it in
/// one write with what follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Batching {
    /// Every batch goes out as soon as it is ready.
    Off,
    /// Whatever becomes ready within the window after a write is held until
    /// the window ends.
    Fixed(Duration),
    /// Held only on evidence of a sustained burst: a batch ready less than
    /// half the window after the last write, which itself came less than half
    /// a window after the one before, is held until the window ends. A
    /// stream whose events come further apart (every light or moderate load),
    /// or a lone pair of events, is never delayed and never touches the
    /// batch clock.
    Adaptive(Duration),
}

impl Batching {
    /// How long to hold a batch that became ready `since` the last write;
    /// `bursting` says whether that write came soon after the one before.
    fn hold(self, since: Duration, bursting: bool) -> Option<Duration> {
        match self {
            Batching::Off => None,
            Batching::Fixed(window) => window.checked_sub(since).filter(|left| !left.is_zero()),
            Batching::Adaptive(window) if bursting && since < window / 2 => Some(window - since),
            Batching::Adaptive(_) => None,
        }
    }

    /// Whether a write `since` the previous one continues a burst.
    fn is_burst(self, since: Duration) -> bool {
        match self {
            Batching::Adaptive(window) | Batching::Fixed(window) => since < window / 2,
            Batching::Off => false,
        }
    }
}

pin_project! {
    /// Each `poll_frame` encodes every event that is ready (up to
    /// [`MAX_BATCH_BYTES`]) into one reusable buffer and hands it to hyper as
    /// one frame, so a burst of events goes out in one write.
    pub(crate) struct SseBody<S> {
        #[pin]
        stream: S,
        // Boxed lazily: a connection with keep-alive off carries no timer.
        keep_alive: Option<Pin<Box<Sleep>>>,
        interval: Duration,
        // When data last went out. The timer is not reset on every frame (a
        // timer-wheel operation per event); when it fires early it is re-armed
        // from here instead.
        last_write: Instant,
        // After a write, what becomes ready soon is held and goes out in one
        // write when the window ends (see `pacer`): a busy stream writes once
        // per window instead of once per event.
        batching: Batching,
        // The pacer tick a held batch is due at, and the waker parked for it.
        held: Option<(u64, Waker)>,
        // Whether any data has gone out: the first batch is never held.
        written: bool,
        // Whether the last write came within half a window of the one
        // before: with a batch ready soon after it, a burst is sustained.
        bursting: bool,
        buf: BytesMut,
        ended: bool,
        // Events encoded into `buf` since the last frame.
        pending_events: u64,
        // The stream's span (route) and its open/close accounting.
        open: OpenStream,
    }
}

/// Counts a stream as open while it lives, and logs and counts its close.
pub(crate) struct OpenStream {
    route: &'static str,
    span: tracing::Span,
    events: u64,
    bytes: u64,
}

impl OpenStream {
    pub(crate) fn new(route: &'static str) -> Self {
        // A number per stream, to tell apart streams of one route in logs.
        static NEXT_STREAM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let stream = NEXT_STREAM.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = tracing::debug_span!("sse_stream", route, stream);
        span.in_scope(|| tracing::debug!("event stream opened"));
        telemetry::stream_opened(route);
        OpenStream {
            route,
            span,
            events: 0,
            bytes: 0,
        }
    }

    fn written(&mut self, events: u64, bytes: usize) {
        self.events += events;
        self.bytes += bytes as u64;
        telemetry::written(self.route, events, bytes);
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        telemetry::stream_closed(self.route);
        let (events, bytes) = (self.events, self.bytes);
        self.span
            .in_scope(|| tracing::debug!(events, bytes, "event stream closed"));
    }
}

impl<S> SseBody<S> {
    pub(crate) fn new(
        stream: S,
        keep_alive: Option<Duration>,
        retry: Option<Duration>,
        batching: Batching,
        open: OpenStream,
    ) -> Self {
        let mut buf = BytesMut::new();
        if let Some(retry) = retry {
            // Sent first, so it applies even if the stream never yields.
            encode::write_retry(&mut buf, retry);
            buf.extend_from_slice(b"\n");
        }
        SseBody {
            stream,
            keep_alive: keep_alive.map(|interval| Box::pin(tokio::time::sleep(interval))),
            interval: keep_alive.unwrap_or_default(),
            last_write: Instant::now(),
            batching,
            held: None,
            written: false,
            bursting: false,
            buf,
            ended: false,
            pending_events: 0,
            open,
        }
    }
}

impl<S> http_body::Body for SseBody<S>
where
    S: Stream,
    S::Item: SseItem,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut this = self.project();
        // Whatever the stream and the broker log while polled belongs to it.
        let _in_span = this.open.span.clone().entered();
        while !*this.ended && this.buf.len() < MAX_BATCH_BYTES {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => match (item.is_event(), item.encode_into(this.buf)) {
                    (is_event, Ok(())) => *this.pending_events += u64::from(is_event),
                    (_, Err(error)) => {
                        tracing::warn!(%error, "SSE stream yielded an error; ending the response");
                        *this.ended = true;
                    }
                },
                Poll::Ready(None) => *this.ended = true,
                Poll::Pending => break,
            }
        }

        if !this.buf.is_empty() {
            let may_hold = *this.written && !*this.ended && this.buf.len() < MAX_BATCH_BYTES;
            if may_hold {
                match this.held.as_mut() {
                    Some((due, parked)) if pacer::now() < *due => {
                        // Woken by the stream before the window ends. A body
                        // polled from another task parks that task's waker too.
                        if !parked.will_wake(cx.waker()) {
                            let left = pacer::TICK * due.saturating_sub(pacer::now()) as u32;
                            if let Some(again) = pacer::park(cx.waker(), left) {
                                *due = again;
                                parked.clone_from(cx.waker());
                            }
                        }
                        return Poll::Pending;
                    }
                    Some(_) => {}
                    None => {
                        let since = this.last_write.elapsed();
                        if let Some(hold) = this.batching.hold(since, *this.bursting) {
                            if let Some(due) = pacer::park(cx.waker(), hold) {
                                *this.held = Some((due, cx.waker().clone()));
                                return Poll::Pending;
                            }
                        }
                    }
                }
            }
            *this.held = None;
            *this.written = true;
            if this.keep_alive.is_some() || *this.batching != Batching::Off {
                let now = Instant::now();
                *this.bursting = this.batching.is_burst(now - *this.last_write);
                *this.last_write = now;
            }
            this.open
                .written(std::mem::take(this.pending_events), this.buf.len());
            return Poll::Ready(Some(Ok(Frame::data(take_frame(this.buf)))));
        }
        if *this.ended {
            return Poll::Ready(None);
        }
        if let Some(sleep) = this.keep_alive.as_mut() {
            while sleep.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                let quiet_until = *this.last_write + *this.interval;
                if now < quiet_until {
                    // Data went out since the timer was set: wait the rest.
                    sleep.as_mut().reset(quiet_until);
                    continue;
                }
                sleep.as_mut().reset(now + *this.interval);
                *this.last_write = now;
                telemetry::keep_alive(this.open.route);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                    encode::KEEP_ALIVE,
                )))));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.buf.is_empty()
    }
}

/// The most buffer a stream keeps between writes. A batch up to this size
/// leaves its allocation for the next one; a larger one (a replay, a burst)
/// takes its allocation with it, so an idle stream never keeps the largest
/// batch it ever wrote.
const RETAINED_BUFFER: usize = 8 * 1024;

/// The filled part of `buf`, as one frame. `split` keeps the spare capacity,
/// so the allocation is reused once the frame is written, unless the batch
/// was large: then `buf` starts afresh.
fn take_frame(buf: &mut BytesMut) -> Bytes {
    if buf.len() > RETAINED_BUFFER {
        std::mem::take(buf).freeze()
    } else {
        buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_batch_takes_its_buffer_with_it_and_a_small_one_leaves_it() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[b'x'; 100 * 1024]);
        let frame = take_frame(&mut buf);
        assert_eq!(frame.len(), 100 * 1024);
        assert_eq!(buf.capacity(), 0, "nothing kept after a large batch");
        buf.extend_from_slice(&[b'x'; 1024]);
        let before = buf.capacity();
        drop(take_frame(&mut buf));
        // The small frame is gone, so the same allocation serves again.
        buf.reserve(1024);
        assert_eq!(buf.capacity(), before);
    }

    const WINDOW: Duration = Duration::from_millis(10);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn adaptive_batching_holds_only_within_a_sustained_burst() {
        let adaptive = Batching::Adaptive(WINDOW);
        assert_eq!(adaptive.hold(Duration::ZERO, true), Some(WINDOW));
        assert_eq!(
            adaptive.hold(2 * MS, true),
            Some(8 * MS),
            "held until the window ends"
        );
        assert_eq!(adaptive.hold(4 * MS, true), Some(6 * MS));
        assert_eq!(
            adaptive.hold(5 * MS, true),
            None,
            "half a window apart: not a burst"
        );
        assert_eq!(adaptive.hold(9 * MS, true), None);
        assert_eq!(
            adaptive.hold(10 * MS, true),
            None,
            "100 events/s: never delayed"
        );
        assert_eq!(adaptive.hold(Duration::from_secs(1), true), None);
        // A lone pair: the write before came after a quiet spell.
        assert_eq!(adaptive.hold(MS, false), None);
        assert!(adaptive.is_burst(4 * MS) && !adaptive.is_burst(5 * MS));
    }

    #[test]
    fn a_fixed_window_holds_whatever_comes_within_it() {
        let fixed = Batching::Fixed(WINDOW);
        for bursting in [false, true] {
            assert_eq!(fixed.hold(Duration::ZERO, bursting), Some(WINDOW));
            assert_eq!(fixed.hold(9 * MS, bursting), Some(MS));
            assert_eq!(fixed.hold(10 * MS, bursting), None);
            assert_eq!(fixed.hold(11 * MS, bursting), None);
        }
        assert_eq!(Batching::Off.hold(Duration::ZERO, true), None);
        assert!(!Batching::Off.is_burst(Duration::ZERO));
    }
}
