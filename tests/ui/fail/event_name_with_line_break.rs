use sse_runtime::SseEvent;

#[derive(SseEvent)]
enum Notice {
    Posted(String),
    #[sse_event(rename = "deleted\nid: 0")]
    Deleted(String),
}

fn main() {}
