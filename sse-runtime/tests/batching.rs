//! The batch window: what a response writes, frame by frame. Each test polls
//! the body on one thread, so whether a frame is ready at once is decided by
//! the rule, not by how busy the machine is.

use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use sse_runtime::{KeepAlive, MessageEvent, Sse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// A window no test step comes close to, so "within the window" holds even on
/// a loaded machine.
const WINDOW: Duration = Duration::from_millis(250);

fn response(window: Duration) -> (mpsc::UnboundedSender<MessageEvent>, Body) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let sse = Sse::new(UnboundedReceiverStream::new(receiver))
        .keep_alive(KeepAlive::disabled())
        .batch_window(window);
    (sender, sse.into_response().into_body())
}

/// The next frame's text if one is ready without waiting.
fn ready_frame(body: &mut Body) -> Option<String> {
    let frame = body.frame().now_or_never()?;
    let data = frame
        .expect("a frame")
        .expect("no error")
        .into_data()
        .expect("data");
    Some(String::from_utf8(data.to_vec()).unwrap())
}

async fn next_frame(body: &mut Body) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("a frame within 5 s")
        .expect("a frame")
        .expect("no error");
    String::from_utf8(frame.into_data().expect("data").to_vec()).unwrap()
}

fn data_lines(range: std::ops::Range<u32>) -> String {
    range.map(|n| format!("data: {n}\n\n")).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn events_within_the_window_go_out_together_when_it_ends() {
    let (sender, mut body) = response(WINDOW);
    sender.send(MessageEvent::new("0")).unwrap();
    assert_eq!(
        ready_frame(&mut body).as_deref(),
        Some("data: 0\n\n"),
        "the first event is not held"
    );

    for n in 1..51 {
        sender.send(MessageEvent::new(n.to_string())).unwrap();
    }
    assert_eq!(
        ready_frame(&mut body),
        None,
        "held: the last write was just now"
    );
    assert_eq!(
        next_frame(&mut body).await,
        data_lines(1..51),
        "all fifty in one frame"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_first_event_after_a_quiet_spell_goes_out_at_once() {
    let (sender, mut body) = response(Duration::from_millis(20));
    sender.send(MessageEvent::new("0")).unwrap();
    assert!(ready_frame(&mut body).is_some());
    tokio::time::sleep(Duration::from_millis(60)).await;
    sender.send(MessageEvent::new("1")).unwrap();
    assert_eq!(ready_frame(&mut body).as_deref(), Some("data: 1\n\n"));
}

#[tokio::test(flavor = "current_thread")]
async fn by_default_events_further_apart_than_half_the_window_are_never_held() {
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut body = Sse::new(UnboundedReceiverStream::new(receiver))
        .keep_alive(KeepAlive::disabled())
        .into_response()
        .into_body();
    // 6 ms apart (about 170 events/s): above half the default 10 ms window.
    for n in 0..5 {
        sender.send(MessageEvent::new(n.to_string())).unwrap();
        assert_eq!(
            ready_frame(&mut body),
            Some(data_lines(n..n + 1)),
            "event {n}"
        );
        tokio::time::sleep(Duration::from_millis(6)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_zero_window_writes_every_event_at_once() {
    let (sender, mut body) = response(Duration::ZERO);
    for n in 0..5 {
        sender.send(MessageEvent::new(n.to_string())).unwrap();
        assert_eq!(ready_frame(&mut body), Some(data_lines(n..n + 1)));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_held_batch_goes_out_early_at_64_kib() {
    let (sender, mut body) = response(WINDOW);
    sender.send(MessageEvent::new("first")).unwrap();
    assert!(ready_frame(&mut body).is_some());
    let big = "x".repeat(1024);
    for _ in 0..70 {
        sender.send(MessageEvent::new(big.as_str())).unwrap();
    }
    let frame = ready_frame(&mut body).expect("a full batch is not held");
    assert!(frame.len() >= 64 * 1024, "{} bytes", frame.len());
    // The rest is a small batch again, held for the window.
    assert_eq!(ready_frame(&mut body), None);
    let rest = next_frame(&mut body).await;
    assert_eq!(
        frame.len() + rest.len(),
        70 * (big.len() + "data: \n\n".len())
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_end_of_the_stream_is_not_held() {
    let (sender, mut body) = response(WINDOW);
    sender.send(MessageEvent::new("0")).unwrap();
    assert!(ready_frame(&mut body).is_some());
    sender.send(MessageEvent::new("1")).unwrap();
    sender.send(MessageEvent::new("2")).unwrap();
    drop(sender);
    assert_eq!(ready_frame(&mut body), Some(data_lines(1..3)));
    assert!(
        matches!(body.frame().now_or_never(), Some(None)),
        "then the body ends"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_response_dropped_while_held_leaves_nothing_behind() {
    let (sender, mut body) = response(WINDOW);
    sender.send(MessageEvent::new("0")).unwrap();
    assert!(ready_frame(&mut body).is_some());
    sender.send(MessageEvent::new("1")).unwrap();
    assert_eq!(ready_frame(&mut body), None);
    drop(body);
    // The stream went with the body: the channel is closed.
    assert!(sender.is_closed());
}
