//! The conformance table through non-Rust clients: Python's httpx-sse (the
//! versions pinned in `clients/requirements.txt`, which `.ci/run` installs),
//! and, in Node, the `FetchEventSource` of the generated TypeScript module.

use std::time::Duration;

use sse_tests::TestServer;
use sse_tests::conformance;
use sse_tests::external::{require, run, runs, tests_dir};

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
    let base = server.url("");
    let output = run(
        "node",
        &["node_fetch_client.mjs", &base],
        &[],
        &tests_dir().join("clients"),
        Duration::from_secs(60),
    )
    .await;
    let results: serde_json::Value = serde_json::from_str(&output).expect("the client prints JSON");
    // Events expose no retry field, as in the browser.
    conformance::assert_all_cases("FetchEventSource in Node", false, |case| {
        conformance::seen_from_json(&results[&case.name])
    });
}
