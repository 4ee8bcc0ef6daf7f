//! Testing SSE endpoints in-process (feature `testing`): drive any axum
//! `Router` without a socket and read its events as values.
//!
//! ```
//! use futures_util::stream;
//! use sse_runtime::testing::TestClient;
//! use sse_runtime::{MessageEvent, sse, sse_controller};
//!
//! #[derive(Clone)]
//! struct Events;
//!
//! #[sse_controller("/events")]
//! impl Events {
//!     #[sse("/greetings")]
//!     fn greetings(&self) -> impl futures_core::Stream<Item = MessageEvent> {
//!         stream::iter(["hello", "world"]).map(MessageEvent::new)
//!     }
//! }
//! # use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let client = TestClient::new(Events.router());
//! let mut response = client.get("/events/greetings").send().await;
//! assert_eq!(response.status(), 200);
//! let events = response.take(2).await;
//! assert_eq!(events[0].data, "hello");
//! assert_eq!(events[1].data, "world");
//! assert!(response.next_event().await.is_none()); // the stream ended
//! # }
//! ```
//!
//! Every wait is bounded by the request's [timeout](TestRequest::timeout)
//! (5 seconds by default) and fails the test with a message that says what it
//! was waiting for. The parser follows the WHATWG rules a browser's
//! `EventSource` follows, checked against the project's conformance table.

pub mod broker_contract;
mod decode;
mod events;
mod net;

pub use crate::event::parse::Event;
use crate::event::parse::Parser;
pub use decode::ContentDecoder;
pub use events::{fields, next_event};
pub use net::{free_port, free_port_and, wait_for_port};

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// How long a [`TestRequest`] waits by default for a response or an event.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends requests to a `Router` in-process.
#[derive(Clone)]
pub struct TestClient {
    app: Router,
}

impl TestClient {
    /// A client of `app`.
    pub fn new(app: Router) -> Self {
        TestClient { app }
    }

    /// A `GET` of `path` (and query), with `Accept: text/event-stream`.
    pub fn get(&self, path: &str) -> TestRequest {
        self.request(Method::GET, path)
            .header("accept", "text/event-stream")
    }

    /// A `POST` to `path`.
    pub fn post(&self, path: &str) -> TestRequest {
        self.request(Method::POST, path)
    }

    /// A request of any method.
    pub fn request(&self, method: Method, path: &str) -> TestRequest {
        TestRequest {
            app: self.app.clone(),
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A request being built; [`send`](TestRequest::send) it.
#[must_use = "a request does nothing until it is sent"]
pub struct TestRequest {
    app: Router,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
}

impl TestRequest {
    /// Adds a header.
    ///
    /// # Panics
    ///
    /// On a name or value that is not a valid header, naming it: this is a
    /// test's mistake, not the server's.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let parsed_name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|error| panic!("header name {name:?}: {error}"));
        let parsed_value = HeaderValue::from_str(value)
            .unwrap_or_else(|error| panic!("header {name}: value {value:?}: {error}"));
        self.headers.append(parsed_name, parsed_value);
        self
    }

    /// Sets `Last-Event-ID`, as a reconnecting `EventSource` does.
    pub fn last_event_id(self, id: &str) -> Self {
        self.header("last-event-id", id)
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    ///
    /// # Panics
    ///
    /// When `value` cannot be serialised.
    pub fn json(self, value: &impl serde::Serialize) -> Self {
        let body = serde_json::to_vec(value)
            .unwrap_or_else(|error| panic!("the JSON body could not be serialised: {error}"));
        self.header("content-type", "application/json").body(body)
    }

    /// How long to wait for the response and for each event (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the request and waits for the response's head.
    ///
    /// # Panics
    ///
    /// When no response comes within the timeout, or the path is not a URI.
    pub async fn send(self) -> TestResponse {
        let mut request = Request::new(Body::from(self.body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self
            .path
            .parse()
            .unwrap_or_else(|error| panic!("{:?} is not a request path: {error}", self.path));
        *request.headers_mut() = self.headers;
        // Handlers that ask for the peer get a loopback one.
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 0))));
        let what = format!("{} {}", self.method, self.path);
        let response = tokio::time::timeout(self.timeout, self.app.oneshot(request))
            .await
            .unwrap_or_else(|_| panic!("{what}: no response within {:?}", self.timeout))
            .unwrap_or_else(|never| match never {});
        let (parts, body) = response.into_parts();
        TestResponse {
            status: parts.status,
            decoder: ContentDecoder::for_headers(&parts.headers, &what),
            headers: parts.headers,
            body,
            parser: Parser::default(),
            what,
            timeout: self.timeout,
        }
    }
}

/// A response: its status and headers, and its body read as events.
pub struct TestResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
    // Undoes the response's `Content-Encoding` (gzip and zstd with feature
    // `compression`), frame by frame.
    decoder: ContentDecoder,
    parser: Parser,
    what: String,
    timeout: Duration,
}

impl TestResponse {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The id a reconnecting `EventSource` would send after the events
    /// returned so far: the id of the last one, or a later one set by a block
    /// with no data (such as a subscription's resume point) that came before
    /// the next event. Events received but not yet returned do not count, so
    /// a test that reconnects with it skips nothing.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// The next event, or `None` once the stream has ended.
    ///
    /// # Panics
    ///
    /// When nothing arrives within the timeout, or the body fails.
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.parser.pop_event() {
                return Some(event);
            }
            let frame = tokio::time::timeout(self.timeout, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("{}: no event within {:?}", self.what, self.timeout));
            match frame {
                None => {
                    self.parser.finish();
                    return self.parser.pop_event();
                }
                Some(Err(error)) => panic!("{}: the body failed: {error}", self.what),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let data = self.decoder.decode(&data);
                        self.parser.feed(&data);
                    }
                }
            }
        }
    }

    /// The next `n` events.
    ///
    /// # Panics
    ///
    /// When fewer arrive (the stream ends, or the timeout passes first).
    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            match self.next_event().await {
                Some(event) => events.push(event),
                None => panic!(
                    "{}: the stream ended after {} of {n} events: {events:?}",
                    self.what,
                    events.len()
                ),
            }
        }
        events
    }

    /// The whole body as text, for a response that is not a stream.
    ///
    /// # Panics
    ///
    /// When it does not end within the timeout or is not UTF-8.
    pub async fn text(mut self) -> String {
        let bytes = tokio::time::timeout(self.timeout, self.body.collect())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: the body did not end within {:?}",
                    self.what, self.timeout
                )
            })
            .unwrap_or_else(|error| panic!("{}: the body failed: {error}", self.what))
            .to_bytes();
        let bytes = self.decoder.decode(&bytes);
        String::from_utf8(bytes)
            .unwrap_or_else(|error| panic!("{}: the body is not UTF-8: {error}", self.what))
    }
}
