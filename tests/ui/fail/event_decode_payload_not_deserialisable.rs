use serde::Serialize;
use sse_runtime::SseEvent;

/// Written, but not readable back.
#[derive(Serialize)]
struct Said {
    text: String,
}

#[derive(SseEvent)]
#[sse_event(decode)]
enum Notice {
    Said(Said),
    Cleared,
}

fn main() {}
