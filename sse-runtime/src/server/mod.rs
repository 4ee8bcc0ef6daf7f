//! A server loop for many long-lived event streams: HTTP/1.1, and with the
//! `tls` feature TLS with HTTP/2 or HTTP/1.1 by ALPN, with the limits and
//! timeouts that keep misbehaving clients from taking it down.

pub(crate) mod body_deadline;
pub(crate) mod lean_http1;
pub(crate) mod limits;
pub(crate) mod shutdown;
#[cfg(feature = "tls")]
mod stream_progress;
#[cfg(feature = "tls")]
pub(crate) mod tls;
#[cfg(feature = "tls")]
mod tls_watch;
pub(crate) mod write_stall;

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::BytesMut;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::header;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use crate::response::RouteWriteStall;
use crate::server::body_deadline::DeadlineBody;
use crate::server::limits::{MAX_REFUSING, PeerSlot, PerPeer, default_max_connections, refuse};
use crate::server::shutdown::{EndOnDrain, Phase};
use crate::server::write_stall::{DEFAULT_WRITE_STALL_TIMEOUT, StallTimeout, WriteStallIo};
use lean_http1::{Next, Rewind};

/// Serves `app` on `listener` over HTTP/1.1 (or over TLS, with
/// [`tls`](Serve::tls)), the way `axum::serve` does, with a smaller footprint
/// per connection and defences against clients that misbehave.
///
/// Bodiless `GET`s, which is every `EventSource` request, are served by a
/// lean HTTP/1.1 path that writes the response straight onto the socket, so
/// an open event stream holds no HTTP buffers: 3.2 KB of server memory per
/// idle stream, against 21.1 KB under `axum::serve`, whose hyper connection
/// keeps an 8 KiB read and an 8 KiB write buffer each (`BENCHMARKS.md`,
/// 10,000 idle streams). Anything else (a body, `HEAD`, HTTP/1.0, an
/// upgrade) hands its connection to hyper. Browsers speak HTTP/2 only over
/// TLS: behind a TLS-terminating proxy that speaks HTTP/2 to them, nothing
/// is lost; to terminate TLS here, see [`tls`](Serve::tls).
///
/// Each request carries `ConnectInfo<SocketAddr>` of its peer, as with
/// `into_make_service_with_connect_info`. Sockets are set to `TCP_NODELAY`:
/// writes are already batched by the response's
/// [batch window](crate::Sse::batch_window). An accept error is logged and
/// retried, after a second if it is not about one connection, so the server
/// never stops by itself.
///
/// # Faults it survives
///
/// | setting | default | protects against |
/// |---|---|---|
/// | [`write_stall_timeout`](Serve::write_stall_timeout) | 30 s | a client that stops reading: its connection, stream and registry entry are released |
/// | [`max_connections`](Serve::max_connections) | the descriptor limit less 256 | a connection flood: accepting pauses at the limit (clients wait in the backlog) and resumes as connections close |
/// | [`max_connections_per_ip`](Serve::max_connections_per_ip) | off | one address taking every place: its extra connections get `429` |
/// | [`header_read_timeout`](Serve::header_read_timeout) | 10 s | slow headers (slowloris), idle keep-alive connections, and over TLS a client that says nothing after its handshake (HTTP/1.1 or HTTP/2) |
/// | [`body_read_timeout`](Serve::body_read_timeout) | 30 s | a request body sent a byte at a time |
/// | [`shutdown_deadline`](Serve::shutdown_deadline) | 10 s | a graceful shutdown that never ends: what is still open then is closed |
/// | [`shutdown_retry`](Serve::shutdown_retry) | 1–5 s | every browser reconnecting in the same second after a deploy |
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use std::time::Duration;
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Router::new().route("/", get(|| async { "hello" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// sse_runtime::serve(listener, app)
///     .write_stall_timeout(Duration::from_secs(20))
///     .max_connections_per_ip(100)
///     .with_graceful_shutdown(sse_runtime::shutdown_signal())
///     .await
/// # }
/// ```
pub fn serve(listener: TcpListener, app: Router) -> Serve {
    Serve {
        listener,
        app,
        shutdown: None,
        limits: Limits {
            max_connections: None,
            max_connections_per_ip: None,
            write_stall_timeout: Some(DEFAULT_WRITE_STALL_TIMEOUT),
            header_read_timeout: Some(Serve::DEFAULT_HEADER_READ_TIMEOUT),
            body_read_timeout: Some(Serve::DEFAULT_BODY_READ_TIMEOUT),
            shutdown_deadline: Serve::DEFAULT_SHUTDOWN_DEADLINE,
            shutdown_retry: Serve::DEFAULT_SHUTDOWN_RETRY,
        },
        #[cfg(feature = "tls")]
        tls: None,
    }
}

/// A server from [`serve`]: set its limits, then `.await` it to run it.
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve {
    listener: TcpListener,
    app: Router,
    shutdown: Option<BoxFuture<'static, ()>>,
    limits: Limits,
    #[cfg(feature = "tls")]
    tls: Option<crate::server::tls::TlsConfig>,
}

#[derive(Clone)]
struct Limits {
    /// `None`: [`default_max_connections`], read when the server starts.
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    write_stall_timeout: Option<Duration>,
    header_read_timeout: Option<Duration>,
    body_read_timeout: Option<Duration>,
    shutdown_deadline: Duration,
    shutdown_retry: RangeInclusive<Duration>,
}

impl Serve {
    /// The default [`header_read_timeout`](Self::header_read_timeout): 10 seconds.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default [`body_read_timeout`](Self::body_read_timeout): 30 seconds.
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default [`shutdown_deadline`](Self::shutdown_deadline): 10 seconds.
    pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
    /// The default [`shutdown_retry`](Self::shutdown_retry): 1 to 5 seconds.
    pub const DEFAULT_SHUTDOWN_RETRY: RangeInclusive<Duration> =
        Duration::from_secs(1)..=Duration::from_secs(5);

    /// Stops accepting when `signal` completes, then shuts down gracefully:
    /// every open event stream (a response of type `text/event-stream`) ends
    /// after a `retry:` hint (see [`shutdown_retry`](Self::shutdown_retry)),
    /// other responses finish, and whatever is still open after the
    /// [`shutdown_deadline`](Self::shutdown_deadline) is closed. The server
    /// then returns.
    ///
    /// [`shutdown_signal`](crate::shutdown_signal) resolves on Ctrl-C or SIGTERM.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Closes a connection whose writes make no progress for `timeout`
    /// (default 30 s; `None` or zero: never): the client stopped reading.
    /// Its response body and stream are dropped, which releases the stream's
    /// registry entry. A route can set its own with
    /// [`Sse::write_stall_timeout`](crate::Sse::write_stall_timeout).
    ///
    /// Without it, a client that stops reading is never written to again,
    /// so neither keep-alive nor the registry's lag policy ever runs for it,
    /// and its connection is held until the process ends.
    pub fn write_stall_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.limits.write_stall_timeout = timeout.into();
        self
    }

    /// The most connections open at once (default: the process's open-file
    /// limit less 256, see [`default_max_connections`](crate::default_max_connections);
    /// at least 1). At the limit the server stops accepting: new clients wait
    /// in the listen backlog, open streams keep flowing, and accepting
    /// resumes as connections close.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.limits.max_connections = Some(max.max(1));
        self
    }

    /// The most connections open at once from one IP address (default: no
    /// limit; at least 1); an IPv6 address counts with its /64, which one
    /// client usually holds whole. A connection over it gives its place back
    /// at once and is answered `429 Too Many Requests` and closed (at most
    /// 64 such answers at a time, each within a second; past that, closed
    /// unanswered). Behind a proxy every client has the proxy's address:
    /// leave it off there, or set it to the proxy's share.
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.limits.max_connections_per_ip = Some(max.max(1));
        self
    }

    /// How long a client may take to send a request's headers, and how long
    /// an idle keep-alive connection waits for its next request (default
    /// 10 s; `None` or zero: forever). Protects against slow headers
    /// (slowloris).
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.limits.header_read_timeout = timeout.into().filter(|timeout| !timeout.is_zero());
        self
    }

    /// How long after its headers a request's body must have arrived in full
    /// (default 30 s; `None` or zero: forever). A handler that reads a body
    /// not received in time gets an error (axum answers `400`), and the
    /// connection is closed.
    pub fn body_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.limits.body_read_timeout = timeout.into().filter(|timeout| !timeout.is_zero());
        self
    }

    /// How long a graceful shutdown waits for open connections before it
    /// closes them (default 10 s). Keep it under your orchestrator's grace
    /// period (Kubernetes: 30 s).
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.limits.shutdown_deadline = deadline;
        self
    }

    /// Serves over TLS (feature `tls`), with HTTP/2 or HTTP/1.1 chosen by
    /// ALPN. Browsers multiplex every `EventSource` of an origin over one
    /// HTTP/2 connection, where over HTTP/1.1 they open at most six. The TLS
    /// handshake must complete within the header read timeout. Behind a
    /// TLS-terminating proxy that speaks HTTP/2 to browsers, leave this off.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::server::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The range a shutting-down event stream's last `retry:` hint is picked
    /// from, uniformly per stream (default 1 to 5 s), so that browsers
    /// reconnect spread over it rather than all at once.
    pub fn shutdown_retry(mut self, range: RangeInclusive<Duration>) -> Self {
        self.limits.shutdown_retry = range;
        self
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self))
    }
}

