//! A Rust client for event streams (feature `client`): the typed events a
//! server sends, read back as values, with the reconnects of a browser's
//! `EventSource`.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use serde::{Deserialize, Serialize};
//! use sse_runtime::SseEvent;
//! use sse_runtime::client::{EventStream, Received};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Said { user: String, text: String }
//!
//! #[derive(SseEvent)]
//! #[sse_event(rename_all = "snake_case", decode)]
//! enum ChatEvent { Said(Said), UserJoined { user: String } }
//!
//! # async fn run() -> Result<(), sse_runtime::client::ClientError> {
//! let http = reqwest::Client::new();
//! let request = http
//!     .get("http://127.0.0.1:3001/rooms/general/events")
//!     .bearer_auth("a token");
//! let mut events = EventStream::<ChatEvent>::new(request);
//! while let Some(received) = events.next().await {
//!     match received? {
//!         Received::Event(ChatEvent::Said(said)) => println!("{}: {}", said.user, said.text),
//!         Received::Event(ChatEvent::UserJoined { user }) => println!("{user} joined"),
//!         // History was lost: reload the state, then go on.
//!         Received::Reset(reset) => println!("reset: {}", reset.reason),
//!         // An event type this build does not know (a newer server).
//!         Received::Other(_) => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! What it does, as a browser's `EventSource` would:
//! - **One connection for as long as the stream lasts.** When it ends or
//!   fails, the client reconnects with `Last-Event-ID`, so a server that
//!   keeps history (a [`Registry`](crate::Registry)) resumes it exactly.
//! - **It waits the server's `retry:`** (3 s until one is sent) after a
//!   stream that ended. After network errors and `5xx` answers it doubles
//!   that wait per failure in a row, up to [`EventStream::max_backoff`]
//!   (30 s), and draws each wait from the upper half at random, so clients
//!   cut off together do not come back together.
//! - **It stops** on `204 No Content` (the stream ends) and on any other
//!   `4xx` but `408` and `429` (an error, then the end).
//! - **The reset signal is a value**, [`Received::Reset`], not an error.
//! - **A silent connection is dropped** after
//!   [`EventStream::idle_timeout`] (45 s, three of the server's default
//!   keep-alive intervals) and the stream resumes on a new one.
//!
//! It parses with the crate's own WHATWG parser, the one
//! [`testing`](crate::testing) reads with, which reads the conformance
//! table as browsers do. It speaks whatever the `reqwest::Client` given to
//! it speaks: for `https` URLs, turn on one of reqwest's TLS features in
//! your own `Cargo.toml`.

mod backoff;
mod error;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;
use reqwest::header::{self, HeaderValue};
use serde::Deserialize;

pub use crate::event::parse::Event;
use crate::event::parse::Parser;
use crate::{DecodeError, FromEvent};
pub use error::ClientError;
/// The HTTP client this one is built on, re-exported so its version is
/// the one [`EventStream::new`] takes.
pub use reqwest;

/// What an [`EventStream`] yields: an event of its type, the reset signal,
/// or an event of a type it does not know.
#[derive(Debug, Clone, PartialEq)]
pub enum Received<T> {
    /// An event, decoded.
    Event(T),
    /// The reset signal: history the stream needed is gone (or the id it
    /// resumed from was never the server's). Reload the state it concerns.
    Reset(Reset),
    /// An event whose type is not one of `T`'s, as it came. A browser's
    /// `EventSource` ignores such an event unless it listens for its type.
    Other(Event),
}

/// The data of the reset signal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Reset {
    /// Why: `history_expired`, `unknown_id`, `invalid_id` or `lagged`.
    pub reason: String,
    /// On a stream over several keys, the key it concerns; `None` when it
    /// concerns them all.
    #[serde(default)]
    pub key: Option<String>,
    /// The last event id at the signal: resuming from it goes on after
    /// the reset, not before it.
    #[serde(skip)]
    pub id: String,
}

/// How an event of the stream becomes a value: decoded by `T`'s
/// [`FromEvent`], or, for `EventStream<Event>`, kept as it came.
pub trait ReadEvent: Sized {
    /// The event as a value of `Self`, or `None` when it is not one.
    fn read_event(event: Event) -> Result<Result<Self, Event>, DecodeError>;
}

impl<T: FromEvent> ReadEvent for T {
    fn read_event(event: Event) -> Result<Result<T, Event>, DecodeError> {
        Ok(match T::from_event(&event.event, &event.data)? {
            Some(value) => Ok(value),
            None => Err(event),
        })
    }
}

impl ReadEvent for Event {
    fn read_event(event: Event) -> Result<Result<Event, Event>, DecodeError> {
        Ok(Ok(event))
    }
}

/// What the running stream shares with the [`EventStream`] handle.
#[derive(Default)]
struct Position {
    last_event_id: String,
    retry: Option<Duration>,
}

type Items<T> = Pin<Box<dyn Stream<Item = Result<Received<T>, ClientError>> + Send>>;

