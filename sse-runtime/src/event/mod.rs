//! The event a stream yields: NestJS's `MessageEvent`, with validation that makes
//! field injection impossible.

pub(crate) mod encode;
mod encoded;
pub(crate) mod id;
pub(crate) mod item;
#[cfg(any(feature = "testing", feature = "client"))]
pub(crate) mod parse;
pub(crate) mod typed;

pub use encoded::EncodedEvent;
use encoded::{IdLine, Stamp};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

/// One server-sent event: data, and optionally an event type, an id, a reconnection
/// hint and a comment.
///
/// This mirrors NestJS's `MessageEvent` (`data`, `id`, `type`, `retry`). Every
/// builder is total: data may hold any text (line breaks of any kind become
/// several `data:` lines, which a client joins back with `\n`), while an event
/// type or id that would break out of its field is refused with an
/// [`EventError`] instead of being written.
///
/// ```
/// use sse_runtime::MessageEvent;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), sse_runtime::EventError> {
/// let event = MessageEvent::new("hello\nworld")
///     .with_event_type("greeting")?
///     .with_id("42")?
///     .with_retry(Duration::from_secs(3));
/// assert_eq!(
///     event.to_bytes(),
///     "event: greeting\nid: 42\nretry: 3000\ndata: hello\ndata: world\n\n"
/// );
///
/// // A line break in an event type would start a new field: refused, not encoded.
/// assert!(MessageEvent::new("x").with_event_type("a\nevent: admin").is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "an event does nothing until a stream yields it"]
pub struct MessageEvent {
    data: Option<String>,
    event_type: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
    comment: Option<String>,
    /// Set on the reset signal a broker builds (its reason), so layers above
    /// know it for one without reading the bytes.
    reset: Option<&'static str>,
}

/// An event type known when the program is compiled. [`EventType::new`] is a
/// `const fn` that refuses an empty name or one with CR or LF, so in a
/// `const` (or a `const { }` block) a bad name is a compile error and
/// [`MessageEvent::with_type`] needs no `Result`.
///
/// ```compile_fail
/// use sse_runtime::EventType;
/// // error[E0080]: evaluation of constant value failed: an SSE event type cannot contain CR or LF
/// const BROKEN: EventType = EventType::new("joined\nid: 1");
/// ```
///
/// ```
/// use sse_runtime::{EventType, MessageEvent};
/// let event = MessageEvent::new("x").with_type(const { EventType::new("tick") });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType(&'static str);

impl EventType {
    /// The event type `name`.
    ///
    /// # Panics
    ///
    /// When `name` is empty or contains CR or LF: at compile time when
    /// evaluated in a constant, as it should be.
    pub const fn new(name: &'static str) -> EventType {
        let bytes = name.as_bytes();
        assert!(!bytes.is_empty(), "an SSE event type cannot be empty");
        let mut at = 0;
        while at < bytes.len() {
            assert!(
                bytes[at] != b'\r' && bytes[at] != b'\n',
                "an SSE event type cannot contain CR or LF"
            );
            at += 1;
        }
        EventType(name)
    }

    /// The name.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

/// Which field of an event a value was offered for, in an [`EventError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventField {
    /// The `event:` field (NestJS's `type`).
    EventType,
    /// The `id:` field.
    Id,
}

impl std::fmt::Display for EventField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventField::EventType => "event type",
            EventField::Id => "event id",
        })
    }
}

