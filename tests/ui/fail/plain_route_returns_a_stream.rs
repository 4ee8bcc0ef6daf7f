use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, get, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[get("/ticks")]
    fn ticks() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }
}

fn main() {}
