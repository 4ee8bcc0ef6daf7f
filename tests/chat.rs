//! The `chat` example over loopback: rooms, 204 for unknown rooms, and streams
//! cut by the server resuming with `Last-Event-ID`, each message exactly once;
//! direct messages, read only with their user's token, until it expires.

use std::time::Duration;

use chat::{ChatController, ChatMessage};
use sse_tests::{
    RawResponse, TestServer, events, eventually, next_event, open, read_in_background, within,
};

async fn chat() -> (TestServer, ChatController) {
    let chat = ChatController::new(["general", "random"]);
    (TestServer::start(chat.clone().app()).await, chat)
}

async fn say(server: &TestServer, room: &str, user: &str, text: &str) -> u16 {
    sse_tests::say(&server.url(""), room, user, text).await
}

#[tokio::test]
async fn an_unknown_room_is_answered_204_so_event_source_stops() {
    let (server, _) = chat().await;
    let response = within(reqwest::get(server.url("/rooms/nowhere/events")))
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.text().await.unwrap().is_empty());
    assert_eq!(say(&server, "nowhere", "ann", "hi").await, 404);
}

#[tokio::test]
async fn a_room_stream_starts_with_the_retry_hint_and_carries_json_messages() {
    let (server, _) = chat().await;
    let mut raw = RawResponse::get(server.addr, "/rooms/general/events").await;
    // The retry hint, then the stream's resume point (an id alone).
    let first = String::from_utf8(raw.next_chunk().await.unwrap()).unwrap();
    let resume_point = first
        .strip_prefix("retry: 1000\n\nid: ")
        .unwrap_or_else(|| panic!("{first:?}"));
    let id = resume_point
        .strip_suffix("\n\n")
        .unwrap_or_else(|| panic!("{first:?}"));
    assert!(!id.is_empty() && !id.contains('\n'), "{first:?}");

    let mut general = events(open(&server.url("/rooms/general/events")).await);
    let mut random = events(open(&server.url("/rooms/random/events")).await);
    assert_eq!(
        say(&server, "general", "ann", "line one\nline two").await,
        202
    );
    assert_eq!(say(&server, "random", "bo", "elsewhere").await, 202);
    let event = next_event(&mut general).await;
    let message: ChatMessage = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        message,
        ChatMessage {
            user: "ann".into(),
            text: "line one\nline two".into()
        }
    );
    let other: ChatMessage = serde_json::from_str(&next_event(&mut random).await.data).unwrap();
    assert_eq!(other.text, "elsewhere", "rooms do not leak into each other");
}

#[tokio::test]
async fn invalid_messages_are_refused() {
    let (server, _) = chat().await;
    assert_eq!(say(&server, "general", "  ", "x").await, 422);
    assert_eq!(say(&server, "general", &"u".repeat(33), "x").await, 422);
    assert_eq!(say(&server, "general", "ann", &"x".repeat(2001)).await, 422);
}

