//! What a hostile client tries, each as a test that failed before its fix:
//! the server answers with a clean error or a reset, never with bytes the
//! client chose.

use chat::ChatController;
use sse_tests::{RawResponse, TestServer};

/// The multi-room stream's resume point: `<fingerprint>:<positions>`.
async fn resume_point(server: &TestServer, rooms: &str) -> String {
    let mut raw = RawResponse::get(server.addr, &format!("/rooms/events?rooms={rooms}")).await;
    let mut text = String::new();
    while !text.ends_with("\n\n") || !text.contains("id: ") {
        text.push_str(&String::from_utf8(raw.next_chunk().await.unwrap()).unwrap());
    }
    let line = text.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
    line.to_owned()
}

/// The first event after the retry hint, as raw text.
async fn first_event(server: &TestServer, path: &str) -> String {
    let mut raw = RawResponse::get(server.addr, path).await;
    let mut text = String::new();
    // The retry hint is one block; the first event is the second.
    while text.matches("\n\n").count() < 2 {
        let chunk = raw.next_chunk().await.expect("the stream ended early");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

#[tokio::test]
async fn a_line_break_in_a_multi_key_resume_id_yields_a_clean_invalid_id_reset() {
    let server = TestServer::start(ChatController::new(["general", "random"]).app()).await;
    for rooms in ["general", "general,random"] {
        forged_multi_key_ids_are_refused(&server, rooms).await;
    }
}

async fn forged_multi_key_ids_are_refused(server: &TestServer, rooms: &str) {
    let genuine = resume_point(server, rooms).await;
    let (fingerprint, _) = genuine.split_once(':').unwrap();
    for forged in [
        "x%0Adata%0Adata%0A%0A",
        "x%0Ddata%0D%0D",
        "x%00",
        "x%250A_y",
        "x%250D_y",
        "x%2500_y",
        "x_y%0Aevent:%20admin",
        "x%0Aevent:%20admin",
    ] {
        let path = format!("/rooms/events?rooms={rooms}&lastEventId={fingerprint}:{forged}");
        let text = first_event(server, &path).await;
        let body = text.strip_prefix("retry: 1000\n\n").unwrap_or(&text);
        let lines: Vec<&str> = body.trim_end_matches('\n').split('\n').collect();
        assert_eq!(lines.len(), 3, "{forged}: {text:?}");
        assert_eq!(lines[0], "event: reset", "{forged}: {text:?}");
        assert_eq!(
            lines[2], "data: {\"reason\":\"invalid_id\"}",
            "{forged}: {text:?}"
        );
        let id = lines[1].strip_prefix("id: ").unwrap();
        assert!(
            id.starts_with(&format!("{fingerprint}:")) && !id.contains('x'),
            "{forged}: the client's parts were echoed: {id:?}"
        );
        assert!(
            !text.contains('\r') && !text.contains('\0'),
            "{forged}: {text:?}"
        );
    }
}

#[tokio::test]
async fn a_line_break_in_a_single_key_resume_id_yields_a_clean_reset() {
    let server = TestServer::start(ChatController::new(["general"]).app()).await;
    for forged in ["x%0Adata%0A%0A", "x%0D", "x%00"] {
        let text = first_event(
            &server,
            &format!("/rooms/general/events?lastEventId={forged}"),
        )
        .await;
        assert!(
            text.starts_with("retry: 1000\n\nevent: reset\nid: ")
                && text.ends_with("\ndata: {\"reason\":\"invalid_id\"}\n\n"),
            "{forged}: {text:?}"
        );
        assert!(
            text.matches('\n').count() == 6 && !text.contains('\r') && !text.contains('\0'),
            "{forged}: {text:?}"
        );
    }
}

/// A server running `app`, set up by `serve` given its TLS configuration,
/// and a client that trusts its certificate and offers `alpn` in the
/// handshake.
async fn tls_server_and_client_for(
    app: axum::Router,
    serve: impl FnOnce(sse_runtime::Serve, sse_runtime::TlsConfig) -> sse_runtime::Serve,
    alpn: &[u8],
) -> (TestServer, tokio_rustls::TlsConnector) {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = sse_runtime::TlsConfig::from_pem(
        certified.cert.pem().as_bytes(),
        certified.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let server = TestServer::start_with(app, |config| serve(config, tls)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    (
        server,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
    )
}

/// The chat over TLS with a short header read timeout.
async fn tls_server_and_client(alpn: &[u8]) -> (TestServer, tokio_rustls::TlsConnector) {
    tls_server_and_client_for(
        ChatController::new(["general"]).app(),
        |serve, tls| {
            serve
                .tls(tls)
                .header_read_timeout(std::time::Duration::from_millis(300))
        },
        alpn,
    )
    .await
}

/// A client completes the TLS handshake, then says nothing: the server
/// closes it by the header read timeout, as it does a plain one, whether
/// ALPN chose HTTP/1.1 or HTTP/2 (a review found both held open 40 s and
/// more: nothing was timed after the handshake).
#[tokio::test]
async fn a_silent_client_after_the_tls_handshake_is_closed_by_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let (server, connector) = tls_server_and_client(alpn).await;
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = sse_tests::within(connector.connect(name, tcp))
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        // Whatever the server sends (an HTTP/2 settings frame), then its
        // end: a clean close or a reset, either is the server letting go.
        let mut sink = Vec::new();
        let ended = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tls.read_to_end(&mut sink),
        )
        .await;
        assert!(
            ended.is_ok(),
            "{}: a silent client was still connected 10 s after the handshake",
            String::from_utf8_lossy(alpn)
        );
    }
}

/// The status line of a POST whose head promises `length` bytes of body, of
/// which only `sent` arrive: what the server answers without waiting for
/// the rest.
async fn status_of_a_post_cut_short(
    server: &TestServer,
    path: &str,
    headers: &str,
    length: usize,
    sent: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n{headers}\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(sent).await.unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut byte))
            .await
            .expect("an answer without the rest of the body, within 10 s")
            .unwrap();
        assert_eq!(n, 1, "closed without an answer");
        answer.push(byte[0]);
    }
    String::from_utf8(answer).unwrap().trim_end().to_owned()
}

