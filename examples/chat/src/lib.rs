//! Chat rooms over server-sent events.
//!
//! - `GET  /rooms/{room}/events`: the room's messages (a registry topic),
//!   resuming from `Last-Event-ID`; `204 No Content` for a room that does not
//!   exist, which tells `EventSource` to stop reconnecting.
//! - `POST /rooms/{room}/messages` with `{"user": "...", "text": "..."}`.
//! - `POST /admin/drop-streams` with `Authorization: Bearer <admin token>`:
//!   ends every open stream, as a restart or a load balancer would; browsers
//!   reconnect and replay what they missed. Without an admin token configured
//!   ([`ChatController::with_admin_token`]) it is refused.
//! - `GET  /`: the chat page.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sse_runtime::{
    EncodedEvent, LastEventId, MessageEvent, Registry, get, post, sse, sse_controller,
};

/// The longest user name and message text accepted.
pub const MAX_USER_LEN: usize = 32;
/// See [`MAX_USER_LEN`].
pub const MAX_TEXT_LEN: usize = 2000;

/// The chat, whole, as in NestJS: rooms as registry topics, their streams
/// and the handlers that post to them and list them.
#[derive(Clone)]
pub struct ChatController {
    rooms: Registry<String>,
    known_rooms: Arc<BTreeSet<String>>,
    /// Bumped to end every open stream.
    stream_generation: Arc<tokio::sync::watch::Sender<u64>>,
    /// The operator's credential for `/admin/...`; none: those are refused.
    admin_token: Option<Arc<str>>,
}

/// A message as posted and as sent to the room.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who says it.
    pub user: String,
    /// What they say.
    pub text: String,
}

#[sse_controller("/rooms")]
impl ChatController {
    /// The room's messages: what came after `Last-Event-ID` first, then live.
    #[sse("/:room/events", retry = "1s")]
    fn room_events(
        &self,
        Path(room): Path<String>,
        last_event_id: LastEventId,
    ) -> Result<impl Stream<Item = EncodedEvent>, StatusCode> {
        if !self.known_rooms.contains(&room) {
            return Err(StatusCode::NO_CONTENT);
        }
        let mut generation = self.stream_generation.subscribe();
        let dropped = async move {
            let _ = generation.changed().await;
        };
        Ok(self
            .rooms
            .subscribe_from(&room, last_event_id.as_deref())
            .take_until(dropped))
    }

    /// `GET /rooms`: the rooms there are.
    #[get("/")]
    fn list_rooms(&self) -> Json<Vec<String>> {
        Json(self.known_rooms.iter().cloned().collect())
    }

    /// `POST /rooms/{room}/messages` with `{"user": "...", "text": "..."}`.
    #[post("/:room/messages")]
    async fn post_message(
        &self,
        Path(room): Path<String>,
        Json(message): Json<ChatMessage>,
    ) -> Response {
        post_to_room(self, &room, message).await
    }
}

impl ChatController {
    /// A chat with these rooms, in this process's memory.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(rooms: I) -> Self {
        Self::with_registry(rooms, Registry::new())
    }

    /// A chat with these rooms over `registry`: with a Redis broker, several
    /// instances share rooms, history and ids (see the `cluster` example).
    pub fn with_registry<I: IntoIterator<Item = S>, S: Into<String>>(
        rooms: I,
        registry: Registry<String>,
    ) -> Self {
        ChatController {
            rooms: registry,
            known_rooms: Arc::new(rooms.into_iter().map(Into::into).collect()),
            stream_generation: Arc::new(tokio::sync::watch::Sender::new(0)),
            admin_token: None,
        }
    }

    /// With an operator's credential for the admin endpoint. An empty token
    /// is ignored.
    pub fn with_admin_token(mut self, token: &str) -> Self {
        self.admin_token = (!token.is_empty()).then(|| Arc::from(token));
        self
    }

    /// The rooms' registry.
    pub fn registry(&self) -> &Registry<String> {
        &self.rooms
    }

    /// Ends every open stream (clients reconnect and resume).
    pub fn drop_streams(&self) {
        self.stream_generation
            .send_modify(|generation| *generation += 1);
    }

    /// The whole app.
    pub fn app(self) -> Router {
        let admin = Router::new()
            .route("/admin/drop-streams", axum::routing::post(drop_streams))
            .with_state(self.clone());
        self.router().merge(admin).route(
            "/",
            axum::routing::get(|| async { Html(include_str!("../static/index.html")) }),
        )
    }
}

/// `POST /admin/drop-streams`: 401 without the admin token, 403 when none is
/// configured.
async fn drop_streams(State(chat): State<ChatController>, headers: HeaderMap) -> StatusCode {
    let Some(admin_token) = chat.admin_token.as_deref() else {
        return StatusCode::FORBIDDEN;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    // Compared in time that does not depend on where the two differ.
    let matches = given.is_some_and(|given| {
        given.len() == admin_token.len()
            && given
                .bytes()
                .zip(admin_token.bytes())
                .fold(0, |diff, (a, b)| diff | (a ^ b))
                == 0
    });
    if !matches {
        return StatusCode::UNAUTHORIZED;
    }
    chat.drop_streams();
    StatusCode::NO_CONTENT
}

/// Checks and sends one message to a room; answers how many streams got it.
async fn post_to_room(chat: &ChatController, room: &String, message: ChatMessage) -> Response {
    if !chat.known_rooms.contains(room) {
        return (StatusCode::NOT_FOUND, "no such room\n").into_response();
    }
    let user = message.user.trim();
    if user.is_empty()
        || user.chars().count() > MAX_USER_LEN
        || message.text.chars().count() > MAX_TEXT_LEN
    {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "a user of 1 to {MAX_USER_LEN} characters and a text of at most {MAX_TEXT_LEN}\n"
            ),
        )
            .into_response();
    }
    let message = ChatMessage {
        user: user.to_owned(),
        text: message.text,
    };
    let event = match MessageEvent::json(&message) {
        Ok(event) => event,
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response();
        }
    };
    match chat.rooms.send(room, event).await {
        Ok(delivered) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "delivered": delivered })),
        )
            .into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response(),
    }
}
