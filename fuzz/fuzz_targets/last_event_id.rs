//! Any `Last-Event-ID` a client sends: resuming never panics, and it either
//! replays (our own ids) or starts with the reset signal, never anything else.
#![no_main]

use futures_util::{FutureExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use sse_runtime::{MessageEvent, Registry};

fuzz_target!(|last_event_id: &str| {
    let registry: Registry<u8> = Registry::new();
    // A key with some history to resume into.
    for n in 0..3 {
        registry.send(&1, MessageEvent::new(n.to_string())).now_or_never().unwrap().unwrap();
    }
    let mut stream = registry.subscribe_from(&1, Some(last_event_id));
    if let Some(Some(first)) = stream.next().now_or_never() {
        let text = std::str::from_utf8(first.as_bytes()).unwrap();
        // Only a reset, or a replayed event of ours (an id of ours, then data).
        assert!(text.contains("event: reset\n") || (text.starts_with("id: ") && text.contains("data: ")), "{text:?}");
    }
});