/// A stream of `T` events from one URL, reconnecting and resuming until
/// the server ends it (see the [module docs](self)). `T` is a type with
/// `#[derive(SseEvent)]` and `#[sse_event(decode)]`, or [`Event`] for the
/// events as they came.
pub struct EventStream<T> {
    settings: Settings,
    request: Option<reqwest::RequestBuilder>,
    position: Arc<Mutex<Position>>,
    items: Option<Items<T>>,
}

#[derive(Clone)]
struct Settings {
    default_retry: Duration,
    max_backoff: Duration,
    idle_timeout: Option<Duration>,
    reset_event_type: String,
}

/// The wait before a reconnect until the server sets one with `retry:`,
/// as in browsers.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(3);

impl<T: ReadEvent + Send + 'static> EventStream<T> {
    /// The stream that `request` opens, sent again with `Last-Event-ID` on
    /// every reconnect. Its method, headers (`Authorization`, say) and body
    /// are kept; `Accept: text/event-stream` is added. Nothing is sent
    /// before the stream is first polled.
    pub fn new(request: reqwest::RequestBuilder) -> EventStream<T> {
        EventStream {
            settings: Settings {
                default_retry: DEFAULT_RETRY,
                max_backoff: Duration::from_secs(30),
                idle_timeout: Some(Duration::from_secs(45)),
                reset_event_type: "reset".to_owned(),
            },
            request: Some(request),
            position: Arc::default(),
            items: None,
        }
    }

    /// Starts as a reconnect would, resuming after the event with this id.
    pub fn last_event_id(self, id: impl Into<String>) -> Self {
        self.position.lock().unwrap().last_event_id = id.into();
        self
    }

    /// The wait before a reconnect until the server sets one with `retry:`
    /// (default [`DEFAULT_RETRY`], 3 s, as in browsers).
    pub fn default_retry(mut self, retry: Duration) -> Self {
        self.settings.default_retry = retry;
        self
    }

    /// The longest wait between two attempts after failures (default 30 s;
    /// a server's longer `retry:` still wins).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.settings.max_backoff = max;
        self
    }

    /// How long the connection may stay silent (not even a keep-alive
    /// comment) before the client drops it and reconnects; `None` waits
    /// for ever. Default 45 s.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.idle_timeout = timeout;
        self
    }

    /// The event type of the server's reset signal, if it changed it with
    /// `RegistryConfig::reset_event_type` (default `reset`).
    pub fn reset_event_type(mut self, event_type: impl Into<String>) -> Self {
        self.settings.reset_event_type = event_type.into();
        self
    }

    /// The id a reconnect would resume from now: the last event id as of
    /// the last item yielded.
    pub fn resume_id(&self) -> String {
        self.position.lock().unwrap().last_event_id.clone()
    }

    /// The wait before a reconnect, as the server last set it.
    pub fn retry(&self) -> Duration {
        let retry = self.position.lock().unwrap().retry;
        retry.unwrap_or(self.settings.default_retry)
    }
}

impl<T: ReadEvent + Send + 'static> Stream for EventStream<T> {
    type Item = Result<Received<T>, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.items.is_none() {
            let request = this.request.take().expect("taken only here, once");
            this.items = Some(Box::pin(run(
                request,
                this.settings.clone(),
                this.position.clone(),
            )));
        }
        this.items
            .as_mut()
            .expect("set above")
            .as_mut()
            .poll_next(cx)
    }
}

impl<T> std::fmt::Debug for EventStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let position = self.position.lock().unwrap();
        f.debug_struct("EventStream")
            .field("last_event_id", &position.last_event_id)
            .field("retry", &position.retry)
            .finish_non_exhaustive()
    }
}

/// How one connection ended.
enum Ended {
    /// The server closed the stream: reconnect after `retry`.
    Closed,
    /// The connection failed, or the server answered `5xx`, `408` or `429`:
    /// reconnect after a backoff.
    Failed,
}

