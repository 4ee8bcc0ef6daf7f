//! Shutdown that always ends: the signal that starts it, and how open event
//! streams are ended during it (with a spread-out reconnection hint).

use std::hash::{BuildHasher, RandomState};
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http_body::Frame;
use pin_project_lite::pin_project;

use crate::event::encode;

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT) or, on Unix,
/// SIGTERM, which is what `docker stop`, Kubernetes and systemd send.
///
/// ```no_run
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// sse_runtime::serve(listener, app)
///     .with_graceful_shutdown(sse_runtime::shutdown_signal())
///     .await
/// # }
/// ```
///
/// A signal that cannot be listened for is logged and ignored, rather than
/// taken as a request to stop. Must be called within a Tokio runtime.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("Ctrl-C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Where a server is in its life. Connections and event streams watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Serving,
    /// No new connections; event streams end with a reconnection hint, other
    /// responses finish.
    Draining,
    /// The deadline passed: whatever is still open is closed.
    Closing,
}

/// Picks a reconnection delay uniformly in `range` (whole milliseconds).
fn jittered(range: &RangeInclusive<Duration>) -> Duration {
    let low = range.start().as_millis() as u64;
    let high = (range.end().as_millis() as u64).max(low);
    // A fresh `RandomState` is seeded per call: enough randomness to spread
    // reconnections, with no dependency on a random number crate.
    let random = RandomState::new().hash_one(0u8);
    Duration::from_millis(low + random % (high - low + 1))
}

pin_project! {
    /// An event-stream response body that ends when the server drains,
    /// after a last `retry:` field with a jittered delay, so that a deploy
    /// does not make every browser reconnect in the same second.
    pub(crate) struct EndOnDrain {
        #[pin]
        inner: Body,
        // Resolves when the server starts draining; `None` once it has.
        draining: Option<BoxFuture<'static, ()>>,
        retry: RangeInclusive<Duration>,
        ended: bool,
    }
}

impl EndOnDrain {
    pub(crate) fn wrap(
        inner: Body,
        mut phase: tokio::sync::watch::Receiver<Phase>,
        retry: RangeInclusive<Duration>,
    ) -> Body {
        let draining = Box::pin(async move {
            // Err: the server is gone, which only happens after it drained.
            let _ = phase.wait_for(|phase| *phase >= Phase::Draining).await;
        });
        Body::new(EndOnDrain {
            inner,
            draining: Some(draining),
            retry,
            ended: false,
        })
    }
}

impl http_body::Body for EndOnDrain {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        // Frames of an event-stream body end on an event boundary, so ending
        // between two frames never cuts an event in half.
        if let Some(draining) = this.draining.as_mut() {
            if draining.as_mut().poll(cx).is_ready() {
                *this.draining = None;
                *this.ended = true;
                let mut last = BytesMut::new();
                encode::write_retry(&mut last, jittered(this.retry));
                last.extend_from_slice(b"\n");
                return Poll::Ready(Some(Ok(Frame::data(last.freeze()))));
            }
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_range_and_spreads() {
        let range = Duration::from_millis(1000)..=Duration::from_millis(5000);
        let picks: Vec<Duration> = (0..200).map(|_| jittered(&range)).collect();
        assert!(picks.iter().all(|pick| range.contains(pick)), "{picks:?}");
        let distinct: std::collections::BTreeSet<_> = picks.iter().collect();
        assert!(
            distinct.len() > 100,
            "only {} distinct delays",
            distinct.len()
        );
    }

    #[test]
    fn a_single_point_range_gives_that_delay() {
        let at = Duration::from_millis(1500);
        assert_eq!(jittered(&(at..=at)), at);
        // A reversed range is read as its start.
        let reversed = Duration::from_secs(5)..=Duration::from_secs(1);
        assert_eq!(jittered(&reversed), Duration::from_secs(5));
    }
}
