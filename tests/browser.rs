//! In a real browser: headless Chromium (Debian's package) driven by
//! playwright-core, against the example apps and the conformance server on
//! loopback.

use std::time::Duration;

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::{self, Next};
use serde_json::Value;
use sse_tests::TestServer;
use sse_tests::conformance;
use sse_tests::external::{chromium_path, has_playwright, require, run, runs, tests_dir};

fn browser_available() -> bool {
    let chromium = chromium_path();
    require(&[
        ("chromium", std::path::Path::new(&chromium).exists()),
        ("node", runs("node")),
        (
            "playwright-core (npm install in tests/browser)",
            has_playwright(),
        ),
    ])
    .is_ok()
}

/// The admin token of the chat servers here, which the driver uses to cut streams.
const ADMIN_TOKEN: &str = "browser-test-admin";

async fn drive(mode: &str, base: &str, screenshot: Option<&str>) -> Value {
    let mut args = vec!["driver.mjs", mode, base];
    args.extend(screenshot);
    let output = run(
        "node",
        &args,
        &[("ADMIN_TOKEN", ADMIN_TOKEN)],
        &tests_dir().join("browser"),
        Duration::from_secs(120),
    )
    .await;
    serde_json::from_str(&output)
        .unwrap_or_else(|e| panic!("driver output is not JSON ({e}): {output}"))
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_in_chromium() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start(conformance::app()).await;
    let results = drive("conformance", &server.url(""), None).await;
    // The browser exposes no retry field; its reconnect timing uses it.
    conformance::assert_all_cases("Chromium", false, |case| {
        conformance::seen_from_json(&results[&case.name])
    });
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_through_the_fetch_transport_in_chromium() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start(conformance::app()).await;
    let results = drive("conformance-fetch", &server.url(""), None).await;
    conformance::assert_all_cases("FetchEventSource in Chromium", false, |case| {
        conformance::seen_from_json(&results[&case.name])
    });
}

