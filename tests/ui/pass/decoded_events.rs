use serde::{Deserialize, Serialize};
use sse_runtime::{FromEvent, SseEvent};

#[derive(Serialize, Deserialize)]
struct Said {
    user: String,
    text: String,
}

/// Every shape of variant, read back: with rename_all, a rename and serde
/// field attributes.
#[derive(SseEvent)]
#[sse_event(rename_all = "kebab-case", decode)]
enum Chat {
    Said(Said),
    UserJoined {
        #[serde(rename = "name")]
        user: String,
        #[serde(default)]
        admin: bool,
    },
    #[sse_event(rename = "bye")]
    UserLeft(String),
    Moved(u32, u32),
    Cleared,
}

/// A struct: one event type.
#[derive(SseEvent, Serialize, Deserialize)]
#[sse_event(rename = "tick", decode)]
struct Tick {
    n: u64,
}

fn main() {
    let _: Option<Chat> = Chat::from_event("user-joined", r#"{"name":"ana"}"#).unwrap();
    let _: Option<Tick> = Tick::from_event("tick", r#"{"n":1}"#).unwrap();
}
