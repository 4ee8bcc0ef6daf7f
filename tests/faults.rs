//! Hostile clients and faults, over real loopback sockets: a reader that
//! stalls, a stuck shutdown, a connection flood, slow headers and a slow body.
//! Each test sets its server's limits short, asserts the bound, and stops by
//! itself.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use futures_util::StreamExt;
use sse_runtime::{
    MessageEvent, Registry, RegistryConfig, Sse, Subscription, WriteStallListener, sse,
    sse_controller,
};
use sse_tests::{TIMEOUT, TestServer, events, eventually, next_event, open, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const TOPIC: &str = "topic";
/// Enough to fill a stalled client's receive window and the server's send
/// buffer (at most 4 MiB by default on Linux) twice over.
const EVENTS: usize = 500;
const EVENT_BYTES: usize = 16 * 1024;

fn topic() -> String {
    TOPIC.to_owned()
}

/// `GET /topic`: the topic's events; with `route_stall`, that route's own
/// write-stall timeout. `POST /echo`: the request body's length.
fn app(registry: &Registry<String>, route_stall: Option<Duration>) -> Router {
    let registry = registry.clone();
    Router::new()
        .route(
            "/topic",
            get(move || {
                let sse = Sse::new(registry.subscribe(&topic()));
                async move {
                    match route_stall {
                        Some(timeout) => sse.write_stall_timeout(timeout),
                        None => sse,
                    }
                }
            }),
        )
        .route(
            "/echo",
            post(|body: String| async move { body.len().to_string() }),
        )
}

/// A client that asks for the topic with a tiny receive buffer, then never
/// reads: a phone that lost signal, a proxy that stopped reading.
async fn stalled_reader(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = within(socket.connect(addr)).await.unwrap();
    let request =
        format!("GET /topic HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// A well-behaved subscriber: every event's data, in order, on a channel.
async fn healthy_reader(addr: SocketAddr) -> mpsc::UnboundedReceiver<String> {
    let mut events = events(open(&format!("http://{addr}/topic")).await);
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if sender.send(event.data).is_err() {
                return;
            }
        }
    });
    receiver
}

fn payload(n: usize) -> String {
    let mut text = format!("{n} ");
    text.extend(std::iter::repeat_n('x', EVENT_BYTES - text.len()));
    text
}

/// Publishes `EVENTS` large events, never more than 20 ahead of the healthy
/// reader, and checks that it received every one, in order.
async fn publish_and_check_healthy(
    registry: &Registry<String>,
    healthy: &mut mpsc::UnboundedReceiver<String>,
) {
    let mut received = 0;
    for n in 0..EVENTS {
        registry
            .send(&topic(), MessageEvent::new(payload(n)))
            .await
            .unwrap();
        if n % 20 == 19 || n == EVENTS - 1 {
            while received <= n {
                let data = within(healthy.recv())
                    .await
                    .expect("the healthy stream ended");
                let number = data.split(' ').next().unwrap();
                assert_eq!(
                    number,
                    received.to_string(),
                    "the healthy reader's events, in order"
                );
                received += 1;
            }
        }
    }
}

/// How long past its write-stall timeout a stalled reader may still be
/// subscribed: generous, so a busy machine that is slow to fill the socket
/// buffers never fails the test; a timeout that does not work holds it for
/// good (the control test below).
const STALL_MARGIN: Duration = Duration::from_secs(8);

/// The stalled client's subscription is dropped (and its registry entry with
/// it) within `limit` of the last event; returns how long that took.
async fn stalled_subscription_released(
    registry: &Registry<String>,
    limit: Duration,
) -> Option<Duration> {
    let since = Instant::now();
    while registry.subscriber_count(&topic()) > 1 {
        if since.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Some(since.elapsed())
}

async fn stall_scenario(
    configure: impl FnOnce(sse_runtime::Serve) -> sse_runtime::Serve,
    app: impl FnOnce(&Registry<String>) -> Router,
    limit: Duration,
) -> Option<Duration> {
    let registry: Registry<String> = Registry::new();
    let server = TestServer::start_with(app(&registry), configure).await;
    stall_against(server.addr, &registry, limit).await
}

/// A stalled and a healthy reader of the server at `addr`; see [`stall_scenario`].
async fn stall_against(
    addr: SocketAddr,
    registry: &Registry<String>,
    limit: Duration,
) -> Option<Duration> {
    let _stalled = stalled_reader(addr).await;
    let mut healthy = healthy_reader(addr).await;
    eventually("both subscribers are registered", || {
        registry.subscriber_count(&topic()) == 2
    })
    .await;
    publish_and_check_healthy(registry, &mut healthy).await;
    stalled_subscription_released(registry, limit).await
}

#[tokio::test]
async fn under_axum_serve_the_write_stall_listener_cuts_a_stalled_reader() {
    let stall = Duration::from_millis(500);
    let registry: Registry<String> = Registry::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        axum::serve(
            WriteStallListener::new(listener, stall),
            app(&registry, None),
        )
        .into_future(),
    );
    let released = stall_against(addr, &registry, stall + STALL_MARGIN)
        .await
        .expect("the listener's timeout did not cut the stalled reader");
    eprintln!("stalled reader released {released:?} after the last event");
    server.abort();
}