/// The conformance table again, every stream compressed with `coding`.
async fn conformance_compressed_in_chromium(coding: &str) {
    if !browser_available() {
        return;
    }
    let (app, runs) = conformance::app_with_runs();
    let server = TestServer::start(app).await;
    let results = drive(&format!("conformance-{coding}"), &server.url(""), None).await;
    conformance::assert_all_cases("Chromium", false, |case| {
        conformance::seen_from_json(&results[&case.name])
    });
    runs.assert_all_compressed_with(coding);
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_in_chromium_over_gzip() {
    conformance_compressed_in_chromium("gzip").await;
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_in_chromium_over_zstd() {
    conformance_compressed_in_chromium("zstd").await;
}

#[tokio::test]
async fn the_basic_page_receives_pings_typed_events_and_user_pushes_in_chromium() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start(basic::app()).await;
    // SCREENSHOT_OUT=docs/basic-page.png refreshes the README's picture.
    let screenshot = std::env::var("SCREENSHOT_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tests_dir().join("../target/basic-page.png"));
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let seen = drive("basic", &server.url(""), Some(screenshot.to_str().unwrap())).await;
    let texts = |key: &str| -> Vec<String> {
        seen[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let pings = texts("pings");
    assert!(
        pings.len() >= 2 && pings.iter().all(|p| p == "ping"),
        "onmessage: {pings:?}"
    );
    let dynamic = texts("dynamic");
    assert_eq!(
        dynamic[..2],
        ["dynamic event 0", "dynamic event 1"],
        "addEventListener('customEventName')"
    );
    assert!(
        texts("user").contains(&"hello from the browser test".to_owned()),
        "user stream: {:?}",
        texts("user")
    );
}

#[tokio::test]
async fn chromium_reads_the_chat_room_compressed_across_an_encoder_rest() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start(chat::ChatController::new(["general"]).app()).await;
    let seen = drive("chat-rest", &server.url(""), None).await;
    // Chromium offers zstd, which the server prefers; the page showed both
    // messages (the driver waits for them), one on each side of the rest.
    assert_eq!(seen["encodings"][0], "zstd", "{seen}");
}

#[tokio::test]
async fn chromium_reconnects_with_last_event_id_and_shows_every_message_once() {
    if !browser_available() {
        return;
    }
    let chat = chat::ChatController::new(["general"]).with_admin_token(ADMIN_TOKEN);
    let (app, requests) = recording_stream_requests(chat.app());
    let server = TestServer::start(app).await;
    let seen = drive("chat-resume", &server.url(""), None).await;
    let shown = seen["shown"].as_array().unwrap();
    let notices: Vec<&str> = shown
        .iter()
        .filter(|item| item["notice"] == true)
        .map(|item| item["text"].as_str().unwrap())
        .collect();
    // The page reads typed events (`said`, `announcement`) through the
    // TypedEventSource generated from the Rust types.
    assert_eq!(
        notices,
        ["announcement: hello all"],
        "the announcement once, and no duplicate or reset"
    );
    let texts: Vec<String> = shown
        .iter()
        .filter(|item| item["notice"] != true)
        .map(|item| {
            item["text"]
                .as_str()
                .unwrap()
                .trim_start_matches("bot")
                .to_owned()
        })
        .collect();
    let expected: Vec<String> = (1..=30).map(|n| format!("m{n}")).collect();
    assert_eq!(texts, expected, "every message exactly once, in order");
    // The page was cut 4 times; the browser reconnected by itself each time,
    // carrying the last id it had seen.
    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests[0], None, "the first connection has no id");
    let resumed: Vec<&String> = requests[1..].iter().flatten().collect();
    assert!(
        requests.len() >= 5 && resumed.len() == requests.len() - 1,
        "Last-Event-ID of each request: {requests:?}"
    );
}

#[tokio::test]
async fn one_event_source_for_three_rooms_resumes_every_room_exactly_in_chromium() {
    if !browser_available() {
        return;
    }
    let chat =
        chat::ChatController::new(["general", "random", "dev"]).with_admin_token(ADMIN_TOKEN);
    let (app, requests) = recording_stream_requests(chat.app());
    let server = TestServer::start(app).await;
    let result = drive("chat-many-rooms", &server.url(""), None).await;
    let seen: Vec<&str> = result["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let rooms = ["general", "random", "dev"];
    let expected: Vec<String> = (1..=60).map(|n| format!("{}:m{n}", rooms[n % 3])).collect();
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    let mut expected_sorted: Vec<&str> = expected.iter().map(String::as_str).collect();
    expected_sorted.sort_unstable();
    assert_eq!(
        sorted, expected_sorted,
        "every message of every room exactly once, no reset"
    );
    for room in rooms {
        let mine: Vec<&str> = seen
            .iter()
            .copied()
            .filter(|s| s.starts_with(room))
            .collect();
        let in_order: Vec<&str> = expected
            .iter()
            .map(String::as_str)
            .filter(|s| s.starts_with(room))
            .collect();
        assert_eq!(mine, in_order, "{room} in order");
    }
    // Cut 5 times (the last after the last message): the browser reconnected
    // by itself each time with the one combined Last-Event-ID.
    let requests = requests.lock().unwrap().clone();
    assert!(result["opens"].as_u64().unwrap() >= 5, "{result}");
    assert_eq!(requests[0], None, "the first connection has no id");
    assert!(
        requests.len() >= 5 && requests[1..].iter().all(Option::is_some),
        "Last-Event-ID of each request: {requests:?}"
    );
}

#[tokio::test]
async fn a_204_stops_chromium_from_reconnecting() {
    if !browser_available() {
        return;
    }
    let (app, requests) = recording_stream_requests(chat::ChatController::new(["general"]).app());
    let server = TestServer::start(app).await;
    let seen = drive("stop-on-204", &server.url(""), None).await;
    assert_eq!(seen["readyState"], 2, "EventSource.CLOSED");
    assert_eq!(
        requests.lock().unwrap().len(),
        1,
        "no reconnection after 204"
    );
}

type Recorded = Arc<Mutex<Vec<Option<String>>>>;

/// `app`, recording the `Last-Event-ID` of every request for a room's events.
fn recording_stream_requests(app: axum::Router) -> (axum::Router, Recorded) {
    let recorded = Recorded::default();
    let log = recorded.clone();
    let app = app.layer(middleware::from_fn(move |request: Request, next: Next| {
        let log = log.clone();
        async move {
            if request.uri().path().ends_with("/events") {
                let id = request
                    .headers()
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                log.lock().unwrap().push(id);
            }
            next.run(request).await
        }
    }));
    (app, recorded)
}

#[tokio::test]
async fn chromium_reads_direct_messages_with_the_token_in_a_header_until_its_session_ends() {
    if !browser_available() {
        return;
    }
    let chat = chat::ChatController::new(["general"]).with_admin_token(ADMIN_TOKEN);
    // Every request for the private stream: its URL, whether it carried a
    // token in a header, its `Last-Event-ID`, and the status it got.
    type Logged = (String, bool, Option<String>, u16);
    let requests: Arc<Mutex<Vec<Logged>>> = Arc::default();
    let log = requests.clone();
    let app = chat
        .app()
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let log = log.clone();
            async move {
                let uri = request.uri().to_string();
                let headers = request.headers();
                let bearer = headers
                    .get("authorization")
                    .is_some_and(|value| value.as_bytes().starts_with(b"Bearer "));
                let last_event_id = headers
                    .get("last-event-id")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let response = next.run(request).await;
                if uri.starts_with("/me/events") {
                    let status = response.status().as_u16();
                    log.lock()
                        .unwrap()
                        .push((uri, bearer, last_event_id, status));
                }
                response
            }
        }));
    let server = TestServer::start(app).await;
    let seen = drive("chat-direct", &server.url(""), None).await;
    assert_eq!(seen["sent"], 202, "{seen}");
    assert_eq!(seen["expired"], 204, "{seen}");
    // `bo` wrote to `ana` twice, once while her tab was hidden; `ana`
    // answered from the page: each shown once.
    assert_eq!(
        seen["dms"],
        serde_json::json!(["bopsst", "bowhile hidden", "to bohi bo"]),
        "{seen}"
    );
    assert_eq!(seen["status"], "session expired: log in again", "{seen}");
    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.first().map(|r| r.3), Some(200), "{requests:?}");
    assert_eq!(requests.last().map(|r| r.3), Some(401), "{requests:?}");
    // Hidden, the stream was closed; shown, it resumed from the id it had.
    assert!(
        requests
            .iter()
            .any(|(_, _, last_event_id, status)| last_event_id.is_some() && *status == 200),
        "{requests:?}"
    );
    for (uri, bearer, _, _) in &requests {
        assert_eq!(uri, "/me/events", "the token never goes in the URL");
        assert!(bearer, "every request carries the token in a header");
    }
}

