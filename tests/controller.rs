//! What the controller macros and the SSE response guarantee, over real sockets.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use futures_util::{Stream, StreamExt, stream};
use serde::Deserialize;
use sse_runtime::testing::TestClient;
use sse_runtime::{MessageEvent, delete, get, post, sse, sse_controller};
use sse_tests::{RawResponse, TestServer, events, eventually, next_event, open, within};

/// Counts streams dropped, to prove a disconnect ends the method's stream.
#[derive(Clone, Default)]
struct Drops(Arc<AtomicUsize>);

struct DropGuard(Drops);

impl Drop for DropGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct TestController {
    drops: Drops,
    opened: Arc<AtomicUsize>,
}

/// A user-defined extractor: the `x-user` header, or 401.
struct User(String);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("x-user").and_then(|v| v.to_str().ok()) {
            Some(user) => Ok(User(user.to_owned())),
            None => Err((StatusCode::UNAUTHORIZED, "no x-user header")),
        }
    }
}

#[derive(Deserialize)]
struct Prompt {
    words: Vec<String>,
}

#[sse_controller("/t")]
impl TestController {
    #[sse("/idle", keep_alive = "100ms")]
    fn idle() -> impl Stream<Item = MessageEvent> {
        stream::pending()
    }

    /// Eight events 50 ms apart, then silence.
    #[sse("/busy", keep_alive = "150ms")]
    fn busy() -> impl Stream<Item = &'static str> {
        let ticks = tokio::time::interval(Duration::from_millis(50));
        tokio_stream::wrappers::IntervalStream::new(ticks)
            .take(8)
            .map(|_| "tick")
            .chain(stream::pending())
    }

    #[sse("/silent", keep_alive = false)]
    fn silent() -> impl Stream<Item = MessageEvent> {
        stream::pending()
    }

    #[sse("/retry", retry = "2500ms", keep_alive = false)]
    fn retry() -> impl Stream<Item = &'static str> {
        stream::iter(["after the hint"])
    }

    #[sse("/burst", keep_alive = false)]
    fn burst() -> impl Stream<Item = String> {
        stream::iter((0..100).map(|n| format!("event {n}")))
    }

    /// Forty events 2 ms apart, then the end; held for up to 200 ms after a write.
    #[sse("/ticker", batch_window = "200ms", keep_alive = false)]
    fn ticker() -> impl Stream<Item = String> {
        let ticks = tokio::time::interval(Duration::from_millis(2));
        tokio_stream::wrappers::IntervalStream::new(ticks)
            .take(40)
            .enumerate()
            .map(|(n, _)| format!("tick {n}"))
    }

    #[sse("/unbatched", batch_window = false, keep_alive = false)]
    fn unbatched() -> impl Stream<Item = &'static str> {
        two_events_a_moment_apart()
    }

    #[sse("/batched", batch_window = "250ms", keep_alive = false)]
    fn batched() -> impl Stream<Item = &'static str> {
        two_events_a_moment_apart()
    }

    #[sse("/failing")]
    fn failing() -> impl Stream<Item = Result<MessageEvent, std::io::Error>> {
        stream::iter([
            Ok(MessageEvent::new("first")),
            Ok(MessageEvent::new("second")),
            Err(std::io::Error::other("database went away")),
            Ok(MessageEvent::new("never sent")),
        ])
    }

    /// Streams until dropped; records the drop.
    #[sse("/watched", keep_alive = false)]
    fn watched(&self) -> impl Stream<Item = MessageEvent> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        let guard = DropGuard(self.drops.clone());
        stream::once(async { MessageEvent::new("hello") })
            .chain(stream::pending())
            .map(move |event| {
                let _alive = &guard;
                event
            })
    }

    #[sse("/items/:id")]
    async fn item(
        &self,
        Path(id): Path<u32>,
    ) -> Result<impl Stream<Item = MessageEvent>, (StatusCode, String)> {
        if id != 7 {
            return Err((StatusCode::NOT_FOUND, format!("no item {id}")));
        }
        Ok(stream::iter([MessageEvent::new(format!("item {id}"))]))
    }

    #[sse("/echo/{a}/{b}")]
    fn echo(
        Path((a, b)): Path<(String, String)>,
        Query(query): Query<HashMap<String, String>>,
        headers: HeaderMap,
        User(user): User,
    ) -> impl Stream<Item = serde_json::Value> {
        let agent = headers
            .get("x-agent")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        stream::iter([
            serde_json::json!({ "a": a, "b": b, "q": query.get("q"), "agent": agent, "user": user }),
        ])
    }

    #[sse("/complete", method = "post")]
    async fn complete(Json(prompt): Json<Prompt>) -> impl Stream<Item = MessageEvent> {
        stream::iter(prompt.words)
            .map(MessageEvent::new)
            .chain(stream::iter([MessageEvent::new("[DONE]")]))
    }

    /// A plain route beside the streams, as NestJS's `@Get()` beside `@Sse()`.
    #[get("/status")]
    fn status(&self) -> String {
        format!("{} streams opened", self.helper())
    }

    /// Plain routes share a path with a stream: one method router for all.
    #[post("/items/:id")]
    async fn create_item(
        Path(id): Path<u32>,
        Json(body): Json<serde_json::Value>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        (
            StatusCode::CREATED,
            Json(serde_json::json!({ "id": id, "body": body })),
        )
    }

    #[delete("/items/{id}")]
    fn delete_item(Path(id): Path<u32>) -> Result<StatusCode, (StatusCode, String)> {
        if id == 7 {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err((StatusCode::NOT_FOUND, format!("no item {id}")))
        }
    }

    /// Not a route: left as written.
    fn helper(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
}

