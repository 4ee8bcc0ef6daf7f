//! Typed events: values whose event type and JSON data are fixed by their
//! Rust type, written with `#[derive(SseEvent)]`.

use crate::event::{EventError, EventType, MessageEvent};

/// A value that is one event of a known type with JSON data. Derive it:
///
/// ```
/// use serde::Serialize;
/// use sse_runtime::{SseEvent, MessageEvent};
///
/// #[derive(Serialize)]
/// struct Said { user: String, text: String }
///
/// #[derive(SseEvent)]
/// #[sse_event(rename_all = "snake_case")]
/// enum ChatEvent {
///     /// `event: said`, data: the message as JSON.
///     Said(Said),
///     /// `event: user_joined`, data: `{"user":"..."}`.
///     UserJoined { user: String },
///     /// `event: cleared`, data: `null`.
///     Cleared,
/// }
///
/// let event = ChatEvent::UserJoined { user: "ana".into() }.to_event().unwrap();
/// assert_eq!(event.to_bytes(), "event: user_joined\ndata: {\"user\":\"ana\"}\n\n");
/// assert_eq!(ChatEvent::EVENT_TYPES, ["said", "user_joined", "cleared"]);
/// ```
///
/// On an enum, each variant is one event type: the variant's name, or
/// `#[sse_event(rename = "...")]`, or the enum's `#[sse_event(rename_all =
/// "...")]` (`lowercase`, `UPPERCASE`, `PascalCase`, `camelCase`,
/// `snake_case`, `SCREAMING_SNAKE_CASE`, `kebab-case`,
/// `SCREAMING-KEBAB-CASE`, as serde spells them). The data is the JSON of
/// the variant's fields: an object for named fields, the value itself for one
/// unnamed field, an array for several, `null` for none. Fields keep their
/// `#[serde(...)]` attributes.
///
/// On a struct, which must implement `Serialize`, every value is one event
/// type, the struct's name or `#[sse_event(rename = "...")]`, and the data is
/// its JSON.
///
/// Names are checked at compile time: an empty name, a line break in one, or
/// two variants with one name are errors, as is a payload that does not
/// implement `Serialize`.
///
/// A stream may yield a typed event directly, and
/// [`Registry::send`](crate::Registry::send) and `broadcast` take one. With
/// `#[sse_event(typescript)]` (and the `typescript` feature),
/// `sse_runtime::typescript::module` writes the browser side.
pub trait SseEvent {
    /// Every event type this type produces, in declaration order.
    const EVENT_TYPES: &'static [&'static str];

    /// This value's event type.
    fn event_type(&self) -> EventType;

    /// This value as an event: its type, and its data as JSON. Fails only
    /// when a payload's `Serialize` fails (a map with non-string keys, say).
    fn to_event(&self) -> Result<MessageEvent, EventError>;
}

/// What [`Registry::send`](crate::Registry::send) and
/// [`broadcast`](crate::Registry::broadcast) take: a [`MessageEvent`], or a
/// value of a type that derives [`SseEvent`].
pub trait IntoEvent {
    /// The event, or why it could not be made.
    fn into_event(self) -> Result<MessageEvent, EventError>;
}

impl IntoEvent for MessageEvent {
    fn into_event(self) -> Result<MessageEvent, EventError> {
        Ok(self)
    }
}

impl<T: SseEvent> IntoEvent for T {
    fn into_event(self) -> Result<MessageEvent, EventError> {
        self.to_event()
    }
}

/// The other side of [`SseEvent`]: a value back from an event's type and
/// data, as a client reads it. `#[derive(SseEvent)]` with
/// `#[sse_event(decode)]` implements it, reading each variant's data in the
/// shape it is written in (every payload must then also implement
/// `Deserialize`):
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sse_runtime::{FromEvent, SseEvent};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Said { user: String, text: String }
///
/// #[derive(SseEvent, Debug, PartialEq)]
/// #[sse_event(rename_all = "snake_case", decode)]
/// enum ChatEvent {
///     Said(Said),
///     UserJoined { user: String },
///     Cleared,
/// }
///
/// let joined = ChatEvent::from_event("user_joined", r#"{"user":"ana"}"#).unwrap();
/// assert_eq!(joined, Some(ChatEvent::UserJoined { user: "ana".into() }));
/// // Not one of this type's events: not an error, a newer server may send it.
/// assert_eq!(ChatEvent::from_event("typing", "{}").unwrap(), None);
/// // One of them, with data of the wrong shape: an error.
/// assert!(ChatEvent::from_event("said", "42").is_err());
/// ```
pub trait FromEvent: Sized {
    /// The value that an event of type `event_type` with `data` stands for;
    /// `None` when `event_type` is none of this type's events.
    fn from_event(event_type: &str, data: &str) -> Result<Option<Self>, DecodeError>;
}

/// An event of a known type whose data is not the JSON its type expects.
#[derive(Debug, thiserror::Error)]
#[error("the data of a `{event_type}` event does not match its type: {source}")]
pub struct DecodeError {
    event_type: String,
    #[source]
    source: serde_json::Error,
}

impl DecodeError {
    pub(crate) fn new(event_type: &str, source: serde_json::Error) -> DecodeError {
        DecodeError {
            event_type: event_type.to_owned(),
            source,
        }
    }

    /// The event's type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }
}
