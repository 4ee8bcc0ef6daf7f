//! A deadline on reading a request body, so a client that sends its body a
//! byte at a time (a slow-body attack) cannot hold a handler and its
//! connection for as long as it likes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub(crate) struct BodyTimedOut(Duration);

pin_project! {
    /// A request body that fails once `limit` has passed since its request
    /// arrived. The timer is created on the first read, so a request whose
    /// body is never read (every `GET`) carries none.
    pub(crate) struct DeadlineBody<B> {
        #[pin]
        inner: B,
        limit: Duration,
        arrived: Instant,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> DeadlineBody<B> {
    pub(crate) fn new(inner: B, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            limit,
            arrived: Instant::now(),
            timer: None,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = *this.arrived + *this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut(*this.limit).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