async fn server() -> (TestServer, TestController) {
    let controller = TestController::default();
    (
        TestServer::start(controller.clone().router()).await,
        controller,
    )
}

#[tokio::test]
async fn idle_stream_gets_keep_alive_comments_at_the_route_interval() {
    let (server, _) = server().await;
    let mut raw = RawResponse::get(server.addr, "/t/idle").await;
    assert!(raw.head.starts_with("HTTP/1.1 200"), "{}", raw.head);
    for _ in 0..2 {
        assert_eq!(raw.next_chunk().await.unwrap(), b": keep-alive\n\n");
    }
}

#[tokio::test]
async fn keep_alive_comes_only_after_a_full_interval_of_silence() {
    let (server, _) = server().await;
    let mut raw = RawResponse::get(server.addr, "/t/busy").await;
    let mut body = String::new();
    // 8 events over 350 ms with a 150 ms keep-alive: no comment in between.
    while body.matches("data: tick").count() < 8 {
        body.push_str(&String::from_utf8(raw.next_chunk().await.unwrap()).unwrap());
    }
    assert_eq!(body, "data: tick\n\n".repeat(8));
    assert_eq!(
        raw.next_chunk().await.unwrap(),
        b": keep-alive\n\n",
        "then silence gets one"
    );
}

#[tokio::test]
async fn keep_alive_false_sends_nothing_while_idle() {
    let (server, _) = server().await;
    let mut raw = RawResponse::get(server.addr, "/t/silent").await;
    let quiet = tokio::time::timeout(Duration::from_millis(400), raw.next_chunk()).await;
    assert!(quiet.is_err(), "expected silence, got {quiet:?}");
}

#[tokio::test]
async fn retry_hint_is_sent_before_the_first_event() {
    let (server, _) = server().await;
    let mut raw = RawResponse::get(server.addr, "/t/retry").await;
    let mut body = Vec::new();
    while let Some(chunk) = raw.next_chunk().await {
        body.extend(chunk);
    }
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "retry: 2500\n\ndata: after the hint\n\n"
    );
}

#[tokio::test]
async fn ready_events_are_coalesced_into_one_write() {
    let (server, _) = server().await;
    let mut raw = RawResponse::get(server.addr, "/t/burst").await;
    let first = raw.next_chunk().await.unwrap();
    let expected: String = (0..100).map(|n| format!("data: event {n}\n\n")).collect();
    assert_eq!(String::from_utf8(first).unwrap(), expected);
    assert_eq!(raw.next_chunk().await, None, "the stream then ends");
}

#[tokio::test]
async fn a_route_with_a_batch_window_delivers_every_event_in_order() {
    // How many writes the window saves is a benchmark's business (see
    // BENCHMARKS.md); the batching rule itself is tested frame by frame in
    // sse-runtime/tests/batching.rs. Here: what goes through the route's
    // window arrives whole and in order, however the machine splits it.
    let (server, _) = server().await;
    let mut raw = RawResponse::get(server.addr, "/t/ticker").await;
    let mut chunks = Vec::new();
    while let Some(chunk) = raw.next_chunk().await {
        chunks.push(String::from_utf8(chunk).unwrap());
    }
    let expected: String = (0..40).map(|n| format!("data: tick {n}\n\n")).collect();
    assert_eq!(chunks.concat(), expected, "every event, in order");
}

fn two_events_a_moment_apart() -> impl Stream<Item = &'static str> {
    stream::iter(["first"])
        .chain(stream::once(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            "second"
        }))
        // Not the end: the end of a stream is never held.
        .chain(stream::pending())
}

