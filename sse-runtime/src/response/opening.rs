//! When a response's head goes out: once its stream is open.
//!
//! A client that sees `200` takes its stream to be subscribed: a page posts
//! once `EventSource` fires `open`, a test once its request is answered.
//! A Redis subscription to a key new to its instance fixes its position
//! (the stream's last entry) a round trip later, so a head sent on the
//! stream's first `Pending` could reach the client before that position
//! was read, and an event the client then caused, published in between,
//! would be skipped without a word. So a stream that is still opening says
//! so as it returns `Pending` ([`still_opening`]), and [`opened`] polls it
//! in the handler's future, before the response exists, until it is open:
//! until it yields its first item, or returns `Pending` without saying it
//! is still opening. Any wrapper (`take_until`, `map`, a multi-key stream)
//! passes the signal on, since it polls the inner stream in the same call.
//!
//! The wait is bounded by [`OPEN_WAIT`]: a stream that cannot open (its
//! Redis unreachable) gets its head then, and keep-alives, rather than a
//! client and a proxy left with no answer; it opens when Redis is back.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;

thread_local! {
    /// Set by a stream still opening, in the poll that [`opened`] makes.
    static OPENING: Cell<bool> = const { Cell::new(false) };
}

/// Said by a stream that returns `Pending` before it is open (its position
/// not yet fixed): the response's head waits for it. (Only the Redis broker
/// opens with a round trip; the memory broker is open at once.)
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn still_opening() {
    OPENING.with(|opening| opening.set(true));
}

/// Runs `poll` (a poll of a stream, on this thread) and says whether the
/// stream was still opening in it: what [`opened`] waits on, and a test
/// too, rather than a sleep, before it sends to a subscription.
pub(crate) fn polled_while_opening<T>(poll: impl FnOnce() -> T) -> (T, bool) {
    OPENING.with(|opening| opening.set(false));
    let polled = poll();
    (polled, OPENING.with(|opening| opening.replace(false)))
}

/// `future`, saying [`still_opening`] whenever it is pending.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) async fn while_opening<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let polled = future.as_mut().poll(cx);
        if polled.is_pending() {
            still_opening();
        }
        polled
    })
    .await
}

/// The longest a response's head waits for its stream to open.
pub(crate) const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `stream` once it is open: polled until it yields its first item (kept
/// for the response), ends, or is pending without [`still_opening`]; or
/// after [`OPEN_WAIT`], open or not.
pub(crate) async fn opened<S: Stream>(stream: S) -> Opened<S> {
    let mut stream = Box::pin(stream);
    let open =
        std::future::poll_fn(
            |cx| match polled_while_opening(|| stream.as_mut().poll_next(cx)) {
                (Poll::Ready(item), _) => Poll::Ready(Some(item)),
                (Poll::Pending, true) => Poll::Pending,
                (Poll::Pending, false) => Poll::Ready(None),
            },
        );
    let first = tokio::time::timeout(OPEN_WAIT, open).await.unwrap_or(None);
    Opened { first, stream }
}

pin_project! {
    /// A stream polled open by [`opened`]: its first item (if it came), then
    /// the rest.
    pub struct Opened<S: Stream> {
        first: Option<Option<S::Item>>,
        stream: Pin<Box<S>>,
    }
}

impl<S: Stream> Stream for Opened<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        if let Some(first) = this.first.take() {
            return Poll::Ready(first);
        }
        this.stream.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{FutureExt, StreamExt};

    /// Pending and still opening until `open` fires; then its items.
    fn opening_until(open: tokio::sync::oneshot::Receiver<()>) -> impl Stream<Item = &'static str> {
        futures_util::stream::once(while_opening(open))
            .flat_map(|_| futures_util::stream::iter(["resume point", "first event"]))
    }

    #[tokio::test]
    async fn the_head_waits_for_a_stream_still_opening_and_keeps_its_first_item() {
        let (open, opening) = tokio::sync::oneshot::channel();
        let mut waiting = Box::pin(opened(opening_until(opening)));
        assert!((&mut waiting).now_or_never().is_none(), "still opening");
        open.send(()).unwrap();
        let stream = waiting.await;
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items, ["resume point", "first event"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_cannot_open_gets_its_head_after_the_bound_and_opens_later() {
        let (open, opening) = tokio::sync::oneshot::channel();
        let started = tokio::time::Instant::now();
        let mut stream = opened(opening_until(opening)).await;
        assert_eq!(started.elapsed(), OPEN_WAIT);
        assert!(stream.next().now_or_never().is_none(), "still opening");
        open.send(()).unwrap();
        assert_eq!(stream.next().await, Some("resume point"));
    }

    #[tokio::test]
    async fn a_stream_that_is_merely_quiet_is_open_at_once() {
        let quiet = futures_util::stream::pending::<&str>();
        assert!(Box::pin(opened(quiet)).now_or_never().is_some());
        let ended = futures_util::stream::empty::<&str>();
        let mut stream = opened(ended).await;
        assert_eq!(stream.next().await, None);
    }
}
