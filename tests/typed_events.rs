//! `#[derive(SseEvent)]` at run time: the exact bytes of every variant shape,
//! typed events through a controller's stream and through the registry, a
//! payload whose `Serialize` fails, and the TypeScript module; and back:
//! every shape read from the wire into the same value (`FromEvent`).

use std::collections::BTreeMap;

use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use sse_runtime::testing::TestClient;
use sse_runtime::typescript::{self, TS};
use sse_runtime::{BrokerError, Registry, SseEvent, sse, sse_controller};

#[derive(Serialize, TS)]
#[ts(crate = "sse_runtime::typescript::ts_rs")]
struct Said {
    user: String,
    text: String,
}

#[derive(SseEvent)]
#[sse_event(rename_all = "snake_case", typescript)]
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

/// A payload serde refuses: a map keyed by something that is not a string.
#[derive(SseEvent)]
enum Broken {
    Table(BTreeMap<(u8, u8), u8>),
}

fn text(event: &impl SseEvent) -> String {
    String::from_utf8(event.to_event().unwrap().to_bytes().to_vec()).unwrap()
}

#[test]
fn every_variant_shape_is_its_name_and_json_data() {
    let said = Chat::Said(Said {
        user: "ana".into(),
        text: "hi\nthere".into(),
    });
    assert_eq!(
        text(&said),
        "event: said\ndata: {\"user\":\"ana\",\"text\":\"hi\\nthere\"}\n\n"
    );
    let joined = Chat::UserJoined { user: "bo".into() };
    assert_eq!(
        text(&joined),
        "event: user_joined\ndata: {\"name\":\"bo\"}\n\n",
        "serde attributes of the fields hold"
    );
    assert_eq!(
        text(&Chat::UserLeft("cy".into())),
        "event: bye\ndata: \"cy\"\n\n"
    );
    assert_eq!(text(&Chat::Moved(1, 2)), "event: moved\ndata: [1,2]\n\n");
    assert_eq!(text(&Chat::Cleared), "event: cleared\ndata: null\n\n");
    assert_eq!(joined.event_type().as_str(), "user_joined");
    assert_eq!(
        Chat::EVENT_TYPES,
        ["said", "user_joined", "bye", "moved", "cleared"]
    );
}

#[derive(Clone)]
struct Feed;

#[sse_controller("/feed")]
impl Feed {
    #[sse("/chat", keep_alive = false)]
    fn chat() -> impl Stream<Item = Chat> {
        stream::iter([
            Chat::UserJoined { user: "ana".into() },
            Chat::Moved(3, 4),
            Chat::Cleared,
        ])
    }

    #[sse("/broken", keep_alive = false)]
    fn broken() -> impl Stream<Item = Broken> {
        stream::iter([Broken::Table(BTreeMap::from([((1, 2), 3)]))])
    }
}

#[tokio::test]
async fn a_stream_may_yield_typed_events_and_one_that_cannot_serialise_ends_it() {
    let client = TestClient::new(Feed.router());
    let mut response = client.get("/feed/chat").send().await;
    let events: Vec<(String, String)> = response
        .take(3)
        .await
        .into_iter()
        .map(|event| (event.event, event.data))
        .collect();
    assert_eq!(
        events,
        [
            ("user_joined".to_owned(), "{\"name\":\"ana\"}".to_owned()),
            ("moved".to_owned(), "[3,4]".to_owned()),
            ("cleared".to_owned(), "null".to_owned()),
        ]
    );
    let mut broken = client.get("/feed/broken").send().await;
    assert!(
        broken.next_event().await.is_none(),
        "the stream ends, cleanly"
    );
}

#[tokio::test]
async fn send_and_broadcast_take_typed_events_and_refuse_unserialisable_ones() {
    let registry: Registry<String> = Registry::new();
    let key = "room".to_owned();
    let mut subscription = registry.subscribe(&key);
    assert!(subscription.next().await.unwrap().is_resume_point());
    registry
        .send(&key, Chat::UserLeft("ana".into()))
        .await
        .unwrap();
    registry.broadcast(Chat::Cleared).await.unwrap();
    for (event_type, data) in [("bye", "\"ana\""), ("cleared", "null")] {
        let (_, got_type, got_data) = sse_tests::fields(&subscription.next().await.unwrap());
        assert_eq!((got_type.as_str(), got_data.as_str()), (event_type, data));
    }
    let refused = registry
        .send(&key, Broken::Table(BTreeMap::from([((1, 2), 3)])))
        .await;
    assert!(
        matches!(refused, Err(BrokerError::InvalidEvent(_))),
        "{refused:?}"
    );
    let response = axum::response::IntoResponse::into_response(refused.unwrap_err());
    assert_eq!(response.status(), 500);
}

#[test]
fn the_typescript_module_declares_payloads_maps_events_and_wraps_event_source() {
    let module = typescript::module::<Chat>("ChatEvents");
    let expected_map = "export type ChatEvents = {\n  \"said\": Said,\n  \"user_joined\": { name: string, },\n  \"bye\": string,\n  \"moved\": [number, number],\n  \"cleared\": null,\n};\n";
    assert!(module.contains(expected_map), "{module}");
    assert!(module.contains("export type Said = { user: string, text: string, };"));
    assert!(module.contains("export class TypedEventSource<Events"));
    assert_eq!(module, typescript::module::<Chat>("ChatEvents"), "stable");
}

/// Every variant shape, with `decode`: what a Rust client reads back.
#[derive(SseEvent, Debug, Clone, PartialEq)]
#[sse_event(rename_all = "snake_case", decode)]
enum Shapes {
    Unit,
    Newtype(String),
    Struct {
        #[serde(rename = "who")]
        name: String,
        count: u32,
    },
    Tuple(i64, String),
    #[sse_event(rename = "renamed.one")]
    Renamed(Vec<String>),
    Nested(Nested),
}

#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Nested {
    text: String,
    flag: Option<bool>,
}

fn shapes() -> impl proptest::strategy::Strategy<Value = Shapes> {
    use proptest::prelude::*;
    // Any string: line breaks, NULs, BOMs and every plane of Unicode.
    let text = any::<String>;
    prop_oneof![
        Just(Shapes::Unit),
        text().prop_map(Shapes::Newtype),
        (text(), any::<u32>()).prop_map(|(name, count)| Shapes::Struct { name, count }),
        (any::<i64>(), text()).prop_map(|(n, s)| Shapes::Tuple(n, s)),
        proptest::collection::vec(text(), 0..4).prop_map(Shapes::Renamed),
        (text(), any::<Option<bool>>())
            .prop_map(|(text, flag)| Shapes::Nested(Nested { text, flag })),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Rust → wire → Rust: the values a stream yields are the values its
    /// client decodes, in order, for every variant shape.
    #[test]
    fn every_shape_reads_back_from_the_wire_as_the_value_sent(
        values in proptest::collection::vec(shapes(), 1..12)
    ) {
        use sse_runtime::FromEvent;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let read = runtime.block_on(async {
            let sent = values.clone();
            let app = axum::Router::new().route(
                "/shapes",
                axum::routing::get(move || {
                    let sent = sent.clone();
                    async move { sse_runtime::Sse::new(stream::iter(sent)) }
                }),
            );
            let client = TestClient::new(app);
            let mut response = client.get("/shapes").send().await;
            let mut read = Vec::new();
            while let Some(event) = response.next_event().await {
                read.push(Shapes::from_event(&event.event, &event.data).unwrap().unwrap());
            }
            read
        });
        proptest::prop_assert_eq!(read, values);
    }
}
