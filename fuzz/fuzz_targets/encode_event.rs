//! Any strings offered as an event's fields: the builders never panic, and what
//! they accept encodes to exactly one event block whose lines are only the
//! fields we write, each value free of CR and of any other field.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sse_runtime::MessageEvent;

#[derive(Arbitrary, Debug)]
struct Input {
    data: Option<String>,
    event_type: Option<String>,
    id: Option<String>,
    comment: Option<String>,
    retry_ms: Option<u32>,
}

fuzz_target!(|input: Input| {
    let mut event = MessageEvent::default();
    if let Some(data) = &input.data {
        event = event.with_data(data.as_str());
    }
    if let Some(event_type) = &input.event_type {
        match event.clone().with_event_type(event_type.as_str()) {
            Ok(accepted) => event = accepted,
            Err(_) => assert!(event_type.contains(['\r', '\n'])),
        }
    }
    if let Some(id) = &input.id {
        match event.clone().with_id(id.as_str()) {
            Ok(accepted) => event = accepted,
            Err(_) => assert!(id.contains(['\r', '\n', '\0'])),
        }
    }
    if let Some(comment) = &input.comment {
        event = event.with_comment(comment.as_str());
    }
    if let Some(ms) = input.retry_ms {
        event = event.with_retry(std::time::Duration::from_millis(ms.into()));
    }

    let wire = event.to_bytes();
    if wire.is_empty() {
        return;
    }
    let text = std::str::from_utf8(&wire).expect("the encoder writes UTF-8");
    assert!(!text.contains('\r'), "a CR on the wire would split a line");
    let block = text.strip_suffix("\n\n").expect("one event ends with a blank line");
    assert!(!block.contains("\n\n"), "a blank line inside would dispatch a second event");
    let (mut events, mut ids, mut retries, mut data_lines) = (0, 0, 0, 0);
    for line in block.split('\n') {
        if line.starts_with(':') {
            continue;
        } else if line.starts_with("event: ") {
            events += 1;
        } else if line.starts_with("id: ") {
            ids += 1;
        } else if line.starts_with("retry: ") {
            retries += 1;
        } else if line.starts_with("data: ") {
            data_lines += 1;
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    assert_eq!(events, usize::from(event.event_type().is_some()));
    assert_eq!(ids, usize::from(event.id().is_some()));
    assert_eq!(retries, usize::from(event.retry().is_some()));
    if let Some(data) = event.data() {
        let breaks = data.replace("\r\n", "\n").matches(['\r', '\n']).count();
        assert_eq!(data_lines, breaks + 1);
    }
});
