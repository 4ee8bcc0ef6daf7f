//! What can end a client's stream, or spoil one event of it.

use crate::DecodeError;

/// An error from [`EventStream`](super::EventStream). Only
/// [`Decode`](ClientError::Decode) leaves the stream going; after any other
/// the stream ends. Network failures and `5xx` answers are not errors: the
/// stream reconnects after a backoff, and says so in a `tracing` event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request could not be built (a bad URL, say).
    #[error("the request could not be built: {0}")]
    Request(#[source] reqwest::Error),
    /// The request has a streaming body, which cannot be sent again on
    /// reconnect. Give it a body of bytes.
    #[error("the request's body is a stream, which cannot be sent again on reconnect")]
    BodyNotReplayable,
    /// The server refused the stream with this status (a `4xx` other than
    /// `408` and `429`, which are retried). A `204` is not an error: it
    /// ends the stream, as it stops a browser's `EventSource`.
    #[error("the server answered {0}")]
    Status(reqwest::StatusCode),
    /// The server answered `200` with another content type than
    /// `text/event-stream`.
    #[error("the server answered with content type {0:?}, not text/event-stream")]
    NotEventStream(String),
    /// One event of a known type whose data does not match its type. The
    /// stream goes on with the next event.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}
