use futures_util::{Stream, stream};
use sse_runtime::__private::axum::extract::Path;
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("/user/:id")]
    fn read(Path(id): Path<String>) -> impl Stream<Item = MessageEvent> {
        stream::iter([MessageEvent::new(id)])
    }

    #[sse("/user/:name", method = "post")]
    fn write(Path(name): Path<String>) -> impl Stream<Item = MessageEvent> {
        stream::iter([MessageEvent::new(name)])
    }
}

fn main() {}
