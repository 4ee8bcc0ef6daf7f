//! The NestJS SSE tutorial, in Rust.
//!
//! - `GET  /events/sse-stream`: `data: ping` every second.
//! - `GET  /events/user/{userId}`: that user's stream (needs their token), which
//!   resumes from `Last-Event-ID` after a reconnect, and ends when the token
//!   expires.
//! - `POST /events/user/{userId}`: pushes the body (text or JSON, at most
//!   16 KiB) to that user; needs that user's token or the admin token
//!   (`Authorization: Bearer ...`).
//! - `GET  /events/dynamic`: events of type `customEventName`.
//! - `POST /login/{userId}`: a token for that user's stream (cookie and JSON).
//! - `GET  /metrics`: the runtime's metrics in Prometheus format, when the app
//!   was given a recorder ([`EventsController::with_metrics`]).
//! - `GET  /`: a page that shows what arrives, using the browser's `EventSource`.

mod auth;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use sse_runtime::{
    EventType, IdempotencyKey, LastEventId, MessageEvent, Registry, Subscription, post, sse,
    sse_controller,
};
use tokio_stream::wrappers::IntervalStream;

pub use auth::{Bearer, Credentials, Tokens, is_secret};
pub use metrics_exporter_prometheus::PrometheusHandle;

/// The largest body `POST /events/user/{userId}` accepts.
pub const MAX_PUSH_BYTES: usize = 16 * 1024;

/// The tutorial's `EventsController`, whole, as in NestJS: its event streams
/// and the push beside them. Its services: the registry of per-user streams
/// and the tokens that guard them.
#[derive(Clone, Default)]
pub struct EventsController {
    users: Registry<String>,
    tokens: Tokens,
    /// The operator's credential for pushing to any user; none: only users
    /// push to themselves.
    admin_token: Option<Arc<str>>,
    /// What `GET /metrics` renders.
    metrics: Option<PrometheusHandle>,
}

#[sse_controller("/events")]
impl EventsController {
    /// `data: ping` every second.
    #[sse("/sse-stream")]
    fn sse_stream(&self) -> impl Stream<Item = MessageEvent> {
        let pings = every(Duration::from_secs(1)).map(|_| MessageEvent::new("ping"));
        self.users.until_shutdown(pings)
    }

    /// That user's stream: 404 for an id that cannot be a user, 401 without a
    /// token, 403 with another user's. A reconnecting browser's `Last-Event-ID`
    /// gets it what it missed first. The stream ends when the token expires;
    /// the browser's reconnect then gets 401 and stops.
    #[sse("/user/:userId")]
    async fn user_stream(
        &self,
        Path(user_id): Path<String>,
        credentials: Credentials,
        last_event_id: LastEventId,
    ) -> Result<Subscription, StatusCode> {
        if !is_valid_user_id(&user_id) {
            return Err(StatusCode::NOT_FOUND);
        }
        let expires = self.tokens.authorize(&credentials, &user_id)?;
        Ok(self
            .users
            .subscribe_from(&user_id, last_event_id.as_deref())
            .until(expires))
    }

    /// Pushes the body (text, or JSON by content type, at most 16 KiB) to
    /// that user: needs that user's token or the admin token.
    #[post("/user/:userId")]
    async fn push_to_user(
        &self,
        Path(user_id): Path<String>,
        credentials: Credentials,
        Bearer(bearer): Bearer,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        if let Err(refused) = self.may_push(&user_id, &credentials, bearer.as_deref()) {
            return refused.into_response();
        }
        push(&self.users, &user_id, &headers, body).await
    }

    /// Events of type `customEventName`, which a browser delivers to
    /// `addEventListener('customEventName', ...)` rather than `onmessage`.
    #[sse("/dynamic", keep_alive = "5s")]
    fn dynamic(&self) -> impl Stream<Item = MessageEvent> {
        // Checked by the compiler: no `Result` for a name known in advance.
        const CUSTOM: EventType = EventType::new("customEventName");
        let events = every(Duration::from_secs(1))
            .enumerate()
            .map(|(n, _)| MessageEvent::new(format!("dynamic event {n}")).with_type(CUSTOM));
        self.users.until_shutdown(events)
    }
}

impl EventsController {
    /// A controller with no open streams.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `tokens` instead of the default (one-hour tokens).
    pub fn with_tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// With `GET /metrics`, rendering the Prometheus recorder that `handle`
    /// belongs to (install it with `PrometheusBuilder::install_recorder`).
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// With an operator's credential that may push to any user. An empty
    /// token is ignored.
    pub fn with_admin_token(mut self, token: &str) -> Self {
        self.admin_token = (!token.is_empty()).then(|| Arc::from(token));
        self
    }