/// `/admin/announce` checks its credential before it reads a body: a client
/// without the token cannot make the server read (or wait for) megabytes of
/// JSON. A review found 2 MB parsed before the credential was looked at.
#[tokio::test]
async fn the_admin_credential_is_checked_before_the_body_is_read() {
    let chat = ChatController::new(["general"]).with_admin_token("s3cret");
    let server = TestServer::start(chat.app()).await;
    for (authorization, expected) in [
        ("", "HTTP/1.1 401 Unauthorized"),
        (
            "authorization: Bearer wrong\r\n",
            "HTTP/1.1 401 Unauthorized",
        ),
    ] {
        let status = status_of_a_post_cut_short(
            &server,
            "/admin/announce",
            authorization,
            // Within the body limit, so only the credential can refuse it.
            chat::MAX_BODY_BYTES,
            b"{\"text\":\"",
        )
        .await;
        assert_eq!(status, expected, "{authorization:?}");
    }
}

/// Bodies are bounded by what their fields can hold: a chat message of
/// 2,000 characters and an LLM prompt of 4,000 each fit, anything past the
/// bound is refused with 413 before it is read, where axum's default read
/// 2 MB.
#[tokio::test]
async fn bodies_are_bounded_by_what_their_fields_hold() {
    let chat = TestServer::start(ChatController::new(["general"]).app()).await;
    let llm =
        TestServer::start(llm::Completions::new(std::time::Duration::from_millis(1)).app()).await;
    for (server, path, limit) in [
        (&chat, "/rooms/general/messages", chat::MAX_BODY_BYTES),
        (&llm, "/completions", llm::MAX_BODY_BYTES),
    ] {
        let status = status_of_a_post_cut_short(server, path, "", limit + 1, b"{").await;
        assert_eq!(status, "HTTP/1.1 413 Payload Too Large", "{path}");
    }
    // The largest legitimate message still goes through.
    let message = serde_json::json!({ "user": "ann", "text": "é".repeat(chat::MAX_TEXT_LEN) });
    let posted = reqwest::Client::new()
        .post(chat.url("/rooms/general/messages"))
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);
}

