use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("/stream", keepalive = "5s")]
    fn stream() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }
}

// The one mistake above is the only error: `router()` still exists.
fn main() {
    let _app: axum::Router = C.router();
}
