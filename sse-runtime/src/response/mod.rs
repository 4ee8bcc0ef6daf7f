//! The SSE response: headers, keep-alive and the reconnection hint.

#[cfg(feature = "compression")]
pub(crate) mod accept_encoding;
pub(crate) mod body;
#[cfg(feature = "compression")]
mod compressor;
#[cfg(not(feature = "compression"))]
#[path = "no_compressor.rs"]
mod compressor;
#[cfg(feature = "compression")]
mod lineage;
pub(crate) mod opening;
pub(crate) mod pacer;
mod segments;

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use futures_core::Stream;
use http::{HeaderValue, header};

use crate::event::item::SseItem;
use crate::response::body::{Batching, OpenStream, SseBody};

/// A `text/event-stream` response that sends each item of `stream` as it is
/// produced.
///
/// Headers: `content-type: text/event-stream`, `cache-control: no-cache`,
/// `x-accel-buffering: no` (so nginx does not buffer), and no content length.
/// Events that are ready at the same time go out in one write, and a busy
/// stream is written at most once per [batch window](Self::batch_window)
/// (adaptive by default: a light stream is never delayed).
/// When the client goes away, hyper drops the response body and with it the
/// stream.
///
/// ```
/// use axum::{Router, routing::get};
/// use futures_util::stream;
/// use sse_runtime::{KeepAlive, MessageEvent, Sse};
/// use std::time::Duration;
///
/// async fn handler() -> Sse<impl futures_core::Stream<Item = MessageEvent>> {
///     Sse::new(stream::iter([MessageEvent::new("hello")]))
///         .keep_alive(KeepAlive::every(Duration::from_secs(5)))
///         .retry(Duration::from_secs(2))
/// }
///
/// let app: Router = Router::new().route("/events", get(handler));
/// ```
#[must_use = "a response does nothing until a handler returns it"]
pub struct Sse<S> {
    stream: S,
    keep_alive: KeepAlive,
    retry: Option<Duration>,
    batching: Batching,
    /// `None`: the server's own; `Some(None)`: never.
    write_stall_timeout: Option<Option<Duration>>,
    route: &'static str,
    /// Set by [`compress`](Self::compress): what the client accepts.
    #[cfg(feature = "compression")]
    compression: Option<accept_encoding::AcceptEncoding>,
}