#[tokio::test]
async fn batch_window_option_reaches_the_route() {
    // Both routes deliver both events; whether the second waited is timing,
    // which sse-runtime/tests/batching.rs checks without a network in
    // between. The option's expansion is checked by the macro's tests.
    let (server, _) = server().await;
    for path in ["/t/batched", "/t/unbatched"] {
        let mut raw = RawResponse::get(server.addr, path).await;
        assert_eq!(
            raw.next_chunk().await.unwrap(),
            b"data: first\n\n",
            "{path}"
        );
        assert_eq!(
            raw.next_chunk().await.unwrap(),
            b"data: second\n\n",
            "{path}"
        );
    }
}

#[tokio::test]
async fn err_item_flushes_earlier_events_then_ends_the_stream_cleanly() {
    let (server, _) = server().await;
    let mut raw = RawResponse::get(server.addr, "/t/failing").await;
    let mut body = Vec::new();
    // Reaching the terminating chunk proves a clean end, not a reset connection.
    while let Some(chunk) = raw.next_chunk().await {
        body.extend(chunk);
    }
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "data: first\n\ndata: second\n\n"
    );
}

#[tokio::test]
async fn stream_is_dropped_promptly_when_the_client_disconnects() {
    let (server, controller) = server().await;
    for round in 1..=3 {
        let response = open(&server.url("/t/watched")).await;
        let mut events = events(response);
        assert_eq!(next_event(&mut events).await.data, "hello");
        assert_eq!(
            controller.drops.0.load(Ordering::SeqCst),
            round - 1,
            "still open"
        );
        drop(events);
        // No keep-alive on this route: the server notices the closed socket itself.
        eventually("the method's stream is dropped", || {
            controller.drops.0.load(Ordering::SeqCst) == round
        })
        .await;
    }
    assert_eq!(controller.helper(), 3);
}

// Where a socket is not the point, the in-process client of
// `sse_runtime::testing` drives the router.

fn in_process() -> TestClient {
    TestClient::new(TestController::default().router())
}

#[tokio::test]
async fn result_route_answers_its_error_before_streaming() {
    let client = in_process();
    let response = client.get("/t/items/8").send().await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.text().await, "no item 8");

    let mut response = client.get("/t/items/7").send().await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.next_event().await.unwrap().data, "item 7");

    // A path that does not parse as the extractor's type is axum's 400.
    assert_eq!(client.get("/t/items/seven").send().await.status(), 400);
}

#[tokio::test]
async fn extractors_of_every_kind_reach_the_method() {
    let client = in_process();
    let mut response = client
        .get("/t/echo/x/y?q=hi")
        .header("x-agent", "test")
        .header("x-user", "ann")
        .send()
        .await;
    assert_eq!(response.status(), 200);
    let echoed: serde_json::Value =
        serde_json::from_str(&response.next_event().await.unwrap().data).unwrap();
    assert_eq!(
        echoed,
        serde_json::json!({ "a": "x", "b": "y", "q": "hi", "agent": "test", "user": "ann" })
    );

    // The custom extractor's rejection is the response.
    assert_eq!(client.get("/t/echo/x/y").send().await.status(), 401);
}

#[tokio::test]
async fn plain_routes_sit_beside_the_streams_of_one_controller() {
    let controller = TestController::default();
    let client = TestClient::new(controller.clone().router());
    // A stream first, so the plain route has something to report.
    let mut stream = client.get("/t/watched").send().await;
    assert_eq!(stream.next_event().await.unwrap().data, "hello");
    let status = client.get("/t/status").send().await;
    assert_eq!(status.status(), 200);
    assert_eq!(status.text().await, "1 streams opened");

    // POST and DELETE share their path with the #[sse] GET.
    let created = client
        .post("/t/items/3")
        .json(&serde_json::json!({ "name": "three" }))
        .send()
        .await;
    assert_eq!(created.status(), 201);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&created.text().await).unwrap(),
        serde_json::json!({ "id": 3, "body": { "name": "three" } })
    );
    let delete = |id: u32| {
        client
            .request(axum::http::Method::DELETE, &format!("/t/items/{id}"))
            .send()
    };
    assert_eq!(delete(7).await.status(), 204);
    let missing = delete(8).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await, "no item 8");
    // A method none of the routes of a path serves.
    assert_eq!(
        client
            .request(axum::http::Method::PUT, "/t/items/7")
            .send()
            .await
            .status(),
        405
    );
}

