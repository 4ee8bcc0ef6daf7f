//! Support for the code `#[sse_controller]` generates. Not public API: the
//! generated code names everything through `::sse_runtime::__private`, so an app
//! needs no direct dependency on axum or async-stream, and no name of the user
//! can shadow ours.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use futures_core::Stream;
use futures_util::StreamExt;

use crate::event::item::SseItem;
use crate::response::{KeepAlive, Sse};

pub use ::async_stream;
pub use ::axum;
pub use futures_util::StreamExt as __StreamExt;

/// What an `#[sse]` method must return. Exists to give a precise message on the
/// user's return type when it is not a stream of events.
#[diagnostic::on_unimplemented(
    message = "an #[sse] method must return a stream of events, found `{Self}`",
    label = "not a stream of SSE events",
    note = "return `impl Stream<Item = MessageEvent>` (or of `String`, `Json<T>`, `Result<_, E>`...), \
            or `Result<impl Stream<Item = ...>, E>` where `E: IntoResponse`"
)]
pub trait SseStream: Stream<Item: SseItem> {}
impl<S> SseStream for S where S: Stream<Item: SseItem> {}

/// What a plain route (`#[get]`, `#[post]`, ...) must return. Exists to give a
/// precise message on the user's return type when it is not a response.
#[diagnostic::on_unimplemented(
    message = "a #[get]/#[post]/... method must return a response, found `{Self}`",
    label = "not an axum response",
    note = "return anything `IntoResponse` (`String`, `Json<T>`, `StatusCode`, `Result<T, E>`, ...); \
            for a stream of events, mark the method #[sse] instead"
)]
pub trait PlainResponse: IntoResponse {}
impl<R: IntoResponse> PlainResponse for R {}

/// Answers a plain route: its response as is.
pub fn respond_plain<R: PlainResponse>(response: R) -> Response {
    response.into_response()
}

/// Type-checks a method's return value with the error on the user's span.
#[inline(always)]
pub fn check_stream<S: SseStream>(stream: S) -> S {
    stream
}

/// A `&self` method's return value that the route keeps after the call: it
/// must not borrow the controller. (Named for the compiler's note when it does.)
#[inline(always)]
pub fn a_named_return_type_must_not_borrow_self<T: 'static>(value: T) -> T {
    value
}

/// Type-checks a fallible method's return value with the error on the user's span.
#[inline(always)]
pub fn check_result<S: SseStream, E: IntoResponse>(result: Result<S, E>) -> Result<S, E> {
    result
}

/// A route option that can be left to the runtime's default, turned off, or set.
#[derive(Clone, Copy, Debug)]
pub enum Setting {
    /// Not given: the runtime's default.
    Default,
    /// `false`: off.
    Off,
    /// A duration, in milliseconds.
    Millis(u64),
}

/// The route's options from `#[sse(..., keep_alive = ..., retry = ...)]`.
#[derive(Clone, Copy, Debug)]
pub struct RouteOptions {
    /// The route's path, its name in metrics and logs.
    pub route: &'static str,
    /// The keep-alive interval.
    pub keep_alive: Setting,
    /// The `retry:` hint in milliseconds, if any.
    pub retry_ms: Option<u64>,
    /// The batch window.
    pub batch_window: Setting,
    /// The connection's write-stall timeout while this route streams.
    pub write_stall: Setting,
    /// `compress = true`: what the client accepts.
    pub compress: Option<CompressArg>,
}

/// The `Accept-Encoding` extractor of a `compress = true` route.
#[cfg(feature = "compression")]
pub use crate::AcceptEncoding as CompressArg;

/// Without the `compression` feature, a stand-in, so that a
/// `compress = true` route reports only [`__require_compression`]'s error.
#[cfg(not(feature = "compression"))]
#[derive(Clone, Copy, Debug)]
pub struct CompressArg;

#[cfg(not(feature = "compression"))]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CompressArg {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        _parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(CompressArg)
    }
}

/// Checks, where a route says `compress = true`, that the feature is on.
#[cfg(feature = "compression")]
#[doc(hidden)]
#[macro_export]
macro_rules! __require_compression {
    () => {};
}