impl<S> Sse<S>
where
    S: Stream + Send + 'static,
    S::Item: SseItem,
{
    /// A response streaming `stream`, with a keep-alive comment every 15 seconds.
    pub fn new(stream: S) -> Self {
        Sse {
            stream,
            keep_alive: KeepAlive::default(),
            retry: None,
            batching: Batching::Adaptive(Self::DEFAULT_BATCH_WINDOW),
            write_stall_timeout: None,
            route: crate::telemetry::UNNAMED,
            #[cfg(feature = "compression")]
            compression: None,
        }
    }

    /// The default batch window: 10 ms, well under a 60 Hz frame (16.7 ms).
    /// By default it is adaptive: see [`batch_window`](Self::batch_window).
    pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(10);

    /// A fixed batch window: after a write, events that become ready within
    /// `window` are held and go out together when it ends.
    ///
    /// **The default needs no tuning.** Without this call a response batches
    /// adaptively: a batch is held only within a sustained burst, when it
    /// became ready less than half of
    /// [`DEFAULT_BATCH_WINDOW`](Self::DEFAULT_BATCH_WINDOW) after the last
    /// write and that write came as soon after the one before (or was itself
    /// a held batch: a burst goes on until its events come further apart).
    /// So a stream whose events come further apart (a chat, a dashboard, a
    /// notification feed, anything under about 200 events per second per
    /// connection), or a lone pair of events, goes out at once, and a busy
    /// one (fan-out at saturation, a fast ticker) costs one write (one system
    /// call, one TCP segment) per window instead of one per event, which is
    /// most of the cost of fanning out to many subscribers. While a burst's
    /// batch is held, its stream is not polled (unless many events are
    /// expected before the window ends), so the events that join it cost no
    /// wake-up either. When the process runs behind (held batches go out
    /// late: it is saturated), the windows of bursts stretch, up to twice the
    /// window, until it keeps up again. A stream that must never wait,
    /// however busy, sets `Duration::ZERO`.
    ///
    /// A fixed window holds whenever the last write was less than `window`
    /// ago, whatever the rate. A batch also goes out early once it reaches
    /// 64 KiB or the stream ends; the first event after a quiet spell is
    /// never held. `Duration::ZERO` writes every batch as soon as it is
    /// ready. Windows longer than 255 ms are shortened to that.
    ///
    /// ```
    /// use futures_util::stream;
    /// use sse_runtime::{MessageEvent, Sse};
    /// use std::time::Duration;
    ///
    /// // A price ticker that must never wait.
    /// let sse = Sse::new(stream::iter([MessageEvent::new("42.0")])).batch_window(Duration::ZERO);
    /// ```
    pub fn batch_window(mut self, window: Duration) -> Self {
        self.batching = if window.is_zero() {
            Batching::Off
        } else {
            Batching::Fixed(window)
        };
        self
    }

    /// Sets the keep-alive policy (default: a comment every 15 seconds of silence).
    pub fn keep_alive(mut self, keep_alive: KeepAlive) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Closes this stream's connection when its writes make no progress for
    /// `timeout` (`None` or zero: never), instead of the server's
    /// [`write_stall_timeout`](crate::Serve::write_stall_timeout). A live
    /// ticker may want a short one; a stream to clients on poor mobile
    /// networks a longer one.
    ///
    /// Applied by [`serve`](crate::serve), to the connection the response
    /// goes out on; other servers ignore it (see
    /// [`WriteStallListener`](crate::WriteStallListener) for `axum::serve`).
    ///
    /// ```
    /// use futures_util::stream;
    /// use sse_runtime::{MessageEvent, Sse};
    /// use std::time::Duration;
    ///
    /// let sse = Sse::new(stream::iter([MessageEvent::new("42.0")]))
    ///     .write_stall_timeout(Duration::from_secs(5));
    /// ```
    pub fn write_stall_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.write_stall_timeout = Some(timeout.into());
        self
    }

    /// The name this stream's route goes by in metrics (the `route` label,
    /// see [`telemetry`](crate#metrics)) and in its tracing span. Routes of
    /// the controller macros are named after their path; others are
    /// `unnamed` until named here.
    ///
    /// ```
    /// use futures_util::stream;
    /// use sse_runtime::{MessageEvent, Sse};
    ///
    /// let sse = Sse::new(stream::iter([MessageEvent::new("42.0")])).route_name("/prices");
    /// ```
    pub fn route_name(mut self, route: &'static str) -> Self {
        self.route = route;
        self
    }

    /// Compresses the stream with the best coding the client accepts (zstd,
    /// then gzip; see [`AcceptEncoding`](crate::AcceptEncoding)), or sends
    /// it plain if it accepts neither. Feature `compression`; the route
    /// macro's `#[sse("/path", compress = true)]` does the same.
    ///
    /// Every write is flushed as the encoder's complete output, so events are
    /// not delayed; an encoder idle for 5 seconds is dropped, so a quiet
    /// stream holds none. The response says `Vary: Accept-Encoding`.
    ///
    /// **Only for streams that carry no secret beside text an attacker can
    /// choose** (BREACH): compressed sizes show how much of a secret a
    /// chosen text repeats. A public feed, a room's messages or an LLM's
    /// answer to the reader's own prompt are safe; a stream that mixes a
    /// session token or another user's private data with attacker-chosen
    /// text is not. That is why compression is per route, never global.
    ///
    /// ```
    /// use futures_util::stream;
    /// use sse_runtime::{AcceptEncoding, MessageEvent, Sse};
    ///
    /// async fn handler(accept: AcceptEncoding) -> Sse<impl futures_core::Stream<Item = MessageEvent>> {
    ///     Sse::new(stream::iter([MessageEvent::new("hello")])).compress(accept)
    /// }
    /// ```
    #[cfg(feature = "compression")]
    pub fn compress(mut self, accept: accept_encoding::AcceptEncoding) -> Self {
        self.compression = Some(accept);
        self
    }

    /// Sends a `retry:` hint first, telling the client how long to wait before
    /// reconnecting.
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }
}

