//! The `basic` example over a real loopback socket, read by eventsource-stream.

use std::time::{Duration, Instant};

use sse_tests::{TestServer, events, eventually, next_event, open, within};

async fn basic() -> TestServer {
    TestServer::start(basic::app()).await
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
    for path in [
        "/events/sse-stream",
        "/events/user/alice",
        "/events/dynamic",
    ] {
        let response = open(&server.url(path)).await;
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
    let mut alice = events(open(&server.url("/events/user/alice")).await);

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
    let mut alice_1 = events(open(&server.url("/events/user/alice")).await);
    let mut alice_2 = events(open(&server.url("/events/user/alice")).await);
    let mut bob = events(open(&server.url("/events/user/bob")).await);

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
    let mut alice = events(open(&server.url("/events/user/alice")).await);
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
}

#[tokio::test]
async fn user_entry_is_removed_when_their_last_stream_disconnects() {
    let controller = basic::EventsController::new();
    let users = controller.users().clone();
    let server = TestServer::start(controller.router()).await;

    let first = open(&server.url("/events/user/alice")).await;
    let second = open(&server.url("/events/user/alice")).await;
    eventually("alice has an entry", || users.user_count() == 1).await;
    drop(first);
    // One stream is still open: the entry stays and still delivers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(users.user_count(), 1);
    drop(second);
    eventually("alice's entry is removed", || users.user_count() == 0).await;
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
