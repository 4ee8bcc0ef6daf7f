//! The baseline: plain axum as its docs show it. `axum::response::sse::Sse`
//! with `KeepAlive`, and a `tokio::sync::broadcast` channel for the topic.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use bench::{Fast, SUBSCRIBER_BUFFER, Small};
use futures_util::{Stream, StreamExt, stream};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

async fn subscribe(
    State(tx): State<broadcast::Sender<String>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = BroadcastStream::new(tx.subscribe())
        .filter_map(|message| async move { message.ok() })
        .map(|data| Ok(Event::default().data(data)));
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn publish(State(tx): State<broadcast::Sender<String>>, body: String) -> String {
    tx.send(body).unwrap_or(0).to_string()
}

async fn fast(Query(fast): Query<Fast>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = stream::iter(0..fast.n).map(|seq| {
        Ok(Event::default()
            .json_data(Small { seq, kind: "fast" })
            .unwrap())
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn ping() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let period = std::time::Duration::from_secs(1);
    let pings = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(period))
        .map(|_| Ok(Event::default().data("ping")));
    Sse::new(pings).keep_alive(KeepAlive::default())
}

#[tokio::main]
async fn main() {
    let (tx, _) = broadcast::channel::<String>(SUBSCRIBER_BUFFER);
    let app = axum::Router::new()
        .route("/events/broadcast", get(subscribe).post(publish))
        .route("/events/fast", get(fast))
        .route("/events/sse-stream", get(ping))
        .with_state(tx);
    bench::serve(app, bench::Server::Axum).await;
}
