//! The reset signal, built in one place for every broker and for the
//! multi-key stream.

use crate::event::{EventType, MessageEvent};
use crate::registry::broker::ResetReason;
use crate::telemetry;

/// The reset signal for `reason` (counted in the metrics): an event of type
/// `event_type` whose data is `{"reason":"<reason>"}`, or, when it concerns
/// one key of a multi-key stream, `{"reason":"<reason>","key":"<key>"}`.
///
/// `event_type` comes from [`RegistryConfig::reset_event_type`], which
/// refuses a line break, so it is always accepted; were it not, the signal
/// still goes out, as type `reset`, rather than as an untyped event.
///
/// [`RegistryConfig::reset_event_type`]: crate::RegistryConfig::reset_event_type
pub(crate) fn reset_signal(
    event_type: &str,
    reason: ResetReason,
    key: Option<&str>,
) -> MessageEvent {
    telemetry::reset(reason.as_str());
    reset_event(event_type, reason.as_str(), key)
}

/// As [`reset_signal`], not counted: the same signal again, given the key it
/// concerns by the multi-key stream that carries it.
pub(crate) fn reset_event(
    event_type: &str,
    reason: &'static str,
    key: Option<&str>,
) -> MessageEvent {
    let data = match key {
        None => format!("{{\"reason\":\"{reason}\"}}"),
        Some(key) => {
            let key = serde_json::Value::from(key);
            format!("{{\"reason\":\"{reason}\",\"key\":{key}}}")
        }
    };
    let event = MessageEvent::new(data);
    match event.clone().with_event_type(event_type) {
        Ok(typed) => typed,
        Err(_) => event.with_type(const { EventType::new("reset") }),
    }
    .marked_as_reset(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_names_its_reason_and_its_key_as_json() {
        let plain = reset_signal("reset", ResetReason::HistoryExpired, None);
        assert_eq!(
            plain.to_bytes(),
            "event: reset\ndata: {\"reason\":\"history_expired\"}\n\n"
        );
        let keyed = reset_signal("gone", ResetReason::Lagged, Some("a\"b\n"));
        assert_eq!(
            keyed.to_bytes(),
            "event: gone\ndata: {\"reason\":\"lagged\",\"key\":\"a\\\"b\\n\"}\n\n"
        );
    }
}
