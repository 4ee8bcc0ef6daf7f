use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, get, sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("/feed")]
    fn feed() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[get("/feed")]
    fn feed_page() -> &'static str {
        "<html></html>"
    }
}

fn main() {}