fn run<T: ReadEvent + Send + 'static>(
    request: reqwest::RequestBuilder,
    settings: Settings,
    position: Arc<Mutex<Position>>,
) -> impl Stream<Item = Result<Received<T>, ClientError>> + Send {
    async_stream::stream! {
        let (http, request) = request.build_split();
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                yield Err(ClientError::Request(error));
                return;
            }
        };
        let mut failures = 0u32;
        loop {
            let (last_event_id, retry) = {
                let position = position.lock().unwrap();
                (position.last_event_id.clone(), position.retry)
            };
            let Some(attempt) = resending(&request, &last_event_id) else {
                yield Err(ClientError::BodyNotReplayable);
                return;
            };
            let ended = match answer(http.execute(attempt).await) {
                Answer::Stream(response) => {
                    failures = 0;
                    let mut parser = Parser::continuing(last_event_id, retry);
                    let mut body = response.bytes_stream();
                    loop {
                        let ended = match next_chunk(&mut body, settings.idle_timeout).await {
                            Chunk::Bytes(bytes) => {
                                parser.feed(&bytes);
                                None
                            }
                            Chunk::End(ended) => {
                                parser.finish();
                                Some(ended)
                            }
                        };
                        while let Some(event) = parser.pop_event() {
                            let item = read(event, &settings.reset_event_type);
                            record(&position, &parser);
                            yield item;
                        }
                        record(&position, &parser);
                        if let Some(ended) = ended {
                            break ended;
                        }
                    }
                }
                Answer::Failed => Ended::Failed,
                Answer::Ended => return,
                Answer::Refused(error) => {
                    yield Err(error);
                    return;
                }
            };
            if let Ended::Failed = ended {
                failures = failures.saturating_add(1);
            }
            let retry = position.lock().unwrap().retry;
            let retry = retry.unwrap_or(settings.default_retry);
            tokio::time::sleep(backoff::delay(retry, failures, settings.max_backoff)).await;
        }
    }
}

/// `request` again, as this connection sends it: `Accept` and
/// `Cache-Control` for an event stream, and `Last-Event-ID` when there is
/// one. `None` when its body is a stream, which cannot be sent twice.
fn resending(request: &reqwest::Request, last_event_id: &str) -> Option<reqwest::Request> {
    let mut attempt = request.try_clone()?;
    let headers = attempt.headers_mut();
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !last_event_id.is_empty() {
        // Any id the parser keeps is a valid value (no CR, LF or NUL);
        // other control characters are not, and are dropped.
        match HeaderValue::from_bytes(last_event_id.as_bytes()) {
            Ok(value) => {
                headers.insert("last-event-id", value);
            }
            Err(_) => tracing::warn!(
                id = %last_event_id.escape_debug(),
                "the last event id cannot be sent as a header; reconnecting without it"
            ),
        }
    }
    Some(attempt)
}

/// What a connection attempt came to.
enum Answer {
    /// An event stream to read.
    Stream(reqwest::Response),
    /// `204`: the stream is over.
    Ended,
    /// A refusal (a `4xx` but `408` and `429`, or not an event stream):
    /// the error, then the end.
    Refused(ClientError),
    /// A network error or a `5xx`, `408` or `429`: try again later.
    Failed,
}

fn answer(sent: reqwest::Result<reqwest::Response>) -> Answer {
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "event stream: connection failed");
            return Answer::Failed;
        }
    };
    let status = response.status();
    if status == reqwest::StatusCode::NO_CONTENT {
        return Answer::Ended;
    }
    if status.is_client_error()
        && status != reqwest::StatusCode::REQUEST_TIMEOUT
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        return Answer::Refused(ClientError::Status(status));
    }
    if !status.is_success() {
        tracing::debug!(%status, "event stream: the server failed");
        return Answer::Failed;
    }
    match not_event_stream(response.headers()) {
        Some(other) => Answer::Refused(ClientError::NotEventStream(other)),
        None => Answer::Stream(response),
    }
}

/// What reading the body came to.
enum Chunk {
    Bytes(bytes::Bytes),
    End(Ended),
}

/// The body's next bytes, or how it ended: closed by the server, or failed
/// (an error, or silent past `idle_timeout`).
async fn next_chunk(
    body: &mut (impl Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    idle_timeout: Option<Duration>,
) -> Chunk {
    let next = match idle_timeout {
        Some(timeout) => match tokio::time::timeout(timeout, body.next()).await {
            Ok(next) => next,
            Err(_) => {
                tracing::debug!("event stream: silent for too long");
                return Chunk::End(Ended::Failed);
            }
        },
        None => body.next().await,
    };
    match next {
        Some(Ok(bytes)) => Chunk::Bytes(bytes),
        Some(Err(error)) => {
            tracing::debug!(%error, "event stream: connection lost");
            Chunk::End(Ended::Failed)
        }
        None => Chunk::End(Ended::Closed),
    }
}

/// Where the stream stands after the events taken from `parser`.
fn record(position: &Mutex<Position>, parser: &Parser) {
    let mut position = position.lock().unwrap();
    position.last_event_id = parser.last_event_id().to_owned();
    position.retry = parser.retry();
}

/// The content type when it is not `text/event-stream`.
fn not_event_stream(headers: &header::HeaderMap) -> Option<String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    (!essence.eq_ignore_ascii_case("text/event-stream")).then_some(content_type)
}

/// One parsed event as an item: the reset signal, `T`'s, or another.
fn read<T: ReadEvent>(event: Event, reset_event_type: &str) -> Result<Received<T>, ClientError> {
    if event.event == reset_event_type {
        if let Ok(mut reset) = serde_json::from_str::<Reset>(&event.data) {
            reset.id = event.id;
            return Ok(Received::Reset(reset));
        }
    }
    Ok(match T::read_event(event)? {
        Ok(value) => Received::Event(value),
        Err(other) => Received::Other(other),
    })
}
