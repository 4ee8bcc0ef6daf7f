//! The `basic` example over a real loopback socket, read by eventsource-stream.

use std::time::{Duration, Instant};

use sse_tests::{TestServer, events, eventually, next_event, open, within};

/// The operator's credential the test servers are given.
const ADMIN_TOKEN: &str = "test-admin-token";

async fn basic() -> TestServer {
    TestServer::start(
        basic::EventsController::new()
            .with_admin_token(ADMIN_TOKEN)
            .app(),
    )
    .await
}

/// Logs in as `user` and returns the stream URL with that user's token.
async fn user_url(server: &TestServer, user: &str) -> String {
    let response = within(
        reqwest::Client::new()
            .post(server.url(&format!("/login/{user}")))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    server.url(&format!(
        "/events/user/{user}?token={}",
        answer["token"].as_str().unwrap()
    ))
}

#[tokio::test]
async fn ping_stream_sends_data_ping_every_second() {
    let server = basic().await;
    let started = Instant::now();
    let mut events = events(open(&server.url("/events/sse-stream")).await);
    for _ in 0..2 {
        let event = next_event(&mut events).await;
        assert_eq!(
            (event.event.as_str(), event.data.as_str()),
            ("message", "ping")
        );
    }
    // Two ticks of a one-second interval that starts one period after connecting.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sse_responses_carry_event_stream_headers_and_no_length() {
    let server = basic().await;
    let alice = user_url(&server, "alice").await;
    for url in [
        server.url("/events/sse-stream"),
        alice,
        server.url("/events/dynamic"),
    ] {
        let path = &url;
        let response = open(&url).await;
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/event-stream", "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["x-accel-buffering"], "no", "{path}");
        assert!(headers.get("content-length").is_none(), "{path}");
    }
}

#[tokio::test]
async fn dynamic_events_arrive_with_their_custom_type() {
    let server = basic().await;
    let mut events = events(open(&server.url("/events/dynamic")).await);
    for n in 0..2 {
        let event = next_event(&mut events).await;
        assert_eq!(event.event, "customEventName");
        assert_eq!(event.data, format!("dynamic event {n}"));
    }
}

