// The tests enable sse-runtime's `typescript` feature, so this case checks
// that a payload without `TS` is reported on the payload's type instead.
use sse_runtime::SseEvent;

#[derive(serde::Serialize)]
struct Said {
    text: String,
}

#[derive(SseEvent)]
#[sse_event(typescript)]
enum Chat {
    Said(Said),
}

fn main() {}
