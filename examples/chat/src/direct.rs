//! Direct messages: private streams, read with a login token sent in an
//! `Authorization` header (the generated module's fetch transport), never
//! in the URL, where it would end up in access logs.
//!
//! - `POST /login` with `{"user": "..."}`: a session for that user,
//!   `{"token": "...", "expires_in_ms": n}`. (An example: a real app checks
//!   a password or an identity provider here.)
//! - `GET /me/events` with `Authorization: Bearer <token>`: the user's direct
//!   messages, sent and received, resumed with `Last-Event-ID`. `401` without
//!   a live session. The stream ends when the session does, so the client's
//!   reconnect is asked again, and gets `401`: an expired token stops reading.
//! - `POST /users/{user}/messages` with `{"text": "..."}` and the sender's
//!   token: a direct message, to the recipient's and the sender's streams.
//! - `POST /admin/expire-sessions` (the admin token): every session ends now,
//!   as its time would end it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sse_runtime::typescript::TS;
use sse_runtime::{LastEventId, Registry, Subscription, post, sse, sse_controller};

use crate::{ChatEvent, MAX_USER_LEN, bearer_token, check_message};

/// How long a session lasts by default.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(60 * 60);
/// The most sessions held at once: logins past it are refused (`503`)
/// until some expire, so logging in in a loop cannot grow memory without
/// bound.
pub const MAX_SESSIONS: usize = 10_000;

/// A direct message, as its two streams carry it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, TS)]
#[ts(crate = "sse_runtime::typescript::ts_rs")]
pub struct Direct {
    /// Who sent it.
    pub from: String,
    /// Who it is for.
    pub to: String,
    /// What it says.
    pub text: String,
}

/// The logged-in users, by token.
#[derive(Clone)]
pub struct Sessions {
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    ttl: Duration,
    /// Bumped when every session is ended at once.
    ended: Arc<tokio::sync::watch::Sender<u64>>,
}

struct Session {
    user: String,
    expires: tokio::time::Instant,
}

impl Sessions {
    pub(crate) fn new(ttl: Duration) -> Sessions {
        Sessions {
            sessions: Arc::default(),
            ttl,
            ended: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// A new session for `user`: its token, or `None` when
    /// [`MAX_SESSIONS`] are live.
    fn start(&self, user: &str) -> Option<String> {
        let mut sessions = self.sessions.lock().unwrap();
        let now = tokio::time::Instant::now();
        if sessions.len() >= MAX_SESSIONS {
            // Expired sessions are dropped here, at the bound: below it they
            // cost at most that much memory.
            sessions.retain(|_, session| session.expires > now);
            if sessions.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let token = new_token();
        sessions.insert(
            token.clone(),
            Session {
                user: user.to_owned(),
                expires: now + self.ttl,
            },
        );
        Some(token)
    }

    /// The user of the request's `Authorization: Bearer` token, and when
    /// their session ends; `401` without a live one.
    fn check(
        &self,
        headers: &HeaderMap,
    ) -> Result<(String, impl Future<Output = ()> + Send + 'static), NotLoggedIn> {
        let token = bearer_token(headers);
        let now = tokio::time::Instant::now();
        let session = token.and_then(|token| {
            let sessions = self.sessions.lock().unwrap();
            sessions
                .get(token)
                .filter(|session| session.expires > now)
                .map(|session| (session.user.clone(), session.expires))
        });
        let Some((user, expires)) = session else {
            return Err(NotLoggedIn);
        };
        let mut ended = self.ended.subscribe();
        let over = async move {
            tokio::select! {
                () = tokio::time::sleep_until(expires) => {}
                _ = ended.changed() => {}
            }
        };
        Ok((user, over))
    }

    /// How many sessions are held (expired ones until the next login).
    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every session now: open streams end, and their reconnects get
    /// `401`.
    pub fn expire_all(&self) {
        self.sessions.lock().unwrap().clear();
        self.ended.send_modify(|generation| *generation += 1);
    }
}

/// A request without a live session's token: `401`, with
/// `WWW-Authenticate: Bearer`.
pub struct NotLoggedIn;

impl IntoResponse for NotLoggedIn {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "log in: POST /login\n",
        )
            .into_response()
    }
}

/// 128 random bits, hex.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The registry key of `user`'s direct messages: apart from the rooms.
fn inbox(user: &str) -> String {
    format!("@{user}")
}

/// `{"user": "..."}`.
#[derive(Deserialize)]
pub struct Login {
    user: String,
}

/// `{"text": "..."}`.
#[derive(Deserialize)]
pub struct DirectText {
    text: String,
}

/// The direct-message routes.
#[derive(Clone)]
pub struct DirectMessages {
    pub(crate) registry: Registry<String>,
    pub(crate) sessions: Sessions,
}

#[sse_controller("/")]
impl DirectMessages {
    /// `POST /login`: a session for the user.
    #[post("/login")]
    fn login(&self, Json(login): Json<Login>) -> Response {
        let user = login.user.trim();
        if user.is_empty() || user.chars().count() > MAX_USER_LEN {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("a user of 1 to {MAX_USER_LEN} characters\n"),
            )
                .into_response();
        }
        match self.sessions.start(user) {
            Some(token) => Json(serde_json::json!({
                "token": token,
                "expires_in_ms": self.sessions.ttl.as_millis() as u64,
            }))
            .into_response(),
            None => (StatusCode::SERVICE_UNAVAILABLE, "too many sessions\n").into_response(),
        }
    }

    /// `GET /me/events`: the session's user's direct messages, until the
    /// session ends.
    #[sse("/me/events", retry = "1s")]
    fn my_events(
        &self,
        headers: HeaderMap,
        last_event_id: LastEventId,
    ) -> Result<Subscription, NotLoggedIn> {
        let (user, session_over) = self.sessions.check(&headers)?;
        Ok(self
            .registry
            .subscribe_from(&inbox(&user), last_event_id.as_deref())
            .end_on(session_over))
    }

    /// `POST /users/{user}/messages`: a direct message from the session's
    /// user.
    #[post("/users/:user/messages")]
    async fn send_direct(
        &self,
        Path(to): Path<String>,
        headers: HeaderMap,
        Json(message): Json<DirectText>,
    ) -> Response {
        let from = match self.sessions.check(&headers) {
            Ok((from, _)) => from,
            Err(refused) => return refused.into_response(),
        };
        if let Err(refused) = check_message(&to, &message.text) {
            return refused;
        }
        let event = ChatEvent::Direct(Direct {
            from: from.clone(),
            to: to.clone(),
            text: message.text,
        });
        let mut inboxes = vec![inbox(&to)];
        if from != to {
            inboxes.push(inbox(&from));
        }
        for key in &inboxes {
            if let Err(error) = self.registry.send(key, event.clone()).await {
                return error.into_response();
            }
        }
        StatusCode::ACCEPTED.into_response()
    }
}
