//! What watches a TLS connection beyond hyper's own timers: the first
//! request must come within the header read timeout, whatever the protocol,
//! and an HTTP/2 connection with no stream open closes after a while.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The requests of one connection: how many have a response still open,
/// how often that number changed, and the watcher to wake when it does.
#[derive(Default)]
pub(crate) struct Requests {
    open: AtomicUsize,
    changes: AtomicUsize,
    watcher: AtomicWaker,
}

impl Requests {
    /// `service`, counting each request from its call until its response
    /// body is dropped (an event stream's response lives as long as the
    /// stream does).
    pub(crate) fn counting<S>(
        self: &Arc<Self>,
        service: S,
    ) -> impl hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
                 + Send
                 + use<S>,
    > + Clone
    + use<S>
    where
        S: hyper::service::Service<
                http::Request<hyper::body::Incoming>,
                Response = axum::response::Response,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let requests = Arc::clone(self);
        hyper::service::service_fn(move |request| {
            let open = OpenRequest::new(&requests);
            let response = service.call(request);
            async move {
                let response = response.await?;
                Ok(response.map(|body| Body::new(CountedBody { body, _open: open })))
            }
        })
    }

    /// `connection`, dropped (which closes it) when no request has come by
    /// `first_request_by`, or when it has had no request open for
    /// `idle_timeout`.
    pub(crate) fn watch<C>(
        self: Arc<Self>,
        connection: C,
        first_request_by: Instant,
        idle_timeout: Duration,
        peer: SocketAddr,
    ) -> Watched<C> {
        Watched {
            connection,
            requests: self,
            deadline: Box::pin(tokio::time::sleep_until(first_request_by)),
            changes_seen: 0,
            idle_timeout,
            peer,
        }
    }
}

/// A request whose response is still open; dropping it closes the count.
struct OpenRequest(Arc<Requests>);

impl OpenRequest {
    fn new(requests: &Arc<Requests>) -> Self {
        requests.open.fetch_add(1, Ordering::SeqCst);
        requests.changes.fetch_add(1, Ordering::SeqCst);
        requests.watcher.wake();
        OpenRequest(Arc::clone(requests))
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.changes.fetch_add(1, Ordering::SeqCst);
        self.0.watcher.wake();
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted while it lives.
    struct CountedBody {
        #[pin]
        body: Body,
        _open: OpenRequest,
    }
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A connection under [`Requests::watch`].
    pub(crate) struct Watched<C> {
        #[pin]
        connection: C,
        requests: Arc<Requests>,
        // The first request's deadline, then the idle one.
        deadline: Pin<Box<Sleep>>,
        // `Requests::changes` when the deadline was last set.
        changes_seen: usize,
        idle_timeout: Duration,
        peer: SocketAddr,
    }
}

impl<C> Watched<C> {
    /// The connection, for its graceful shutdown.
    pub(crate) fn connection(self: Pin<&mut Self>) -> Pin<&mut C> {
        self.project().connection
    }
}

impl<C, E> Future for Watched<C>
where
    C: Future<Output = Result<(), E>>,
{
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.connection.poll(cx) {
            return Poll::Ready(result);
        }
        // Registered before the counts are read, so no change is missed.
        this.requests.watcher.register(cx.waker());
        let changes = this.requests.changes.load(Ordering::SeqCst);
        if this.requests.open.load(Ordering::SeqCst) > 0 {
            // A stream is open: no deadline runs; woken when one closes.
            return Poll::Pending;
        }
        if changes != *this.changes_seen {
            // The last open request just closed: idle from now.
            *this.changes_seen = changes;
            this.deadline
                .as_mut()
                .reset(Instant::now() + *this.idle_timeout);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let peer = *this.peer;
            if changes == 0 {
                tracing::debug!(%peer, "no request within the header read timeout; closing");
            } else {
                tracing::debug!(%peer, "connection idle with no stream open; closing");
            }
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}
