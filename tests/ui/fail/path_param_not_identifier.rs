use futures_util::{Stream, stream};
use sse_runtime::__private::axum::extract::Path;
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("/user/:user-id")]
    fn user(Path(id): Path<String>) -> impl Stream<Item = MessageEvent> {
        stream::iter([MessageEvent::new(id)])
    }
}

fn main() {}
