use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("/stream", compress = "yes")]
    fn stream() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }
}

fn main() {}
