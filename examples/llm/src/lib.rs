//! An LLM-style token stream, as chat assistants serve them:
//!
//! - `POST /completions` with `{"prompt": "..."}` answers with the reply's
//!   tokens as typed server-sent events ([`Completion`]: `event: token`
//!   with the token as a JSON string), then `event: done`. `EventSource`
//!   cannot POST, so the page reads the stream through the generated
//!   module's fetch transport (`static/completion-events.ts`, from
//!   [`typescript_module`]), typed by the same Rust enum.
//! - Cancelling (the page's button aborts the fetch; any client closing the
//!   connection) drops the stream on the server, which stops generating: no
//!   token is produced for a reader that left.
//! - `GET /status`: how many generations are running.
//! - `GET /`: the page.
//!
//! The "model" is a stand-in that echoes the prompt word by word at a steady
//! pace, so the example runs anywhere; a real one would sit behind the same
//! stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use futures_util::Stream;
use serde::Deserialize;
use sse_runtime::{SseEvent, get, sse, sse_controller};

/// The events of a completion.
#[derive(Debug, Clone, PartialEq, Eq, SseEvent)]
#[sse_event(rename_all = "snake_case", typescript, decode)]
pub enum Completion {
    /// `token`: the reply's next piece, as a JSON string.
    Token(String),
    /// `done`: the reply is complete, and the stream ends.
    Done,
}

/// The browser side of [`Completion`], as committed in
/// `static/completion-events.ts` (a test keeps the two equal).
pub fn typescript_module() -> String {
    sse_runtime::typescript::module::<Completion>("CompletionEvents")
}

/// The page's script and the generated module, compiled by `tsc` from
/// `static/llm.ts` and `static/completion-events.ts` (a test keeps them
/// current).
const PAGE_SCRIPT: &str = include_str!("../static/js/llm.js");
const EVENTS_SCRIPT: &str = include_str!("../static/js/completion-events.js");

/// The longest prompt accepted, in characters.
pub const MAX_PROMPT_CHARS: usize = 4_000;
/// The largest request body read (413 past it): a prompt of the longest
/// length, every character JSON-escaped at worst (`\uXXXX`), with room for
/// the framing. Axum's default would read 2 MB for it.
pub const MAX_BODY_BYTES: usize = 6 * MAX_PROMPT_CHARS + 256;

/// The completion endpoint and its bookkeeping.
#[derive(Clone)]
pub struct Completions {
    /// Generations running now; a generation counts until its stream is dropped.
    running: Arc<AtomicUsize>,
    /// Tokens generated so far, by every generation.
    generated: Arc<AtomicUsize>,
    /// The pause between two tokens.
    pace: Duration,
}

/// `{"prompt": "..."}`.
#[derive(Deserialize)]
pub struct Prompt {
    /// What to complete.
    pub prompt: String,
}

/// Counts a generation as running while it lives.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[sse_controller("/")]
impl Completions {
    /// The reply's tokens, one event each, then `done`. Generation happens
    /// as the stream is read: when the client goes away the stream is
    /// dropped and nothing more is generated.
    #[sse(
        "/completions",
        method = "post",
        keep_alive = false,
        batch_window = false
    )]
    fn complete(&self, Json(prompt): Json<Prompt>) -> impl Stream<Item = Completion> + use<> {
        let words: Vec<String> = prompt
            .prompt
            .chars()
            .take(MAX_PROMPT_CHARS)
            .collect::<String>()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        self.running.fetch_add(1, Ordering::SeqCst);
        let running = Running(Arc::clone(&self.running));
        let generated = Arc::clone(&self.generated);
        let pace = self.pace;
        futures_util::stream::unfold((0, words, running), move |(next, words, running)| {
            let generated = Arc::clone(&generated);
            async move {
                if next > words.len() {
                    return None;
                }
                if next == words.len() {
                    return Some((Completion::Done, (next + 1, words, running)));
                }
                tokio::time::sleep(pace).await;
                generated.fetch_add(1, Ordering::SeqCst);
                let token = if next == 0 {
                    words[next].clone()
                } else {
                    format!(" {}", words[next])
                };
                Some((Completion::Token(token), (next + 1, words, running)))
            }
        })
    }

    /// `{"running": n, "generated": n}`.
    #[get("/status")]
    fn status(&self) -> Json<serde_json::Value> {
        Json(serde_json::json!({
            "running": self.running(),
            "generated": self.generated(),
        }))
    }

    /// The page.
    #[get("/")]
    fn page() -> Html<&'static str> {
        Html(include_str!("../static/index.html"))
    }

    /// The page's script.
    #[get("/js/llm.js")]
    fn page_script() -> impl IntoResponse {
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            PAGE_SCRIPT,
        )
    }

    /// The generated module the page imports.
    #[get("/js/completion-events.js")]
    fn events_script() -> impl IntoResponse {
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            EVENTS_SCRIPT,
        )
    }
}

impl Completions {
    /// The whole app: the routes, with request bodies bounded by
    /// [`MAX_BODY_BYTES`].
    pub fn app(self) -> axum::Router {
        self.router()
            .layer(tower_http::limit::RequestBodyLimitLayer::new(
                MAX_BODY_BYTES,
            ))
    }

    /// Tokens one word apart by `pace`.
    pub fn new(pace: Duration) -> Self {
        Completions {
            running: Arc::default(),
            generated: Arc::default(),
            pace,
        }
    }

    /// Generations running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.generated.load(Ordering::SeqCst)
    }
}
