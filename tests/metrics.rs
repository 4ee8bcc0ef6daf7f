//! The runtime's metrics move as they should: the `basic` example with a
//! Prometheus recorder, driven over loopback and scraped at `GET /metrics`.
//! Its own test binary, because a recorder is installed once per process.

use std::time::Duration;

use sse_runtime::MessageEvent;
use sse_tests::{TestServer, events, next_event, open, within};

const ADMIN: &str = "metrics-test-admin";

/// The value of the metric line that starts with `series` (name and labels).
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{scrape}"))
        .trim()
        .parse()
        .unwrap()
}

async fn scrape(server: &TestServer) -> String {
    within(reqwest::get(server.url("/metrics")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn counters_and_gauges_follow_streams_events_replays_resets_and_broker_errors() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let controller = basic::EventsController::new()
        .with_admin_token(ADMIN)
        .with_metrics(handle);
    let users = controller.users().clone();
    let server = TestServer::start(controller.app()).await;
    let login: serde_json::Value = within(
        reqwest::Client::new()
            .post(server.url("/login/alice"))
            .send(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let url = server.url(&format!(
        "/events/user/alice?token={}",
        login["token"].as_str().unwrap()
    ));
    const ROUTE: &str = "route=\"/events/user/{userId}\"";

    let mut first = events(open(&url).await);
    let mut second = events(open(&url).await);
    for n in 0..3 {
        users
            .send(&"alice".to_owned(), MessageEvent::new(n.to_string()))
            .await
            .unwrap();
    }
    let mut last_id = String::new();
    for _ in 0..3 {
        last_id = next_event(&mut first).await.id;
        next_event(&mut second).await;
    }
    let metrics = scrape(&server).await;
    assert_eq!(
        value(&metrics, &format!("sse_streams_open{{{ROUTE}}}")),
        2.0
    );
    assert_eq!(
        value(&metrics, &format!("sse_streams_opened_total{{{ROUTE}}}")),
        2.0
    );
    // Three events each; the resume points (an id alone, which no client
    // dispatches) are not events.
    let written = value(&metrics, &format!("sse_events_written_total{{{ROUTE}}}"));
    assert_eq!(written, 6.0);
    assert!(value(&metrics, &format!("sse_bytes_written_total{{{ROUTE}}}")) > 0.0);

    // A resume replays; a garbage id gets a reset.
    drop(second);
    users
        .send(&"alice".to_owned(), MessageEvent::new("missed"))
        .await
        .unwrap();
    let resumed = within(
        reqwest::Client::new()
            .get(&url)
            .header("last-event-id", &last_id)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(next_event(&mut events(resumed)).await.data, "missed");
    let garbage = within(
        reqwest::Client::new()
            .get(&url)
            .header("last-event-id", "garbage")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(next_event(&mut events(garbage)).await.event, "reset");
    let metrics = scrape(&server).await;
    assert_eq!(value(&metrics, "sse_replayed_events_total"), 1.0);
    assert_eq!(
        value(&metrics, "sse_resets_total{reason=\"invalid_id\"}"),
        1.0
    );

    // Streams that close leave the gauge.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let open_now = value(
            &scrape(&server).await,
            &format!("sse_streams_open{{{ROUTE}}}"),
        );
        if open_now == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open_now} still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A send the broker refuses is counted by kind.
    users.shutdown();
    assert!(
        users
            .send(&"alice".to_owned(), MessageEvent::new("late"))
            .await
            .is_err()
    );
    let metrics = scrape(&server).await;
    assert_eq!(
        value(&metrics, "sse_broker_errors_total{kind=\"shut_down\"}"),
        1.0
    );
}