/// Checks, where a route says `compress = true`, that the feature is on.
#[cfg(not(feature = "compression"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __require_compression {
    () => {
        ::core::compile_error!(
            "`compress = true` needs sse-runtime's `compression` feature: \
             sse-runtime = { version = \"…\", features = [\"compression\"] }"
        );
    };
}

impl RouteOptions {
    fn apply<S>(self, sse: Sse<S>) -> Sse<S>
    where
        S: Stream + Send + 'static,
        S::Item: SseItem,
    {
        let sse = sse.route_name(self.route);
        let sse = match self.keep_alive {
            Setting::Default => sse,
            Setting::Off => sse.keep_alive(KeepAlive::disabled()),
            Setting::Millis(ms) => sse.keep_alive(KeepAlive::every(Duration::from_millis(ms))),
        };
        let sse = match self.batch_window {
            Setting::Default => sse,
            Setting::Off => sse.batch_window(Duration::ZERO),
            Setting::Millis(ms) => sse.batch_window(Duration::from_millis(ms)),
        };
        let sse = match self.write_stall {
            Setting::Default => sse,
            Setting::Off => sse.write_stall_timeout(None),
            Setting::Millis(ms) => sse.write_stall_timeout(Duration::from_millis(ms)),
        };
        #[cfg(feature = "compression")]
        let sse = match self.compress {
            Some(accept) => sse.compress(accept),
            None => sse,
        };
        match self.retry_ms {
            Some(ms) => sse.retry(Duration::from_millis(ms)),
            None => sse,
        }
    }
}

/// A response being made: a type with no parameter, so that awaiting it
/// adds no error of its own to a bound `respond_stream` reports.
pub type Responding = Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// Streams an infallible method's events, once the stream is open (see
/// `response::opening`: a head that goes out says the stream is subscribed).
pub fn respond_stream<S>(stream: S, options: RouteOptions) -> Responding
where
    S: SseStream + Send + 'static,
{
    Box::pin(async move {
        let stream = crate::response::opening::opened(stream).await;
        options.apply(Sse::new(stream)).into_response()
    })
}

/// Answers a fallible method: its error response, or its events.
pub fn respond_result<S, E>(result: Result<S, E>, options: RouteOptions) -> Responding
where
    S: SseStream + Send + 'static,
    E: IntoResponse,
{
    match result {
        Ok(stream) => respond_stream(stream, options),
        Err(error) => Box::pin(std::future::ready(error.into_response())),
    }
}

/// What the generator of a fallible `&self` method yields: first whether the
/// method accepted the request, then its events. The generator owns the
/// controller handle that the method's stream borrows.
pub enum Step<I> {
    /// The method returned `Err`: answer with this response.
    Reject(Response),
    /// The method returned `Ok`: its events follow.
    Start,
    /// One event.
    Item(I),
}

impl<I> Step<I> {
    /// The `Reject` step for an error value.
    pub fn reject<E: IntoResponse>(error: E) -> Self {
        Step::Reject(error.into_response())
    }
}