#[tokio::test]
async fn streams_cut_by_the_server_resume_with_last_event_id_exactly_once() {
    let (server, chat) = chat().await;
    let mut received: Vec<String> = Vec::new();
    let mut last_id: Option<String> = None;
    let mut sent = 0;
    for round in 0..4 {
        let mut request = reqwest::Client::new().get(server.url("/rooms/general/events"));
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = within(request.send()).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = events(response);
        // Some messages while connected, some while away (after the cut below).
        for _ in 0..3 {
            sent += 1;
            say(&server, "general", "ann", &format!("m{sent}")).await;
        }
        while received.len() < sent {
            let event = next_event(&mut stream).await;
            received.push(
                serde_json::from_str::<ChatMessage>(&event.data)
                    .unwrap()
                    .text,
            );
            last_id = Some(event.id);
        }
        chat.drop_streams();
        // The server ends the response cleanly.
        use futures_util::StreamExt;
        assert!(
            within(stream.next()).await.is_none(),
            "round {round}: the stream must end"
        );
        for _ in 0..2 {
            sent += 1;
            say(&server, "general", "bo", &format!("m{sent}")).await;
        }
    }
    // The final resume collects what was sent during the last cut.
    let response = within(
        reqwest::Client::new()
            .get(server.url("/rooms/general/events"))
            .header("last-event-id", last_id.unwrap())
            .send(),
    )
    .await
    .unwrap();
    let mut stream = events(response);
    while received.len() < sent {
        received.push(
            serde_json::from_str::<ChatMessage>(&next_event(&mut stream).await.data)
                .unwrap()
                .text,
        );
    }
    let expected: Vec<String> = (1..=sent).map(|n| format!("m{n}")).collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn the_admin_endpoint_needs_the_admin_token_and_is_refused_without_one() {
    let drop_streams = |server: &TestServer, bearer: Option<&str>| {
        let mut request = reqwest::Client::new().post(server.url("/admin/drop-streams"));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        async move { within(request.send()).await.unwrap().status().as_u16() }
    };
    // No admin token configured: nobody may use it.
    let (unguarded, _) = chat().await;
    assert_eq!(drop_streams(&unguarded, None).await, 403);
    assert_eq!(drop_streams(&unguarded, Some("")).await, 403);

    let chat = ChatController::new(["general"]).with_admin_token("s3cret");
    let server = TestServer::start(chat.app()).await;
    let mut stream = events(open(&server.url("/rooms/general/events")).await);
    assert_eq!(drop_streams(&server, None).await, 401);
    assert_eq!(drop_streams(&server, Some("s3creT")).await, 401);
    assert_eq!(say(&server, "general", "ann", "still open").await, 202);
    assert_eq!(
        next_event(&mut stream).await.data,
        r#"{"room":"general","user":"ann","text":"still open"}"#
    );
    assert_eq!(drop_streams(&server, Some("s3cret")).await, 204);
    use futures_util::StreamExt;
    assert!(
        within(stream.next()).await.is_none(),
        "the stream was ended"
    );
}

#[tokio::test]
async fn messages_and_announcements_are_typed_events_and_announcing_needs_the_admin_token() {
    let announce = |server: &TestServer, bearer: Option<&str>, text: &str| {
        let mut request = reqwest::Client::new()
            .post(server.url("/admin/announce"))
            .json(&serde_json::json!({ "text": text }));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        async move { within(request.send()).await.unwrap().status().as_u16() }
    };
    let (unguarded, _) = chat().await;
    assert_eq!(announce(&unguarded, Some("x"), "hi").await, 403);

    let chat = ChatController::new(["general", "random"]).with_admin_token("s3cret");
    let server = TestServer::start(chat.app()).await;
    let mut general = events(open(&server.url("/rooms/general/events")).await);
    let mut random = events(open(&server.url("/rooms/random/events")).await);
    assert_eq!(say(&server, "general", "ann", "hello").await, 202);
    let said = next_event(&mut general).await;
    assert_eq!(
        (said.event.as_str(), said.data.as_str()),
        ("said", r#"{"room":"general","user":"ann","text":"hello"}"#)
    );
    assert_eq!(announce(&server, None, "maintenance").await, 401);
    assert_eq!(announce(&server, Some("s3cret"), "maintenance").await, 200);
    for stream in [&mut general, &mut random] {
        let announced = next_event(stream).await;
        assert_eq!(
            (announced.event.as_str(), announced.data.as_str()),
            ("announcement", r#"{"text":"maintenance"}"#),
            "a broadcast reaches every room"
        );
    }
}

#[tokio::test]
async fn several_rooms_share_one_stream_and_unknown_rooms_get_204() {
    let (server, _) = chat().await;
    for refused in [
        "/rooms/events?rooms=general,nowhere",
        "/rooms/events?rooms=",
    ] {
        let response = within(reqwest::get(server.url(refused))).await.unwrap();
        assert_eq!(response.status(), 204, "{refused}");
    }
    let mut both = events(open(&server.url("/rooms/events?rooms=general,random")).await);
    assert_eq!(say(&server, "random", "ann", "in random").await, 202);
    assert_eq!(say(&server, "general", "bo", "in general").await, 202);
    let mut got = [next_event(&mut both).await, next_event(&mut both).await];
    got.sort_by(|a, b| a.data.cmp(&b.data));
    assert_eq!(
        got.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        [
            r#"{"room":"general","user":"bo","text":"in general"}"#,
            r#"{"room":"random","user":"ann","text":"in random"}"#,
        ]
    );
    // The second event's id resumes both rooms.
    let id = got
        .iter()
        .map(|e| e.id.clone())
        .max_by_key(String::len)
        .unwrap();
    assert!(id.contains(':') && id.contains('_'), "a combined id: {id}");
}

/// A post with `Idempotency-Key` and its repeat (a client retrying after a
/// timeout): one message, and the repeat answers the first one's id,
/// marked a duplicate. A malformed key is refused with `400`.
#[tokio::test]
async fn a_post_repeated_with_its_idempotency_key_is_posted_once() {
    let (server, _) = chat().await;
    let mut general = events(open(&server.url("/rooms/general/events")).await);
    let post = |key: &'static str, text: &'static str| {
        reqwest::Client::new()
            .post(server.url("/rooms/general/messages"))
            .header("idempotency-key", key)
            .json(&ChatMessage {
                user: "ann".into(),
                text: text.into(),
            })
            .send()
    };
    let first = within(post("\"msg-1\"", "once")).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    let repeat = within(post("msg-1", "once")).await.unwrap();
    assert_eq!(repeat.status(), 202);
    let repeat: serde_json::Value = repeat.json().await.unwrap();
    assert_eq!(repeat["duplicate"], true);
    assert_eq!(repeat["id"], first["id"]);
    let refused = within(post("has space", "never")).await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(say(&server, "general", "ann", "next").await, 202);

    let event = next_event(&mut general).await;
    assert_eq!(Some(event.id.as_str()), first["id"].as_str());
    let message: ChatMessage = serde_json::from_str(&event.data).unwrap();
    assert_eq!(message.text, "once");
    let message: ChatMessage = serde_json::from_str(&next_event(&mut general).await.data).unwrap();
    assert_eq!(message.text, "next", "the repeat was not posted");
}

/// Logs `user` in; their token.
async fn log_in(server: &TestServer, user: &str) -> String {
    let response = within(
        reqwest::Client::new()
            .post(server.url("/login"))
            .json(&serde_json::json!({ "user": user }))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

async fn send_direct(server: &TestServer, token: Option<&str>, to: &str, text: &str) -> u16 {
    let mut request = reqwest::Client::new()
        .post(server.url(&format!("/users/{to}/messages")))
        .json(&serde_json::json!({ "text": text }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    within(request.send()).await.unwrap().status().as_u16()
}

type Private = tokio::sync::mpsc::UnboundedReceiver<
    Result<sse_runtime::client::Received<chat::ChatEvent>, sse_runtime::client::ClientError>,
>;

/// A private stream read by the Rust client, in a task of its own (so it
/// connects and keeps reading).
fn read_private(server: &TestServer, token: &str) -> Private {
    read_in_background(sse_runtime::client::EventStream::new(
        reqwest::Client::new()
            .get(server.url("/me/events"))
            .bearer_auth(token),
    ))
}

/// The next item of a private stream: a direct message, as "from to to:
/// text", or anything else as it came.
async fn next(items: &mut Private) -> String {
    match within(items.recv()).await.expect("the stream went on") {
        Ok(sse_runtime::client::Received::Event(chat::ChatEvent::Direct(direct))) => {
            format!("{} to {}: {}", direct.from, direct.to, direct.text)
        }
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn direct_messages_are_read_only_with_their_users_token_sent_in_a_header() {
    let (server, chat) = chat().await;
    for token in [None, Some("not-a-token")] {
        let mut request = reqwest::Client::new().get(server.url("/me/events"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = within(request.send()).await.unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    assert_eq!(send_direct(&server, None, "ana", "anonymous").await, 401);

    let (ana, bo, cy) = (
        log_in(&server, "ana").await,
        log_in(&server, "bo").await,
        log_in(&server, "cy").await,
    );
    let (mut to_ana, mut to_bo, mut to_cy) = (
        read_private(&server, &ana),
        read_private(&server, &bo),
        read_private(&server, &cy),
    );
    for inbox in ["@ana", "@bo", "@cy"] {
        let inbox = inbox.to_owned();
        eventually("the private streams are open", || {
            chat.registry().subscriber_count(&inbox) == 1
        })
        .await;
    }
    assert_eq!(send_direct(&server, Some(&bo), "ana", "psst").await, 202);
    assert_eq!(
        next(&mut to_ana).await,
        "bo to ana: psst",
        "the recipient's copy"
    );
    assert_eq!(
        next(&mut to_bo).await,
        "bo to ana: psst",
        "the sender's copy"
    );
    // `cy` saw none of it: the first thing on her stream is her own note.
    assert_eq!(send_direct(&server, Some(&cy), "cy", "note").await, 202);
    assert_eq!(next(&mut to_cy).await, "cy to cy: note");
}

#[tokio::test(start_paused = true)]
async fn an_expired_session_ends_its_private_stream_and_the_reconnect_gets_401() {
    use sse_runtime::testing::TestClient;
    let chat = ChatController::new(["general"]).with_session_ttl(Duration::from_secs(60));
    let client = TestClient::new(chat.app());
    let login = client
        .post("/login")
        .json(&serde_json::json!({ "user": "ana" }))
        .send()
        .await
        .text()
        .await;
    let token: serde_json::Value = serde_json::from_str(&login).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let mut stream = client
        .get("/me/events")
        .header("authorization", &bearer)
        .send()
        .await;
    assert_eq!(stream.status(), 200);
    let sent = client
        .post("/users/ana/messages")
        .header("authorization", &bearer)
        .json(&serde_json::json!({ "text": "to self" }))
        .send()
        .await;
    assert_eq!(sent.status(), 202);
    let event = stream.next_event().await.expect("the message");
    assert_eq!(event.event, "direct");
    // The session's minute passes: the stream ends, and so does its token.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        stream.next_event().await.is_none(),
        "ended with the session"
    );
    let again = client
        .get("/me/events")
        .header("authorization", &bearer)
        .send()
        .await;
    assert_eq!(again.status(), 401);
}

#[tokio::test]
async fn logging_in_in_a_loop_is_refused_past_the_session_bound_and_memory_stays_bounded() {
    use chat::direct::MAX_SESSIONS;
    use sse_runtime::testing::TestClient;
    let chat = ChatController::new(["general"]);
    let client = TestClient::new(chat.clone().app());
    let login = || {
        client
            .post("/login")
            .json(&serde_json::json!({ "user": "mallory" }))
            .send()
    };
    for _ in 0..MAX_SESSIONS {
        assert_eq!(login().await.status(), 200);
    }
    assert_eq!(login().await.status(), 503);
    assert_eq!(chat.sessions().len(), MAX_SESSIONS);
    // The operator ends them all; logins work again.
    chat.sessions().expire_all();
    assert_eq!(login().await.status(), 200);
    assert_eq!(chat.sessions().len(), 1);
}
