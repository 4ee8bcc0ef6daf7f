//! A server loop for many long-lived event streams: HTTP/1.1 only.

use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Serves `app` on `listener` over HTTP/1.1, the way `axum::serve` does, with
/// a smaller footprint per connection.
///
/// `axum::serve` negotiates HTTP/1.1 or HTTP/2 on every connection; an
/// HTTP/1.1-only connection costs about 8 KB less memory, which adds up at
/// tens of thousands of open event streams (12.6 KB against 20.8 KB per idle
/// stream, measured in `BENCHMARKS.md`). Browsers speak HTTP/2 only over TLS,
/// which neither server terminates, so behind a TLS proxy nothing is lost.
///
/// Each request carries `ConnectInfo<SocketAddr>` of its peer, as with
/// `into_make_service_with_connect_info`. Sockets are set to `TCP_NODELAY`:
/// writes are already batched by the response's
/// [batch window](crate::Sse::batch_window). An accept error is logged and
/// retried, after a second if it is not about one connection (running out of
/// file descriptors, say), so the server never stops by itself.
///
/// ```no_run
/// use axum::{Router, routing::get};
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Router::new().route("/", get(|| async { "hello" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// sse_runtime::serve(listener, app)
///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
///     .await
/// # }
/// ```
pub fn serve(listener: TcpListener, app: Router) -> Serve {
    Serve {
        listener,
        app,
        shutdown: None,
    }
}

/// A server from [`serve`]: `.await` it to run it.
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve {
    listener: TcpListener,
    app: Router,
    shutdown: Option<BoxFuture<'static, ()>>,
}

impl Serve {
    /// Stops accepting when `signal` completes, then waits for the open
    /// connections to finish their responses. Event streams that never end
    /// must be ended by the application (for example with
    /// [`Registry::shutdown`](crate::Registry::shutdown)).
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Some(Box::pin(signal));
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

async fn run(serve: Serve) -> io::Result<()> {
    let Serve {
        listener,
        app,
        shutdown,
    } = serve;
    let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new());
    loop {
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
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = http.serve_connection(TokioIo::new(socket), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
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
