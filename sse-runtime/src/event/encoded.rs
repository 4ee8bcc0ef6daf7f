//! An event encoded once, with what the encoder knew about it.

use bytes::{Bytes, BytesMut};

use super::{MessageEvent, encode};

/// An event already in the `text/event-stream` format. Cloning it shares the
/// bytes, so one event can be sent to many streams after being encoded once.
///
/// Only [`MessageEvent::encode`] makes one, so its bytes are always well formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    pub(super) bytes: Bytes,
    /// What the encoder knew: where the id is, and whether this is the reset
    /// signal. Handed along so no layer parses these bytes back.
    pub(super) stamp: Stamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Stamp {
    pub(super) id_line: Option<IdLine>,
    pub(super) reset: Option<&'static str>,
}

/// Where an `id: <id>\n` line sits in an event's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IdLine {
    start: u32,
    end: u32,
}

impl IdLine {
    pub(super) fn new(start: usize, end: usize) -> IdLine {
        // An event's bytes are far below 4 GiB: an HTTP body and every bound
        // of this crate say so; `u32` keeps the stamp small.
        IdLine {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
        }
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

impl EncodedEvent {
    /// `id: <id>` alone: an event a client dispatches to no handler, but
    /// whose id it keeps as its `lastEventId` (WHATWG HTML, 9.2.6: the last
    /// event ID is set before an event with empty data is dropped).
    pub(crate) fn resume_point(id: &str) -> EncodedEvent {
        MessageEvent::assemble_with_id(id, b"")
    }

    /// Whether this is a subscription's resume point: an `id:` line and
    /// nothing else, which a browser keeps as its `lastEventId` without
    /// firing a handler. Code that reads a [`Subscription`](crate::Subscription)
    /// itself (to bridge it to another transport, say) can skip it, or keep
    /// its id to resume from.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use sse_runtime::Registry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry: Registry<String> = Registry::new();
    /// let mut alice = registry.subscribe(&"alice".to_owned());
    /// let first = alice.next().await.unwrap();
    /// assert!(first.is_resume_point());
    /// assert!(std::str::from_utf8(first.as_bytes()).unwrap().starts_with("id: "));
    /// # }
    /// ```
    pub fn is_resume_point(&self) -> bool {
        self.stamp
            .id_line
            .is_some_and(|line| line.start == 0 && line.end as usize + 1 == self.bytes.len())
    }

    /// The encoded bytes.
    ///
    /// ```
    /// use sse_runtime::MessageEvent;
    /// assert_eq!(MessageEvent::new("x").encode().as_bytes(), b"data: x\n\n");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded bytes, shared.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The id this event carries, as the encoder wrote it.
    pub(crate) fn id(&self) -> Option<&str> {
        let line = self.stamp.id_line?.range();
        // `id: ` before, the line break after; the encoder wrote UTF-8.
        std::str::from_utf8(self.bytes.get(line.start + 4..line.end - 1)?).ok()
    }

    /// The reason, when this is a broker's reset signal.
    pub(crate) fn reset_reason(&self) -> Option<&'static str> {
        self.stamp.reset
    }

    /// This event with `id` in place of its id (or with one, first, if it
    /// had none); every other field, and the reset mark, as they were.
    pub(crate) fn with_id(&self, id: &str) -> EncodedEvent {
        let (before, after) = match self.stamp.id_line {
            Some(line) => (
                &self.bytes[..line.start as usize],
                &self.bytes[line.end as usize..],
            ),
            None => (&self.bytes[..0], &self.bytes[..]),
        };
        let mut buf = BytesMut::with_capacity(self.bytes.len() + id.len() + 5);
        buf.extend_from_slice(before);
        let start = buf.len();
        encode::write_field(&mut buf, b"id", id);
        let id_line = IdLine::new(start, buf.len());
        buf.extend_from_slice(after);
        EncodedEvent {
            bytes: buf.freeze(),
            stamp: Stamp {
                id_line: Some(id_line),
                reset: self.stamp.reset,
            },
        }
    }
}
