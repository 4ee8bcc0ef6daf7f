//! A generic controller, and one that declares the app state its methods read.

use axum::extract::State;
use futures_util::{Stream, stream};
use sse_runtime::{MessageEvent, sse, sse_controller};

#[derive(Clone)]
struct Generic<T> {
    value: T,
}

#[sse_controller("/generic")]
impl<T> Generic<T>
where
    T: ToString + Clone + Send + Sync + 'static,
{
    #[sse("/value")]
    fn value(&self) -> impl Stream<Item = MessageEvent> {
        stream::iter([MessageEvent::new(self.value.to_string())])
    }
}

#[derive(Clone)]
struct AppState {
    motd: String,
}

#[derive(Clone)]
struct WithState;

#[sse_controller("/state", state = AppState)]
impl WithState {
    #[sse("/motd")]
    async fn motd(State(state): State<AppState>) -> impl Stream<Item = String> {
        stream::iter([state.motd])
    }
}

fn main() {
    let _app: axum::Router = Generic { value: 3u8 }
        .router()
        .merge(WithState.router().with_state(AppState { motd: "hi".into() }));
}
