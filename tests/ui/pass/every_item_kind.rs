//! Every kind of item a stream may yield.

use futures_util::{Stream, stream};
use sse_runtime::{EncodedEvent, EventError, MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct Items;

#[sse_controller("/items")]
impl Items {
    #[sse("/strings")]
    fn strings() -> impl Stream<Item = String> {
        stream::iter(["a".to_owned()])
    }

    #[sse("/static-strs")]
    fn static_strs() -> impl Stream<Item = &'static str> {
        stream::iter(["a"])
    }

    #[sse("/json")]
    fn json() -> impl Stream<Item = axum::Json<Vec<u8>>> {
        stream::iter([axum::Json(vec![1, 2])])
    }

    #[sse("/values")]
    fn values() -> impl Stream<Item = serde_json::Value> {
        stream::iter([serde_json::json!({"a": 1})])
    }

    #[sse("/encoded")]
    fn encoded() -> impl Stream<Item = EncodedEvent> {
        stream::iter([MessageEvent::new("once").encode()])
    }

    #[sse("/fallible")]
    fn fallible() -> impl Stream<Item = Result<MessageEvent, EventError>> {
        stream::iter([MessageEvent::new("a").with_event_type("t")])
    }

    #[sse("/boxed")]
    fn boxed() -> std::pin::Pin<Box<dyn Stream<Item = MessageEvent> + Send>> {
        Box::pin(stream::empty())
    }
}

fn main() {
    let _app: axum::Router = Items.router();
}
