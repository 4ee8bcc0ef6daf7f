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

/// A server over TLS whose header read timeout is short, and a client that
/// trusts its certificate and offers `alpn` in the handshake.
async fn tls_server_and_client(alpn: &[u8]) -> (TestServer, tokio_rustls::TlsConnector) {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = sse_runtime::TlsConfig::from_pem(
        certified.cert.pem().as_bytes(),
        certified.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let server = TestServer::start_with(ChatController::new(["general"]).app(), |serve| {
        serve
            .tls(tls)
            .header_read_timeout(std::time::Duration::from_millis(300))
    })
    .await;
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