#[tokio::test]
async fn chromium_reads_typed_tokens_of_a_post_over_the_fetch_transport_and_cancel_stops_the_server()
 {
    if !browser_available() {
        return;
    }
    let completions = llm::Completions::new(Duration::from_millis(40));
    let server = TestServer::start(completions.clone().router()).await;
    let seen = drive("llm-cancel", &server.url(""), None).await;
    let reply = seen["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("Server-sent events are"),
        "the page showed {reply:?}"
    );
    // The page aborted its fetch: the server's stream was dropped, and with
    // it the generation, far before the prompt's 17 words.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while completions.running() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still generating");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let generated = completions.generated();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        completions.generated(),
        generated,
        "nothing generated after the cancel"
    );
    assert!(generated < 17, "{generated} tokens generated");
}

/// A page that opens ten `EventSource`s to its own origin, and the ten
/// streams, compressed.
fn ten_sources_app() -> axum::Router {
    use futures_util::StreamExt;
    const PAGE: &str = "<!doctype html><script>\
        window.__received = new Set();\
        for (let n = 0; n < 10; n++) {\
          new EventSource(`/tick/${n}`).onmessage = () => window.__received.add(n);\
        }</script>";
    axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { axum::response::Html(PAGE) }),
        )
        .route(
            "/tick/{n}",
            // Compressed as the browser accepts: the same over HTTP/2.
            axum::routing::get(|accept: sse_runtime::AcceptEncoding| async move {
                let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
                    Duration::from_millis(200),
                ))
                .map(|_| sse_runtime::MessageEvent::new("tick"));
                sse_runtime::Sse::new(ticks).compress(accept)
            }),
        )
}

#[tokio::test]
async fn ten_event_sources_of_one_origin_all_open_over_http2_but_six_over_http1() {
    if !browser_available() {
        return;
    }
    // HTTP/1.1: the browser's six connections per origin.
    let plain = TestServer::start(ten_sources_app()).await;
    let seen = drive("ten-sources", &plain.url(""), None).await;
    assert_eq!(seen["protocol"], "http/1.1");
    assert_eq!(seen["received"], 6, "HTTP/1.1: {seen}");

    // HTTP/2 over TLS: every stream over one connection.
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("a self-signed certificate");
    let tls = sse_runtime::TlsConfig::from_pem(
        certified.cert.pem().as_bytes(),
        certified.key_pair.serialize_pem().as_bytes(),
    )
    .expect("the certificate loads");
    let secure = TestServer::start_with(ten_sources_app(), |serve| serve.tls(tls)).await;
    let base = format!("https://{}", secure.addr);
    let seen = drive("ten-sources", &base, None).await;
    assert_eq!(seen["protocol"], "h2");
    assert_eq!(seen["received"], 10, "HTTP/2: {seen}");
    let encodings = seen["encodings"].as_array().unwrap();
    assert!(
        !encodings.is_empty() && encodings.iter().all(|coding| coding == "zstd"),
        "HTTP/2 streams compressed: {seen}"
    );
}
