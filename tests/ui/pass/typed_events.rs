use futures_util::{Stream, stream};
use serde::Serialize;
use sse_runtime::typescript::TS;
use sse_runtime::{MessageEvent, Registry, SseEvent, sse, sse_controller};

#[derive(Serialize, TS)]
#[ts(crate = "sse_runtime::typescript::ts_rs")]
struct Said {
    user: String,
    text: String,
}

/// Every shape of variant, with rename_all, a rename and serde field attributes.
#[derive(SseEvent)]
#[sse_event(rename_all = "kebab-case", typescript)]
enum Chat {
    Said(Said),
    UserJoined {
        #[serde(rename = "name")]
        user: String,
    },
    #[sse_event(rename = "bye")]
    UserLeft(String),
    Moved(u32, u32),
    Cleared,
}

/// A struct: one event type.
#[derive(SseEvent, Serialize)]
#[sse_event(rename = "tick")]
struct Tick {
    n: u64,
}

#[derive(Clone)]
struct Feed {
    registry: Registry<String>,
}

#[sse_controller("/feed")]
impl Feed {
    /// A stream may yield a typed event directly.
    #[sse("/ticks")]
    fn ticks() -> impl Stream<Item = Tick> {
        stream::iter((0..3).map(|n| Tick { n }))
    }

    #[sse("/chat")]
    fn chat() -> impl Stream<Item = Chat> {
        stream::iter([Chat::Cleared])
    }
}

async fn send_all(feed: &Feed) -> Result<(), sse_runtime::BrokerError> {
    let key = "room".to_owned();
    feed.registry.send(&key, Chat::UserLeft("ana".into())).await?;
    feed.registry.broadcast(Tick { n: 1 }).await?;
    feed.registry.send(&key, MessageEvent::new("plain")).await?;
    Ok(())
}

fn main() {
    assert_eq!(Chat::EVENT_TYPES, ["said", "user-joined", "bye", "moved", "cleared"]);
    let _ = send_all;
    let _app: axum::Router = Feed { registry: Registry::new() }.router();
}
