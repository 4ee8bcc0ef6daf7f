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

use super::compressor::StreamCompressor;
use super::pacer;
use super::segments::{Segment, Segments};
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
    /// a window after the one before or was held, is held until the window
    /// ends, stretched while the process runs behind (see
    /// [`pacer::stretch`]). A
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
            Batching::Adaptive(window) if bursting && since < window / 2 => {
                Some(window + pacer::stretch(window) - since)
            }
            Batching::Adaptive(_) => None,
        }
    }

    /// How long to leave a stream unheard after a write that took
    /// `events` at once, `since` the write before: only adaptive batching,
    /// only when the events had piled up while the task waited to run
    /// (the runtime is behind), and only when, at that pace, the window
    /// brings few enough events (see [`is_quiet_hold`]).
    fn backlog_hold(self, events: u64, since: Duration) -> Option<Duration> {
        match self {
            Batching::Adaptive(window) if events >= BACKLOG_EVENTS => {
                let hold = window + pacer::stretch(window);
                is_quiet_hold(events, since, hold).then_some(hold)
            }
            _ => None,
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
        // The keep-alive timer, which also puts a compressed stream's
        // encoder to rest. Boxed lazily: a connection with keep-alive off
        // carries no timer (unless its encoder is active).
        timer: Option<Pin<Box<Sleep>>>,
        // The keep-alive interval, if any.
        interval: Option<Duration>,
        // When data last went out. The timer is not reset on every frame (a
        // timer-wheel operation per event); when it fires early it is re-armed
        // from here instead.
        last_write: Instant,
        // After a write, what becomes ready soon is held and goes out in one
        // write when the window ends (see `pacer`): a busy stream writes once
        // per window instead of once per event.
        batching: Batching,
        // The batch held back, if any.
        held: Option<Held>,
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
        // Set when the response is compressed.
        compression: Option<Compression>,
    }
}

/// How long a compressed stream may go without a write before its encoder
/// is dropped (see [`StreamCompressor`]): long enough that a feed updated
/// every few seconds keeps its dictionary, short enough that an idle stream
/// holds no encoder. A keep-alive interval shorter than this rests it
/// sooner: a keep-alive means the stream was quiet that long.
const REST_AFTER: Duration = Duration::from_secs(5);

/// A compressed response's encoder.
struct Compression {
    compressor: StreamCompressor,
    // Whether the end of the compressed body has gone out.
    finished: bool,
    // Where the events of the batch being built end, and their shared bytes.
    segments: Segments,
}

impl Compression {
    /// `frame`, compressed (by event, as [`Compression::segments`] marks
    /// them).
    fn compress(&mut self, frame: &[u8]) -> std::io::Result<Bytes> {
        let compressed = self.compressor.compress_events(frame, &self.segments);
        self.segments.clear();
        compressed
    }

    /// Drops the encoder (the stream has been quiet); returns what must go
    /// out for the client to decode up to here.
    fn rest(&mut self) -> Option<Bytes> {
        self.segments.release();
        match self.compressor.rest() {
            Ok(end) => end,
            Err(error) => {
                tracing::warn!(%error, "could not end a compressed SSE frame");
                None
            }
        }
    }
}

