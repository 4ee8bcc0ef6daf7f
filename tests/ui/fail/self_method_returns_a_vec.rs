use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("/stream")]
    fn stream(&self) -> Vec<MessageEvent> {
        vec![]
    }
}

fn main() {}
