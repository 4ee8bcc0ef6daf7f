use sse_runtime::SseEvent;

#[derive(SseEvent)]
#[sse_event(rename_all = "snake_case")]
enum Notice {
    UserJoined(String),
    #[sse_event(rename = "user_joined")]
    UserRejoined(String),
}

fn main() {}
