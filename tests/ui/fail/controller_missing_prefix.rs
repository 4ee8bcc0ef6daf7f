use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller]
impl C {
    #[sse("/stream")]
    fn stream() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }
}

fn main() {}