#[tokio::test]
async fn a_stalled_reader_is_cut_within_the_write_stall_timeout_while_others_get_every_event() {
    let stall = Duration::from_millis(500);
    let released = stall_scenario(
        |serve| serve.write_stall_timeout(stall),
        |registry| app(registry, None),
        stall + STALL_MARGIN,
    )
    .await
    .expect("the stalled reader was still subscribed well past its timeout");
    eprintln!("stalled reader released {released:?} after the last event");
}

#[tokio::test]
async fn a_routes_own_write_stall_timeout_applies_to_its_connection() {
    let stall = Duration::from_millis(500);
    let released = stall_scenario(
        |serve| serve.write_stall_timeout(None),
        |registry| app(registry, Some(stall)),
        stall + STALL_MARGIN,
    )
    .await
    .expect("the route's timeout did not cut the stalled reader");
    eprintln!("stalled reader released {released:?} after the last event");
}

/// A client that reads 1 KiB every 100 ms (10 KB/s) once it is behind:
/// enough that some byte always moves, far too little to keep up. It is cut
/// as a stalled one is, end to end (a review kept 30 such clients open,
/// holding 98 MB, for as long as they trickled). Over loopback the kernel
/// often wakes a blocked writer only once a third of its send buffer has
/// drained, so this can pass on the plain no-progress rule too; the
/// minimum-progress rule itself (64 KiB or a full catch-up per timeout) is
/// tested on paused time in `write_stall.rs`.
#[tokio::test]
async fn a_reader_that_only_trickles_is_cut_by_the_minimum_progress_rule() {
    let stall = Duration::from_millis(500);
    // History and lag buffer far larger than what is sent: neither eviction
    // nor the lag policy can end the stream, only the write-stall rule.
    let registry: Registry<String> = Registry::with_config(
        RegistryConfig::default()
            .history_len(10_000)
            .history_bytes_per_key(64 << 20)
            .buffer(10_000),
    );
    let server = TestServer::start_with(app(&registry, None), |serve| {
        serve.write_stall_timeout(stall)
    })
    .await;
    let mut trickling = stalled_reader(server.addr).await;
    let trickle = tokio::spawn(async move {
        let mut sip = [0u8; 1024];
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match trickling.read(&mut sip).await {
                Ok(0) | Err(_) => return, // Cut by the server.
                Ok(_) => {}
            }
        }
    });
    eventually("the trickling subscriber is registered", || {
        registry.subscriber_count(&topic()) == 1
    })
    .await;
    // 16 MB: far more than the socket buffers hold.
    for n in 0..1000 {
        registry
            .send(&topic(), MessageEvent::new(payload(n)))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry.subscriber_count(&topic()) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let released = (registry.subscriber_count(&topic()) == 0).then_some(());
    trickle.abort();
    released.expect("a trickling reader kept its stream 30 s after the last event");
}

#[derive(Clone)]
struct TopicController {
    registry: Registry<String>,
}

#[sse_controller("/")]
impl TopicController {
    #[sse("/topic", write_stall = "500ms")]
    fn topic(&self) -> Subscription {
        self.registry.subscribe(&topic())
    }
}

#[tokio::test]
async fn the_write_stall_option_of_an_sse_route_applies_to_its_connection() {
    let released = stall_scenario(
        |serve| serve.write_stall_timeout(None),
        |registry| {
            TopicController {
                registry: registry.clone(),
            }
            .router()
        },
        Duration::from_millis(500) + STALL_MARGIN,
    )
    .await
    .expect("the route's write_stall option did not cut the stalled reader");
    eprintln!("stalled reader released {released:?} after the last event");
}