/// When the body's timer is next due: the encoder's rest, while one is
/// active, and the next keep-alive.
fn next_due(
    last_write: Instant,
    interval: Option<Duration>,
    compression: Option<&Compression>,
) -> Option<Instant> {
    let keep_alive = interval.map(|interval| last_write + interval);
    let rest = compression
        .filter(|compression| compression.compressor.is_active())
        .map(|_| last_write + rest_after(interval));
    match (keep_alive, rest) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long a stream with this keep-alive interval stays quiet before its
/// encoder rests (see [`REST_AFTER`]).
fn rest_after(interval: Option<Duration>) -> Duration {
    interval.map_or(REST_AFTER, |interval| interval.min(REST_AFTER))
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
            timer: keep_alive.map(|interval| Box::pin(tokio::time::sleep(interval))),
            interval: keep_alive,
            last_write: Instant::now(),
            batching,
            held: None,
            written: false,
            bursting: false,
            buf,
            ended: false,
            pending_events: 0,
            open,
            compression: None,
        }
    }

    /// Compresses everything the body writes with `compressor`.
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    pub(crate) fn compressed(mut self, compressor: StreamCompressor) -> Self {
        // What the buffer holds already (the `retry:` field) is no event.
        let segments = if self.buf.is_empty() {
            Segments::default()
        } else {
            Segments::one(Segment {
                end: self.buf.len(),
                shared: None,
                no_event: true,
            })
        };
        self.compression = Some(Compression {
            compressor,
            finished: false,
            segments,
        });
        self
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
        if let Some(opening) = this
            .compression
            .as_mut()
            .and_then(|compression| compression.compressor.opening())
        {
            // The gzip header, before anything else.
            return Poll::Ready(Some(Ok(Frame::data(opening))));
        }
        let held_until_later = match this.held.as_mut() {
            Some(held) if pacer::now() < held.due => {
                // Woken before the window ends: a body polled from another
                // task parks that task's waker too.
                held.follow(cx.waker());
                if held.quiet {
                    // Only the keep-alive timer or a stray wake-up: the
                    // stream is not listened to until the window ends.
                    return Poll::Pending;
                }
                true
            }
            _ => false,
        };
        drain(
            this.stream.as_mut(),
            cx,
            this.buf,
            this.pending_events,
            this.ended,
            this.compression.as_mut().map(|c| &mut c.segments),
        );

        if this.buf.is_empty()
            && this
                .held
                .as_ref()
                .is_some_and(|held| pacer::now() >= held.due)
        {
            // A window that brought nothing: the hold is over.
            *this.held = None;
        }
        if !this.buf.is_empty() {
            let may_hold = *this.written && !*this.ended && this.buf.len() < MAX_BATCH_BYTES;
            if may_hold && held_until_later {
                // A listening hold took what came; the window goes on.
                return Poll::Pending;
            }
            if may_hold && this.held.is_none() {
                let since = this.last_write.elapsed();
                if let Some(hold) = this.batching.hold(since, *this.bursting) {
                    if let Some(due) = pacer::park(cx.waker(), hold) {
                        let quiet = is_quiet_hold(*this.pending_events, since, hold);
                        if quiet {
                            // Registers a waker that wakes nobody, so the
                            // stream's next events cost no wake-up and no
                            // poll; the clock wakes the task when the window
                            // ends, and the stream is drained then.
                            let mut quieted = Context::from_waker(Waker::noop());
                            drain(
                                this.stream.as_mut(),
                                &mut quieted,
                                this.buf,
                                this.pending_events,
                                this.ended,
                                this.compression.as_mut().map(|c| &mut c.segments),
                            );
                        }
                        if !*this.ended && this.buf.len() < MAX_BATCH_BYTES {
                            *this.held = Some(Held {
                                due,
                                parked: cx.waker().clone(),
                                quiet,
                            });
                            return Poll::Pending;
                        }
                        // Ended or full while quieted: written now. The
                        // clock's wake-up later finds nothing held.
                    }
                }
            }
            // A batch that was held is a burst's by definition: the burst
            // goes on past its window, though this write comes a whole
            // window after the one before.
            let was_held = match this.held.take() {
                Some(held) => {
                    pacer::record_lateness(held.due);
                    true
                }
                None => false,
            };
            // The first write follows no write: it starts no burst.
            let wrote_before = std::mem::replace(this.written, true);
            let previous_write = *this.last_write;
            let events = *this.pending_events;
            if this.timer.is_some() || *this.batching != Batching::Off || this.compression.is_some()
            {
                let now = Instant::now();
                *this.bursting =
                    was_held || (wrote_before && this.batching.is_burst(now - *this.last_write));
                *this.last_write = now;
            }
            let frame = take_frame(this.buf);
            let frame = match this.compression.as_mut() {
                None => frame,
                Some(compression) => {
                    let was_active = compression.compressor.is_active();
                    match compression.compress(&frame) {
                        Ok(compressed) => {
                            if !was_active && compression.compressor.is_active() {
                                // An encoder taken up: the timer rests it.
                                let rest_at = *this.last_write + rest_after(*this.interval);
                                arm_by(this.timer, rest_at);
                            }
                            compressed
                        }
                        Err(error) => {
                            return end_on_compression_error(error, this.ended, this.compression);
                        }
                    }
                }
            };
            this.open
                .written(std::mem::take(this.pending_events), frame.len());
            if !was_held && wrote_before && !*this.ended {
                let since = this.last_write.saturating_duration_since(previous_write);
                if let Some(hold) = this.batching.backlog_hold(events, since) {
                    if let Some(due) = pacer::park(cx.waker(), hold) {
                        // Unheard until the window ends: what comes
                        // meanwhile waits, and wakes nobody.
                        let mut quieted = Context::from_waker(Waker::noop());
                        drain(
                            this.stream.as_mut(),
                            &mut quieted,
                            this.buf,
                            this.pending_events,
                            this.ended,
                            this.compression.as_mut().map(|c| &mut c.segments),
                        );
                        *this.held = Some(Held {
                            due,
                            parked: cx.waker().clone(),
                            quiet: true,
                        });
                    }
                }
            }
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if *this.ended {
            if let Some(compression) = this.compression.as_mut().filter(|c| !c.finished) {
                compression.finished = true;
                return match compression.compressor.finish() {
                    Ok(end) => Poll::Ready(Some(Ok(Frame::data(end)))),
                    Err(error) => end_on_compression_error(error, this.ended, this.compression),
                };
            }
            return Poll::Ready(None);
        }
        while let Some(timer) = this.timer.as_mut() {
            if timer.as_mut().poll(cx).is_pending() {
                break;
            }
            let now = Instant::now();
            if let Some(compression) = this
                .compression
                .as_mut()
                .filter(|compression| compression.compressor.is_active())
            {
                if now >= *this.last_write + rest_after(*this.interval) {
                    let end = compression.rest();
                    if let Some(due) = next_due(*this.last_write, *this.interval, Some(compression))
                    {
                        timer.as_mut().reset(due);
                    }
                    match end {
                        Some(end) => return Poll::Ready(Some(Ok(Frame::data(end)))),
                        None => continue,
                    }
                }
            }
            match *this.interval {
                Some(interval) if now >= *this.last_write + interval => {
                    *this.last_write = now;
                    timer.as_mut().reset(now + interval);
                    telemetry::keep_alive(this.open.route);
                    let comment = match this.compression.as_mut() {
                        None => Bytes::from_static(encode::KEEP_ALIVE),
                        Some(compression) => {
                            match compression.compressor.keep_alive(encode::KEEP_ALIVE) {
                                Ok(comment) => comment,
                                Err(error) => {
                                    return end_on_compression_error(
                                        error,
                                        this.ended,
                                        this.compression,
                                    );
                                }
                            }
                        }
                    };
                    return Poll::Ready(Some(Ok(Frame::data(comment))));
                }
                _ => {}
            }
            // Fired early (data went out since it was set): wait the rest,
            // or, with nothing left to wait for, drop the timer.
            match next_due(*this.last_write, *this.interval, this.compression.as_ref()) {
                Some(due) => timer.as_mut().reset(due),
                None => *this.timer = None,
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.buf.is_empty() && self.compression.as_ref().is_none_or(|c| c.finished)
    }
}

/// Makes `timer` fire by `due` at the latest, building it if there is none.
fn arm_by(timer: &mut Option<Pin<Box<Sleep>>>, due: Instant) {
    match timer.as_mut() {
        Some(timer) if timer.deadline() <= due => {}
        Some(timer) => timer.as_mut().reset(due),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(due))),
    }
}

