//! Helpers shared by the integration tests: serve a router on a free loopback
//! port, and read it with clients we did not write (reqwest + eventsource-stream)
//! or with a raw socket when the exact bytes on the wire matter.

pub mod chaos;
pub mod conformance;
pub mod external;
pub mod proxy;
pub mod redis_cluster;
pub mod redis_server;
pub mod scripted;

use std::net::SocketAddr;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `(id, event type, data)` of one encoded event.
pub use sse_runtime::testing::fields;

/// Every wait in these tests is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1 with a free port (`sse_runtime::serve`), stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(app: axum::Router) -> TestServer {
        TestServer::start_with(app, |serve| serve).await
    }

    /// A server with its limits set by `configure`.
    pub async fn start_with(
        app: axum::Router,
        configure: impl FnOnce(sse_runtime::Serve) -> sse_runtime::Serve,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        TestServer::serve(listener, app, configure)
    }

    /// A server on `addr`, as a restarted instance comes back where its
    /// clients reconnect.
    pub async fn start_at(addr: SocketAddr, app: axum::Router) -> TestServer {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|error| panic!("bind {addr}: {error}"));
        TestServer::serve(listener, app, |serve| serve)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        app: axum::Router,
        configure: impl FnOnce(sse_runtime::Serve) -> sse_runtime::Serve,
    ) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = configure(sse_runtime::serve(listener, app)).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        let task = tokio::spawn(async move {
            server.await.expect("server failed");
        });
        TestServer {
            addr,
            task,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Starts a graceful shutdown and waits (at most `limit`) for the server
    /// to return. Returns how long it took, or `None` if it had not returned.
    pub async fn shut_down(mut self, limit: Duration) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        let _ = self.stop.take().expect("not yet stopped").send(());
        let returned = tokio::time::timeout(limit, &mut self.task).await.is_ok();
        returned.then(|| started.elapsed())
    }
}
impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// GETs `url` and checks it is an event stream.
pub async fn open(url: &str) -> reqwest::Response {
    let response = within(reqwest::get(url)).await.expect("request failed");
    assert_eq!(response.status(), 200, "GET {url}");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response
}

/// The events of `response`, parsed by eventsource-stream.
pub fn events(response: reqwest::Response) -> impl Stream<Item = Event> + Unpin {
    Box::pin(
        response
            .bytes_stream()
            .eventsource()
            .map(|event| event.expect("the event stream did not parse")),
    )
}

/// The next event, failing the test after [`TIMEOUT`].
pub async fn next_event(events: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    within(events.next()).await.expect("the stream ended early")
}

/// Awaits `future`, failing the test after [`TIMEOUT`].
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .expect("timed out")
}

/// Polls `condition` every 10 ms until it holds, failing after [`TIMEOUT`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw HTTP/1.1 GET over a socket, to see the exact bytes and chunks.
pub struct RawResponse {
    pub head: String,
    stream: TcpStream,
    pending: Vec<u8>,
}

impl RawResponse {
    pub async fn get(addr: SocketAddr, path: &str) -> RawResponse {
        RawResponse::get_with(addr, path, "").await
    }

    /// The same, with `headers` (each line ending in `\r\n`) added.
    pub async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> RawResponse {
        let mut stream = within(TcpStream::connect(addr)).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n{headers}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = RawResponse {
            head: String::new(),
            stream,
            pending: Vec::new(),
        };
        let head = raw.read_until(b"\r\n\r\n").await;
        raw.head = String::from_utf8(head).unwrap();
        raw
    }

    /// The next chunk of a chunked body (`None` at the terminating chunk).
    pub async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = String::from_utf8(self.read_until(b"\r\n").await).unwrap();
        let size = usize::from_str_radix(size_line.trim_end(), 16).expect("chunk size");
        let mut chunk = self.read_exact(size + 2).await;
        assert!(chunk.ends_with(b"\r\n"));
        chunk.truncate(size);
        (size > 0).then_some(chunk)
    }

    async fn fill(&mut self) {
        let mut buf = [0u8; 64 * 1024];
        let n = within(self.stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "connection closed");
        self.pending.extend_from_slice(&buf[..n]);
    }

    async fn read_until(&mut self, delimiter: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self
                .pending
                .windows(delimiter.len())
                .position(|w| w == delimiter)
            {
                let rest = self.pending.split_off(at + delimiter.len());
                return std::mem::replace(&mut self.pending, rest);
            }
            self.fill().await;
        }
    }

    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            self.fill().await;
        }
        let rest = self.pending.split_off(n);
        std::mem::replace(&mut self.pending, rest)
    }
}

/// Posts a chat message to `room` of the chat app at `base`; the status.
pub async fn say(base: &str, room: &str, user: &str, text: &str) -> u16 {
    let response = within(
        reqwest::Client::new()
            .post(format!("{base}/rooms/{room}/messages"))
            .json(&chat::ChatMessage {
                user: user.into(),
                text: text.into(),
            })
            .send(),
    )
    .await
    .unwrap();
    response.status().as_u16()
}

/// Reads `events` in a task of its own (as an app would), so the stream
/// keeps reconnecting while the test does other things; its items arrive
/// on the returned channel.
pub fn read_in_background<T: sse_runtime::client::ReadEvent + Send + 'static>(
    mut events: sse_runtime::client::EventStream<T>,
) -> tokio::sync::mpsc::UnboundedReceiver<
    Result<sse_runtime::client::Received<T>, sse_runtime::client::ClientError>,
> {
    let (items, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = events.next().await {
            if items.send(item).is_err() {
                return;
            }
        }
    });
    received
}
