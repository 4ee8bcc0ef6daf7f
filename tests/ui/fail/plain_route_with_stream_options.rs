use sse_runtime::{post, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[post("/messages", keep_alive = "5s")]
    fn post_message() -> &'static str {
        "sent"
    }
}

fn main() {}