/// What every connection of one server shares.
struct Shared {
    app: Router,
    limits: Limits,
    phase: watch::Receiver<Phase>,
    http: hyper::server::conn::http1::Builder,
    #[cfg(feature = "tls")]
    tls: Option<crate::server::tls::TlsConfig>,
}

async fn run(serve: Serve) -> io::Result<()> {
    let Serve {
        listener,
        app,
        shutdown,
        limits,
        #[cfg(feature = "tls")]
        tls,
    } = serve;
    let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
    let max_connections = limits
        .max_connections
        .unwrap_or_else(default_max_connections)
        .min(u32::MAX as usize);
    let connections = Arc::new(Semaphore::new(max_connections));
    let per_peer = limits.max_connections_per_ip.map(PerPeer::new);
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (phase, phase_receiver) = watch::channel(Phase::Serving);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let shared = Arc::new(Shared {
        app,
        limits,
        phase: phase_receiver,
        http,
        #[cfg(feature = "tls")]
        tls,
    });

    loop {
        // The permit is taken before accepting: at the limit the server stops
        // accepting, and the kernel's backlog holds new clients until a
        // connection closes.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // Never closed; here for completeness.
            },
            () = &mut shutdown => break,
        };
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    wait_after_accept_error(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match &per_peer {
            None => None,
            Some(per_peer) => match per_peer.admit(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    // Its place goes back at once: a refused connection
                    // never keeps a connection the limit admitted waiting.
                    drop(permit);
                    match Arc::clone(&refusing).try_acquire_owned() {
                        Ok(refusal) => {
                            tokio::spawn(refuse(socket, refusal));
                        }
                        // Too many being refused at once: closed unanswered.
                        Err(_) => drop(socket),
                    }
                    continue;
                }
            },
        };
        // Everything a connection's streams log carries its peer.
        let span = tracing::debug_span!("connection", %peer);
        tokio::spawn(tracing::Instrument::instrument(
            serve_connection(Arc::clone(&shared), socket, peer, permit, slot),
            span,
        ));
    }
    drop(listener);

    let deadline = shared.limits.shutdown_deadline;
    let all_closed = |connections: &Arc<Semaphore>| {
        Arc::clone(connections).acquire_many_owned(max_connections as u32)
    };
    phase.send_replace(Phase::Draining);
    if tokio::time::timeout(deadline, all_closed(&connections))
        .await
        .is_err()
    {
        let open = max_connections - connections.available_permits();
        tracing::warn!(
            open,
            ?deadline,
            "closing the connections still open at the shutdown deadline"
        );
        phase.send_replace(Phase::Closing);
        // Each connection task ends as soon as it sees the phase.
        let _ = tokio::time::timeout(Duration::from_secs(1), all_closed(&connections)).await;
    }
    Ok(())
}

