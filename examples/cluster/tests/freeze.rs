//! An instance frozen (SIGSTOP, as a VM pause or a stalled host does) while
//! another instance publishes: the `cluster` binary, one instance per
//! process, over the test's own `redis-server`. Its open stream must carry on
//! without ending: with everything, when the history still holds what it
//! missed; with the reset signal, never a silent gap, when it does not.
#![cfg(unix)]

use std::process::Stdio;
use std::time::Duration;

use sse_runtime::{MessageEvent, RegistryConfig};
use sse_tests::{events, next_event, open, redis_server};

/// Stops or continues `pid` (`-STOP`, `-CONT`).
fn signal(pid: u32, which: &str) {
    let status = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {which} {pid}");
}

#[tokio::test]
async fn a_frozen_instance_resumes_its_open_streams_within_and_beyond_the_history() {
    let Some(redis) = redis_server::start(false).await else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut frozen = tokio::process::Command::new(env!("CARGO_BIN_EXE_cluster"))
        .env("PORT", port.to_string())
        .env("INSTANCES", "1")
        .env("REDIS_URL", redis.url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the cluster binary");
    let pid = frozen.id().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instance did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other instance, in this process.
    let other = redis.registry(RegistryConfig::default()).await;
    let room = "general".to_owned();
    let mut stream = events(open(&format!("{base}/rooms/general/events")).await);
    // Once the frozen instance follows the room, a probe comes through.
    let mut probe = 0;
    loop {
        other
            .send(&room, MessageEvent::new(format!("probe {probe}")))
            .await
            .unwrap();
        let got = tokio::time::timeout(
            Duration::from_millis(500),
            futures_util::StreamExt::next(&mut stream),
        )
        .await;
        if matches!(got, Ok(Some(ref event)) if event.data.starts_with("probe")) {
            break;
        }
        probe += 1;
        assert!(probe < 20, "the instance never followed the room");
    }
    while let Ok(Some(_)) = tokio::time::timeout(
        Duration::from_millis(300),
        futures_util::StreamExt::next(&mut stream),
    )
    .await
    {}

    // Within the history: frozen 1.5 s while 200 events are published (a
    // burst under the subscriber's buffer of 256; past it, the lag policy
    // ends the stream and the client resumes from the history).
    signal(pid, "-STOP");
    for n in 0..200 {
        other
            .send(&room, MessageEvent::new(format!("w{n}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(pid, "-CONT");
    for n in 0..200 {
        let event = next_event(&mut stream).await;
        assert_eq!(
            event.data,
            format!("w{n}"),
            "every event once, in order, and the stream stayed open"
        );
    }

    // Beyond the history (1,000 by default): frozen while 3,000 are.
    signal(pid, "-STOP");
    for n in 0..3000 {
        other
            .send(&room, MessageEvent::new(format!("x{n}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(pid, "-CONT");
    let first = next_event(&mut stream).await;
    assert_eq!(
        (first.event.as_str(), first.data.as_str()),
        ("reset", "{\"reason\":\"history_expired\"}"),
        "the reset signal on the open stream, before anything else"
    );
    other.send(&room, MessageEvent::new("after")).await.unwrap();
    let next = next_event(&mut stream).await;
    assert_eq!(next.data, "after", "then live, on the same stream");
    let _ = frozen.kill().await;
}
