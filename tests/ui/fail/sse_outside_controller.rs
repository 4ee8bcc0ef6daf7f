use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, sse};

struct C;

impl C {
    #[sse("/stream")]
    fn stream() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }
}

fn main() {}