/// Polls the generator's first step to decide the status, then streams the rest.
pub async fn respond_steps<G, I>(steps: G, options: RouteOptions) -> Response
where
    G: Stream<Item = Step<I>> + Send + 'static,
    I: SseItem,
{
    let mut steps = Box::pin(steps);
    match steps.next().await {
        Some(Step::Reject(response)) => response,
        Some(Step::Start) => respond_stream(Items { steps }, options).await,
        // The generator always yields `Reject` or `Start` first.
        Some(Step::Item(_)) | None => {
            tracing::error!("SSE route generator ended before deciding; answering 500");
            http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

struct Items<G> {
    steps: Pin<Box<G>>,
}

impl<G, I> Stream for Items<G>
where
    G: Stream<Item = Step<I>>,
{
    type Item = I;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<I>> {
        loop {
            return match self.steps.as_mut().poll_next(cx) {
                Poll::Ready(Some(Step::Item(item))) => Poll::Ready(Some(item)),
                Poll::Ready(Some(Step::Reject(_) | Step::Start)) => continue,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

// ---- #[derive(SseEvent)] ----

pub use ::bytes::BytesMut;
pub use ::serde;

/// What the data of a typed event must be. Exists to give a precise message
/// on the payload's type when it is not `Serialize`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the data of an SSE event: it does not implement `Serialize`",
    label = "not serialisable",
    note = "derive `serde::Serialize` for it (the event's data is its JSON)"
)]
pub trait EventData: serde::Serialize {}
impl<T: serde::Serialize + ?Sized> EventData for T {}

/// A typed event's data: `value` as JSON.
pub fn json_data<T: EventData + ?Sized>(
    value: &T,
) -> Result<crate::MessageEvent, crate::EventError> {
    crate::MessageEvent::json(value)
}

/// What the data of a typed event with `#[sse_event(decode)]` must be.
/// Exists to give a precise message on the payload's type when it is not
/// `Deserialize`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be decoded from an SSE event: it does not implement `Deserialize`",
    label = "not deserialisable",
    note = "derive `serde::Deserialize` for it, or drop `decode` from #[sse_event(...)]"
)]
pub trait DecodedEventData: serde::de::DeserializeOwned {}
impl<T: serde::de::DeserializeOwned> DecodedEventData for T {}

/// A typed event's data read back: `data` as JSON of `T`.
pub fn json_decode<T: DecodedEventData>(
    event_type: &str,
    data: &str,
) -> Result<T, crate::DecodeError> {
    serde_json::from_str(data).map_err(|error| crate::DecodeError::new(event_type, error))
}

/// `SseItem::encode_into` of a typed event.
pub fn encode_typed<T: crate::SseEvent>(
    value: &T,
    buf: &mut BytesMut,
) -> Result<(), crate::ItemError> {
    let event = value.to_event().map_err(crate::ItemError::new)?;
    crate::MessageEvent::encode_into(&event, buf);
    Ok(())
}

/// The hidden struct that carries a struct variant's fields as the event's
/// JSON object.
#[doc(hidden)]
#[macro_export]
macro_rules! __sse_payload_struct {
    ($($item:tt)*) => {
        #[derive(::sse_runtime::__private::serde::Serialize)]
        #[serde(crate = "::sse_runtime::__private::serde")]
        $($item)*
    };
}

/// The hidden struct a struct variant's fields are decoded into.
#[doc(hidden)]
#[macro_export]
macro_rules! __sse_owned_payload_struct {
    ($($item:tt)*) => {
        #[derive(::sse_runtime::__private::serde::Deserialize)]
        #[serde(crate = "::sse_runtime::__private::serde")]
        $($item)*
    };
}

/// The same for a type with `#[sse_event(typescript)]`: also `TS`.
#[cfg(feature = "typescript")]
#[doc(hidden)]
#[macro_export]
macro_rules! __sse_payload_struct_ts {
    ($($item:tt)*) => {
        #[derive(
            ::sse_runtime::__private::serde::Serialize,
            ::sse_runtime::typescript::TS
        )]
        #[serde(crate = "::sse_runtime::__private::serde")]
        #[ts(crate = "::sse_runtime::typescript::ts_rs")]
        $($item)*
    };
}

/// Without the feature, `__sse_typescript!` reports it; this only keeps
/// the rest of the expansion free of knock-on errors.
#[cfg(not(feature = "typescript"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __sse_payload_struct_ts {
    ($($item:tt)*) => { $crate::__sse_payload_struct! { $($item)* } };
}

/// The TypeScript description of a type with `#[sse_event(typescript)]`.
#[cfg(feature = "typescript")]
#[doc(hidden)]
#[macro_export]
macro_rules! __sse_typescript {
    ($($item:tt)*) => { $($item)* };
}

/// See the `typescript` version.
#[cfg(not(feature = "typescript"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __sse_typescript {
    ($($item:tt)*) => {
        ::core::compile_error!(
            "#[sse_event(typescript)] needs sse-runtime's `typescript` feature\n\n= help: \
             sse-runtime = { version = \"...\", features = [\"typescript\"] }"
        );
    };
}

pub use crate::__sse_owned_payload_struct as owned_payload_struct;
pub use crate::__sse_payload_struct as payload_struct;
pub use crate::__sse_payload_struct_ts as payload_struct_ts;
pub use crate::__sse_typescript as typescript;
