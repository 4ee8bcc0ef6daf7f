//! The conformance table through parsers we did not write: eventsource-stream
//! here, over a real loopback socket; the browser and httpx-sse in `browser.rs`
//! and `clients.rs`. And through the two we did, which must read every case
//! as the others do: `sse_runtime::testing`'s in-process client, and
//! `sse_runtime::client` over a socket, reconnecting by itself.

use futures_util::StreamExt;
use sse_tests::conformance::{self, Seen};
use sse_tests::{TestServer, within};

/// Plays one case the way `EventSource` would: read until the stream ends,
/// reconnect with the last id, stop at 204. Bounded to 5 connections.
async fn play(server: &TestServer, case: &str) -> Vec<Seen> {
    use eventsource_stream::Eventsource;
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    let mut last_event_id = String::new();
    for _ in 0..5 {
        let mut request =
            client.get(server.url(&format!("/conformance/{case}?run=eventsource-stream")));
        if !last_event_id.is_empty() {
            request = request.header("last-event-id", &last_event_id);
        }
        let response = within(request.send()).await.unwrap();
        if response.status() == 204 {
            return seen;
        }
        assert_eq!(response.status(), 200, "{case}");
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = within(events.next()).await {
            let event = event.unwrap_or_else(|e| panic!("{case}: parse error {e}"));
            last_event_id = event.id.clone();
            seen.push(Seen::from(event));
        }
    }
    panic!("{case}: the server never answered 204");
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_with_eventsource_stream() {
    let server = TestServer::start(conformance::app()).await;
    let mut seen = std::collections::HashMap::new();
    for case in conformance::cases() {
        seen.insert(case.name.clone(), play(&server, &case.name).await);
    }
    conformance::assert_all_cases("eventsource-stream", true, |case| {
        seen.remove(&case.name).unwrap_or_default()
    });
}

/// Plays one case through `sse_runtime::testing::TestClient`, in-process.
async fn play_in_process(client: &sse_runtime::testing::TestClient, case: &str) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut last_event_id = String::new();
    for _ in 0..5 {
        let mut request = client.get(&format!("/conformance/{case}?run=in-process"));
        if !last_event_id.is_empty() {
            request = request.last_event_id(&last_event_id);
        }
        let mut response = request.send().await;
        if response.status() == 204 {
            return seen;
        }
        assert_eq!(response.status(), 200, "{case}");
        while let Some(event) = response.next_event().await {
            seen.push(Seen::from(event));
        }
        last_event_id = response.last_event_id().to_owned();
    }
    panic!("{case}: the server never answered 204");
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_with_the_in_process_test_client() {
    let client = sse_runtime::testing::TestClient::new(conformance::app());
    let mut seen = std::collections::HashMap::new();
    for case in conformance::cases() {
        seen.insert(
            case.name.clone(),
            play_in_process(&client, &case.name).await,
        );
    }
    conformance::assert_all_cases("sse_runtime::testing", true, |case| {
        seen.remove(&case.name).unwrap_or_default()
    });
}

/// Plays one case through `sse_runtime::client`: it reconnects by itself
/// (after the case's `retry:`, or the 50 ms that `fast_retry` sends first)
/// and ends at the server's 204.
async fn play_with_rust_client(server: &TestServer, case: &str) -> Vec<Seen> {
    use sse_runtime::client::{Event, EventStream, Received};
    let request = reqwest::Client::new().get(server.url(&format!(
        "/conformance/{case}?run=sse_runtime::client&fast_retry=1"
    )));
    let items = within(EventStream::<Event>::new(request).collect::<Vec<_>>()).await;
    items
        .into_iter()
        .map(|item| match item {
            Ok(Received::Event(event)) => Seen::from(event),
            other => panic!("{case}: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_with_the_rust_client() {
    let server = TestServer::start(conformance::app()).await;
    let mut seen = std::collections::HashMap::new();
    for case in conformance::cases() {
        seen.insert(
            case.name.clone(),
            play_with_rust_client(&server, &case.name).await,
        );
    }
    conformance::assert_all_cases("sse_runtime::client", true, |case| {
        seen.remove(&case.name).unwrap_or_default()
    });
}
