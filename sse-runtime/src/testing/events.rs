//! Reading a [`Subscription`](crate::Subscription) (or any stream of
//! [`EncodedEvent`]s) in a test: the next event, and its fields.

use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;

use crate::event::EncodedEvent;

/// How long [`next_event`] waits before it fails the test: generous, so a
/// busy CI machine never fails a test that is only slow.
const WAIT: Duration = Duration::from_secs(10);

/// The next event of `stream`, past resume points (an id alone, which no
/// client dispatches); `None` once the stream ends.
///
/// # Panics
///
/// When nothing arrives within 10 seconds.
///
/// ```
/// use sse_runtime::testing::{fields, next_event};
/// use sse_runtime::{MessageEvent, Registry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry: Registry<String> = Registry::new();
/// let mut alice = registry.subscribe(&"alice".to_owned());
/// registry.send(&"alice".to_owned(), MessageEvent::new("hi")).await.unwrap();
/// let (id, event_type, data) = fields(&next_event(&mut alice).await.unwrap());
/// assert!(!id.is_empty());
/// assert_eq!((event_type.as_str(), data.as_str()), ("", "hi"));
/// # }
/// ```
pub async fn next_event(
    stream: &mut (impl Stream<Item = EncodedEvent> + Unpin),
) -> Option<EncodedEvent> {
    loop {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {WAIT:?}"));
        if !event.as_ref().is_some_and(EncodedEvent::is_resume_point) {
            return event;
        }
    }
}

/// `(id, event type, data)` of one encoded event, as a client reads them:
/// the last `id:` and `event:` (empty when absent), and the `data:` lines
/// joined with `\n`.
pub fn fields(event: &EncodedEvent) -> (String, String, String) {
    let text = String::from_utf8_lossy(event.as_bytes());
    let (mut id, mut event_type, mut data) = (String::new(), String::new(), Vec::new());
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("id: ") {
            id = value.to_owned();
        } else if let Some(value) = line.strip_prefix("event: ") {
            event_type = value.to_owned();
        } else if let Some(value) = line.strip_prefix("data: ") {
            data.push(value);
        }
    }
    (id, event_type, data.join("\n"))
}
