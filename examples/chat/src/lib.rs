//! Chat rooms over server-sent events.
//!
//! - `GET  /rooms/{room}/events`: the room's messages (a registry topic),
//!   resuming from `Last-Event-ID`; `204 No Content` for a room that does not
//!   exist, which tells `EventSource` to stop reconnecting.
//! - `GET  /rooms/events?rooms=general,random`: several rooms on one
//!   stream (one connection of the browser's six), resumed exactly by one
//!   `Last-Event-ID`; each `said` names its room.
//! - `POST /rooms/{room}/messages` with `{"user": "...", "text": "..."}`.
//!
//! Streams carry typed events ([`ChatEvent`]): `said` with a
//! [`ChatMessage`], and `announcement`. The page reads them through
//! `static/chat-events.ts`, generated from these types
//! ([`typescript_module`]), so a renamed event or field breaks the page's
//! build, not the page.
//! - `POST /admin/announce` with `{"text": "..."}` and the admin token: an
//!   announcement to every room (a registry broadcast).
//! - `POST /admin/drop-streams` with `Authorization: Bearer <admin token>`:
//!   ends every open stream, as a restart or a load balancer would; browsers
//!   reconnect and replay what they missed. Without an admin token configured
//!   ([`ChatController::with_admin_token`]) it is refused.
//! - Direct messages (module [`direct`]): `POST /login`, `GET /me/events`
//!   with the login token in an `Authorization` header (read over the
//!   generated fetch transport, never with the token in the URL), and
//!   `POST /users/{user}/messages`; `POST /admin/expire-sessions` ends every
//!   session.
//! - `GET  /`: the chat page.

pub mod direct;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sse_runtime::typescript::TS;
use sse_runtime::{
    EncodedEvent, IdempotencyKey, LastEventId, Registry, SseEvent, get, post, sse, sse_controller,
};

/// The longest user name and message text accepted.
pub const MAX_USER_LEN: usize = 32;
/// See [`MAX_USER_LEN`].
pub const MAX_TEXT_LEN: usize = 2000;
/// The largest request body read (413 past it): a message of the longest
/// user and text, every character JSON-escaped at worst (`\uXXXX`), with
/// room for the framing. Axum's default would read 2 MB for it.
pub const MAX_BODY_BYTES: usize = 6 * (MAX_USER_LEN + MAX_TEXT_LEN) + 256;

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
    /// Who is logged in, for direct messages.
    sessions: direct::Sessions,
}

/// The most rooms one stream follows.
pub const MAX_ROOMS_PER_STREAM: usize = 16;

/// A message as posted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who says it.
    pub user: String,
    /// What they say.
    pub text: String,
}

/// Everything a room's stream carries. With `decode`, a Rust client reads
/// it back (`sse_runtime::client`).
#[derive(Debug, Clone, PartialEq, Eq, SseEvent)]
#[sse_event(rename_all = "snake_case", typescript, decode)]
pub enum ChatEvent {
    /// `said`: a message posted to a room.
    Said(Said),
    /// `announcement`: the operator's word, to every room.
    Announcement { text: String },
    /// `direct`: a direct message, on its sender's and recipient's private
    /// streams only.
    Direct(direct::Direct),
}

/// A message as sent to a room's streams: what was posted, and where.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, TS)]
#[ts(crate = "sse_runtime::typescript::ts_rs")]
pub struct Said {
    /// The room it was posted to.
    pub room: String,
    /// Who says it.
    pub user: String,
    /// What they say.
    pub text: String,
}

/// `?rooms=general,random`: the rooms of a multi-room stream.
#[derive(Deserialize)]
pub struct RoomsQuery {
    rooms: String,
}

/// The browser side of [`ChatEvent`], as committed in
/// `static/chat-events.ts` (a test keeps the two equal).
pub fn typescript_module() -> String {
    sse_runtime::typescript::module::<ChatEvent>("ChatEvents")
}

/// The page's script, compiled by `tsc` from `static/chat.ts` (a test keeps
/// it current).
const PAGE_SCRIPT: &str = include_str!("../static/js/chat.js");
/// The generated module, compiled by `tsc` from `static/chat-events.ts`: an
/// ES module exporting `TypedEventSource` and `FetchEventSource`.
pub const EVENTS_SCRIPT: &str = include_str!("../static/js/chat-events.js");

