//! The conformance table through non-Rust clients: Python's httpx-sse (the
//! versions pinned in `clients/requirements.txt`, which `.ci/run` installs),
//! and, in Node, the `FetchEventSource` of the generated TypeScript module;
//! and that transport's own rules, against a server answering from a script.

use std::time::Duration;

use sse_tests::TestServer;
use sse_tests::conformance;
use sse_tests::external::{require, run, runs, tests_dir};
use sse_tests::scripted::{Answer, Seen, scripted};

fn python_has_httpx_sse() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import httpx, httpx_sse"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_with_python_httpx_sse() {
    play_with_httpx_sse(None).await;
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_with_python_httpx_sse_over_gzip() {
    play_with_httpx_sse(Some("gzip")).await;
}

/// The table through httpx-sse, each stream compressed with `coding` if given.
async fn play_with_httpx_sse(coding: Option<&str>) {
    if require(&[("python3 with httpx and httpx-sse", python_has_httpx_sse())]).is_err() {
        return;
    }
    let (app, runs) = conformance::app_with_runs();
    let server = TestServer::start(app).await;
    let base = server.url("");
    let mut args = vec!["httpx_sse_client.py", &base];
    args.extend(coding);
    let output = run(
        "python3",
        &args,
        &[],
        &tests_dir().join("clients"),
        Duration::from_secs(60),
    )
    .await;
    let results: serde_json::Value = serde_json::from_str(&output).expect("the client prints JSON");
    conformance::assert_all_cases("httpx-sse", true, |case| {
        conformance::seen_from_json(&results[&case.name])
    });
    if let Some(coding) = coding {
        runs.assert_all_compressed_with(coding);
    }
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_with_the_fetch_transport_in_node() {
    if require(&[("node", runs("node"))]).is_err() {
        return;
    }
    let server = TestServer::start(conformance::app()).await;
    let results = node(&["node_fetch_client.mjs", &server.url("")]).await;
    // Events expose no retry field, as in the browser.
    conformance::assert_all_cases("FetchEventSource in Node", false, |case| {
        conformance::seen_from_json(&results[&case.name])
    });
}

/// Runs a script of `clients/` in Node; the JSON it prints.
async fn node(args: &[&str]) -> serde_json::Value {
    let output = run(
        "node",
        args,
        &[],
        &tests_dir().join("clients"),
        Duration::from_secs(60),
    )
    .await;
    serde_json::from_str(&output).expect("the client prints JSON")
}

/// Plays `scenario` of `node_fetch_behaviour.mjs` against a server answering
/// with `answers`: what the transport saw, and what the server was asked.
/// `None` when node is missing outside CI.
async fn fetch_transport_in_node(
    scenario: &str,
    answers: Vec<Answer>,
) -> Option<(serde_json::Value, Vec<Seen>)> {
    require(&[("node", runs("node"))]).ok()?;
    let (server, seen) = scripted(answers).await;
    let saw = node(&["node_fetch_behaviour.mjs", scenario, &server.url("/stream")]).await;
    let requests = seen.lock().unwrap().clone();
    Some((saw, requests))
}

fn data(saw: &serde_json::Value) -> Vec<&str> {
    saw["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["data"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_fetch_transport_keeps_method_headers_and_body_on_reconnect_and_sends_the_last_event_id()
 {
    let Some((saw, requests)) = fetch_transport_in_node(
        "reconnect",
        vec![
            Answer::Stream("retry: 20\nid: 1\ndata: a\n\nid: 2\ndata: b\n\n"),
            Answer::Cut("id: 3\ndata: c\n\nid: 4\ndata: cut off"),
            Answer::Stream("data: d\n\n"),
        ],
    )
    .await
    else {
        return;
    };
    assert_eq!(
        data(&saw),
        ["a", "b", "c", "d"],
        "the cut-off event is dropped: {saw}"
    );
    assert_eq!(
        saw["events"][3]["lastEventId"], "3",
        "the id persists: {saw}"
    );
    let last = saw["errors"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["status"], 204, "{saw}");
    assert_eq!(last["willRetry"], false, "{saw}");
    let resumed_from: Vec<Option<&str>> = requests
        .iter()
        .map(|request| request.last_event_id.as_deref())
        .collect();
    assert_eq!(resumed_from, [None, Some("2"), Some("3"), Some("3")]);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.authorization.as_deref(), Some("Bearer token"));
        assert_eq!(request.accept.as_deref(), Some("text/event-stream"));
        assert_eq!(&request.body[..], b"{\"prompt\":\"hi\"}");
    }
}

#[tokio::test]
async fn the_fetch_transport_retries_server_errors_and_stops_on_a_refusal_with_its_status() {
    let Some((saw, requests)) = fetch_transport_in_node(
        "refusal",
        vec![
            Answer::Status(axum::http::StatusCode::SERVICE_UNAVAILABLE),
            Answer::Status(axum::http::StatusCode::TOO_MANY_REQUESTS),
            Answer::Stream("id: 7\ndata: a\n\n"),
            // The token expired while the client was away.
            Answer::Status(axum::http::StatusCode::UNAUTHORIZED),
            Answer::Stream("data: never read\n\n"),
        ],
    )
    .await
    else {
        return;
    };
    assert_eq!(data(&saw), ["a"], "{saw}");
    let errors: Vec<(serde_json::Value, bool)> = saw["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| {
            (
                error["status"].clone(),
                error["willRetry"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (503.into(), true),
            (429.into(), true),
            (serde_json::Value::Null, true),
            (401.into(), false)
        ],
        "{saw}"
    );
    assert_eq!(saw["readyState"], 2);
    assert_eq!(requests.len(), 4, "nothing after the 401");
}

#[tokio::test]
async fn the_fetch_transport_stops_on_a_response_that_is_not_an_event_stream() {
    let Some((saw, requests)) =
        fetch_transport_in_node("not-event-stream", vec![Answer::Plain]).await
    else {
        return;
    };
    let errors = saw["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{saw}");
    assert_eq!(errors[0]["willRetry"], false);
    assert!(
        errors[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("not an event stream"),
        "{saw}"
    );
    assert_eq!(requests.len(), 1);
}

#[tokio::test]
async fn aborting_its_signal_closes_the_fetch_transport_for_good() {
    let Some((saw, requests)) =
        fetch_transport_in_node("abort", vec![Answer::Silent("data: a\n\n")]).await
    else {
        return;
    };
    assert_eq!(data(&saw), ["a"], "{saw}");
    assert_eq!(saw["readyState"], 2, "closed: {saw}");
    assert_eq!(
        saw["errors"],
        serde_json::json!([]),
        "no error, no retry: {saw}"
    );
    assert_eq!(requests.len(), 1);
}