/// A flood of logins revokes nobody: tokens are signed, not held in a store
/// that a flood could fill until it dropped real users' tokens (a review
/// evicted every real token with 10,001 logins in 0.1 s; the victim's
/// `EventSource` then gave up on a 401).
#[tokio::test]
async fn a_flood_of_logins_does_not_log_anyone_out() {
    let server = TestServer::start(basic::EventsController::new().app()).await;
    let client = reqwest::Client::new();
    let login = |user: String| {
        let client = client.clone();
        let url = server.url(&format!("/login/{user}"));
        async move {
            let answer: serde_json::Value =
                client.post(url).send().await.unwrap().json().await.unwrap();
            answer["token"].as_str().unwrap().to_owned()
        }
    };
    let alices = login("alice".to_owned()).await;
    for n in 0..10_001 {
        login(format!("flood-{n}")).await;
    }
    let stream = client
        .get(server.url(&format!("/events/user/alice?token={alices}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200, "alice's token still opens her stream");
}

/// An HTTP/2 connection over TLS whose streams' flow-control windows start
/// at `window` bytes (and, this client never reading, stay there); the
/// task driving it, which ends when the server closes it; and a switch
/// that freezes the client (it then neither reads nor writes, as a peer
/// whose host vanished).
async fn h2_connection(
    server: &TestServer,
    connector: &tokio_rustls::TlsConnector,
    window: u32,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = sse_tests::within(connector.connect(name, tcp))
        .await
        .unwrap();
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let io = Freezable {
        inner: tls,
        frozen: std::sync::Arc::clone(&frozen),
    };
    let (send, connection) = sse_tests::within(
        h2::client::Builder::new()
            .initial_window_size(window)
            .handshake(io),
    )
    .await
    .unwrap();
    let driving = tokio::spawn(async move {
        let _ = connection.await;
    });
    (send, driving, frozen)
}

/// An IO object that stops reading and writing, for good, once `frozen`.
struct Freezable<T> {
    inner: T,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<T> Freezable<T> {
    fn is_frozen(&self) -> bool {
        self.frozen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Freezable<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.is_frozen() {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Freezable<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.is_frozen() {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.is_frozen() {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.is_frozen() {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Opens `GET path` on `connection`: the response's status and body.
async fn h2_get(
    connection: &h2::client::SendRequest<bytes::Bytes>,
    path: &str,
) -> (http::StatusCode, h2::RecvStream) {
    let request = http::Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap();
    let mut ready = sse_tests::within(connection.clone().ready()).await.unwrap();
    let (response, _) = ready.send_request(request, true).unwrap();
    let response = sse_tests::within(response).await.unwrap();
    (response.status(), response.into_body())
}

/// Finding 6: HTTP/2 streams whose client never opens their flow-control
/// window end after the write-stall timeout, their subscriptions with them
/// (4 connections of 100 such streams held +29.4 MB for as long as the
/// client liked: the socket kept flowing, so no write ever stalled). A
/// reader with a window, on a stream with nothing to send for as long,
/// stays.
#[tokio::test]
async fn http2_streams_whose_window_never_opens_end_after_the_write_stall_timeout() {
    let registry = sse_runtime::Registry::new();
    let app = topic_app(&registry);
    let stall = std::time::Duration::from_millis(500);
    let (server, connector) = tls_server_and_client_for(
        app,
        |serve, tls| serve.tls(tls).write_stall_timeout(stall),
        b"h2",
    )
    .await;

    let (reading, _, _) = h2_connection(&server, &connector, 65_535).await;
    let (status, mut healthy) = h2_get(&reading, "/topic").await;
    assert_eq!(status, http::StatusCode::OK);
    let (closed, _, _) = h2_connection(&server, &connector, 0).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let (status, body) = h2_get(&closed, "/topic").await;
        assert_eq!(status, http::StatusCode::OK);
        stalled.push(body);
    }
    sse_tests::eventually("all 21 streams subscribed", || {
        registry.subscriber_count(&topic()) == 21
    })
    .await;

    sse_tests::eventually("the 20 streams without a window ended", || {
        registry.subscriber_count(&topic()) == 1
    })
    .await;
    // The healthy stream, open longer than the timeout with nothing to
    // send, is still subscribed and gets the next event.
    registry
        .send(&topic(), sse_runtime::MessageEvent::new("after"))
        .await
        .unwrap();
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("data: after") {
        let chunk = sse_tests::within(healthy.data()).await.unwrap().unwrap();
        let _ = healthy.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    assert_eq!(registry.subscriber_count(&topic()), 1);
    drop(stalled);
}

fn topic() -> String {
    "topic".to_owned()
}

/// `GET /topic`: the topic's events from `registry`.
fn topic_app(registry: &sse_runtime::Registry<String>) -> axum::Router {
    let registry = registry.clone();
    axum::Router::new().route(
        "/topic",
        axum::routing::get(move || {
            let sse = sse_runtime::Sse::new(registry.subscribe(&topic()));
            async move { sse }
        }),
    )
}

/// Finding 5: an HTTP/2 connection left with no stream closes after the
/// idle timeout (a review held 10 open for 40 s and more), and one with a
/// stream open stays, however long the stream has nothing to send.
#[tokio::test]
async fn an_http2_connection_with_no_stream_closes_after_the_idle_timeout() {
    let registry = sse_runtime::Registry::new();
    let idle = std::time::Duration::from_millis(300);
    let (server, connector) = tls_server_and_client_for(
        topic_app(&registry),
        |serve, tls| serve.tls(tls.http2_idle_timeout(idle)),
        b"h2",
    )
    .await;
    let (streaming, streaming_driver, _) = h2_connection(&server, &connector, 65_535).await;
    let (_, stream) = h2_get(&streaming, "/topic").await;
    let (idling, idling_driver, _) = h2_connection(&server, &connector, 65_535).await;
    let (_, ended) = h2_get(&idling, "/topic").await;
    // Its one stream closed (the client resets it): idle from then on.
    drop(ended);
    sse_tests::within(idling_driver).await.unwrap();
    assert!(
        !streaming_driver.is_finished(),
        "a connection with an open stream was closed as idle"
    );
    assert_eq!(registry.subscriber_count(&topic()), 1);
    drop(stream);
}

/// Finding 5: a peer that stops answering (its host gone, its socket
/// still open) is found by the HTTP/2 pings, and its connection and streams
/// are released; before, a stream with nothing to send held its entry for
/// as long as the process ran.
#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_closed() {
    let registry = sse_runtime::Registry::new();
    let ping = std::time::Duration::from_millis(200);
    let (server, connector) = tls_server_and_client_for(
        topic_app(&registry),
        |serve, tls| serve.tls(tls.http2_ping_interval(ping)),
        b"h2",
    )
    .await;
    let (connection, _driver, frozen) = h2_connection(&server, &connector, 65_535).await;
    let (_, stream) = h2_get(&connection, "/topic").await;
    sse_tests::eventually("subscribed", || registry.subscriber_count(&topic()) == 1).await;
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    sse_tests::eventually("the dead peer's stream released", || {
        registry.subscriber_count(&topic()) == 0
    })
    .await;
    drop(stream);
}
