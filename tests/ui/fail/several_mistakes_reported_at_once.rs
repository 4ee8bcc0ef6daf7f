use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("no-slash")]
    fn first() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/second", retry = "soon")]
    fn second(&mut self) -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/third/:id")]
    fn third() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }
}

fn main() {}