/// Why an event could not be built.
///
/// ```
/// use sse_runtime::{EventError, EventField, MessageEvent};
///
/// let err = MessageEvent::new("x").with_id("1\r2").unwrap_err();
/// assert!(matches!(err, EventError::LineBreak { field: EventField::Id, position: 1 }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// A CR or LF in an event type or id would end the field and let the rest of
    /// the value be read as new fields or a new event.
    #[error(
        "the SSE {field} contains a line break (CR or LF) at byte {position}; \
         it would start a new field, so the value was refused"
    )]
    LineBreak {
        /// The field the value was offered for.
        field: EventField,
        /// Byte offset of the first CR or LF.
        position: usize,
    },
    /// Clients ignore an `id:` field that contains NUL, so it would silently not
    /// take effect.
    #[error(
        "the SSE event id contains a NUL character at byte {position}; \
         clients ignore such ids, so the value was refused"
    )]
    NulInId {
        /// Byte offset of the first NUL.
        position: usize,
    },
    /// The event carries more than its registry takes
    /// ([`RegistryConfig::max_event_bytes`](crate::RegistryConfig::max_event_bytes)).
    #[error("the SSE event carries {size} bytes, over the registry's limit of {max}")]
    TooLarge {
        /// The bytes of its data, event type and comment.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The value given as JSON data could not be serialised.
    #[error("the SSE data could not be serialised as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl MessageEvent {
    /// An event carrying `data` as text. Any line break (`\n`, `\r\n` or `\r`)
    /// is sent as a new `data:` line, so the client receives the text with its
    /// line breaks turned into `\n`.
    ///
    /// ```
    /// use sse_runtime::MessageEvent;
    /// assert_eq!(MessageEvent::new("ping").to_bytes(), "data: ping\n\n");
    /// assert_eq!(MessageEvent::new("").to_bytes(), "data: \n\n");
    /// ```
    pub fn new(data: impl Into<String>) -> Self {
        MessageEvent {
            data: Some(data.into()),
            ..MessageEvent::default()
        }
    }

    /// An event whose data is `value` serialised as JSON.
    ///
    /// ```
    /// use sse_runtime::MessageEvent;
    /// let event = MessageEvent::json(&serde_json::json!({ "hello": "world" })).unwrap();
    /// assert_eq!(event.to_bytes(), "data: {\"hello\":\"world\"}\n\n");
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, EventError> {
        Ok(MessageEvent::new(serde_json::to_string(value)?))
    }

    /// Replaces the data with `data` as text.
    ///
    /// ```
    /// use sse_runtime::MessageEvent;
    /// let event = MessageEvent::default().with_data("late data");
    /// assert_eq!(event.data(), Some("late data"));
    /// ```
    pub fn with_data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Sets the event type (the `event:` field; NestJS's `type`). A browser
    /// delivers the event to `addEventListener(type)` instead of `onmessage`.
    ///
    /// Refused when it contains CR or LF.
    ///
    /// ```
    /// use sse_runtime::MessageEvent;
    /// let event = MessageEvent::new("hi").with_event_type("customEventName").unwrap();
    /// assert_eq!(event.to_bytes(), "event: customEventName\ndata: hi\n\n");
    /// ```
    pub fn with_event_type(mut self, event_type: impl Into<String>) -> Result<Self, EventError> {
        let event_type = event_type.into();
        check_field_value(EventField::EventType, &event_type)?;
        self.event_type = Some(event_type);
        Ok(self)
    }

    /// Sets an event type checked when the program is compiled: infallible.
    ///
    /// ```
    /// use sse_runtime::{EventType, MessageEvent};
    ///
    /// const JOINED: EventType = EventType::new("joined");
    /// let event = MessageEvent::new("ann").with_type(JOINED);
    /// assert_eq!(event.to_bytes(), "event: joined\ndata: ann\n\n");
    /// ```
    pub fn with_type(mut self, event_type: EventType) -> Self {
        self.event_type = Some(event_type.0.to_owned());
        self
    }

    /// Sets the event id (the `id:` field). A browser sends the last id it saw
    /// as `Last-Event-ID` when it reconnects. An empty id resets it.
    ///
    /// Refused when it contains CR, LF or NUL.
    ///
    /// ```
    /// use sse_runtime::MessageEvent;
    /// let event = MessageEvent::new("hi").with_id("17").unwrap();
    /// assert_eq!(event.to_bytes(), "id: 17\ndata: hi\n\n");
    /// assert!(MessageEvent::new("hi").with_id("1\u{0}").is_err());
    /// ```
    pub fn with_id(mut self, id: impl Into<String>) -> Result<Self, EventError> {
        let id = id.into();
        check_field_value(EventField::Id, &id)?;
        if let Some(position) = memchr::memchr(0, id.as_bytes()) {
            return Err(EventError::NulInId { position });
        }
        self.id = Some(id);
        Ok(self)
    }

    /// Sets the reconnection delay the client should use from now on (the
    /// `retry:` field, in whole milliseconds).
    ///
    /// ```
    /// use sse_runtime::MessageEvent;
    /// use std::time::Duration;
    /// let event = MessageEvent::default().with_retry(Duration::from_millis(1500));
    /// assert_eq!(event.to_bytes(), "retry: 1500\n\n");
    /// ```
    pub fn with_retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Adds a comment, which clients ignore (useful for debugging with `curl`).
    /// A multi-line comment is written as several comment lines, so it can never
    /// become a field.
    ///
    /// ```
    /// use sse_runtime::MessageEvent;
    /// let event = MessageEvent::new("x").with_comment("two\nlines");
    /// assert_eq!(event.to_bytes(), ": two\n: lines\ndata: x\n\n");
    /// ```
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// The data, if any.
    pub fn data(&self) -> Option<&str> {
        self.data.as_deref()
    }

    /// The event type, if any.
    pub fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    /// The id, if any.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The reconnection hint, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The comment, if any.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// Appends this event in the `text/event-stream` format to `buf`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use sse_runtime::MessageEvent;
    /// let mut buf = BytesMut::new();
    /// MessageEvent::new("a").encode_into(&mut buf);
    /// MessageEvent::new("b").encode_into(&mut buf);
    /// assert_eq!(&buf[..], b"data: a\n\ndata: b\n\n");
    /// ```
    pub fn encode_into(&self, buf: &mut BytesMut) {
        self.encode_fields(buf, self.id.as_deref());
    }

    /// Writes the fields and the blank line; returns where the `id:` line
    /// went, if any.
    fn encode_fields(&self, buf: &mut BytesMut, id: Option<&str>) -> Option<IdLine> {
        if let Some(comment) = &self.comment {
            encode::write_comment(buf, comment);
        }
        if let Some(event_type) = &self.event_type {
            encode::write_field(buf, b"event", event_type);
        }
        let id_line = id.map(|id| {
            let start = buf.len();
            encode::write_field(buf, b"id", id);
            IdLine::new(start, buf.len())
        });
        if let Some(retry) = self.retry {
            encode::write_retry(buf, retry);
        }
        if let Some(data) = &self.data {
            encode::write_data(buf, data);
        }
        // An event with no field at all would be a bare blank line: write nothing.
        if self.comment.is_some()
            || self.event_type.is_some()
            || id.is_some()
            || self.retry.is_some()
            || self.data.is_some()
        {
            buf.extend_from_slice(b"\n");
        }
        id_line
    }

    /// The bytes this event carries: its data, event type and comment (what
    /// [`RegistryConfig::max_event_bytes`](crate::RegistryConfig::max_event_bytes)
    /// bounds), without encoding it.
    pub(crate) fn content_len(&self) -> usize {
        [&self.data, &self.event_type, &self.comment]
            .into_iter()
            .map(|field| field.as_ref().map_or(0, String::len))
            .sum()
    }

    /// This event marked as the reset signal for `reason` (see
    /// `registry::reset`).
    pub(crate) fn marked_as_reset(mut self, reason: &'static str) -> Self {
        self.reset = Some(reason);
        self
    }

    /// This event encoded once, ready to be sent to many clients without
    /// encoding it again.
    ///
    /// ```
    /// use sse_runtime::MessageEvent;
    /// let shared = MessageEvent::new("for everyone").encode();
    /// assert_eq!(shared.as_bytes(), b"data: for everyone\n\n");
    /// ```
    pub fn encode(&self) -> EncodedEvent {
        let mut buf = BytesMut::new();
        let id_line = self.encode_fields(&mut buf, self.id.as_deref());
        self.encoded(buf, id_line)
    }

    fn encoded(&self, buf: BytesMut, id_line: Option<IdLine>) -> EncodedEvent {
        EncodedEvent {
            bytes: buf.freeze(),
            stamp: Stamp {
                id_line,
                reset: self.reset,
            },
        }
    }

    /// This event encoded with `id` in place of its own id: an id a broker
    /// stamps. The encoder never writes a CR, LF or NUL of it as itself, in
    /// any build (see `encode::write_field`).
    pub(crate) fn encode_with_id(&self, id: &str) -> EncodedEvent {
        let mut buf = BytesMut::new();
        let id_line = self.encode_fields(&mut buf, Some(id));
        self.encoded(buf, id_line)
    }

    /// This event's fields except the id, without the blank line that ends an
    /// event: what a broker stores, to add its own id when it delivers.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn encode_without_id(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode_fields(&mut buf, None);
        if buf.ends_with(b"\n") {
            buf.truncate(buf.len() - 1);
        }
        buf.freeze()
    }

    /// `id: <id>` followed by fields stored by [`encode_without_id`], as one event.
    pub(crate) fn assemble_with_id(id: &str, fields: &[u8]) -> EncodedEvent {
        let mut buf = BytesMut::with_capacity(id.len() + fields.len() + 6);
        encode::write_field(&mut buf, b"id", id);
        let id_line = IdLine::new(0, buf.len());
        buf.extend_from_slice(fields);
        buf.extend_from_slice(b"\n");
        EncodedEvent {
            bytes: buf.freeze(),
            stamp: Stamp {
                id_line: Some(id_line),
                reset: None,
            },
        }
    }

    /// This event in the `text/event-stream` format.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode_into(&mut buf);
        buf.freeze()
    }
}