/// The control for the two tests above: what they prove is the timeout's doing.
#[tokio::test]
async fn without_a_write_stall_timeout_a_stalled_reader_is_held_indefinitely() {
    let held = stall_scenario(
        |serve| serve.write_stall_timeout(None),
        |registry| app(registry, None),
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(
        held, None,
        "the stalled reader was released without a timeout"
    );
}

#[tokio::test]
async fn graceful_shutdown_with_a_stalled_reader_ends_at_the_deadline_and_spreads_reconnects() {
    let registry: Registry<String> = Registry::new();
    let deadline = Duration::from_secs(1);
    let retry = Duration::from_millis(2000)..=Duration::from_millis(3000);
    let server = TestServer::start_with(app(&registry, None), {
        let retry = retry.clone();
        |serve| {
            serve
                .write_stall_timeout(None)
                .shutdown_deadline(deadline)
                .shutdown_retry(retry)
        }
    })
    .await;
    let _stalled = stalled_reader(server.addr).await;
    let healthy = open(&server.url("/topic")).await;
    eventually("both subscribers are registered", || {
        registry.subscriber_count(&topic()) == 2
    })
    .await;
    let mut healthy_bytes = healthy.bytes_stream();
    let mut healthy_text = String::new();
    for n in 0..EVENTS {
        registry
            .send(&topic(), MessageEvent::new(payload(n)))
            .await
            .unwrap();
        // Reads as it goes, so only the stalled reader stalls.
        while let Ok(Some(chunk)) = tokio::time::timeout(Duration::ZERO, healthy_bytes.next()).await
        {
            healthy_text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }
    let reading = tokio::spawn(async move {
        while let Some(chunk) = healthy_bytes.next().await {
            match chunk {
                Ok(chunk) => healthy_text.push_str(std::str::from_utf8(&chunk).unwrap()),
                Err(_) => break,
            }
        }
        healthy_text
    });

    let took = server
        .shut_down(deadline + Duration::from_secs(8))
        .await
        .expect("the server did not return within 8 s of its shutdown deadline");
    eprintln!("shutdown with a stalled reader took {took:?} (deadline {deadline:?})");
    assert!(
        took >= deadline - Duration::from_millis(100),
        "returned after {took:?}: the stalled reader was not holding it, so this proves nothing"
    );
    assert_eq!(
        registry.subscriber_count(&topic()),
        0,
        "every subscription was released"
    );

    // The healthy stream ended cleanly, its last field a reconnection delay
    // picked from the range.
    let text = within(reading).await.unwrap();
    let last = text.trim_end().rsplit('\n').next().unwrap();
    let millis: u64 = last
        .strip_prefix("retry: ")
        .unwrap_or_else(|| panic!("the stream ended with {last:?}, not a retry field"))
        .parse()
        .unwrap();
    assert!(
        retry.contains(&Duration::from_millis(millis)),
        "retry: {millis}"
    );
    assert!(text.ends_with("\n\n"));
}

#[tokio::test]
async fn a_flood_beyond_the_connection_cap_waits_open_streams_keep_flowing_and_the_server_recovers()
{
    const CAP: usize = 8;
    let registry: Registry<String> = Registry::new();
    let server =
        TestServer::start_with(app(&registry, None), |serve| serve.max_connections(CAP)).await;
    let mut streams = Vec::new();
    for _ in 0..CAP {
        streams.push(events(open(&server.url("/topic")).await));
    }
    // Beyond the cap: the kernel completes the handshake, the server does
    // not accept, and the request waits.
    let mut flood = Vec::new();
    for _ in 0..20 {
        let mut waiting = within(TcpStream::connect(server.addr)).await.unwrap();
        waiting
            .write_all(b"GET /topic HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        flood.push(waiting);
    }
    registry
        .send(&topic(), MessageEvent::new("still flowing"))
        .await
        .unwrap();
    for stream in &mut streams {
        assert_eq!(next_event(stream).await.data, "still flowing");
    }
    let mut answer = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(300), flood[0].read(&mut answer)).await;
    assert!(
        waited.is_err(),
        "a connection over the cap was answered: {waited:?}"
    );
    assert_eq!(registry.subscriber_count(&topic()), CAP);

    // The flood and the streams leave; the server accepts again by itself.
    drop(flood);
    drop(streams);
    let mut again = events(open(&server.url("/topic")).await);
    eventually("the new stream is subscribed", || {
        registry.subscriber_count(&topic()) == 1
    })
    .await;
    registry
        .send(&topic(), MessageEvent::new("recovered"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut again).await.data, "recovered");
}

/// A raw GET from `source` (a loopback address), returning the status line.
async fn status_from(source: &str, server: SocketAddr) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = within(socket.connect(server)).await.unwrap();
    stream
        .write_all(b"GET /topic HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let n = within(stream.read(&mut byte)).await.unwrap();
        assert_eq!(n, 1, "closed before a status line: {head:?}");
        head.push(byte[0]);
    }
    (
        stream,
        String::from_utf8(head).unwrap().trim_end().to_owned(),
    )
}

#[tokio::test]
async fn one_address_over_its_limit_gets_429_while_other_addresses_connect() {
    let registry: Registry<String> = Registry::new();
    let server = TestServer::start_with(app(&registry, None), |serve| {
        serve.max_connections_per_ip(2)
    })
    .await;
    let (first, status) = status_from("127.0.0.1", server.addr).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (_second, status) = status_from("127.0.0.1", server.addr).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (_, status) = status_from("127.0.0.1", server.addr).await;
    assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
    let (_other, status) = status_from("127.0.0.2", server.addr).await;
    assert_eq!(
        status, "HTTP/1.1 200 OK",
        "another address has its own places"
    );

    drop(first);
    eventually("the closed stream is released", || {
        registry.subscriber_count(&topic()) == 2
    })
    .await;
    let (_third, status) = status_from("127.0.0.1", server.addr).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "a place freed is given again");
}