async fn serve_connection(
    shared: Arc<Shared>,
    socket: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    slot: Option<PeerSlot>,
) {
    // Both are released when this task ends, however it ends.
    let _places = (permit, slot);
    if let Err(error) = socket.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let stall = StallTimeout::new(shared.limits.write_stall_timeout);
    let mut io = WriteStallIo::with_shared_timeout(socket, stall.clone());
    #[cfg(feature = "tls")]
    if let Some(tls) = shared.tls.clone() {
        Box::pin(tls::serve_tls(shared, io, tls, stall, peer)).await;
        return;
    }
    let mut pending = BytesMut::new();
    let mut phase = shared.phase.clone();
    loop {
        let next = tokio::select! {
            next = read_head_within(shared.limits.header_read_timeout, io.get_ref(), &mut pending) => next,
            // Idle between requests, or partway through a head: close.
            _ = phase.wait_for(|phase| *phase >= Phase::Draining) => return,
        };
        match next {
            Ok(Next::Lean { request, close }) => {
                let close = close || *phase.borrow() >= Phase::Draining;
                // Boxed: the app's future is short-lived, and the task that
                // holds an open stream stays small without it.
                let Ok(response) = Box::pin(respond(&shared, &stall, peer, request)).await;
                if pending.is_empty() {
                    // Frees the head's buffer for the life of the stream.
                    pending = BytesMut::new();
                }
                let kept = tokio::select! {
                    kept = lean_http1::write_response(&mut io, &mut pending, response, close) => kept,
                    _ = phase.wait_for(|phase| *phase >= Phase::Closing) => return,
                };
                match kept {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = io.shutdown().await;
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                        return;
                    }
                }
            }
            Ok(Next::Hyper) => {
                let io = Rewind::new(pending.freeze(), io);
                Box::pin(serve_with_hyper(shared, io, stall, peer)).await;
                return;
            }
            Ok(Next::Refuse(status)) => {
                lean_http1::refuse(&mut io, status).await;
                return;
            }
            Ok(Next::Closed) => return,
            Err(error) => {
                tracing::debug!(%error, %peer, "no request head; closing");
                return;
            }
        }
    }
}