#[sse_controller("/rooms")]
impl ChatController {
    /// The room's messages: what came after `Last-Event-ID` first, then live.
    /// Compressed where the client accepts it: a room's messages are public
    /// to it and carry no secret (see the README on BREACH).
    #[sse("/:room/events", retry = "1s", compress = true)]
    fn room_events(
        &self,
        Path(room): Path<String>,
        last_event_id: LastEventId,
    ) -> Result<impl Stream<Item = EncodedEvent>, StatusCode> {
        if !self.known_rooms.contains(&room) {
            return Err(StatusCode::NO_CONTENT);
        }
        Ok(self
            .rooms
            .subscribe_from(&room, last_event_id.as_deref())
            .take_until(self.streams_dropped()))
    }

    /// Several rooms on one stream, resumed exactly by one `Last-Event-ID`.
    /// `204 No Content` when a room does not exist or there are more than
    /// [`MAX_ROOMS_PER_STREAM`]. Compressed, as one room's stream is.
    #[sse("/events", retry = "1s", compress = true)]
    fn rooms_events(
        &self,
        Query(query): Query<RoomsQuery>,
        last_event_id: LastEventId,
    ) -> Result<impl Stream<Item = EncodedEvent>, StatusCode> {
        let rooms: Vec<String> = query.rooms.split(',').map(str::to_owned).collect();
        if rooms.len() > MAX_ROOMS_PER_STREAM
            || !rooms.iter().all(|room| self.known_rooms.contains(room))
        {
            return Err(StatusCode::NO_CONTENT);
        }
        Ok(self
            .rooms
            .subscribe_many(&rooms, last_event_id.as_deref())
            .take_until(self.streams_dropped()))
    }

    /// `GET /rooms`: the rooms there are.
    #[get("/")]
    fn list_rooms(&self) -> Json<Vec<String>> {
        Json(self.known_rooms.iter().cloned().collect())
    }

    /// `POST /rooms/{room}/messages` with `{"user": "...", "text": "..."}`.
    /// With an `Idempotency-Key` header, a repeat of the request (a client
    /// retrying after a timeout or a `504`) is posted once: it answers the
    /// first post's id with `"duplicate": true`.
    #[post("/:room/messages")]
    async fn post_message(
        &self,
        Path(room): Path<String>,
        idempotency: Option<IdempotencyKey>,
        Json(message): Json<ChatMessage>,
    ) -> Response {
        post_to_room(self, &room, message, idempotency.as_ref()).await
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
            sessions: direct::Sessions::new(direct::DEFAULT_SESSION_TTL),
        }
    }

    /// With sessions (for direct messages) that last `ttl` from login
    /// (default an hour).
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.sessions = direct::Sessions::new(ttl);
        self
    }

    /// Who is logged in.
    pub fn sessions(&self) -> &direct::Sessions {
        &self.sessions
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

    /// Resolves when [`drop_streams`](Self::drop_streams) is next called:
    /// what a stream is taken until.
    fn streams_dropped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut generation = self.stream_generation.subscribe();
        async move {
            let _ = generation.changed().await;
        }
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
            .route("/admin/announce", axum::routing::post(announce))
            .route(
                "/admin/expire-sessions",
                axum::routing::post(expire_sessions),
            )
            .with_state(self.clone());
        let direct = direct::DirectMessages {
            registry: self.rooms.clone(),
            sessions: self.sessions.clone(),
        };
        let script = |source: &'static str| {
            axum::routing::get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    source,
                )
            })
        };
        self.router()
            .merge(direct.router())
            .merge(admin)
            .route(
                "/",
                axum::routing::get(|| async { Html(include_str!("../static/index.html")) }),
            )
            .route("/js/chat.js", script(PAGE_SCRIPT))
            .route("/js/chat-events.js", script(EVENTS_SCRIPT))
            .layer(tower_http::limit::RequestBodyLimitLayer::new(
                MAX_BODY_BYTES,
            ))
    }
}

/// The operator, by the admin token (`Authorization: Bearer`). An extractor
/// of the request's head, so it is checked before any body is read: 403 when
/// no admin token is configured, 401 without the right one.
struct Admin;