#[tokio::test]
async fn post_route_streams_a_response_to_a_json_body() {
    let client = in_process();
    let mut response = client
        .post("/t/complete")
        .json(&serde_json::json!({ "words": ["a", "b"] }))
        .send()
        .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let data: Vec<String> = response.take(3).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["a", "b", "[DONE]"]);
    assert!(
        response.next_event().await.is_none(),
        "then the stream ends"
    );

    // GET is not served on a POST route.
    assert_eq!(client.get("/t/complete").send().await.status(), 405);
}

// ---- state: a controller whose methods read the app's state ----

#[derive(Clone)]
struct AppState {
    greeting: &'static str,
}

#[derive(Clone)]
struct StatefulController;

#[sse_controller("/", state = AppState)]
impl StatefulController {
    #[sse("/greet/:name")]
    async fn greet(
        State(state): State<AppState>,
        Path(name): Path<String>,
    ) -> impl Stream<Item = String> {
        stream::iter([format!("{}, {name}", state.greeting)])
    }
}

#[tokio::test]
async fn state_declared_on_the_controller_reaches_state_extractors() {
    let app = StatefulController
        .router()
        .with_state(AppState { greeting: "hello" });
    let server = TestServer::start(app).await;
    let mut events = events(open(&server.url("/greet/bo")).await);
    assert_eq!(next_event(&mut events).await.data, "hello, bo");
}

#[tokio::test]
async fn controller_router_merges_into_an_app_with_its_own_state() {
    let app: axum::Router = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(|State(n): State<u8>| async move { n.to_string() }),
        )
        .merge(TestController::default().router())
        .with_state(7u8);
    let server = TestServer::start(app).await;
    assert_eq!(
        within(reqwest::get(server.url("/health")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "7"
    );
    let mut events = events(open(&server.url("/t/retry")).await);
    assert_eq!(next_event(&mut events).await.data, "after the hint");
}

#[tokio::test]
async fn an_enormous_keep_alive_interval_is_served_without_panicking() {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            let stream = stream::iter([MessageEvent::new("x")]).chain(stream::pending());
            sse_runtime::Sse::new(stream).keep_alive(sse_runtime::KeepAlive::every(Duration::MAX))
        }),
    );
    let server = TestServer::start(app).await;
    let mut events = events(open(&server.url("/")).await);
    assert_eq!(next_event(&mut events).await.data, "x");
}

/// A stream over many keys, `?n=` of them, from a controller.
#[derive(Clone)]
struct ManyKeys {
    registry: sse_runtime::Registry<String>,
}

#[derive(Deserialize)]
struct KeyCount {
    n: usize,
}

#[sse_controller("/many")]
impl ManyKeys {
    #[sse("/", keep_alive = false)]
    fn keys(
        &self,
        Query(count): Query<KeyCount>,
        last: sse_runtime::LastEventId,
    ) -> sse_runtime::Subscription {
        let keys: Vec<String> = (0..count.n).map(|n| format!("key-{n}")).collect();
        self.registry.subscribe_many(&keys, last.as_deref())
    }
}

#[tokio::test]
async fn a_combined_id_past_the_last_event_id_bound_resets_every_key_never_a_silent_gap() {
    let registry = sse_runtime::Registry::new();
    let client = TestClient::new(
        ManyKeys {
            registry: registry.clone(),
        }
        .router(),
    );
    let first_event = |n: usize| {
        let (client, registry) = (&client, &registry);
        async move {
            let mut stream = client.get(&format!("/many?n={n}")).send().await;
            registry
                .send(&"key-0".to_owned(), MessageEvent::new("first"))
                .await
                .unwrap();
            assert_eq!(stream.next_event().await.unwrap().data, "first");
            stream.last_event_id().to_owned()
        }
    };
    // 30 keys fit: the id resumes them.
    let id = first_event(30).await;
    assert!(
        id.len() <= sse_runtime::MAX_LAST_EVENT_ID_LEN,
        "{}",
        id.len()
    );
    registry
        .send(&"key-7".to_owned(), MessageEvent::new("while away"))
        .await
        .unwrap();
    let mut resumed = client.get("/many?n=30").last_event_id(&id).send().await;
    let event = resumed.next_event().await.unwrap();
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("message", "while away")
    );
    // 120 keys do not: the reconnecting client's id is not read, and every
    // key starts over with the reset signal.
    let long_id = first_event(120).await;
    assert!(
        long_id.len() > sse_runtime::MAX_LAST_EVENT_ID_LEN,
        "{}",
        long_id.len()
    );
    let mut refused = client
        .get("/many?n=120")
        .last_event_id(&long_id)
        .send()
        .await;
    let event = refused.next_event().await.unwrap();
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("reset", "{\"reason\":\"invalid_id\"}")
    );
}