impl<S> IntoResponse for Sse<S>
where
    S: Stream + Send + 'static,
    S::Item: SseItem,
{
    fn into_response(self) -> Response {
        let body = SseBody::new(
            self.stream,
            self.keep_alive.interval(),
            self.retry,
            self.batching,
            OpenStream::new(self.route),
        );
        #[cfg(feature = "compression")]
        let encoding = self.compression.and_then(|accept| accept.encoding());
        #[cfg(feature = "compression")]
        let body = match encoding {
            Some(encoding) => body.compressed(compressor::StreamCompressor::new(encoding)),
            None => body,
        };
        let mut response = Response::new(axum::body::Body::new(body));
        let headers = response.headers_mut();
        #[cfg(feature = "compression")]
        if self.compression.is_some() {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            if let Some(encoding) = encoding {
                headers.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(encoding.name()),
                );
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        if let Some(timeout) = self.write_stall_timeout {
            response.extensions_mut().insert(RouteWriteStall(timeout));
        }
        response
    }
}

/// How often an idle connection gets a keep-alive comment (`: keep-alive`),
/// which stops proxies and load balancers from closing it and lets the server
/// notice a client that went away.
///
/// ```
/// use sse_runtime::KeepAlive;
/// use std::time::Duration;
///
/// assert_eq!(KeepAlive::default().interval(), Some(Duration::from_secs(15)));
/// assert_eq!(KeepAlive::every(Duration::from_secs(5)).interval(), Some(Duration::from_secs(5)));
/// assert_eq!(KeepAlive::disabled().interval(), None);
/// assert_eq!(KeepAlive::every(Duration::ZERO), KeepAlive::disabled());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    interval: Option<Duration>,
}

impl KeepAlive {
    /// The default interval: 15 seconds, well under the 30–60 s idle timeouts
    /// common in proxies.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

    /// The longest interval kept; longer ones are shortened to it, so that no
    /// deadline computed from an interval can overflow.
    pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

    /// A keep-alive comment after every `interval` of silence. A zero interval
    /// disables keep-alive; one over [`MAX_INTERVAL`](Self::MAX_INTERVAL) is
    /// shortened to it.
    ///
    /// ```
    /// use sse_runtime::KeepAlive;
    /// use std::time::Duration;
    /// assert_eq!(KeepAlive::every(Duration::MAX).interval(), Some(KeepAlive::MAX_INTERVAL));
    /// ```
    pub const fn every(interval: Duration) -> Self {
        if interval.is_zero() {
            KeepAlive::disabled()
        } else if interval.as_secs() >= KeepAlive::MAX_INTERVAL.as_secs() {
            KeepAlive {
                interval: Some(KeepAlive::MAX_INTERVAL),
            }
        } else {
            KeepAlive {
                interval: Some(interval),
            }
        }
    }

    /// No keep-alive comments.
    pub const fn disabled() -> Self {
        KeepAlive { interval: None }
    }

    /// The interval, or `None` when disabled.
    pub const fn interval(&self) -> Option<Duration> {
        self.interval
    }
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive::every(KeepAlive::DEFAULT_INTERVAL)
    }
}

/// A route's write-stall timeout, carried in the response's extensions to
/// [`serve`](crate::serve), which applies it to the connection. Defined here,
/// beside the response that sets it, so the response knows nothing of the
/// server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteWriteStall(pub(crate) Option<Duration>);