impl axum::extract::FromRequestParts<ChatController> for Admin {
    type Rejection = StatusCode;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        chat: &ChatController,
    ) -> Result<Self, StatusCode> {
        check_admin(chat, &parts.headers).map(|()| Admin)
    }
}

/// `POST /admin/drop-streams`: 401 without the admin token, 403 when none is
/// configured.
async fn drop_streams(State(chat): State<ChatController>, _: Admin) -> StatusCode {
    chat.drop_streams();
    StatusCode::NO_CONTENT
}

/// `POST /admin/expire-sessions`: every session ends now (their streams
/// end, and reconnects get `401`).
async fn expire_sessions(State(chat): State<ChatController>, _: Admin) -> StatusCode {
    chat.sessions.expire_all();
    StatusCode::NO_CONTENT
}

/// What `POST /admin/announce` takes.
#[derive(Deserialize)]
struct Announcement {
    text: String,
}

/// `POST /admin/announce`: an announcement to every room's streams.
async fn announce(
    State(chat): State<ChatController>,
    _: Admin,
    Json(announcement): Json<Announcement>,
) -> Response {
    if announcement.text.chars().count() > MAX_TEXT_LEN {
        return (StatusCode::UNPROCESSABLE_ENTITY, "text too long\n").into_response();
    }
    let event = ChatEvent::Announcement {
        text: announcement.text,
    };
    match chat.rooms.broadcast(event).await {
        Ok(delivered) => Json(serde_json::json!({ "delivered": delivered })).into_response(),
        Err(error) => error.into_response(),
    }
}

/// 403 when no admin token is configured, 401 without the right one.
fn check_admin(chat: &ChatController, headers: &HeaderMap) -> Result<(), StatusCode> {
    let Some(admin_token) = chat.admin_token.as_deref() else {
        return Err(StatusCode::FORBIDDEN);
    };
    let given = bearer_token(headers);
    // Compared in time that does not depend on where the two differ.
    let matches = given.is_some_and(|given| {
        given.len() == admin_token.len()
            && given
                .bytes()
                .zip(admin_token.bytes())
                .fold(0, |diff, (a, b)| diff | (a ^ b))
                == 0
    });
    if matches {
        Ok(())
    } else {
        Err(StatusCode::UNAUTHORIZED)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
}

/// `422` unless `user` has 1 to [`MAX_USER_LEN`] characters and `text` at
/// most [`MAX_TEXT_LEN`]: what a message to a room or to a user must be.
#[allow(clippy::result_large_err)] // An error answer, made once per refusal.
fn check_message(user: &str, text: &str) -> Result<(), Response> {
    if user.is_empty() || user.chars().count() > MAX_USER_LEN || text.chars().count() > MAX_TEXT_LEN
    {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "a user of 1 to {MAX_USER_LEN} characters and a text of at most {MAX_TEXT_LEN}\n"
            ),
        )
            .into_response());
    }
    Ok(())
}

/// Checks and sends one message to a room; answers how many streams got it.
async fn post_to_room(
    chat: &ChatController,
    room: &String,
    message: ChatMessage,
    idempotency: Option<&IdempotencyKey>,
) -> Response {
    if !chat.known_rooms.contains(room) {
        return (StatusCode::NOT_FOUND, "no such room\n").into_response();
    }
    let user = message.user.trim();
    if let Err(refused) = check_message(user, &message.text) {
        return refused;
    }
    let message = ChatMessage {
        user: user.to_owned(),
        text: message.text,
    };
    let said = Said {
        room: room.clone(),
        user: message.user,
        text: message.text,
    };
    let event = ChatEvent::Said(said);
    let answer = match idempotency {
        Some(idempotency) => chat
            .rooms
            .send_idempotent(room, event, idempotency)
            .await
            .map(|sent| {
                serde_json::json!({
                    "delivered": sent.reached,
                    "id": sent.id,
                    "duplicate": sent.duplicate,
                })
            }),
        None => chat
            .rooms
            .send(room, event)
            .await
            .map(|delivered| serde_json::json!({ "delivered": delivered })),
    };
    match answer {
        Ok(answer) => (StatusCode::ACCEPTED, Json(answer)).into_response(),
        Err(error) => error.into_response(),
    }
}
