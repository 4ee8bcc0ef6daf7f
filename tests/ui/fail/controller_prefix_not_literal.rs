use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

const PREFIX: &str = "/events";

#[sse_controller(PREFIX)]
impl C {
    #[sse("/stream")]
    fn stream() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }
}

fn main() {}
