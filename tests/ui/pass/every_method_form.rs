//! Every supported method form: with and without `&self`, sync and async,
//! plain and `Result` returns, every option, extractors in any number.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use futures_util::{Stream, StreamExt, stream};
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct EventsController {
    name: String,
}

#[sse_controller("/events")]
impl EventsController {
    #[sse("/sync-no-self")]
    fn sync_no_self() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/sync-self")]
    fn sync_self(&self) -> impl Stream<Item = MessageEvent> {
        // Borrows the controller: the edition-2024 capture the macro must handle.
        stream::iter([MessageEvent::new(self.name.as_str())])
    }

    #[sse("/async-no-self")]
    async fn async_no_self() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/async-self")]
    async fn async_self(&self) -> impl Stream<Item = MessageEvent> + '_ {
        stream::iter([MessageEvent::new(self.name.clone())])
    }

    #[sse("/result-no-self/:id")]
    fn result_no_self(Path(id): Path<u32>) -> Result<impl Stream<Item = MessageEvent>, StatusCode> {
        if id == 0 { Err(StatusCode::NOT_FOUND) } else { Ok(stream::empty()) }
    }

    #[sse("/result-self/{id}")]
    async fn result_self(&self, Path(id): Path<String>) -> Result<impl Stream<Item = String>, (StatusCode, String)> {
        if id.is_empty() {
            return Err((StatusCode::BAD_REQUEST, "empty".into()));
        }
        Ok(stream::iter([format!("{}: {id}", self.name)]))
    }

    #[sse("/many/:a/:b", keep_alive = "5s", retry = "3s")]
    fn many(
        &self,
        Path((a, b)): Path<(String, u8)>,
        Query(query): Query<HashMap<String, String>>,
        headers: HeaderMap,
    ) -> impl Stream<Item = String> {
        let _ = (query, headers);
        stream::iter([format!("{a}{b}")])
    }

    #[sse("/no-batching", batch_window = false)]
    fn no_batching() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/short-batches", batch_window = "2ms", keep_alive = "1s")]
    fn short_batches() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/compressed", compress = true, retry = "1s")]
    fn compressed() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/compressed-with-a-body", compress = true, method = "post")]
    fn compressed_with_a_body(body: String) -> impl Stream<Item = MessageEvent> {
        stream::iter([MessageEvent::new(body)])
    }

    #[sse("/plain", compress = false)]
    fn plain() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/never-cut", write_stall = false)]
    fn never_cut() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/cut-early", write_stall = "5s", batch_window = "2ms")]
    fn cut_early() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/no-keep-alive", keep_alive = false)]
    fn no_keep_alive() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/default-keep-alive", keep_alive = true, method = "get")]
    fn default_keep_alive() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    #[sse("/chat", method = "post")]
    async fn chat(&self, Json(prompt): Json<serde_json::Value>) -> impl Stream<Item = MessageEvent> {
        stream::iter([prompt.to_string()]).map(MessageEvent::new)
    }

    #[sse("/chat", method = "GET")]
    fn chat_history() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }

    fn not_a_route(&self) -> &str {
        &self.name
    }
}

#[derive(Clone)]
struct Root;

#[sse_controller("/")]
impl Root {
    #[sse("/")]
    fn root() -> impl Stream<Item = MessageEvent> {
        stream::empty()
    }
}

fn main() {
    let controller = EventsController { name: "n".into() };
    let _ = controller.not_a_route();
    let _app: axum::Router = controller.router().merge(Root.router());
}
