//! Any `Last-Event-ID` or `?lastEventId=` value a client sends to a
//! multi-key stream: extracting and resuming never panic, and the stream's
//! first event is ours alone: one block of our own fields (an id-only resume
//! point, a replayed event, or the reset signal), with no CR, no NUL and an
//! id of printable ASCII, so no client byte can start a field or an event.
#![no_main]

use axum::extract::FromRequestParts;
use futures_util::{FutureExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use sse_runtime::{LastEventId, MessageEvent, Registry};

fuzz_target!(|input: (&str, bool)| {
    let (raw, as_query) = input;
    let registry: Registry<String> = Registry::new();
    let keys = ["a".to_owned(), "b".to_owned()];
    for key in &keys {
        registry.send(key, MessageEvent::new("x")).now_or_never().unwrap().unwrap();
    }
    // A real fingerprint in front half of the time, so parts get parsed.
    let fingerprint = {
        let mut fresh = registry.subscribe_many(&keys, None);
        let first = fresh.next().now_or_never().unwrap().unwrap();
        let text = std::str::from_utf8(first.as_bytes()).unwrap().to_owned();
        text[4..].split_once(':').unwrap().0.to_owned()
    };
    let value = if raw.len() % 2 == 0 { format!("{fingerprint}:{raw}") } else { raw.to_owned() };
    // Through the extractor, as the query form (percent-decoded) or the header.
    let mut request = http::Request::builder();
    if as_query {
        let mut encoded = String::new();
        for byte in value.bytes() {
            encoded.push_str(&format!("%{byte:02X}"));
        }
        request = request.uri(format!("/?lastEventId={encoded}"));
    } else {
        let Ok(header) = http::HeaderValue::from_str(&value) else { return };
        request = request.uri("/").header("last-event-id", header);
    }
    let (mut parts, ()) = request.body(()).unwrap().into_parts();
    let last = LastEventId::from_request_parts(&mut parts, &()).now_or_never().unwrap().unwrap();
    let mut stream = registry.subscribe_many(&keys, last.as_deref());
    let Some(Some(first)) = stream.next().now_or_never() else { return };
    let wire = first.as_bytes();
    assert!(wire.ends_with(b"\n\n"), "{wire:?}");
    let body = &wire[..wire.len() - 2];
    assert!(!body.contains(&b'\r') && !body.contains(&0), "{wire:?}");
    let text = std::str::from_utf8(body).unwrap();
    for line in text.split('\n') {
        assert!(
            line.starts_with("id: ") || line == "event: reset" || line.starts_with("data: {\"reason\":") || line == "data: x",
            "{text:?}"
        );
    }
    let id = text.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
    assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{text:?}");
});
