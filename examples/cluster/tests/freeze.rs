//! An instance frozen (SIGSTOP, as a VM pause or a stalled host does) while
//! another instance publishes: the `cluster` binary, one instance per
//! process, over the test's own `redis-server`. Its open stream must carry on
//! with everything it missed, in order; past what a stream may fall behind
//! by at once, the lag policy ends it and its reconnection continues exactly
//! or resets: never a silent gap.
#![cfg(unix)]

use std::process::Stdio;
use std::time::Duration;

use sse_runtime::testing::{free_port, wait_for_port};
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
    let port = free_port();
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
    wait_for_port(port).await;
    // The other instance, in this process.
    let other = redis.registry(RegistryConfig::default()).await;
    let room = "general".to_owned();
    let mut stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = _> + Send>> =
        Box::pin(events(open(&format!("{base}/rooms/general/events")).await));
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
    let mut seen_id = String::new();
    for n in 0..200 {
        let event = next_event(&mut stream).await;
        seen_id.clone_from(&event.id);
        assert_eq!(
            event.data,
            format!("w{n}"),
            "every event once, in order, and the stream stayed open"
        );
    }

    // Beyond the history (1,000 by default): frozen while 3,000 are. Redis
    // keeps the PUB/SUB messages for the frozen instance (within its output
    // buffer limit; past it the connection is closed and the key catches up
    // from its stream or resets), which hands them on in order when it
    // wakes; more than the subscriber's buffer at once
    // ends the open stream (the lag policy). What the stream got must be a
    // contiguous run, and a reconnection with its last id must continue it
    // exactly or start with the reset signal: never a silent gap.
    signal(pid, "-STOP");
    for n in 0..3000 {
        other
            .send(&room, MessageEvent::new(format!("x{n}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(pid, "-CONT");
    let mut got = 0;
    let mut last_id = None;
    let mut reset = false;
    while let Ok(Some(event)) = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut stream),
    )
    .await
    {
        if event.event == "reset" {
            reset = true;
            break;
        }
        assert_eq!(event.data, format!("x{got}"), "a contiguous run, in order");
        got += 1;
        last_id = Some(event.id);
        if got == 3000 {
            break;
        }
    }
    // Reconnecting as a browser does (with the last id it saw, whenever the
    // stream ends), the client continues the run exactly or gets the reset
    // signal, then live events.
    // (A browser's lastEventId persists: with nothing new, it is the last w's.)
    let mut last_id = last_id.unwrap_or(seen_id);
    let mut after_sent = false;
    for _ in 0..5 {
        if !after_sent && (reset || got == 3000) {
            other.send(&room, MessageEvent::new("after")).await.unwrap();
            after_sent = true;
        }
        while let Ok(Some(event)) = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut stream),
        )
        .await
        {
            last_id = event.id.clone();
            if event.event == "reset" {
                reset = true;
            } else if event.data == "after" {
                assert!(reset || got == 3000, "after a reset or the whole run");
                let _ = frozen.kill().await;
                return;
            } else {
                assert!(!reset, "nothing old after the reset: {event:?}");
                assert_eq!(event.data, format!("x{got}"), "the run continues exactly");
                got += 1;
            }
            if !after_sent && (reset || got == 3000) {
                other.send(&room, MessageEvent::new("after")).await.unwrap();
                after_sent = true;
            }
        }
        let response = reqwest::Client::new()
            .get(format!("{base}/rooms/general/events"))
            .header("last-event-id", &last_id)
            .send()
            .await
            .unwrap();
        stream = Box::pin(events(response));
    }
    panic!("never saw the live event after {got} of the run (reset: {reset})");
}
