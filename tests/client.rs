//! `sse_runtime::client` against real servers over loopback: the chat
//! example's typed events resumed exactly across a restart (Redis) and
//! across the two instances of a Redis Cluster; and the client's own rules,
//! each against a small server that answers as a misbehaving one would:
//! headers, method and body kept on reconnect, `Last-Event-ID` sent, `204`
//! and `4xx` stopping it, `5xx`, cut connections and silent ones retried,
//! the reset signal and undecodable data as values.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use chat::{ChatController, ChatEvent, Said};
use futures_util::StreamExt;
use sse_runtime::RegistryConfig;
use sse_runtime::client::{ClientError, Event, EventStream, ReadEvent, Received};
use sse_tests::scripted::{Answer, scripted};
use sse_tests::{TestServer, eventually, read_in_background, redis_cluster, redis_server, within};

async fn say(base: &str, user: &str, text: &str) {
    assert_eq!(sse_tests::say(base, "general", user, text).await, 202);
}

/// The next `said`, failing on anything else (a reset, an error).
async fn next_said(
    items: &mut tokio::sync::mpsc::UnboundedReceiver<Result<Received<ChatEvent>, ClientError>>,
) -> String {
    match within(items.recv()).await {
        Some(Ok(Received::Event(ChatEvent::Said(Said { text, .. })))) => text,
        other => panic!("expected a said event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_read_by_the_rust_client_resumes_exactly_across_a_restart() {
    let Some(redis) = redis_server::start(false).await else {
        return;
    };
    let first =
        ChatController::with_registry(["general"], redis.registry(RegistryConfig::default()).await);
    let server = TestServer::start(first.clone().app()).await;
    let addr = server.addr;
    // The other instance, which takes posts while the first is down.
    let other = TestServer::start(
        ChatController::with_registry(["general"], redis.registry(RegistryConfig::default()).await)
            .app(),
    )
    .await;
    let base = |addr: SocketAddr| format!("http://{addr}");

    let mut items = read_in_background(EventStream::<ChatEvent>::new(
        reqwest::Client::new().get(server.url("/rooms/general/events")),
    ));
    let general = "general".to_owned();
    eventually("the client's stream is open", || {
        first.registry().subscriber_count(&general) == 1
    })
    .await;
    for text in ["one", "two", "three"] {
        say(&base(addr), "ann", text).await;
    }
    for text in ["one", "two", "three"] {
        assert_eq!(next_said(&mut items).await, text);
    }

    // The instance goes away (its streams end, as in a deploy); posts go
    // on through the other one; it comes back on the same address.
    assert!(server.shut_down(Duration::from_secs(10)).await.is_some());
    for text in ["four", "five"] {
        say(&base(other.addr), "bo", text).await;
    }
    let restarted =
        ChatController::with_registry(["general"], redis.registry(RegistryConfig::default()).await);
    let _server = TestServer::start_at(addr, restarted.clone().app()).await;
    for text in ["four", "five"] {
        assert_eq!(next_said(&mut items).await, text, "resumed exactly");
    }
    say(&base(addr), "ann", "six").await;
    assert_eq!(next_said(&mut items).await, "six");
    assert!(items.try_recv().is_err(), "nothing else: no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_resumes_on_the_other_cluster_instance_where_it_left_the_first() {
    let Some(cluster) = redis_cluster::start().await else {
        return;
    };
    let instance = || async {
        let chat = ChatController::with_registry(
            ["general"],
            cluster.registry(RegistryConfig::default()).await,
        );
        (TestServer::start(chat.clone().app()).await, chat)
    };
    let (one, one_chat) = instance().await;
    let (two, _) = instance().await;
    let general = "general".to_owned();

    let mut events =
        EventStream::<ChatEvent>::new(reqwest::Client::new().get(one.url("/rooms/general/events")));
    // Open it: the first item is the first message, which the test posts
    // once the stream is subscribed.
    let first = tokio::spawn(async move {
        let item = within(events.next()).await;
        (item, events)
    });
    eventually("the client's stream is open on instance one", || {
        one_chat.registry().subscriber_count(&general) == 1
    })
    .await;
    say(&two.url(""), "ann", "one").await;
    let (item, mut events) = first.await.unwrap();
    assert!(
        matches!(&item, Some(Ok(Received::Event(ChatEvent::Said(said)))) if said.text == "one"),
        "{item:?}"
    );
    say(&two.url(""), "ann", "two").await;
    match within(events.next()).await {
        Some(Ok(Received::Event(ChatEvent::Said(said)))) => assert_eq!(said.text, "two"),
        other => panic!("{other:?}"),
    }
    let resume_id = events.resume_id();
    drop(events);

    // Posted while the client is away, through the instance it left.
    for text in ["three", "four"] {
        say(&one.url(""), "bo", text).await;
    }
    let mut items = read_in_background(
        EventStream::<ChatEvent>::new(reqwest::Client::new().get(two.url("/rooms/general/events")))
            .last_event_id(resume_id),
    );
    for text in ["three", "four"] {
        assert_eq!(
            next_said(&mut items).await,
            text,
            "resumed exactly on instance two"
        );
    }
    say(&one.url(""), "ann", "five").await;
    assert_eq!(next_said(&mut items).await, "five");
}

/// Every item of `events` until it ends.
async fn all<T: ReadEvent + Send + 'static>(
    events: EventStream<T>,
) -> Vec<Result<Received<T>, ClientError>> {
    within(events.collect::<Vec<_>>()).await
}

fn data(item: &Result<Received<Event>, ClientError>) -> &str {
    match item {
        Ok(Received::Event(event)) => &event.data,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reconnect_keeps_method_headers_and_body_and_sends_the_last_event_id() {
    let (server, seen) = scripted(vec![
        Answer::Stream("retry: 20\nid: 1\ndata: a\n\nid: 2\ndata: b\n\n"),
        Answer::Cut("id: 3\ndata: c\n\nid: 4\ndata: cut off"),
        Answer::Stream("data: d\n\n"),
    ])
    .await;
    let request = reqwest::Client::new()
        .post(server.url("/stream"))
        .bearer_auth("token")
        .body("{\"prompt\":\"hi\"}");
    let items = all(EventStream::<Event>::new(request)).await;
    let data: Vec<&str> = items.iter().map(data).collect();
    assert_eq!(data, ["a", "b", "c", "d"], "the cut-off event is dropped");
    // The id persists across the reconnect: `d` carries `3`.
    match &items[3] {
        Ok(Received::Event(event)) => assert_eq!(event.id, "3"),
        other => panic!("{other:?}"),
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "three streams, then the 204 that ends it");
    let resumed_from: Vec<Option<&str>> = seen
        .iter()
        .map(|request| request.last_event_id.as_deref())
        .collect();
    assert_eq!(resumed_from, [None, Some("2"), Some("3"), Some("3")]);
    for request in &seen {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.authorization.as_deref(), Some("Bearer token"));
        assert_eq!(request.accept.as_deref(), Some("text/event-stream"));
        assert_eq!(&request.body[..], b"{\"prompt\":\"hi\"}");
    }
}

#[tokio::test]
async fn server_errors_are_retried_and_a_refusal_ends_the_stream_with_its_status() {
    let (server, seen) = scripted(vec![
        Answer::Status(StatusCode::SERVICE_UNAVAILABLE),
        Answer::Status(StatusCode::TOO_MANY_REQUESTS),
        Answer::Stream("id: 7\ndata: a\n\n"),
        // The token expired while the client was away.
        Answer::Status(StatusCode::UNAUTHORIZED),
        Answer::Stream("data: never read\n\n"),
    ])
    .await;
    let events = EventStream::<Event>::new(reqwest::Client::new().get(server.url("/stream")))
        .default_retry(Duration::from_millis(10));
    let items = all(events).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(data(&items[0]), "a");
    assert!(
        matches!(items[1], Err(ClientError::Status(StatusCode::UNAUTHORIZED))),
        "{:?}",
        items[1]
    );
    assert_eq!(seen.lock().unwrap().len(), 4, "nothing after the 401");
}

#[tokio::test]
async fn a_silent_connection_is_dropped_and_the_stream_resumes_on_a_new_one() {
    let (server, seen) = scripted(vec![
        Answer::Silent("retry: 10\nid: 1\ndata: a\n\n"),
        Answer::Stream("id: 2\ndata: b\n\n"),
    ])
    .await;
    let events = EventStream::<Event>::new(reqwest::Client::new().get(server.url("/stream")))
        .idle_timeout(Some(Duration::from_secs(2)));
    let items = all(events).await;
    let data: Vec<&str> = items.iter().map(data).collect();
    assert_eq!(data, ["a", "b"]);
    assert_eq!(seen.lock().unwrap()[1].last_event_id.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_response_that_is_not_an_event_stream_ends_it_with_an_error() {
    let (server, seen) = scripted(vec![Answer::Plain]).await;
    let items = all(EventStream::<Event>::new(
        reqwest::Client::new().get(server.url("/stream")),
    ))
    .await;
    assert!(
        matches!(&items[..], [Err(ClientError::NotEventStream(content_type))] if content_type.starts_with("text/plain")),
        "{items:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_reset_signal_and_unknown_or_undecodable_events_are_values_and_the_stream_goes_on() {
    let (server, _) = scripted(vec![Answer::Stream(concat!(
        "id: 1\nevent: said\ndata: {\"room\":\"general\",\"user\":\"ann\",\"text\":\"hi\"}\n\n",
        "id: 2\nevent: said\ndata: 42\n\n",
        "id: 3\nevent: typing\ndata: {\"user\":\"bo\"}\n\n",
        "id: 4\nevent: reset\ndata: {\"reason\":\"history_expired\",\"key\":\"general\"}\n\n",
        "id: 5\nevent: announcement\ndata: {\"text\":\"bye\"}\n\n",
    ))])
    .await;
    let items = all(EventStream::<ChatEvent>::new(
        reqwest::Client::new().get(server.url("/stream")),
    ))
    .await;
    assert_eq!(items.len(), 5, "{items:?}");
    assert!(
        matches!(&items[0], Ok(Received::Event(ChatEvent::Said(said))) if said.text == "hi"),
        "{:?}",
        items[0]
    );
    match &items[1] {
        Err(ClientError::Decode(error)) => assert_eq!(error.event_type(), "said"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&items[2], Ok(Received::Other(event)) if event.event == "typing"),
        "{:?}",
        items[2]
    );
    match &items[3] {
        Ok(Received::Reset(reset)) => {
            assert_eq!(reset.reason, "history_expired");
            assert_eq!(reset.key.as_deref(), Some("general"));
            assert_eq!(reset.id, "4");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        items[4].as_ref().ok(),
        Some(&Received::Event(ChatEvent::Announcement {
            text: "bye".into()
        }))
    );
}
