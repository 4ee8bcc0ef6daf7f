//! The conformance table through a non-Rust client: Python's httpx-sse (the
//! versions pinned in `clients/requirements.txt`, which `.ci/run` installs).

use std::time::Duration;

use sse_tests::TestServer;
use sse_tests::conformance::{self, Seen};
use sse_tests::external::{require, run, tests_dir};

fn python_has_httpx_sse() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import httpx, httpx_sse"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn every_conformance_case_reads_back_exactly_with_python_httpx_sse() {
    if require(&[("python3 with httpx and httpx-sse", python_has_httpx_sse())]).is_err() {
        return;
    }
    let server = TestServer::start(conformance::app()).await;
    let base = server.url("");
    let output = run(
        "python3",
        &["httpx_sse_client.py", &base],
        &tests_dir().join("clients"),
        Duration::from_secs(60),
    )
    .await;
    let results: serde_json::Value = serde_json::from_str(&output).expect("the client prints JSON");
    let mut failures = Vec::new();
    let cases = conformance::cases();
    for case in &cases {
        let seen: Vec<Seen> = results[&case.name]
            .as_array()
            .unwrap_or_else(|| panic!("no result for {}", case.name))
            .iter()
            .map(|e| Seen {
                event_type: e["type"].as_str().unwrap().to_owned(),
                data: e["data"].as_str().unwrap().to_owned(),
                last_event_id: e["lastEventId"].as_str().unwrap().to_owned(),
                retry: e["retry"].as_u64(),
            })
            .collect();
        if let Err(failure) = conformance::check(case, &seen, true) {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed with httpx-sse:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