    /// The registry of per-user streams, to send from anywhere in the app.
    pub fn users(&self) -> &Registry<String> {
        &self.users
    }

    /// The tokens: who may read which stream.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The whole app: the controller's routes (its streams and the push), the
    /// login endpoint, the page, and `/metrics` when it has a recorder.
    pub fn app(self) -> Router {
        let tokens = self.tokens.clone();
        let metrics = self.metrics.clone();
        let app = self
            .router()
            .route(
                "/login/{userId}",
                axum::routing::post(move |Path(user_id): Path<String>| async move {
                    login(&tokens, &user_id)
                }),
            )
            .route(
                "/",
                axum::routing::get(|| async { Html(include_str!("../static/index.html")) }),
            );
        let app = match metrics {
            // In production, serve this on an internal port or behind a
            // credential: it names routes and counts clients.
            Some(handle) => app.route(
                "/metrics",
                axum::routing::get(move || async move { handle.render() }),
            ),
            None => app,
        };
        // No request here needs a larger body than a push.
        app.layer(DefaultBodyLimit::max(MAX_PUSH_BYTES))
    }
}

impl EventsController {
    /// Pushing to `user_id` needs that user's token or the admin token.
    fn may_push(
        &self,
        user_id: &str,
        credentials: &Credentials,
        bearer: Option<&str>,
    ) -> Result<(), StatusCode> {
        let is_admin = match (bearer, &self.admin_token) {
            (Some(given), Some(admin)) => is_secret(given, admin),
            _ => false,
        };
        if is_admin {
            return Ok(());
        }
        self.tokens.authorize(credentials, user_id).map(|_| ())
    }
}

/// The whole app with a fresh controller.
pub fn app() -> Router {
    EventsController::new().app()
}

/// Letters, digits, `-` and `_`, 1 to 64 of them.
pub fn is_valid_user_id(user_id: &str) -> bool {
    (1..=64).contains(&user_id.len())
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `POST /events/user/{userId}`: a JSON body (by content type) is sent as JSON
/// data, any other body as text. Answers how many open streams got it. In a
/// real app the server itself sends (`registry.send`); this endpoint stands in
/// for that, as in the tutorial. With an `Idempotency-Key` header, a repeat
/// of the request is sent once, and answers the first send's id.
async fn push(
    users: &Registry<String>,
    user_id: &str,
    headers: &HeaderMap,
    body: String,
) -> Response {
    if !is_valid_user_id(user_id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let idempotency = match IdempotencyKey::from_headers(headers) {
        Ok(idempotency) => idempotency,
        Err(invalid) => return invalid.into_response(),
    };
    let event = if is_json {
        match serde_json::from_str::<serde_json::Value>(&body)
            .map(|value| MessageEvent::json(&value))
        {
            // Re-serialised compactly: one data line whatever the body's layout.
            Ok(Ok(event)) => event,
            Ok(Err(error)) => {
                return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response();
            }
            Err(error) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("invalid JSON body: {error}\n"),
                )
                    .into_response();
            }
        }
    } else {
        MessageEvent::new(body)
    };
    let user = user_id.to_owned();
    let answer = match idempotency {
        Some(idempotency) => users
            .send_idempotent(&user, event, &idempotency)
            .await
            .map(|sent| {
                serde_json::json!({
                    "delivered": sent.reached,
                    "id": sent.id,
                    "duplicate": sent.duplicate,
                })
            }),
        None => users
            .send(&user, event)
            .await
            .map(|delivered| serde_json::json!({ "delivered": delivered })),
    };
    match answer {
        Ok(answer) => (StatusCode::ACCEPTED, axum::Json(answer)).into_response(),
        // 503 when nothing was sent, 504 when it may have been, 500 for an
        // event that could not be made.
        Err(error) => error.into_response(),
    }
}

/// `POST /login/{userId}`: no password, this is a demo; what matters is that a
/// stream needs the token of its own user.
fn login(tokens: &Tokens, user_id: &str) -> Response {
    if !is_valid_user_id(user_id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let token = tokens.issue(user_id);
    let cookie = format!("token={token}; Path=/; HttpOnly; SameSite=Strict");
    (
        [(header::SET_COOKIE, cookie)],
        axum::Json(serde_json::json!({ "user": user_id, "token": token })),
    )
        .into_response()
}

fn every(period: Duration) -> IntervalStream {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    IntervalStream::new(interval)
}
