//! What a stream may yield, and how each kind is written.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::event::encode;
use crate::event::{EncodedEvent, MessageEvent};

/// A value a server-sent event stream may yield.
///
/// | item | sent as |
/// |---|---|
/// | [`MessageEvent`] | the event, with all its fields |
/// | `String`, `&'static str` | an event with that text as data |
/// | [`axum::Json<T>`](axum::Json), `serde_json::Value` | an event with the value as JSON data |
/// | [`EncodedEvent`] | the already-encoded bytes (encode once, send to many) |
/// | `Result<T, E>` | `Ok(item)` as above; `Err(e)` ends the stream (see below) |
///
/// **Errors.** When a stream yields `Err(e)` (or a JSON value fails to
/// serialise), the error is logged with [`tracing`] at `WARN` level, events
/// already produced are flushed, and the response ends cleanly. A browser's
/// `EventSource` then reconnects after its retry delay, as it does after any
/// end of stream; answer `204 No Content` on that request to stop it.
///
/// ```
/// use bytes::BytesMut;
/// use sse_runtime::SseItem;
///
/// let mut buf = BytesMut::new();
/// "ping".encode_into(&mut buf).unwrap();
/// axum::Json(serde_json::json!([1, 2])).encode_into(&mut buf).unwrap();
/// assert_eq!(&buf[..], b"data: ping\n\ndata: [1,2]\n\n");
///
/// let failed: Result<&str, std::io::Error> = Err(std::io::Error::other("db down"));
/// assert_eq!(failed.encode_into(&mut buf).unwrap_err().to_string(), "db down");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent as a server-sent event",
    label = "not an SSE stream item",
    note = "a stream may yield `MessageEvent`, `String`, `&'static str`, `axum::Json<T>`, \
            `serde_json::Value`, `EncodedEvent`, or a `Result` of one of these"
)]
pub trait SseItem: Send + 'static {
    /// Appends the item to `buf` in the `text/event-stream` format, or returns
    /// the error that ends the stream. On error nothing is appended.
    fn encode_into(self, buf: &mut BytesMut) -> Result<(), ItemError>;

    /// Whether a client dispatches the item as an event, for the
    /// `sse_events_written_total` metric: a subscription's resume point
    /// (an id alone) is not one.
    #[doc(hidden)]
    fn is_event(&self) -> bool {
        true
    }

    /// The item's bytes as other streams carry them too (a registry's
    /// event, encoded once for every subscriber), for compression shared
    /// between those streams; `None` for an item of one stream's own.
    #[doc(hidden)]
    fn shared_bytes(&self) -> Option<Bytes> {
        None
    }
}

/// The error that ended a stream: what an `Err` item said, or why its JSON
/// data could not be serialised.
///
/// ```
/// use sse_runtime::ItemError;
/// let err = ItemError::new("upstream closed");
/// assert_eq!(err.to_string(), "upstream closed");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ItemError {
    message: String,
}

impl ItemError {
    /// An error with this message.
    pub fn new(message: impl std::fmt::Display) -> Self {
        ItemError {
            message: message.to_string(),
        }
    }
}

impl SseItem for MessageEvent {
    fn encode_into(self, buf: &mut BytesMut) -> Result<(), ItemError> {
        MessageEvent::encode_into(&self, buf);
        Ok(())
    }
}

impl SseItem for EncodedEvent {
    fn encode_into(self, buf: &mut BytesMut) -> Result<(), ItemError> {
        buf.extend_from_slice(self.as_bytes());
        Ok(())
    }

    fn is_event(&self) -> bool {
        !self.is_resume_point()
    }

    fn shared_bytes(&self) -> Option<Bytes> {
        // A resume point is its subscription's own (its position).
        (!self.is_resume_point()).then(|| self.bytes.clone())
    }
}

impl SseItem for String {
    fn encode_into(self, buf: &mut BytesMut) -> Result<(), ItemError> {
        write_text(buf, &self)
    }
}

impl SseItem for &'static str {
    fn encode_into(self, buf: &mut BytesMut) -> Result<(), ItemError> {
        write_text(buf, self)
    }
}

impl<T: Serialize + Send + 'static> SseItem for axum::Json<T> {
    fn encode_into(self, buf: &mut BytesMut) -> Result<(), ItemError> {
        write_json(buf, &self.0)
    }
}

impl SseItem for serde_json::Value {
    fn encode_into(self, buf: &mut BytesMut) -> Result<(), ItemError> {
        write_json(buf, &self)
    }
}

impl<T, E> SseItem for Result<T, E>
where
    T: SseItem,
    E: std::fmt::Display + Send + 'static,
{
    fn encode_into(self, buf: &mut BytesMut) -> Result<(), ItemError> {
        match self {
            Ok(item) => item.encode_into(buf),
            Err(error) => Err(ItemError::new(error)),
        }
    }

    fn is_event(&self) -> bool {
        self.as_ref().is_ok_and(SseItem::is_event)
    }

    fn shared_bytes(&self) -> Option<Bytes> {
        self.as_ref().ok().and_then(SseItem::shared_bytes)
    }
}

fn write_text(buf: &mut BytesMut, text: &str) -> Result<(), ItemError> {
    encode::write_data(buf, text);
    buf.extend_from_slice(b"\n");
    Ok(())
}

/// Serialises straight into the buffer. Compact JSON never contains a raw CR or
/// LF (they are escaped inside strings), so it is always exactly one data line.
fn write_json<T: Serialize + ?Sized>(buf: &mut BytesMut, value: &T) -> Result<(), ItemError> {
    let start = buf.len();
    buf.extend_from_slice(b"data: ");
    if let Err(error) = serde_json::to_writer(buf.writer(), value) {
        buf.truncate(start);
        return Err(ItemError::new(format_args!(
            "the SSE data could not be serialised as JSON: {error}"
        )));
    }
    buf.extend_from_slice(b"\n\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn failed_json_leaves_the_buffer_untouched() {
        // A map with non-string keys cannot be JSON.
        let mut map = HashMap::new();
        map.insert((1, 2), 3);
        let mut buf = BytesMut::from(&b"data: before\n\n"[..]);
        let err = axum::Json(map).encode_into(&mut buf).unwrap_err();
        assert!(err.to_string().contains("JSON"), "{err}");
        assert_eq!(&buf[..], b"data: before\n\n");
    }

    #[test]
    fn json_strings_with_line_breaks_stay_on_one_line() {
        let mut buf = BytesMut::new();
        serde_json::json!({"text": "a\r\nb"})
            .encode_into(&mut buf)
            .unwrap();
        assert_eq!(&buf[..], b"data: {\"text\":\"a\\r\\nb\"}\n\n");
    }
}