/// [`lean_http1::read_head`] within the header read timeout.
async fn read_head_within(
    timeout: Option<Duration>,
    socket: &TcpStream,
    pending: &mut BytesMut,
) -> io::Result<Next> {
    match timeout {
        Some(timeout) => tokio::time::timeout(timeout, lean_http1::read_head(socket, pending))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        None => lean_http1::read_head(socket, pending).await,
    }
}

/// Serves the rest of a connection with hyper: requests with bodies, `HEAD`,
/// HTTP/1.0 and everything else the lean path does not take.
async fn serve_with_hyper(
    shared: Arc<Shared>,
    io: Rewind<WriteStallIo<TcpStream>>,
    stall: StallTimeout,
    peer: SocketAddr,
) {
    let service = hyper_service(&shared, &stall, peer);
    let connection = shared.http.serve_connection(TokioIo::new(io), service);
    drive(connection, shared.phase.clone(), peer, |connection| {
        connection.graceful_shutdown();
    })
    .await;
}

/// The service hyper calls for each request of a connection.
fn hyper_service(
    shared: &Arc<Shared>,
    stall: &StallTimeout,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
             + Send
             + use<>,
> + Clone
+ use<> {
    let shared = Arc::clone(shared);
    let stall = stall.clone();
    hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let request = match shared.limits.body_read_timeout {
            Some(limit) => request.map(|body| Body::new(DeadlineBody::new(body, limit))),
            None => request.map(Body::new),
        };
        respond(&shared, &stall, peer, request)
    })
}

/// Runs a hyper connection until it ends; when the server drains, lets the
/// response under way finish (event streams end at once, see `EndOnDrain`)
/// and closes; at the deadline, closes regardless.
async fn drive<C, E>(
    connection: C,
    mut phase: watch::Receiver<Phase>,
    peer: SocketAddr,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => Some(result),
        _ = phase.wait_for(|phase| *phase >= Phase::Draining) => None,
    };
    let result = match result {
        Some(result) => Some(result),
        None => {
            graceful_shutdown(connection.as_mut());
            tokio::select! {
                result = connection.as_mut() => Some(result),
                _ = phase.wait_for(|phase| *phase >= Phase::Closing) => None,
            }
        }
    };
    if let Some(Err(error)) = result {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}

/// Answers one request: the app's response, with the route's write-stall
/// timeout applied to the connection, and event streams made to end when
/// the server drains.
fn respond(
    shared: &Arc<Shared>,
    stall: &StallTimeout,
    peer: SocketAddr,
    mut request: http::Request<Body>,
) -> impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + use<> {
    request.extensions_mut().insert(ConnectInfo(peer));
    let shared = Arc::clone(shared);
    let stall = stall.clone();
    shared.app.clone().oneshot(request).map(move |response| {
        response.map(|mut response| {
            if let Some(RouteWriteStall(timeout)) = response.extensions_mut().remove() {
                stall.set(timeout);
            }
            if is_event_stream(&response) {
                let phase = shared.phase.clone();
                let retry = shared.limits.shutdown_retry.clone();
                response = response.map(|body| EndOnDrain::wrap(body, phase, retry));
            }
            response
        })
    })
}

fn is_event_stream(response: &axum::response::Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}

async fn wait_after_accept_error(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return; // That connection is gone; the next one may be fine.
    }
    tracing::error!(%error, "accept failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