/// Ends a response whose encoder failed (it cannot go on uncompressed).
fn end_on_compression_error(
    error: std::io::Error,
    ended: &mut bool,
    compression: &mut Option<Compression>,
) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
    tracing::warn!(%error, "could not compress an SSE stream; ending the response");
    *ended = true;
    *compression = None;
    Poll::Ready(None)
}

/// A batch held back until its window ends.
struct Held {
    /// The pacer tick it is due at.
    due: u64,
    /// The waker parked on the pacer for it.
    parked: Waker,
    /// Whether the stream is left unheard until then (see [`is_quiet_hold`]);
    /// otherwise what it yields meanwhile joins the batch as it comes.
    quiet: bool,
}

impl Held {
    /// Parks `waker` for the rest of the window too, unless it wakes the
    /// same task as the one parked.
    fn follow(&mut self, waker: &Waker) {
        if self.parked.will_wake(waker) {
            return;
        }
        let left = pacer::TICK * self.due.saturating_sub(pacer::now()) as u32;
        if let Some(again) = pacer::park(waker, left) {
            self.due = again;
            self.parked.clone_from(waker);
        }
    }
}

/// Encodes every event `stream` has ready into `buf`, up to
/// [`MAX_BATCH_BYTES`], counting them in `pending_events`; on a compressed
/// stream, marks where each ends in `segments`, with its shared bytes.
fn drain<S>(
    mut stream: Pin<&mut S>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    pending_events: &mut u64,
    ended: &mut bool,
    mut segments: Option<&mut Segments>,
) where
    S: Stream,
    S::Item: SseItem,
{
    while !*ended && buf.len() < MAX_BATCH_BYTES {
        match stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => match (
                item.is_event(),
                segments.as_ref().and_then(|_| item.shared_bytes()),
                item.encode_into(buf),
            ) {
                (is_event, shared, Ok(())) => {
                    *pending_events += u64::from(is_event);
                    if let Some(segments) = segments.as_deref_mut() {
                        segments.push(Segment {
                            end: buf.len(),
                            shared,
                            no_event: !is_event,
                        });
                    }
                }
                (_, _, Err(error)) => {
                    tracing::warn!(%error, "SSE stream yielded an error; ending the response");
                    *ended = true;
                }
            },
            Poll::Ready(None) => *ended = true,
            Poll::Pending => break,
        }
    }
}

