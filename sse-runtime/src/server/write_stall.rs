//! Closing connections whose writes make no progress: a client that stops
//! reading (a phone that lost signal without closing its socket, a proxy that
//! stopped reading) fills the socket's send buffer, after which hyper polls
//! neither the response body nor its keep-alive again. Without a deadline on
//! the write itself, such a connection holds its descriptor, its stream and
//! its registry entry until the process dies, and a graceful shutdown waits
//! for it forever.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// The default write-stall timeout: 30 seconds without a byte written.
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeout of one connection, shared with the service that answers on it
/// so that a route can change it (see [`Sse::write_stall_timeout`](crate::Sse::write_stall_timeout)).
#[derive(Clone, Debug)]
pub(crate) struct StallTimeout(Arc<AtomicU64>);

/// Stored in the atomic for "no timeout".
const OFF: u64 = u64::MAX;

impl StallTimeout {
    /// `None` or zero: no timeout.
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        let shared = StallTimeout(Arc::new(AtomicU64::new(OFF)));
        shared.set(timeout);
        shared
    }

    /// `None` or zero: no timeout.
    pub(crate) fn set(&self, timeout: Option<Duration>) {
        let timeout = timeout.filter(|timeout| !timeout.is_zero());
        let millis = timeout.map_or(OFF, |timeout| {
            u64::try_from(timeout.as_millis()).unwrap_or(OFF - 1)
        });
        self.0.store(millis, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            OFF => None,
            millis => Some(Duration::from_millis(millis)),
        }
    }
}

pin_project! {
    /// An IO object whose writes fail with [`io::ErrorKind::TimedOut`] once
    /// they have made too little progress for the timeout. The server then
    /// drops the connection, and with it the response body and its stream,
    /// which releases the stream's registry entry.
    ///
    /// **The minimum-progress rule.** Once a write has had to wait, the
    /// connection must, within the timeout, either catch up (a write takes
    /// all it was given) or write [`MIN_WRITE_PROGRESS`] bytes; a client that
    /// reads a trickle (a few KiB every few seconds) to keep its connection
    /// open is cut as one that reads nothing is. At the default 30 s that is
    /// about 2.2 KB/s while behind: far below any real client, mobile ones
    /// included.
    ///
    /// [`serve`](crate::serve) wraps every connection in one. For
    /// `axum::serve`, use [`WriteStallListener`].
    ///
    /// A timer is allocated only once a write has had to wait, so a
    /// connection whose client keeps reading carries none.
    pub struct WriteStallIo<T> {
        #[pin]
        inner: T,
        timeout: StallTimeout,
        // When the writes fell behind; `None` while they keep up.
        stalled_since: Option<Instant>,
        // Bytes written since they fell behind.
        progress: usize,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<T> WriteStallIo<T> {
    /// `inner` with writes that fail after `timeout` without progress
    /// (`None` or zero: never).
    pub fn new(inner: T, timeout: Option<Duration>) -> Self {
        WriteStallIo::with_shared_timeout(inner, StallTimeout::new(timeout))
    }

    pub(crate) fn with_shared_timeout(inner: T, timeout: StallTimeout) -> Self {
        WriteStallIo {
            inner,
            timeout,
            stalled_since: None,
            progress: 0,
            timer: None,
        }
    }

    /// The wrapped IO object.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// The bytes a connection that fell behind must write within the
/// write-stall timeout, unless it catches up (see [`WriteStallIo`]).
pub const MIN_WRITE_PROGRESS: usize = 64 * 1024;

fn stalled() -> io::Error {
    crate::telemetry::write_stall();
    tracing::info!("closing a connection whose client stopped reading (write-stall timeout)");
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the peer read nothing for longer than the write-stall timeout",
    )
}

impl<T: AsyncWrite> WriteStallIo<T> {
    /// Tracks progress: a write that waits starts a stall (or continues
    /// it), one that waits past the deadline fails, and the stall clears
    /// once a write takes all of the `asked` bytes or [`MIN_WRITE_PROGRESS`]
    /// bytes were written since it began.
    fn watch(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        asked: usize,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        match result {
            Poll::Ready(Ok(written)) => {
                if this.stalled_since.is_some() {
                    *this.progress += written;
                    if written >= asked || *this.progress >= MIN_WRITE_PROGRESS {
                        *this.stalled_since = None;
                        *this.progress = 0;
                    }
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let Some(timeout) = this.timeout.get() else {
                    return Poll::Pending;
                };
                let now = Instant::now();
                let deadline = *this.stalled_since.get_or_insert(now) + timeout;
                if now >= deadline {
                    return Poll::Ready(Err(stalled()));
                }
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                // Registers the waker: when the deadline comes, the server
                // polls the connection, which retries the write and lands here.
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(stalled())),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead> AsyncRead for WriteStallIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for WriteStallIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = self.as_mut().project().inner.poll_write(cx, buf);
        self.watch(cx, buf.len(), result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = self.as_mut().project().inner.poll_write_vectored(cx, bufs);
        let asked = bufs.iter().map(|buf| buf.len()).sum();
        self.watch(cx, asked, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// A listener for `axum::serve` whose connections are closed when their
/// writes stall, as [`serve`](crate::serve) does on its own.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use sse_runtime::WriteStallListener;
/// use std::time::Duration;
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Router::new().route("/", get(|| async { "hello" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let listener = WriteStallListener::new(listener, Duration::from_secs(30));
/// axum::serve(listener, app).await
/// # }
/// ```
///
/// What it does not do, which `serve` does: a route's own timeout
/// ([`Sse::write_stall_timeout`](crate::Sse::write_stall_timeout)) is not
/// applied, and there is no connection limit or shutdown deadline.
pub struct WriteStallListener {
    listener: TcpListener,
    timeout: Option<Duration>,
}

impl WriteStallListener {
    /// Accepts from `listener`, closing connections whose writes make no
    /// progress for `timeout`.
    pub fn new(listener: TcpListener, timeout: Duration) -> Self {
        WriteStallListener {
            listener,
            timeout: Some(timeout),
        }
    }
}

impl axum::serve::Listener for WriteStallListener {
    type Io = WriteStallIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
        (WriteStallIo::new(stream, self.timeout), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A peer that takes `chunk` bytes every 100 ms.
    struct Trickle {
        chunk: usize,
        next: Option<Pin<Box<Sleep>>>,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let sleep = self
                .next
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(100))));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.next = None;
            Poll::Ready(Ok(buf.len().min(self.chunk)))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write_a_mebibyte_to(chunk: usize) -> io::Result<()> {
        let peer = Trickle { chunk, next: None };
        let mut io = WriteStallIo::new(peer, Some(Duration::from_millis(500)));
        io.write_all(&vec![0; 1 << 20]).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_takes_a_trickle_is_cut_by_the_minimum_progress_rule() {
        // 1 KiB per 100 ms: something always moves, 5 KiB per timeout.
        let trickle = write_a_mebibyte_to(1024).await;
        assert_eq!(trickle.unwrap_err().kind(), io::ErrorKind::TimedOut);
        // 64 KiB per 100 ms keeps up with the rule: never cut.
        write_a_mebibyte_to(MIN_WRITE_PROGRESS).await.unwrap();
    }
}