/// Waits until the server closes `stream`; returns how long that took.
async fn closed_after(stream: &mut TcpStream, started: Instant) -> Duration {
    let mut sink = [0u8; 1024];
    loop {
        match within(stream.read(&mut sink)).await {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn slow_headers_are_cut_by_the_header_read_timeout() {
    let timeout = Duration::from_millis(400);
    let server = TestServer::start_with(app(&Registry::new(), None), |serve| {
        serve.header_read_timeout(timeout)
    })
    .await;
    let mut slowloris = within(TcpStream::connect(server.addr)).await.unwrap();
    let started = Instant::now();
    slowloris
        .write_all(b"GET /topic HTTP/1.1\r\n")
        .await
        .unwrap();
    // One header byte every 50 ms, never finishing: each byte is progress, so
    // only a deadline on the whole head stops it.
    let (mut reader, mut writer) = slowloris.split();
    let trickle = async {
        for byte in b"x-slow: ".iter().cycle().take(200) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let closed = async {
        let mut sink = [0u8; 1024];
        loop {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    };
    let took = tokio::select! {
        took = closed => took,
        () = trickle => panic!("the server was still reading headers after 10 s"),
    };
    eprintln!("slow headers cut after {took:?} (timeout {timeout:?})");
    assert!(
        took >= timeout - Duration::from_millis(50),
        "cut after only {took:?}"
    );
    // Generous: a busy machine may be slow to notice, never early.
    assert!(
        took < timeout + Duration::from_secs(5),
        "cut after {took:?}"
    );
}

#[tokio::test]
async fn a_slow_body_is_cut_by_the_body_read_timeout() {
    let timeout = Duration::from_millis(400);
    let server = TestServer::start_with(app(&Registry::new(), None), |serve| {
        serve.body_read_timeout(timeout)
    })
    .await;
    let mut slow = within(TcpStream::connect(server.addr)).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = String::new();
    let mut sink = [0u8; 1024];
    while !answer.contains("\r\n\r\n") || !answer.contains("within") {
        let n = within(slow.read(&mut sink)).await.unwrap();
        assert!(n > 0, "closed without an answer: {answer:?}");
        answer.push_str(std::str::from_utf8(&sink[..n]).unwrap());
    }
    let took = started.elapsed();
    eprintln!(
        "slow body answered after {took:?}: {}",
        answer.lines().next().unwrap()
    );
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("not received within"), "{answer}");
    assert!(took >= timeout - Duration::from_millis(50) && took < timeout + Duration::from_secs(5));
    // The rest of that body will never be read: the connection is closed.
    let closed = closed_after(&mut slow, started).await;
    assert!(closed < TIMEOUT, "{closed:?}");

    // A body that arrives in time is read as usual.
    let response = within(
        reqwest::Client::new()
            .post(server.url("/echo"))
            .body("x".repeat(1000))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.text().await.unwrap(), "1000");
}
