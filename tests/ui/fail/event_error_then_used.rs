// A derive that fails reports its own error only: code that sends or streams
// the type still type-checks against the stub impls emitted beside it.
use futures_util::Stream;
use sse_runtime::{MessageEvent, Registry, SseEvent};

#[derive(SseEvent)]
enum Chat {
    #[sse_event(rename = "")]
    Said { text: String },
}

async fn send(registry: Registry<String>) {
    let _ = registry
        .send(&"room".to_owned(), Chat::Said { text: "hi".into() })
        .await;
    let _ = MessageEvent::new("x");
}

fn stream() -> impl Stream<Item = Chat> {
    futures_util::stream::iter([Chat::Said { text: "hi".into() }])
}

fn main() {
    let _ = send;
    let _ = stream;
}
