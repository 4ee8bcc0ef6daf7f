use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct C;

struct NotAResponse;

#[sse_controller("/events")]
impl C {
    #[sse("/stream")]
    async fn stream(&self) -> Result<impl Stream<Item = MessageEvent>, NotAResponse> {
        Ok(stream::empty())
    }
}

fn main() {}
