//! A plain map of per-user broadcast channels, as in the tutorial. The registry
//! replaces this with ids, replay and bounded buffers; this one only fans out
//! live events and removes a user's entry when their last stream closes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use sse_runtime::MessageEvent;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// Events a slow stream may fall behind by before it skips ahead.
const PER_USER_BUFFER: usize = 256;

/// `userId` → channel of that user's events. Cheap to clone.
#[derive(Clone, Default)]
pub struct UserChannels {
    inner: Arc<Mutex<HashMap<String, broadcast::Sender<MessageEvent>>>>,
}

/// Letters, digits, `-` and `_`, 1 to 64 of them.
pub fn is_valid_user_id(user_id: &str) -> bool {
    (1..=64).contains(&user_id.len())
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl UserChannels {
    /// A new stream of `user_id`'s events.
    pub fn subscribe(&self, user_id: &str) -> UserStream {
        let mut users = self.lock();
        let sender = users
            .entry(user_id.to_owned())
            .or_insert_with(|| broadcast::channel(PER_USER_BUFFER).0);
        UserStream {
            events: BroadcastStream::new(sender.subscribe()),
            user_id: user_id.to_owned(),
            users: self.clone(),
        }
    }

    /// Sends `event` to every open stream of `user_id`; returns how many.
    pub fn send(&self, user_id: &str, event: MessageEvent) -> usize {
        self.lock()
            .get(user_id)
            .map_or(0, |sender| sender.send(event).unwrap_or(0))
    }

    /// How many users have an open stream.
    pub fn user_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<MessageEvent>>> {
        // The map stays consistent even if a holder panicked: every update is one call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One user's stream. Dropping it (the client went away) removes the user's
/// entry when it was their last stream.
pub struct UserStream {
    events: BroadcastStream<MessageEvent>,
    user_id: String,
    users: UserChannels,
}

impl Stream for UserStream {
    type Item = MessageEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<MessageEvent>> {
        self.events.poll_next_unpin(cx).map(|next| {
            next.map(|received| match received {
                Ok(event) => event,
                Err(BroadcastStreamRecvError::Lagged(missed)) => MessageEvent::default()
                    .with_comment(format!(
                        "{missed} events were skipped: this stream fell behind"
                    )),
            })
        })
    }
}

impl Drop for UserStream {
    fn drop(&mut self) {
        let mut users = self.users.lock();
        // Our own receiver is still alive here, so "last stream" means a count of one;
        // the lock keeps a new subscriber from slipping in between.
        if users
            .get(&self.user_id)
            .is_some_and(|s| s.receiver_count() <= 1)
        {
            users.remove(&self.user_id);
        }
    }
}