/// This many events taken at once by a stream that was not holding them
/// say its task ran late: they came faster than it was scheduled. A
/// saturated process whose subscribers are woken per event stays
/// saturated (the publisher's requests wait behind their wake-ups, so its
/// events come further apart than a burst's); after such a write the stream
/// is left unheard for a window, so it is woken once per window, not per
/// event. A pair sent at once is common at any load, so it takes three.
const BACKLOG_EVENTS: u64 = 3;

/// The most events a quiet hold expects to arrive before its window ends: an
/// eighth of the broker's default [`buffer`](crate::RegistryConfig::buffer),
/// so a quieted subscriber does not fall behind it.
const QUIET_HOLD_MAX_EVENTS: u64 = 32;

/// Whether a batch of `events` that came in `since` the last write may be
/// held for `hold` without listening to its stream: whether, at the pace
/// they came, the events that follow within the hold stay few.
fn is_quiet_hold(events: u64, since: Duration, hold: Duration) -> bool {
    let since = since.max(pacer::TICK).as_micros();
    let expected = u128::from(events) * (since + hold.as_micros()) / since;
    expected <= u128::from(QUIET_HOLD_MAX_EVENTS)
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

    use super::pacer::tests::CountWakes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

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

    #[test]
    fn a_quiet_hold_only_when_few_events_are_expected_before_it_ends() {
        // One event 2 ms after the write, held 8 ms more: about 5 expected.
        assert!(is_quiet_hold(1, 2 * MS, 8 * MS));
        // Thirty within a tick of the write: hundreds expected.
        assert!(!is_quiet_hold(30, Duration::ZERO, 9 * MS));
        assert!(is_quiet_hold(
            QUIET_HOLD_MAX_EVENTS,
            10 * MS,
            Duration::ZERO
        ));
        assert!(!is_quiet_hold(
            QUIET_HOLD_MAX_EVENTS + 1,
            10 * MS,
            Duration::ZERO
        ));
    }

    /// A stream the test feeds by hand, which keeps the waker it was last
    /// polled with.
    #[derive(Clone, Default)]
    struct Fed(Arc<Mutex<(std::collections::VecDeque<&'static str>, Option<Waker>)>>);

    impl Fed {
        fn send(&self, data: &'static str) {
            let mut fed = self.0.lock().unwrap();
            fed.0.push_back(data);
            if let Some(waker) = fed.1.take() {
                waker.wake();
            }
        }

        /// Whether the stream's next event would wake `task`.
        fn listened_to_by(&self, task: &Waker) -> bool {
            let fed = self.0.lock().unwrap();
            fed.1.as_ref().is_some_and(|waker| waker.will_wake(task))
        }
    }

    impl Stream for Fed {
        type Item = &'static str;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<&'static str>> {
            let mut fed = self.0.lock().unwrap();
            match fed.0.pop_front() {
                Some(data) => Poll::Ready(Some(data)),
                None => {
                    fed.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    fn poll_data(body: &mut Pin<Box<SseBody<Fed>>>, cx: &mut Context<'_>) -> Option<String> {
        use http_body::Body as _;
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let data = frame.into_data().expect("a data frame");
                Some(String::from_utf8(data.to_vec()).expect("UTF-8"))
            }
            Poll::Ready(None) => panic!("the body ended"),
            Poll::Pending => None,
        }
    }

    /// A body over a fed stream with adaptive batching of `window` and no
    /// keep-alive or retry.
    fn adaptive_body(window: Duration) -> (Fed, Pin<Box<SseBody<Fed>>>) {
        let fed = Fed::default();
        let body = Box::pin(SseBody::new(
            fed.clone(),
            None,
            None,
            Batching::Adaptive(window),
            OpenStream::new("test"),
        ));
        (fed, body)
    }

    /// A waker that counts how often it is woken.
    fn counting_waker() -> (Arc<CountWakes>, Waker) {
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        (wakes, waker)
    }

    /// Waits (real time: the batch clock's ticks are real) until `wakes`
    /// has been woken since it read `woken_before`, with a generous bound.
    fn until_woken_again(wakes: &CountWakes, woken_before: usize, never: &str) {
        let waited = std::time::Instant::now();
        while wakes.0.load(Ordering::SeqCst) == woken_before {
            assert!(waited.elapsed() < Duration::from_secs(30), "{never}");
            std::thread::sleep(MS);
        }
    }

    // The batch's window runs on the batch clock's real ticks; the gaps
    // between events on Tokio's paused clock, so they are exact.
    #[tokio::test(start_paused = true)]
    async fn a_burst_is_held_without_waking_per_event_and_goes_on_past_its_window() {
        let (fed, mut body) = adaptive_body(Duration::from_millis(200));
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);

        fed.send("1");
        assert_eq!(
            poll_data(&mut body, &mut cx).as_deref(),
            Some("data: 1\n\n"),
            "the first batch is never held"
        );
        tokio::time::advance(10 * MS).await;
        fed.send("2");
        assert_eq!(
            poll_data(&mut body, &mut cx).as_deref(),
            Some("data: 2\n\n"),
            "a lone pair is not held"
        );
        tokio::time::advance(10 * MS).await;
        fed.send("3");
        assert_eq!(
            poll_data(&mut body, &mut cx),
            None,
            "a burst's batch is held"
        );
        assert!(
            !fed.listened_to_by(&waker),
            "a quiet hold leaves the stream unheard"
        );
        let woken_before = wakes.0.load(Ordering::SeqCst);
        fed.send("4");
        fed.send("5");
        // The clock wakes the task once the window ends; nothing else did.
        until_woken_again(
            &wakes,
            woken_before,
            "the batch clock never woke the held batch",
        );
        assert_eq!(
            poll_data(&mut body, &mut cx).as_deref(),
            Some("data: 3\n\ndata: 4\n\ndata: 5\n\n"),
            "what came during the hold goes out in one write"
        );
        assert!(fed.listened_to_by(&waker), "listened to again once written");
        // The held write came a whole window after the one before, yet the
        // burst goes on: the next event close behind is held too.
        tokio::time::advance(MS).await;
        fed.send("6");
        assert_eq!(poll_data(&mut body, &mut cx), None, "still a burst");
    }

    /// Events that piled up while a stream's task waited to run (three or
    /// more taken at once, not held) go out at once, and then the stream is
    /// left unheard for a window: what comes meanwhile wakes nobody and
    /// goes out in one write when the clock wakes the task. A pair taken at
    /// once changes nothing.
    #[tokio::test(start_paused = true)]
    async fn a_backlog_goes_out_at_once_and_leaves_the_stream_unheard_for_a_window() {
        const WINDOW: Duration = Duration::from_millis(200);
        let (fed, mut body) = adaptive_body(WINDOW);
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);

        fed.send("1");
        assert_eq!(
            poll_data(&mut body, &mut cx).as_deref(),
            Some("data: 1\n\n")
        );
        tokio::time::advance(WINDOW).await;
        fed.send("2");
        fed.send("3");
        assert_eq!(
            poll_data(&mut body, &mut cx).as_deref(),
            Some("data: 2\n\ndata: 3\n\n"),
            "a pair goes out at once"
        );
        assert!(fed.listened_to_by(&waker), "a pair leaves the stream heard");
        tokio::time::advance(WINDOW).await;
        for data in ["4", "5", "6"] {
            fed.send(data);
        }
        assert_eq!(
            poll_data(&mut body, &mut cx).as_deref(),
            Some("data: 4\n\ndata: 5\n\ndata: 6\n\n"),
            "a backlog goes out at once"
        );
        assert!(
            !fed.listened_to_by(&waker),
            "after a backlog the stream is left unheard"
        );
        let woken_before = wakes.0.load(Ordering::SeqCst);
        fed.send("7");
        assert_eq!(poll_data(&mut body, &mut cx), None, "held for the window");
        until_woken_again(
            &wakes,
            woken_before,
            "the batch clock never woke the unheard stream",
        );
        assert_eq!(
            poll_data(&mut body, &mut cx).as_deref(),
            Some("data: 7\n\n")
        );
        assert!(fed.listened_to_by(&waker), "heard again once written");
    }

    fn poll_bytes(body: &mut Pin<Box<SseBody<Fed>>>, cx: &mut Context<'_>) -> Option<Bytes> {
        use http_body::Body as _;
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Some(frame.into_data().expect("a data frame")),
            Poll::Ready(None) => panic!("the body ended"),
            Poll::Pending => None,
        }
    }

    /// A quiet compressed stream drops its encoder after [`REST_AFTER`], or
    /// at its first keep-alive if that comes sooner (a stream with a short
    /// keep-alive would otherwise never rest); a stream with no keep-alive
    /// then holds no timer either.
    #[cfg(feature = "compression")]
    #[tokio::test(start_paused = true)]
    async fn a_quiet_compressed_stream_rests_at_its_keep_alive_or_after_five_seconds() {
        use super::super::accept_encoding::Encoding;
        const SECOND: Duration = Duration::from_secs(1);
        for (keep_alive, rests_after) in [
            (Some(SECOND), SECOND),
            (Some(15 * SECOND), REST_AFTER),
            (None, REST_AFTER),
        ] {
            let fed = Fed::default();
            let mut body = Box::pin(
                SseBody::new(
                    fed.clone(),
                    keep_alive,
                    None,
                    Batching::Off,
                    OpenStream::new("test"),
                )
                .compressed(StreamCompressor::new(Encoding::Zstd)),
            );
            let mut cx = Context::from_waker(Waker::noop());
            let active = |body: &Pin<Box<SseBody<Fed>>>| {
                body.compression
                    .as_ref()
                    .is_some_and(|compression| compression.compressor.is_active())
            };
            let mut wire = Vec::new();
            fed.send("1");
            wire.extend_from_slice(&poll_bytes(&mut body, &mut cx).expect("the event"));
            assert!(
                active(&body),
                "{keep_alive:?}: an event takes up an encoder"
            );
            tokio::time::advance(rests_after - MS).await;
            assert!(poll_bytes(&mut body, &mut cx).is_none());
            assert!(active(&body), "{keep_alive:?}: not quiet long enough yet");
            tokio::time::advance(MS).await;
            while let Some(bytes) = poll_bytes(&mut body, &mut cx) {
                wire.extend_from_slice(&bytes);
            }
            assert!(
                !active(&body),
                "{keep_alive:?}: rested after {rests_after:?}"
            );
            let expected = match keep_alive {
                Some(SECOND) => "data: 1\n\n: keep-alive\n\n",
                _ => "data: 1\n\n",
            };
            let decoded = zstd::stream::decode_all(&wire[..]).expect("valid zstd");
            assert_eq!(
                String::from_utf8(decoded).unwrap(),
                expected,
                "{keep_alive:?}"
            );
            assert_eq!(
                body.timer.is_some(),
                keep_alive.is_some(),
                "{keep_alive:?}: a timer only for the keep-alive"
            );
        }
    }
}