async fn post(server: &TestServer, user: &str, content_type: &str, body: &str) -> (u16, String) {
    let response = within(
        reqwest::Client::new()
            .post(server.url(&format!("/events/user/{user}")))
            .header("content-type", content_type)
            .bearer_auth(ADMIN_TOKEN)
            .body(body.to_owned())
            .send(),
    )
    .await
    .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn user_stream_receives_pushes_as_text_and_json() {
    let server = basic().await;
    let mut alice = events(open(&user_url(&server, "alice").await).await);

    let sent = post(&server, "alice", "text/plain", "two\r\nlines").await;
    assert_eq!(sent, (202, r#"{"delivered":1}"#.to_owned()));
    let sent = post(&server, "alice", "application/json", "{ \"n\" : [1,\n 2] }").await;
    assert_eq!(sent, (202, r#"{"delivered":1}"#.to_owned()));

    assert_eq!(next_event(&mut alice).await.data, "two\nlines");
    let json = next_event(&mut alice).await.data;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        serde_json::json!({"n": [1, 2]})
    );
}

#[tokio::test]
async fn push_reaches_every_open_stream_of_that_user_and_no_other() {
    let server = basic().await;
    let alice = user_url(&server, "alice").await;
    let mut alice_1 = events(open(&alice).await);
    let mut alice_2 = events(open(&alice).await);
    let mut bob = events(open(&user_url(&server, "bob").await).await);

    assert_eq!(
        post(&server, "alice", "text/plain", "for alice").await.1,
        r#"{"delivered":2}"#
    );
    assert_eq!(
        post(&server, "bob", "text/plain", "for bob").await.1,
        r#"{"delivered":1}"#
    );
    assert_eq!(
        post(&server, "carol", "text/plain", "nobody").await.1,
        r#"{"delivered":0}"#
    );

    assert_eq!(next_event(&mut alice_1).await.data, "for alice");
    assert_eq!(next_event(&mut alice_2).await.data, "for alice");
    // Bob's first event is his own: alice's never reached him.
    assert_eq!(next_event(&mut bob).await.data, "for bob");
}

#[tokio::test]
async fn invalid_json_push_is_refused_and_sends_nothing() {
    let server = basic().await;
    let mut alice = events(open(&user_url(&server, "alice").await).await);
    let (status, body) = post(&server, "alice", "application/json", "{not json").await;
    assert_eq!(status, 400);
    assert!(body.starts_with("invalid JSON body"), "{body}");
    post(&server, "alice", "text/plain", "after").await;
    assert_eq!(next_event(&mut alice).await.data, "after");
}

#[tokio::test]
async fn invalid_user_id_is_answered_404_before_streaming() {
    let server = basic().await;
    for path in ["/events/user/has%20space", "/events/user/%0Aevent:x"] {
        let response = within(reqwest::get(server.url(path))).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_ne!(
            response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("text/event-stream")
        );
    }
    let (status, _) = post(&server, "has%20space", "text/plain", "x").await;
    assert_eq!(status, 404);
    let login = within(
        reqwest::Client::new()
            .post(server.url("/login/has%20space"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(login.status(), 404);
}

#[tokio::test]
async fn user_entry_is_removed_when_their_last_stream_disconnects() {
    let controller = basic::EventsController::new();
    let users = controller.users().clone();
    let server = TestServer::start(controller.app()).await;
    let alice = user_url(&server, "alice").await;

    let first = open(&alice).await;
    let second = open(&alice).await;
    eventually("alice has an entry", || users.key_count() == 1).await;
    drop(first);
    eventually("one stream is left", || {
        users.subscriber_count(&"alice".to_owned()) == 1
    })
    .await;
    assert_eq!(users.key_count(), 1);
    drop(second);
    eventually("alice's entry is removed", || users.key_count() == 0).await;
}

#[tokio::test]
async fn a_users_stream_needs_that_users_token() {
    let server = basic().await;
    let alice = user_url(&server, "alice").await;
    let bob = user_url(&server, "bob").await;
    let bobs_token = bob.split("token=").nth(1).unwrap();
    let client = reqwest::Client::new();
    let status = |url: String, cookie: Option<String>| {
        let mut request = client.get(url);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        async move { within(request.send()).await.unwrap().status().as_u16() }
    };
    assert_eq!(status(server.url("/events/user/alice"), None).await, 401);
    assert_eq!(
        status(server.url("/events/user/alice?token=forged"), None).await,
        401
    );
    assert_eq!(
        status(
            server.url(&format!("/events/user/alice?token={bobs_token}")),
            None
        )
        .await,
        403
    );
    assert_eq!(
        status(
            server.url("/events/user/alice"),
            Some(format!("theme=dark; token={bobs_token}"))
        )
        .await,
        403
    );
    assert_eq!(
        status(
            server.url("/events/user/bob"),
            Some(format!("token={bobs_token}"))
        )
        .await,
        200
    );
    assert_eq!(status(alice, None).await, 200);
}

#[tokio::test]
async fn pushing_needs_the_users_token_or_the_admin_token_and_a_small_body() {
    let server = basic().await;
    let alice = user_url(&server, "alice").await;
    let alices_token = alice.split("token=").nth(1).unwrap().to_owned();
    let bobs_token = user_url(&server, "bob")
        .await
        .split("token=")
        .nth(1)
        .unwrap()
        .to_owned();
    let mut stream = events(open(&alice).await);
    let push = |credential: Option<(&'static str, String)>, body: String| {
        let mut request = reqwest::Client::new()
            .post(server.url("/events/user/alice"))
            .body(body);
        if let Some((header, value)) = credential {
            request = request.header(header, value);
        }
        async move { within(request.send()).await.unwrap().status().as_u16() }
    };
    assert_eq!(push(None, "anonymous".into()).await, 401);
    assert_eq!(
        push(
            Some(("authorization", "Bearer wrong".into())),
            "guess".into()
        )
        .await,
        401
    );
    assert_eq!(
        push(
            Some(("cookie", format!("token={bobs_token}"))),
            "from bob".into()
        )
        .await,
        403
    );
    let too_big = "x".repeat(basic::MAX_PUSH_BYTES + 1);
    assert_eq!(
        push(Some(("cookie", format!("token={alices_token}"))), too_big).await,
        413
    );
    assert_eq!(
        push(
            Some(("cookie", format!("token={alices_token}"))),
            "from alice".into()
        )
        .await,
        202
    );
    assert_eq!(
        push(
            Some(("authorization", format!("Bearer {ADMIN_TOKEN}"))),
            "from the admin".into()
        )
        .await,
        202
    );
    // Only the accepted pushes arrived.
    assert_eq!(next_event(&mut stream).await.data, "from alice");
    assert_eq!(next_event(&mut stream).await.data, "from the admin");
}

#[tokio::test]
async fn a_users_stream_ends_when_its_token_expires() {
    let ttl = Duration::from_millis(600);
    let controller = basic::EventsController::new()
        .with_tokens(basic::Tokens::new(ttl))
        .with_admin_token(ADMIN_TOKEN);
    let server = TestServer::start(controller.app()).await;
    let logged_in = Instant::now();
    let alice = user_url(&server, "alice").await;
    let mut stream = events(open(&alice).await);
    post(&server, "alice", "text/plain", "before expiry").await;
    assert_eq!(next_event(&mut stream).await.data, "before expiry");
    let end = within(futures_util::StreamExt::next(&mut stream)).await;
    let ended_after = logged_in.elapsed();
    assert!(end.is_none(), "the stream went on: {end:?}");
    eprintln!("the stream of a {ttl:?} token ended {ended_after:?} after login");
    assert!(ended_after >= ttl, "ended after only {ended_after:?}");
    assert!(
        ended_after < ttl + Duration::from_secs(5),
        "ended after {ended_after:?}"
    );
    // The browser's reconnect with the expired token is refused, which ends it.
    let again = within(reqwest::get(&alice)).await.unwrap();
    assert_eq!(again.status(), 401);
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_exactly_the_missed_events() {
    let server = basic().await;
    let alice = user_url(&server, "alice").await;
    let mut stream = events(open(&alice).await);
    post(&server, "alice", "text/plain", "one").await;
    let seen = next_event(&mut stream).await;
    assert_eq!(seen.data, "one");
    assert!(!seen.id.is_empty(), "the registry stamps ids");
    drop(stream);

    for text in ["two", "three"] {
        // Nobody is listening, yet the events are kept for replay.
        assert_eq!(
            post(&server, "alice", "text/plain", text).await.1,
            r#"{"delivered":0}"#
        );
    }
    let response = within(
        reqwest::Client::new()
            .get(&alice)
            .header("last-event-id", &seen.id)
            .send(),
    )
    .await
    .unwrap();
    let mut resumed = events(response);
    post(&server, "alice", "text/plain", "four").await;
    for expected in ["two", "three", "four"] {
        assert_eq!(next_event(&mut resumed).await.data, expected);
    }

    // An id this server never issued gets the reset signal, not a silent gap.
    let response = within(
        reqwest::Client::new()
            .get(&alice)
            .header("last-event-id", "0badc0de-1")
            .send(),
    )
    .await
    .unwrap();
    let reset = next_event(&mut events(response)).await;
    assert_eq!(
        (reset.event.as_str(), reset.data.as_str()),
        ("reset", r#"{"reason":"unknown_id"}"#)
    );
}

#[tokio::test]
async fn two_hundred_connect_disconnect_cycles_leave_no_registry_entry() {
    let controller = basic::EventsController::new();
    let users = controller.users().clone();
    let server = TestServer::start(controller.app()).await;
    let mut urls = Vec::new();
    for n in 0..20 {
        urls.push(user_url(&server, &format!("user{n}")).await);
    }
    for cycle in 0..200 {
        drop(open(&urls[cycle % urls.len()]).await);
    }
    eventually("every entry is removed", || users.key_count() == 0).await;
}

type ShutdownSignal = futures_util::future::BoxFuture<'static, ()>;
type ServerRun = futures_util::future::BoxFuture<'static, std::io::Result<()>>;

#[tokio::test]
async fn graceful_shutdown_with_100_open_streams_under_axum_serve() {
    graceful_shutdown_with_100_open_streams(|listener, app, signal| {
        Box::pin(
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .into_future(),
        )
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_with_100_open_streams_under_sse_runtime_serve() {
    graceful_shutdown_with_100_open_streams(|listener, app, signal| {
        Box::pin(
            sse_runtime::serve(listener, app)
                .with_graceful_shutdown(signal)
                .into_future(),
        )
    })
    .await;
}

async fn graceful_shutdown_with_100_open_streams(
    serve: fn(tokio::net::TcpListener, axum::Router, ShutdownSignal) -> ServerRun,
) {
    let controller = basic::EventsController::new();
    let registry = controller.users().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
    let stop = registry.clone();
    let server = tokio::spawn(serve(
        listener,
        controller.app(),
        Box::pin(async move {
            let _ = signalled.await;
            stop.shutdown();
        }),
    ));
    let url = |path: &str| format!("http://{addr}{path}");
    let token = {
        let login = within(reqwest::Client::new().post(url("/login/alice")).send())
            .await
            .unwrap();
        let answer: serde_json::Value = login.json().await.unwrap();
        answer["token"].as_str().unwrap().to_owned()
    };
    // Registry streams, and plain streams bound to the registry's shutdown.
    let mut open_streams = Vec::new();
    for n in 0..100 {
        let path = match n % 3 {
            0 => format!("/events/user/alice?token={token}"),
            1 => "/events/sse-stream".to_owned(),
            _ => "/events/dynamic".to_owned(),
        };
        open_streams.push(open(&url(&path)).await);
    }
    let started = Instant::now();
    signal.send(()).unwrap();
    within(server).await.unwrap().unwrap();
    let took = started.elapsed();
    eprintln!("graceful shutdown with 100 open SSE streams took {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "graceful shutdown took {took:?}"
    );
    // Every client saw its response end cleanly.
    for response in open_streams {
        within(response.bytes()).await.expect("a clean end of body");
    }
}

#[tokio::test]
async fn index_page_listens_with_event_source() {
    let server = basic().await;
    let response = within(reqwest::get(server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    for needle in [
        "new EventSource('/events/sse-stream')",
        ".onmessage",
        "addEventListener('customEventName'",
        "/events/user/",
    ] {
        assert!(page.contains(needle), "page lacks {needle}");
    }
}

#[tokio::test]
async fn sse_runtime_serve_gives_handlers_the_peer_address() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;
    let app = axum::Router::new().route(
        "/peer",
        axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
            peer.ip().to_string()
        }),
    );
    // TestServer serves with `sse_runtime::serve`.
    let server = TestServer::start(app).await;
    let response = within(reqwest::get(server.url("/peer"))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "127.0.0.1");
}

/// A push with `Idempotency-Key` repeated (a retry after a timeout) is
/// sent once; the repeat answers the first push's id.
#[tokio::test]
async fn a_push_repeated_with_its_idempotency_key_is_sent_once() {
    let server = basic().await;
    let mut alice = events(open(&user_url(&server, "alice").await).await);
    let push = |text: &'static str| {
        reqwest::Client::new()
            .post(server.url("/events/user/alice"))
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", "push-1")
            .body(text)
            .send()
    };
    let first: serde_json::Value = within(push("once")).await.unwrap().json().await.unwrap();
    let repeat: serde_json::Value = within(push("once")).await.unwrap().json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    assert_eq!(repeat["duplicate"], true);
    assert_eq!(repeat["id"], first["id"]);
    assert_eq!(post(&server, "alice", "text/plain", "next").await.0, 202);
    let event = next_event(&mut alice).await;
    assert_eq!(
        (Some(event.id.as_str()), event.data.as_str()),
        (first["id"].as_str(), "once")
    );
    assert_eq!(next_event(&mut alice).await.data, "next");
}
