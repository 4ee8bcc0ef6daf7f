use sse_runtime::SseEvent;

struct Secret;

#[derive(SseEvent)]
enum Notice {
    Revealed(Secret),
}

fn main() {}
