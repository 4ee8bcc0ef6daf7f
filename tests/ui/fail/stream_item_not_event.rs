use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("/numbers")]
    fn numbers() -> impl Stream<Item = u64> {
        stream::iter([1, 2, 3])
    }
}

fn main() {}
