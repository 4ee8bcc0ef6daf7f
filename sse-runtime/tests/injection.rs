//! Property tests: whatever string an application passes in, the encoder never
//! lets it become an extra field or event. Checked with eventsource-stream, a
//! parser we did not write.

use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures_util::{StreamExt, stream};
use proptest::prelude::*;
use sse_runtime::{EventError, MessageEvent};

/// Parses `wire` with eventsource-stream, delivering it in chunks of `chunk` bytes
/// so events split over many reads are covered too.
fn parse(wire: &[u8], chunk: usize) -> Vec<Event> {
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = wire
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_executor(
        stream::iter(chunks)
            .eventsource()
            .map(|e| e.expect("parses"))
            .collect::<Vec<_>>(),
    )
}

fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

/// What a spec-compliant client sees for data: every line break becomes `\n`.
fn normalised(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Strings rich in the characters that matter here.
fn nasty_string() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("\n".to_owned()),
        Just("\r".to_owned()),
        Just("\r\n".to_owned()),
        Just("\n\n".to_owned()),
        Just(" ".to_owned()),
        Just(":".to_owned()),
        Just("\0".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("data: injected".to_owned()),
        Just("event: admin".to_owned()),
        Just("id: 666".to_owned()),
        Just("retry: 1".to_owned()),
        Just("😀é".to_owned()),
        any::<String>(),
        "[a-z ]{0,8}",
    ];
    proptest::collection::vec(pieces, 0..8).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_data_round_trips_as_exactly_one_event(data in nasty_string(), chunk in 1usize..64) {
        let wire = MessageEvent::new(data.clone()).to_bytes();
        let events = parse(&wire, chunk);
        prop_assert_eq!(events.len(), 1, "wire: {:?}", wire);
        prop_assert_eq!(&events[0].data, &normalised(&data));
        prop_assert_eq!(events[0].event.as_str(), "message");
        prop_assert_eq!(events[0].id.as_str(), "");
        prop_assert_eq!(events[0].retry, None);
    }

    #[test]
    fn any_event_type_round_trips_or_is_refused(event_type in nasty_string(), data in nasty_string()) {
        match MessageEvent::new(data.clone()).with_event_type(event_type.clone()) {
            Ok(event) => {
                let events = parse(&event.to_bytes(), 7);
                prop_assert_eq!(events.len(), 1);
                let expected = if event_type.is_empty() { "message" } else { event_type.as_str() };
                prop_assert_eq!(events[0].event.as_str(), expected);
                prop_assert_eq!(&events[0].data, &normalised(&data));
                prop_assert_eq!(events[0].id.as_str(), "");
                prop_assert_eq!(events[0].retry, None);
            }
            Err(EventError::LineBreak { position, .. }) => {
                prop_assert!(matches!(event_type.as_bytes()[position], b'\r' | b'\n'));
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn any_id_round_trips_or_is_refused(id in nasty_string()) {
        match MessageEvent::new("x").with_id(id.clone()) {
            Ok(event) => {
                let events = parse(&event.to_bytes(), 5);
                prop_assert_eq!(events.len(), 1);
                prop_assert_eq!(&events[0].id, &id);
                prop_assert_eq!(events[0].event.as_str(), "message");
                prop_assert_eq!(events[0].data.as_str(), "x");
            }
            Err(EventError::LineBreak { position, .. }) => {
                prop_assert!(matches!(id.as_bytes()[position], b'\r' | b'\n'));
            }
            Err(EventError::NulInId { position }) => {
                prop_assert_eq!(id.as_bytes()[position], 0);
                prop_assert!(!id.contains(['\r', '\n']) || id.find('\0') < id.find(['\r', '\n']));
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn any_comment_stays_a_comment(comment in nasty_string()) {
        let event = MessageEvent::new("x").with_comment(comment);
        let events = parse(&event.to_bytes(), 3);
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(events[0].data.as_str(), "x");
        prop_assert_eq!(events[0].event.as_str(), "message");
        prop_assert_eq!(events[0].id.as_str(), "");
        prop_assert_eq!(events[0].retry, None);
    }

    #[test]
    fn a_sequence_of_events_parses_back_to_the_same_sequence(
        items in proptest::collection::vec((nasty_string(), "[a-zA-Z]{0,6}", "[0-9]{0,4}"), 1..10),
        chunk in 1usize..40,
    ) {
        let mut wire = bytes::BytesMut::new();
        for (data, event_type, id) in &items {
            MessageEvent::new(data.clone())
                .with_event_type(event_type.clone()).unwrap()
                .with_id(id.clone()).unwrap()
                .encode_into(&mut wire);
        }
        let events = parse(&wire, chunk);
        prop_assert_eq!(events.len(), items.len());
        for (event, (data, event_type, id)) in events.iter().zip(&items) {
            prop_assert_eq!(&event.data, &normalised(data));
            prop_assert_eq!(event.event.as_str(), if event_type.is_empty() { "message" } else { event_type.as_str() });
            prop_assert_eq!(&event.id, id);
        }
    }
}

#[test]
fn the_2026_injection_payloads_are_refused() {
    // The shapes reported against NestJS (CVE-2026-35515), Spring, h3, express-sse,
    // fastify-sse-v2 (a lone CR) and others.
    for payload in [
        "update\nevent: admin",
        "update\r\nid: 0",
        "update\rdata: forged",
        "x\n\ndata: second event",
    ] {
        assert!(
            MessageEvent::new("ok").with_event_type(payload).is_err(),
            "{payload:?}"
        );
        assert!(
            MessageEvent::new("ok").with_id(payload).is_err(),
            "{payload:?}"
        );
        // As data, the same text is only ever data of the one event.
        let events = parse(&MessageEvent::new(payload).to_bytes(), 4);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, normalised(payload));
        assert_eq!(events[0].event, "message");
    }
}

/// A combined resume id as a client might forge it: a real set fingerprint
/// (or not), then parts rich in escapes, separators and line breaks.
fn forged_combined_id(fingerprint: String) -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("%0A".to_owned()),
        Just("%0D".to_owned()),
        Just("%00".to_owned()),
        Just("%25".to_owned()),
        Just("%5F".to_owned()),
        Just("%3A".to_owned()),
        Just("%zz".to_owned()),
        Just("_".to_owned()),
        Just(":".to_owned()),
        nasty_string(),
        "[0-9a-f]{8}-[0-9]{1,3}",
    ];
    (
        prop_oneof![Just(fingerprint), "[0-9a-f]{8}"],
        proptest::collection::vec(part, 0..6),
    )
        .prop_map(|(set, parts)| format!("{set}:{}", parts.concat()))
}

/// The fingerprint of `keys` as the registry writes it.
fn fingerprint_of(keys: &[String]) -> String {
    let registry: sse_runtime::Registry<String> = sse_runtime::Registry::new();
    let mut stream = registry.subscribe_many(keys, None);
    let first = futures_executor(stream.next()).unwrap();
    let text = std::str::from_utf8(first.as_bytes()).unwrap().to_owned();
    let id = text.strip_prefix("id: ").unwrap();
    id.split_once(':').unwrap().0.to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_combined_resume_id_starts_one_clean_stream(id in forged_combined_id(fingerprint_of(&["a".to_owned(), "b".to_owned()]))) {
        let keys = ["a".to_owned(), "b".to_owned()];
        let registry: sse_runtime::Registry<String> = sse_runtime::Registry::new();
        futures_executor(async {
            registry.send(&keys[0], MessageEvent::new("one")).await.unwrap();
            registry.send(&keys[1], MessageEvent::new("two")).await.unwrap();
        });
        let mut stream = registry.subscribe_many(&keys, Some(&id));
        let first = futures_executor(stream.next()).unwrap();
        let wire = first.as_bytes();
        // Our own fields only, and only printable ASCII in the id.
        prop_assert!(wire.ends_with(b"\n\n") && !wire[..wire.len() - 2].windows(2).any(|w| w == b"\n\n"), "{:?}", first);
        prop_assert!(!wire.contains(&b'\r') && !wire.contains(&0), "{:?}", first);
        let text = std::str::from_utf8(wire).unwrap();
        for line in text.trim_end_matches('\n').split('\n') {
            prop_assert!(line.starts_with("id: ") || line == "event: reset" || line.starts_with("data: {\"reason\":") || line == "data: one" || line == "data: two", "{:?}", text);
        }
        let id_line = text.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
        prop_assert!(id_line.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{:?}", text);
        // At most one event dispatched: the reset, or nothing (a resume point
        // or a replayed event of ours).
        let events = parse(wire, 3);
        prop_assert!(events.len() <= 1);
    }
}
