//! Controller attribute macros for [`sse-runtime`](https://docs.rs/sse-runtime).
//! Use them through `sse_runtime::{sse_controller, sse}`; the generated code
//! names everything through `sse_runtime`, so an app needs that one dependency.
//!
//! The crate is laid out like serde_derive and thiserror, a folder per macro:
//! `controller/` (the controller and its route attributes: `attr` parses the
//! attributes, `path` checks route paths, `model` lifts the `impl` block into
//! a typed model, `validate` checks it as a whole, `expand` generates code
//! from it, and `mod` runs that pipeline) and `event/` (`#[derive(SseEvent)]`,
//! the same steps). `errors` gathers every error with its span, for both.

mod controller;
mod errors;
mod event;

use proc_macro::TokenStream;

/// Turns an inherent `impl` block into an SSE controller: every method marked
/// `#[sse("/path")]` becomes a route at the controller's prefix plus its path,
/// and a generated `router(self)` method returns an `axum::Router` serving them.
///
/// ```text
/// #[sse_controller("/events")]                      // or "/" for no prefix
/// #[sse_controller("/events", state = AppState)]    // when methods take `State<T>`
/// ```
///
/// Without `state`, `router` is generic over the app's state, so it merges into
/// any `Router<S>`. The controller is moved into an `Arc` shared by all requests.
/// Methods marked `#[get]`, `#[post]`, `#[put]`, `#[patch]` or `#[delete]`
/// become plain routes beside the streams. Methods without a route
/// attribute are left as they are (helpers).
///
/// See the `sse_runtime` crate docs for a complete example.
#[proc_macro_attribute]
pub fn sse_controller(args: TokenStream, item: TokenStream) -> TokenStream {
    controller::sse_controller(args.into(), item.into()).into()
}

/// Marks a method of an `#[sse_controller]` impl block as an SSE route.
///
/// ```text
/// #[sse("/sse-stream")]
/// #[sse("/user/:userId")]                  // or "/user/{userId}"; needs a `Path` extractor
/// #[sse("/dynamic", keep_alive = "5s")]    // or `keep_alive = false`; default 15s
/// #[sse("/resume", retry = "3s")]          // sends `retry: 3000` first
/// #[sse("/ticks", batch_window = false)]    // or "5ms"; default 10ms
/// #[sse("/live", write_stall = "5s")]      // or `false`; default: the server's (30s)
/// #[sse("/chat", method = "post")]         // POST with a body extractor
/// ```
///
/// The method takes `&self` or no receiver, may be `async`, takes any axum
/// extractors, and returns `impl Stream<Item = ...>` or
/// `Result<impl Stream<Item = ...>, E>` with `E: IntoResponse` (answered before
/// streaming starts, for a 401 or 404).
///
/// An `impl Stream` returned from `&self` may borrow the controller: the route
/// keeps the controller alive while it streams. A named return type with no
/// `impl`, reference or lifetime in it (`-> Subscription`) is taken as owning
/// its data and streamed directly, with nothing in between.
#[proc_macro_attribute]
pub fn sse(args: TokenStream, item: TokenStream) -> TokenStream {
    controller::sse(args.into(), item.into()).into()
}

/// Marks a method of an `#[sse_controller]` impl block as a plain `GET` route,
/// beside its event streams, as NestJS's `@Get()` sits beside `@Sse()`.
///
/// ```text
/// #[get("/status")]               // GET <prefix>/status
/// #[post("/user/:userId")]        // same path syntax and extractors as #[sse]
/// ```
///
/// The method takes `&self` or no receiver, may be `async`, takes any axum
/// extractors, and returns anything `IntoResponse`. A method that returns a
/// stream of events is an `#[sse]` route instead. `#[post]`, `#[put]`,
/// `#[patch]` and `#[delete]` are the same for their methods.
#[proc_macro_attribute]
pub fn get(args: TokenStream, item: TokenStream) -> TokenStream {
    controller::route_attribute("get", args.into(), item.into()).into()
}

/// A plain `POST` route of an `#[sse_controller]`; see [`macro@get`].
#[proc_macro_attribute]
pub fn post(args: TokenStream, item: TokenStream) -> TokenStream {
    controller::route_attribute("post", args.into(), item.into()).into()
}

/// A plain `PUT` route of an `#[sse_controller]`; see [`macro@get`].
#[proc_macro_attribute]
pub fn put(args: TokenStream, item: TokenStream) -> TokenStream {
    controller::route_attribute("put", args.into(), item.into()).into()
}

/// A plain `PATCH` route of an `#[sse_controller]`; see [`macro@get`].
#[proc_macro_attribute]
pub fn patch(args: TokenStream, item: TokenStream) -> TokenStream {
    controller::route_attribute("patch", args.into(), item.into()).into()
}

/// A plain `DELETE` route of an `#[sse_controller]`; see [`macro@get`].
#[proc_macro_attribute]
pub fn delete(args: TokenStream, item: TokenStream) -> TokenStream {
    controller::route_attribute("delete", args.into(), item.into()).into()
}

/// Derives `sse_runtime::SseEvent`: the events of an enum (one type per
/// variant) or a struct (one type), with JSON data. See `sse_runtime::SseEvent`.
#[proc_macro_derive(SseEvent, attributes(sse_event, serde, ts))]
pub fn derive_sse_event(input: TokenStream) -> TokenStream {
    event::derive(input.into()).into()
}