fn check_field_value(field: EventField, value: &str) -> Result<(), EventError> {
    match memchr::memchr2(b'\r', b'\n', value.as_bytes()) {
        Some(position) => Err(EventError::LineBreak { field, position }),
        None => Ok(()),
    }
}

/// An event that could not be built answers `500 Internal Server Error`
/// with the reason, so `?` works in an axum handler:
///
/// ```
/// use axum::{http::StatusCode, response::IntoResponse};
/// use sse_runtime::{EventError, MessageEvent};
///
/// async fn handler() -> Result<&'static str, EventError> {
///     let _event = MessageEvent::new("x").with_event_type("bad\ntype")?;
///     Ok("sent")
/// }
/// # let error = MessageEvent::new("x").with_id("a\rb").unwrap_err();
/// # assert_eq!(error.into_response().status(), StatusCode::INTERNAL_SERVER_ERROR);
/// ```
impl axum::response::IntoResponse for EventError {
    fn into_response(self) -> axum::response::Response {
        (http::StatusCode::INTERNAL_SERVER_ERROR, format!("{self}\n")).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_line_breaks_of_every_kind_become_data_lines() {
        let event = MessageEvent::new("a\nb\r\nc\rd");
        assert_eq!(event.to_bytes(), "data: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn trailing_and_doubled_breaks_keep_their_empty_lines() {
        assert_eq!(MessageEvent::new("a\n").to_bytes(), "data: a\ndata: \n\n");
        assert_eq!(
            MessageEvent::new("\r\n\r").to_bytes(),
            "data: \ndata: \ndata: \n\n"
        );
    }

    #[test]
    fn leading_space_survives_the_one_space_a_parser_strips() {
        assert_eq!(MessageEvent::new(" x").to_bytes(), "data:  x\n\n");
        assert_eq!(MessageEvent::new(" ").to_bytes(), "data:  \n\n");
    }

    #[test]
    fn event_type_and_id_with_line_breaks_are_refused_with_position() {
        for bad in ["\n", "a\r", "ab\r\nevent: x"] {
            let err = MessageEvent::new("x").with_event_type(bad).unwrap_err();
            assert!(matches!(
                err,
                EventError::LineBreak {
                    field: EventField::EventType,
                    ..
                }
            ));
            let err = MessageEvent::new("x").with_id(bad).unwrap_err();
            assert!(matches!(
                err,
                EventError::LineBreak {
                    field: EventField::Id,
                    ..
                }
            ));
        }
        let err = MessageEvent::new("x").with_id("ab\nc").unwrap_err();
        assert!(matches!(err, EventError::LineBreak { position: 2, .. }));
    }

    #[test]
    fn nul_is_refused_in_ids_but_allowed_in_event_types() {
        assert!(matches!(
            MessageEvent::new("x").with_id("a\0").unwrap_err(),
            EventError::NulInId { position: 1 }
        ));
        assert!(MessageEvent::new("x").with_event_type("a\0").is_ok());
    }

    #[test]
    fn an_event_without_fields_encodes_to_nothing() {
        assert_eq!(MessageEvent::default().to_bytes(), "");
    }

    #[test]
    fn error_messages_say_what_and_where() {
        let err = MessageEvent::new("x").with_event_type("ab\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the SSE event type contains a line break (CR or LF) at byte 2; \
             it would start a new field, so the value was refused"
        );
    }
}
