//! Server-Sent Events for [axum], the way NestJS's `@Sse()` feels, with an
//! encoder that cannot be tricked into injecting fields.
//!
//! The NestJS tutorial's controller, in Rust:
//!
//! ```
//! use std::time::Duration;
//! use futures_util::{Stream, StreamExt};
//! use sse_runtime::{MessageEvent, sse, sse_controller};
//! use tokio_stream::wrappers::IntervalStream;
//!
//! #[derive(Clone)]
//! struct EventsController;
//!
//! #[sse_controller("/events")]
//! impl EventsController {
//!     /// `GET /events/sse-stream`: `data: ping` every second.
//!     #[sse("/sse-stream")]
//!     fn sse_stream(&self) -> impl Stream<Item = MessageEvent> {
//!         IntervalStream::new(tokio::time::interval(Duration::from_secs(1)))
//!             .map(|_| MessageEvent::new("ping"))
//!     }
//! }
//!
//! let app: axum::Router = EventsController.router();
//! ```
//!
//! - [`MessageEvent`] is the event (data as text or JSON, event type, id,
//!   retry, comment); [`SseItem`] lists what else a stream may yield.
//! - [`Sse`] is the response, usable from any axum handler without the macros.
//! - [`Registry`] holds per-user and per-topic streams: subscribe, send,
//!   broadcast, replay after a reconnect ([`LastEventId`]), over a pluggable
//!   [`Broker`] (in memory by default).
//! - [`sse_controller`] and [`sse`] turn an `impl` block into axum routes.
//! - `testing` (feature `testing`) drives a `Router` in-process and reads its
//!   events as values, for tests without a socket.
//! - `client` (feature `client`) reads a server's typed events from Rust
//!   ([`FromEvent`]), reconnecting and resuming as a browser does.
//! - [`serve`] runs an app over HTTP/1.1 (and, with the `tls` feature, over
//!   TLS with HTTP/2) with less memory per open stream
//!   than `axum::serve`, and with the limits and timeouts that keep a
//!   misbehaving client from taking it down; [`shutdown_signal`] resolves on
//!   Ctrl-C or SIGTERM.
//!
//! # Metrics
//!
//! The runtime reports through the [`metrics`](https://docs.rs/metrics)
//! facade; install any exporter and these appear (with none, they cost
//! nothing). Every stream also runs in a `tracing` span `sse_stream` (with
//! its `route` and a `stream` number), inside its connection's span
//! `connection` (with its `peer`) under [`serve`], in which its open, close,
//! replay, lag and write-stall events are logged.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `sse_streams_open` | gauge | `route` | event streams open now |
//! | `sse_streams_opened_total` | counter | `route` | event streams opened |
//! | `sse_events_written_total` | counter | `route` | events handed to the connection |
//! | `sse_bytes_written_total` | counter | `route` | bytes of those events |
//! | `sse_keep_alives_total` | counter | `route` | keep-alive comments sent |
//! | `sse_replayed_events_total` | counter | | events replayed after a `Last-Event-ID` |
//! | `sse_resets_total` | counter | `reason` | reset signals sent |
//! | `sse_lag_disconnects_total` | counter | | subscribers ended for falling behind |
//! | `sse_write_stalls_total` | counter | | connections closed because their client stopped reading |
//! | `sse_broker_errors_total` | counter | `kind` | sends the registry refused (`unavailable`, `shut_down`, `invalid_event`) |
//! | `sse_broker_ended_streams_total` | counter | `reason` | subscriptions the broker ended on an error (`not_a_stream`, `replay_failed`); each is also logged |
//! | `sse_redis_reader_errors_total` | counter | | Redis reader reads that failed (it reconnects and checks for gaps) |
#![deny(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
mod event;
#[cfg(feature = "redis")]
mod redis;
mod registry;
mod response;
mod server;
mod sync;
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "typescript")]
pub mod typescript;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use event::id::{LastEventId, MAX_LAST_EVENT_ID_LEN};
pub use event::item::{ItemError, SseItem};
pub use event::typed::{DecodeError, FromEvent, IntoEvent, SseEvent};
pub use event::{EncodedEvent, EventError, EventField, EventType, MessageEvent};
#[cfg(feature = "redis")]
pub use redis::{RedisBroker, RedisConnectError};
pub use registry::broker::{Broker, BrokerError, Key, LagPolicy, RegistryConfig, ResetReason};
pub use registry::idempotency::{
    IDEMPOTENCY_KEY_HEADER, IdempotencyKey, InvalidIdempotencyKey, Sent,
};
pub use registry::memory::MemoryBroker;
pub use registry::{Registry, Subscription};
#[cfg(feature = "compression")]
pub use response::accept_encoding::{AcceptEncoding, Encoding};
pub use response::{KeepAlive, Sse};
pub use server::limits::default_max_connections;
pub use server::shutdown::shutdown_signal;
#[cfg(feature = "tls")]
pub use server::tls::{TlsConfig, TlsError};
pub use server::write_stall::{
    DEFAULT_WRITE_STALL_TIMEOUT, MIN_WRITE_PROGRESS, WriteStallIo, WriteStallListener,
};
pub use server::{Serve, serve};
#[doc(inline)]
pub use sse_macros::{SseEvent, delete, get, patch, post, put, sse, sse_controller};
