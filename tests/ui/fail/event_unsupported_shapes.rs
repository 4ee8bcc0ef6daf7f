use sse_runtime::SseEvent;

#[derive(SseEvent)]
enum Nothing {}

#[derive(SseEvent)]
enum Generic<T> {
    Value(T),
}

#[derive(SseEvent)]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
