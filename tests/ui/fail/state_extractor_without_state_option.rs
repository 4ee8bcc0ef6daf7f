use futures_util::{Stream, stream};
use sse_runtime::__private::axum::extract::State;
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("/stream")]
    fn stream(State(n): State<u32>) -> impl Stream<Item = MessageEvent> {
        stream::iter([MessageEvent::new(n.to_string())])
    }
}

fn main() {}
