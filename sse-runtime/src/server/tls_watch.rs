//! What watches a TLS connection beyond hyper's own timers: the first
//! request must come within the header read timeout, whatever the protocol,
//! an HTTP/2 connection with no stream open closes after a while, and a
//! stream left waiting on a flow-control window that never opens ends after
//! the write-stall timeout (see [`stream_progress`](super::stream_progress)).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

use super::stream_progress::Responses;
use super::write_stall::StallTimeout;

/// The requests of one connection: how many have a response still open,
/// how often that number changed, and the watcher to wake when it does.
#[derive(Default)]
pub(crate) struct Requests {
    open: AtomicUsize,
    changes: AtomicUsize,
    watcher: AtomicWaker,
    responses: Arc<Responses>,
}

impl Requests {
    /// `service`, counting each request from its call until its response
    /// body is dropped (an event stream's response lives as long as the
    /// stream does), each response body watched for stalls.
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
            let requests = Arc::clone(&requests);
            async move {
                let response = response.await?;
                Ok(response.map(|body| requests.responses.watch(body, open)))
            }
        })
    }

    /// `connection`, dropped (which closes it) when no request has come by
    /// `first_request_by`, or when it has had no request open for
    /// `idle_timeout`; while requests are open, their responses are checked
    /// against the `stall` timeout.
    pub(crate) fn watch<C>(
        self: Arc<Self>,
        connection: C,
        first_request_by: Instant,
        idle_timeout: Duration,
        stall: StallTimeout,
        peer: SocketAddr,
    ) -> Watched<C> {
        Watched {
            connection,
            requests: self,
            deadline: Box::pin(tokio::time::sleep_until(first_request_by)),
            changes_seen: 0,
            checking_stalls: false,
            idle_timeout,
            stall,
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
    /// A connection under [`Requests::watch`].
    pub(crate) struct Watched<C> {
        #[pin]
        connection: C,
        requests: Arc<Requests>,
        // The first request's deadline, then the idle one.
        deadline: Pin<Box<Sleep>>,
        // `Requests::changes` when the deadline was last set.
        changes_seen: usize,
        // Whether the deadline is the next stall check.
        checking_stalls: bool,
        idle_timeout: Duration,
        stall: StallTimeout,
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
            // A stream is open: no idle deadline runs (woken when one
            // closes), only the stall checks.
            let Some(timeout) = this.stall.get() else {
                return Poll::Pending;
            };
            let check_every = (timeout / 4).max(Duration::from_millis(10));
            if !*this.checking_stalls {
                *this.checking_stalls = true;
                this.deadline.as_mut().reset(Instant::now() + check_every);
            }
            while this.deadline.as_mut().poll(cx).is_ready() {
                this.requests.responses.end_stalled(timeout);
                this.deadline.as_mut().reset(Instant::now() + check_every);
            }
            return Poll::Pending;
        }
        if changes != *this.changes_seen || std::mem::take(this.checking_stalls) {
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
