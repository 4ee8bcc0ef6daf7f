use sse_runtime::SseEvent;

#[derive(SseEvent)]
#[sse_event(rename_all = "Snake_Case")]
enum Notice {
    #[sse_event(rename_all = "snake_case")]
    Posted(String),
    #[sse_event(colour = "blue")]
    Deleted(String),
    #[sse_event(decode)]
    Restored(String),
}

#[derive(SseEvent, serde::Serialize)]
#[sse_event(rename_all = "snake_case")]
struct Tick {
    n: u64,
}

fn main() {}
