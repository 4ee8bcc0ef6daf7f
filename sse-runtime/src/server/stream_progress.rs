//! The write-stall rule for one response among many on a connection. Over
//! HTTP/2, a client can open streams and never open their flow-control
//! windows: the socket keeps flowing (pings, other streams), so the
//! connection's write-stall timer never starts, yet hyper never asks those
//! streams' bodies for more, and each keeps its subscription, its buffers
//! and its registry entry for as long as the connection lives.
//!
//! Here each response body records when it had something to give and was
//! not asked for it. A connection's watcher ends the responses left waiting
//! longer than the write-stall timeout: their bodies (subscription, buffers,
//! registry entry) are dropped at once, and hyper resets the stream the
//! next time it asks.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::body::Body;
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

use crate::sync::lock;

/// Stored in [`Progress::waiting_since`] while the body has been asked
/// since it last had something to give.
const ASKED: u64 = u64::MAX;

/// The responses of one connection, for its watcher.
pub(crate) struct Responses {
    /// What `waiting_since` counts from.
    epoch: Instant,
    open: Mutex<Vec<Weak<Progress>>>,
}

impl Default for Responses {
    fn default() -> Self {
        Responses {
            epoch: Instant::now(),
            open: Mutex::new(Vec::new()),
        }
    }
}

impl Responses {
    /// `body`, watched; `held` lives as long as the body does (the watcher
    /// drops both when it ends the response).
    pub(crate) fn watch<H: Send + 'static>(self: &Arc<Self>, body: Body, held: H) -> Body {
        // Waiting from the start: hyper asks a body only once the stream
        // has window to send, which one that never opens never has.
        let progress = Arc::new(Progress {
            responses: Arc::downgrade(self),
            waiting_since: AtomicU64::new(self.millis(Instant::now())),
            body: Mutex::new(Some((body, Box::new(held)))),
            asker: AtomicWaker::new(),
        });
        {
            let mut open = lock(&self.open);
            open.retain(|progress| progress.strong_count() > 0);
            open.push(Arc::downgrade(&progress));
        }
        Body::new(WatchedBody {
            waker: Waker::from(Arc::clone(&progress)),
            progress,
        })
    }

    /// Ends every response that has waited to be asked for longer than
    /// `timeout`; returns how many.
    pub(crate) fn end_stalled(&self, timeout: Duration) -> usize {
        let now = self.millis(Instant::now());
        let limit = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let stalled: Vec<_> = lock(&self.open)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|progress| {
                let since = progress.waiting_since.load(Ordering::SeqCst);
                since != ASKED && now.saturating_sub(since) >= limit
            })
            .filter_map(|progress| lock(&progress.body).take())
            .collect();
        let ended = stalled.len();
        if ended > 0 {
            crate::telemetry::write_stall();
            tracing::info!(
                streams = ended,
                "ending streams whose client opened no flow-control window (write-stall timeout)"
            );
        }
        // Dropped here, outside the locks: their subscriptions and entries go.
        drop(stalled);
        ended
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(ASKED - 1)
            .min(ASKED - 1)
    }
}

/// What a response's body holds besides the body itself.
type Held = Box<dyn Send>;

/// One response's body and when it was last left waiting.
struct Progress {
    responses: Weak<Responses>,
    /// Milliseconds since [`Responses::epoch`] at which the body had
    /// something to give (it gave a frame, or it woke) and has not been
    /// asked since; [`ASKED`] once it has.
    waiting_since: AtomicU64,
    /// `None` once the watcher has ended the response.
    body: Mutex<Option<(Body, Held)>>,
    /// Who asks the body for frames (hyper's task), woken when it wakes.
    asker: AtomicWaker,
}

impl Progress {
    fn mark_waiting(&self) {
        if let Some(responses) = self.responses.upgrade() {
            let now = responses.millis(Instant::now());
            // Keeps the earliest: a body woken twice waited since the first.
            let _ =
                self.waiting_since
                    .compare_exchange(ASKED, now, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

impl Wake for Progress {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.mark_waiting();
        self.asker.wake();
    }
}

/// The body hyper sees: the response's own, asked through [`Progress`].
struct WatchedBody {
    progress: Arc<Progress>,
    /// Wakes through [`Progress`], so a wake is recorded.
    waker: Waker,
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let progress = &self.progress;
        progress.asker.register(cx.waker());
        progress.waiting_since.store(ASKED, Ordering::SeqCst);
        let mut slot = lock(&progress.body);
        let Some((body, _)) = slot.as_mut() else {
            return Poll::Ready(Some(Err(axum::Error::new(
                "the stream made no progress for the write-stall timeout",
            ))));
        };
        let polled = Pin::new(body).poll_frame(&mut Context::from_waker(&self.waker));
        if let Poll::Ready(Some(Ok(_))) = polled {
            // Given a frame: it has more to give until asked again.
            progress.mark_waiting();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.progress.body)
            .as_ref()
            .is_some_and(|(body, _)| body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.progress.body)
            .as_ref()
            .map_or_else(SizeHint::default, |(body, _)| body.size_hint())
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        // The body's registered wakers point back at `Progress`, which holds
        // the body: taking it out breaks that cycle.
        let taken = lock(&self.progress.body).take();
        drop(taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{FutureExt, StreamExt};
    use http_body_util::BodyExt;

    /// A body with a frame ready that nobody asks for is ended after the
    /// timeout; one waiting for its own next frame (asked, pending) is not,
    /// however long it waits.
    #[tokio::test(start_paused = true)]
    async fn only_a_body_left_unasked_is_ended() {
        let responses = Arc::new(Responses::default());
        let (sender, receiver) =
            tokio::sync::mpsc::channel::<Result<Frame<bytes::Bytes>, axum::Error>>(4);
        let frames = tokio_stream_from(receiver);
        let held = Arc::new(());
        let mut idle = responses.watch(
            Body::new(http_body_util::StreamBody::new(frames)),
            Arc::clone(&held),
        );
        let mut unasked = responses.watch(Body::from("ready"), ());

        // Asked once each: the idle one has nothing yet, the other gives its frame.
        assert!(idle.frame().now_or_never().is_none());
        assert!(unasked.frame().await.is_some());

        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(responses.end_stalled(Duration::from_secs(30)), 1);
        assert!(unasked.frame().await.is_some_and(|frame| frame.is_err()));

        // The idle one is still there, holding what it held.
        assert_eq!(Arc::strong_count(&held), 2);
        sender.send(Ok(Frame::data("event".into()))).await.unwrap();
        // Woken, and then asked at once: not stalled.
        let frame = idle.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "event");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(idle.frame().now_or_never().is_none());
        assert_eq!(responses.end_stalled(Duration::from_secs(30)), 0);

        // Woken and not asked: ended, and what it held goes with it.
        sender.send(Ok(Frame::data("event".into()))).await.unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(responses.end_stalled(Duration::from_secs(30)), 0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(responses.end_stalled(Duration::from_secs(30)), 1);
        assert_eq!(Arc::strong_count(&held), 1);
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut receiver: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send {
        futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed()
    }
}
