//! History is bounded in bytes: a burst of large events cannot grow a
//! registry past its bounds, eviction is oldest first, and a resume that
//! needed an evicted event gets the reset signal. Its own test binary, because
//! it counts every allocation.

use std::alloc::System;

use sse_runtime::testing::{fields, next_event};
use sse_runtime::{MessageEvent, Registry, RegistryConfig};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The allocation counter is process-wide: the tests here take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The encoder may reserve a quarter more than it writes, and that spare
/// capacity stays with a retained event (see `RegistryConfig`).
const SPARE_CAPACITY: f64 = 1.25;

/// Bytes allocated and not freed since `region` began. (stats_alloc already
/// counts a reallocation's growth in `bytes_allocated` and its shrinking in
/// `bytes_deallocated`.)
fn net_bytes(region: &Region<'_, System>) -> i64 {
    let change = region.change();
    change.bytes_allocated as i64 - change.bytes_deallocated as i64
}

/// `len` bytes of text that starts with `label`.
fn payload(label: &str, len: usize) -> String {
    let mut text = String::with_capacity(len);
    text.push_str(label);
    text.push(' ');
    while text.len() < len {
        text.push('x');
    }
    text
}

#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_large_events_to_one_key_stays_within_its_byte_bound() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const BOUND: usize = 1 << 20;
    const EVENT: usize = 64 * 1024;
    let registry: Registry<String> = Registry::with_config(
        RegistryConfig::default()
            .history_len(100_000)
            .history_bytes_per_key(BOUND),
    );
    let key = "victim".to_owned();
    let mut watcher = registry.subscribe(&key);

    let region = Region::new(GLOBAL);
    let mut ids = Vec::new();
    // 12.5 MiB sent: with the count bound alone, all of it would be kept.
    for n in 0..200 {
        registry
            .send(&key, MessageEvent::new(payload(&n.to_string(), EVENT)))
            .await
            .unwrap();
        ids.push(fields(&next_event(&mut watcher).await.unwrap()).0);
    }
    let net = net_bytes(&region);
    let ceiling = (BOUND as f64 * SPARE_CAPACITY) as i64 + 64 * 1024;
    eprintln!("retained after 200 events of 64 KiB: {net} bytes (ceiling {ceiling})");
    assert!(
        net <= ceiling,
        "history grew to {net} bytes, over {ceiling}"
    );
    assert!(
        net >= (BOUND / 2) as i64,
        "history kept only {net} bytes: the bound evicts too eagerly"
    );

    // A resume from an evicted id is told so; one from a retained id
    // replays exactly what followed it.
    let mut from_first = registry.subscribe_from(&key, Some(&ids[0]));
    let (_, event_type, data) = fields(&next_event(&mut from_first).await.unwrap());
    assert_eq!(
        (event_type.as_str(), data.as_str()),
        ("reset", "{\"reason\":\"history_expired\"}")
    );
    let mut from_recent = registry.subscribe_from(&key, Some(&ids[195]));
    for (n, expected_id) in ids.iter().enumerate().skip(196) {
        let (id, _, data) = fields(&next_event(&mut from_recent).await.unwrap());
        assert_eq!(&id, expected_id);
        assert!(
            data.starts_with(&format!("{n} ")),
            "event {n}: {}",
            &data[..8]
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn history_across_keys_stays_within_the_total_and_the_oldest_goes_first() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const TOTAL: usize = 2 << 20;
    const EVENT: usize = 16 * 1024;
    const KEYS: usize = 1_000;
    let registry: Registry<String> =
        Registry::with_config(RegistryConfig::default().history_bytes_total(TOTAL));

    let region = Region::new(GLOBAL);
    // Per key: a first event the client saw, then one it missed.
    let mut seen = Vec::new();
    for n in 0..KEYS {
        let key = format!("user-{n}");
        let mut client = registry.subscribe(&key);
        registry
            .send(&key, MessageEvent::new(payload("seen", EVENT)))
            .await
            .unwrap();
        seen.push(fields(&next_event(&mut client).await.unwrap()).0);
        drop(client);
        registry
            .send(
                &key,
                MessageEvent::new(payload(&format!("missed {n}"), EVENT)),
            )
            .await
            .unwrap();
    }
    let net = net_bytes(&region);
    // 32 MiB was sent. What stays: the bound, with spare capacity, plus the
    // bookkeeping of the keys that still have history.
    let ceiling = (TOTAL as f64 * SPARE_CAPACITY) as i64 + 256 * 1024;
    eprintln!("retained after {KEYS} keys × 2 events of 16 KiB: {net} bytes (ceiling {ceiling})");
    assert!(
        net <= ceiling,
        "history grew to {net} bytes, over {ceiling}"
    );
    let kept = registry.key_count();
    assert!(
        (50..KEYS / 4).contains(&kept),
        "{kept} keys kept: idle keys whose history went must be removed"
    );

    // The newest keys kept what their clients missed; the oldest lost it, and
    // their clients are told so rather than resumed silently.
    for (n, last_seen) in seen.iter().enumerate().skip(KEYS - 10) {
        let mut resumed = registry.subscribe_from(&format!("user-{n}"), Some(last_seen));
        let (_, event_type, data) = fields(&next_event(&mut resumed).await.unwrap());
        assert_eq!(event_type, "", "user-{n}");
        assert!(data.starts_with(&format!("missed {n} ")), "user-{n}");
    }
    for (n, last_seen) in seen.iter().enumerate().take(10) {
        let mut resumed = registry.subscribe_from(&format!("user-{n}"), Some(last_seen));
        let (_, event_type, data) = fields(&next_event(&mut resumed).await.unwrap());
        assert_eq!(
            (event_type.as_str(), data.as_str()),
            ("reset", "{\"reason\":\"history_expired\"}"),
            "user-{n}"
        );
    }
}

/// A stream that replayed a long history and went idle keeps nothing of
/// that batch: not the write buffer it grew, not the queue it copied the
/// replay into (a security review measured 102 KiB per idle stream after
/// one replay, against 1.5 KiB).
#[tokio::test(flavor = "current_thread")]
async fn an_idle_stream_keeps_no_buffer_from_the_replay_it_wrote() {
    use axum::response::IntoResponse;
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    use sse_runtime::{KeepAlive, Sse};

    let _turn = ONE_AT_A_TIME.lock().await;
    let registry: Registry<String> = Registry::new();
    let key = "room".to_owned();
    let mut first = registry.subscribe(&key);
    let start = fields(&first.next().await.expect("a resume point")).0;
    drop(first);
    const EVENTS: usize = 1000;
    for n in 0..EVENTS {
        let event = MessageEvent::new(payload(&n.to_string(), 100));
        registry.send(&key, event).await.unwrap();
    }
    // What an idle stream that replayed nothing holds, for comparison.
    let region = Region::new(GLOBAL);
    // No batch window: a held batch parks in the process-wide batch clock,
    // whose allocations are no stream's.
    let mut fresh = Sse::new(registry.subscribe(&key))
        .keep_alive(KeepAlive::disabled())
        .batch_window(std::time::Duration::ZERO)
        .into_response()
        .into_body();
    let resume_point = fresh.frame().await.expect("a frame").expect("no error");
    drop(resume_point);
    assert!(
        futures_util::FutureExt::now_or_never(fresh.frame()).is_none(),
        "idle"
    );
    let fresh_cost = net_bytes(&region);

    let region = Region::new(GLOBAL);
    let replay = registry.subscribe_from(&key, Some(&start));
    let mut body = Sse::new(replay)
        .keep_alive(KeepAlive::disabled())
        .batch_window(std::time::Duration::ZERO)
        .into_response()
        .into_body();
    let mut seen = 0;
    while seen < EVENTS {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("the replay within 10 s")
            .expect("a frame")
            .expect("no error");
        let data = frame.into_data().expect("data");
        seen += data.windows(2).filter(|pair| pair == b"\n\n").count();
    }
    // Replayed in full (over 100 KB on the wire); now idle, waiting.
    assert!(
        futures_util::FutureExt::now_or_never(body.frame()).is_none(),
        "idle"
    );
    let idle = net_bytes(&region);
    eprintln!(
        "an idle stream after a {EVENTS}-event replay holds {idle} bytes; one that replayed \
         nothing, {fresh_cost}"
    );
    // At most a small batch's buffer, beside what any stream holds: a frame
    // of up to 8 KiB leaves its allocation, which may have grown to twice
    // that. (Not measured against `fresh_cost`: the counter is process-wide,
    // and another test's teardown can free memory meanwhile.)
    assert!(
        idle < 24 * 1024,
        "{idle} bytes kept after the replay, {fresh_cost} by a fresh stream"
    );
    drop((body, fresh));
}

/// Keys minted by the hundred thousand, one small event each (what an open
/// login or a `?rooms=` parameter lets a client do): what each key costs
/// beyond its event counts against the total, so real memory stays within
/// the bound. A security review measured about 650 bytes per such key, of
/// which about 94 were counted.
#[tokio::test(flavor = "current_thread")]
async fn many_one_event_keys_stay_within_the_total_bound() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const TOTAL: usize = 4 << 20;
    const KEYS: usize = 100_000;
    let registry: Registry<String> =
        Registry::with_config(RegistryConfig::default().history_bytes_total(TOTAL));
    let region = Region::new(GLOBAL);
    for n in 0..KEYS {
        let key = format!("key-{n}");
        registry
            .send(&key, MessageEvent::new(payload("x", 64)))
            .await
            .unwrap();
    }
    let net = net_bytes(&region);
    let kept = registry.key_count();
    eprintln!(
        "{KEYS} one-event keys: {net} bytes retained, {kept} keys kept ({} bytes each), bound {TOTAL}",
        net / kept.max(1) as i64
    );
    // The bound, with the encoder's spare capacity and the shards' tables
    // (which keep the room they grew to).
    let ceiling = (TOTAL as f64 * SPARE_CAPACITY) as i64 + 1024 * 1024;
    assert!(net <= ceiling, "{net} bytes retained, over {ceiling}");
    assert!(kept < KEYS, "the oldest keys went");
}
