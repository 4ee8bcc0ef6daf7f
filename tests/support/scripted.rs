//! A server that answers as a misbehaving one would, from a script: what
//! the clients' own rules are tested against (the Rust client in
//! `client.rs`, the generated fetch transport in `clients.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{StreamExt, stream};

use crate::TestServer;

/// What one request to the scripted server carried.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub authorization: Option<String>,
    pub last_event_id: Option<String>,
    pub accept: Option<String>,
    pub body: Bytes,
}

/// How the scripted server answers one request.
pub enum Answer {
    Status(StatusCode),
    /// A `text/event-stream` body, then the end.
    Stream(&'static str),
    /// These bytes, then the connection fails.
    Cut(&'static str),
    /// These bytes, then nothing, for ever.
    Silent(&'static str),
    /// `200` with another content type.
    Plain,
}

/// A server that answers its requests to `/stream` in order from a script,
/// and records each; past the script, `204`. It also serves the generated
/// module's compiled transport at `/transport.js`, for the Node client.
pub async fn scripted(answers: Vec<Answer>) -> (TestServer, Arc<Mutex<Vec<Seen>>>) {
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new()
        .route(
            "/transport.js",
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    chat::EVENTS_SCRIPT,
                )
            }),
        )
        .route(
            "/stream",
            axum::routing::any(move |method: Method, headers: HeaderMap, body: Bytes| {
                let answers = answers.clone();
                let record = record.clone();
                async move {
                    let text = |name: header::HeaderName| {
                        headers
                            .get(name)
                            .map(|value| value.to_str().unwrap().to_owned())
                    };
                    record.lock().unwrap().push(Seen {
                        method,
                        authorization: text(header::AUTHORIZATION),
                        last_event_id: text(header::HeaderName::from_static("last-event-id")),
                        accept: text(header::ACCEPT),
                        body,
                    });
                    let answer = answers.lock().unwrap().pop_front();
                    answer_with(answer.unwrap_or(Answer::Status(StatusCode::NO_CONTENT)))
                }
            }),
        );
    (TestServer::start(app).await, seen)
}

fn answer_with(answer: Answer) -> Response {
    let event_stream =
        |body: Body| ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response();
    match answer {
        Answer::Status(status) => status.into_response(),
        Answer::Stream(text) => event_stream(Body::from(text)),
        // The failure comes after a pause: hyper writes out what it holds
        // when the body has nothing ready, so the bytes reach the client.
        Answer::Cut(text) => event_stream(Body::from_stream(
            stream::iter([Ok(Bytes::from_static(text.as_bytes()))]).chain(stream::once(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(std::io::Error::other("cut"))
            })),
        )),
        Answer::Silent(text) => event_stream(Body::from_stream(
            stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(text.as_bytes()))])
                .chain(stream::pending()),
        )),
        Answer::Plain => "not a stream".into_response(),
    }
}
