//! What the runtime reports through the [`metrics`] facade: the application
//! installs an exporter (Prometheus, StatsD, ...) and these appear; with none
//! installed every call is a no-op. Counted per frame written, not per event,
//! so the cost stays off the hot path.
//!
//! The metrics and their labels are listed in the crate docs ("Metrics").
//!
//! `route` is the route's path (`/events/user/{userId}`) for routes of the
//! controller macros, the name given to [`Sse::route_name`](crate::Sse::route_name),
//! or `unnamed`.

/// The `route` label of a stream that was given none.
pub(crate) const UNNAMED: &str = "unnamed";

pub(crate) fn stream_opened(route: &'static str) {
    metrics::counter!("sse_streams_opened_total", "route" => route).increment(1);
    metrics::gauge!("sse_streams_open", "route" => route).increment(1.0);
}

pub(crate) fn stream_closed(route: &'static str) {
    metrics::gauge!("sse_streams_open", "route" => route).decrement(1.0);
}

pub(crate) fn written(route: &'static str, events: u64, bytes: usize) {
    if events > 0 {
        metrics::counter!("sse_events_written_total", "route" => route).increment(events);
    }
    metrics::counter!("sse_bytes_written_total", "route" => route).increment(bytes as u64);
}

pub(crate) fn keep_alive(route: &'static str) {
    metrics::counter!("sse_keep_alives_total", "route" => route).increment(1);
}

pub(crate) fn replayed(events: usize) {
    if events > 0 {
        metrics::counter!("sse_replayed_events_total").increment(events as u64);
    }
}

/// A reset signal sent, by its reason (`ResetReason::as_str`).
pub(crate) fn reset(reason: &'static str) {
    metrics::counter!("sse_resets_total", "reason" => reason).increment(1);
}

pub(crate) fn lag_disconnect() {
    metrics::counter!("sse_lag_disconnects_total").increment(1);
}

pub(crate) fn write_stall() {
    metrics::counter!("sse_write_stalls_total").increment(1);
}

/// A send the registry refused, by kind (`BrokerError::kind`).
pub(crate) fn broker_error(kind: &'static str) {
    metrics::counter!("sse_broker_errors_total", "kind" => kind).increment(1);
}

/// `count` subscriptions the broker ended because of an error (their
/// clients reconnect and resume): `not_a_stream` (the key holds another
/// type) or `replay_failed` (the history could not be read).
#[cfg(feature = "redis")]
pub(crate) fn broker_ended_streams(reason: &'static str, count: usize) {
    metrics::counter!("sse_broker_ended_streams_total", "reason" => reason).increment(count as u64);
}

/// A Redis reader's read failed; it reconnects and checks for gaps.
#[cfg(feature = "redis")]
pub(crate) fn redis_reader_error() {
    metrics::counter!("sse_redis_reader_errors_total").increment(1);
}
