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
