use sse_runtime::SseEvent;

#[derive(SseEvent)]
enum Notice {
    #[sse_event(rename = "")]
    Silent,
}

fn main() {}
