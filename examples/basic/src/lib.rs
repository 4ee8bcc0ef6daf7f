//! The NestJS SSE tutorial, in Rust.
//!
//! - `GET  /events/sse-stream`: `data: ping` every second.
//! - `GET  /events/user/{userId}`: that user's stream.
//! - `POST /events/user/{userId}`: pushes the body (text or JSON) to every open
//!   stream of that user.
//! - `GET  /events/dynamic`: events of type `customEventName`.
//! - `GET  /`: a page that shows what arrives, using the browser's `EventSource`.

mod users;

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};
use sse_runtime::{EventError, MessageEvent, sse, sse_controller};
use tokio_stream::wrappers::IntervalStream;

pub use users::UserChannels;

/// The tutorial's `EventsController`: its services are the per-user channels.
#[derive(Clone, Default)]
pub struct EventsController {
    users: UserChannels,
}

#[sse_controller("/events")]
impl EventsController {
    /// `data: ping` every second.
    #[sse("/sse-stream")]
    fn sse_stream(&self) -> impl Stream<Item = MessageEvent> {
        every(Duration::from_secs(1)).map(|_| MessageEvent::new("ping"))
    }

    /// That user's stream: what `POST /events/user/{userId}` sends. An id that
    /// cannot be a user is answered `404 Not Found` before any streaming starts.
    #[sse("/user/:userId")]
    async fn user_stream(
        &self,
        Path(user_id): Path<String>,
    ) -> Result<impl Stream<Item = MessageEvent>, StatusCode> {
        if !users::is_valid_user_id(&user_id) {
            return Err(StatusCode::NOT_FOUND);
        }
        Ok(self.users.subscribe(&user_id))
    }

    /// Events of type `customEventName`, which a browser delivers to
    /// `addEventListener('customEventName', ...)` rather than `onmessage`.
    #[sse("/dynamic", keep_alive = "5s")]
    fn dynamic(&self) -> impl Stream<Item = Result<MessageEvent, EventError>> {
        every(Duration::from_secs(1)).enumerate().map(|(n, _)| {
            MessageEvent::new(format!("dynamic event {n}")).with_event_type("customEventName")
        })
    }
}

impl EventsController {
    /// A controller with no open streams.
    pub fn new() -> Self {
        Self::default()
    }

    /// The per-user channels, for pushing from elsewhere in the app.
    pub fn users(&self) -> &UserChannels {
        &self.users
    }
}

/// The whole app: the controller's SSE routes, the push endpoint and the page.
pub fn app() -> Router {
    let controller = EventsController::new();
    let users = controller.users().clone();
    controller
        .router()
        .route(
            "/events/user/{userId}",
            post(
                move |Path(user_id): Path<String>, headers: HeaderMap, body: String| async move {
                    push(&users, &user_id, &headers, body)
                },
            ),
        )
        .route(
            "/",
            get(|| async { Html(include_str!("../static/index.html")) }),
        )
}

/// `POST /events/user/{userId}`: a JSON body (by content type) is sent as JSON
/// data, any other body as text. Answers how many open streams got it.
fn push(
    users: &UserChannels,
    user_id: &str,
    headers: &HeaderMap,
    body: String,
) -> axum::response::Response {
    if !users::is_valid_user_id(user_id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let event = if is_json {
        match serde_json::from_str::<serde_json::Value>(&body) {
            // Re-serialised compactly: one data line whatever the body's layout.
            Ok(value) => MessageEvent::json(&value).expect("a parsed JSON value serialises"),
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
    let delivered = users.send(user_id, event);
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "delivered": delivered })),
    )
        .into_response()
}

fn every(period: Duration) -> IntervalStream {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    IntervalStream::new(interval)
}
