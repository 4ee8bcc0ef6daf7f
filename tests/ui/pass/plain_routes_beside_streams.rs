//! A whole controller, as in NestJS: plain handlers of every method beside
//! the event streams, sharing paths, receivers and extractors.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, delete, get, patch, post, put, sse, sse_controller};

#[derive(Clone)]
struct Notifications {
    greeting: String,
}

#[sse_controller("/notifications")]
impl Notifications {
    #[sse("/stream/:user")]
    fn stream(&self, Path(user): Path<String>) -> impl Stream<Item = MessageEvent> {
        stream::iter([MessageEvent::new(format!("{} {user}", self.greeting))])
    }

    #[get("/status")]
    async fn status(&self) -> String {
        self.greeting.clone()
    }

    #[post("/stream/:user")]
    async fn notify(Path(user): Path<String>, Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
        Json(serde_json::json!({ "user": user, "body": body }))
    }

    #[put("/settings")]
    fn replace_settings() -> StatusCode {
        StatusCode::NO_CONTENT
    }

    #[patch("/settings")]
    fn update_settings() {}

    #[delete("/stream/{user}")]
    fn forget(Path(_user): Path<String>) -> Result<StatusCode, (StatusCode, &'static str)> {
        Ok(StatusCode::NO_CONTENT)
    }
}

fn main() {
    let _app: axum::Router = Notifications { greeting: "hi".into() }.router();
}
