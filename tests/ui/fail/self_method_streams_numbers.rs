use futures_util::{Stream, stream};
use sse_runtime::{sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("/stream")]
    fn stream(&self) -> impl Stream<Item = u32> {
        stream::iter([1, 2, 3])
    }
}

fn main() {}
