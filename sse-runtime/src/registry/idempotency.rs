//! Sends written exactly once: an idempotency key per send, as Centrifugo's
//! publish API has and the IETF `Idempotency-Key` header draft describes.
//!
//! A publisher that got no answer ([`BrokerError::OutcomeUnknown`](crate::BrokerError::OutcomeUnknown))
//! cannot tell whether its event was written. Retrying with the same key
//! is safe: the broker remembers each key it wrote for
//! [`RegistryConfig::idempotency_ttl`](crate::RegistryConfig::idempotency_ttl),
//! and a repeat writes nothing and answers the first send's id.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The header a client names its request with: `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// A client's name for one send, so that repeating the send (after a
/// timeout, a dropped connection, a `504`) writes it once: 1 to 64 visible
/// ASCII characters (a UUID fits), which is also what keeps a flood of
/// them small.
///
/// As an axum extractor, `Option<IdempotencyKey>` reads the
/// `Idempotency-Key` header (the draft's quotes around the value are
/// optional), and a malformed one is refused with `400`:
///
/// ```
/// use axum::{Router, routing::post};
/// use sse_runtime::{BrokerError, IdempotencyKey, MessageEvent, Registry};
///
/// async fn publish(
///     registry: Registry<String>,
///     idempotency: Option<IdempotencyKey>,
///     text: String,
/// ) -> Result<String, BrokerError> {
///     let room = "general".to_owned();
///     Ok(match idempotency {
///         Some(idempotency) => {
///             let sent = registry.send_idempotent(&room, MessageEvent::new(text), &idempotency).await?;
///             sent.id
///         }
///         None => registry.send(&room, MessageEvent::new(text)).await?.to_string(),
///     })
/// }
/// # let _ = publish;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Box<str>);

/// Why a string is not an [`IdempotencyKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key is 1 to 64 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// The most bytes an idempotency key holds.
    pub const MAX_LEN: usize = 64;

    /// `key`, if it is 1 to [`MAX_LEN`](Self::MAX_LEN) visible ASCII
    /// characters (`!` to `~`).
    pub fn new(key: &str) -> Result<IdempotencyKey, InvalidIdempotencyKey> {
        let valid = (1..=Self::MAX_LEN).contains(&key.len())
            && key.bytes().all(|byte| byte.is_ascii_graphic());
        if valid {
            Ok(IdempotencyKey(key.into()))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of a request's `Idempotency-Key` header: `None` without
    /// one, an error for a malformed one. The draft's structured-field
    /// quotes (`"…"`) are taken off.
    pub fn from_headers(
        headers: &http::HeaderMap,
    ) -> Result<Option<IdempotencyKey>, InvalidIdempotencyKey> {
        let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
            return Ok(None);
        };
        let value = value.to_str().map_err(|_| InvalidIdempotencyKey)?.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|value| value.strip_suffix('"'))
            .unwrap_or(value);
        IdempotencyKey::new(unquoted).map(Some)
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl axum::response::IntoResponse for InvalidIdempotencyKey {
    fn into_response(self) -> axum::response::Response {
        (http::StatusCode::BAD_REQUEST, format!("{self}\n")).into_response()
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = InvalidIdempotencyKey;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        IdempotencyKey::from_headers(&parts.headers)
    }
}

/// What an idempotent send did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sent {
    /// The event's id: the first send's, for a repeat. It is the id
    /// subscribers see, except on Redis once a subscriber has also seen
    /// broadcasts: its ids are then `<this id>.<broadcast id>`.
    pub id: String,
    /// Whether this was a repeat, which wrote and delivered nothing.
    pub duplicate: bool,
    /// How many subscriptions of this instance it reached (0 for a repeat).
    pub reached: usize,
}

impl Sent {
    pub(crate) fn new(id: String, duplicate: bool, reached: usize) -> Sent {
        Sent {
            id,
            duplicate,
            reached,
        }
    }
}

/// The idempotency keys the in-memory broker wrote, with the ids they got:
/// each for the TTL, at most `max` at once (the oldest forgotten first).
pub(crate) struct IdempotencyRecords<K> {
    ids: HashMap<(K, IdempotencyKey), String>,
    /// In the order written, which is the order they expire in.
    written: VecDeque<(Instant, K, IdempotencyKey)>,
    ttl: Duration,
    max: usize,
}

impl<K: Hash + Eq + Clone> IdempotencyRecords<K> {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        IdempotencyRecords {
            ids: HashMap::new(),
            written: VecDeque::new(),
            ttl,
            max: max.max(1),
        }
    }

    /// The id written under `key` and `idempotency_key`, if remembered.
    pub(crate) fn get(
        &mut self,
        key: &K,
        idempotency_key: &IdempotencyKey,
        now: Instant,
    ) -> Option<String> {
        self.forget_expired(now);
        self.ids
            .get(&(key.clone(), idempotency_key.clone()))
            .cloned()
    }

    /// Remembers that `key` and `idempotency_key` were written as `id`.
    pub(crate) fn insert(
        &mut self,
        key: &K,
        idempotency_key: &IdempotencyKey,
        id: String,
        now: Instant,
    ) {
        while self.written.len() >= self.max {
            self.forget_oldest();
        }
        self.ids.insert((key.clone(), idempotency_key.clone()), id);
        self.written
            .push_back((now, key.clone(), idempotency_key.clone()));
    }

    fn forget_expired(&mut self, now: Instant) {
        while self
            .written
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) >= self.ttl)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, key, idempotency_key)) = self.written.pop_front() {
            self.ids.remove(&(key, idempotency_key));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_1_to_64_characters() {
        assert!(IdempotencyKey::new("3f2a9c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b").is_ok());
        for bad in ["", "a b", "line\nbreak", "é", &"x".repeat(65)] {
            assert_eq!(
                IdempotencyKey::new(bad),
                Err(InvalidIdempotencyKey),
                "{bad:?}"
            );
        }
        let mut headers = http::HeaderMap::new();
        assert_eq!(IdempotencyKey::from_headers(&headers), Ok(None));
        headers.insert(IDEMPOTENCY_KEY_HEADER, "\"abc\"".parse().unwrap());
        assert_eq!(
            IdempotencyKey::from_headers(&headers)
                .unwrap()
                .unwrap()
                .as_str(),
            "abc"
        );
        headers.insert(IDEMPOTENCY_KEY_HEADER, "\"\"".parse().unwrap());
        assert!(IdempotencyKey::from_headers(&headers).is_err());
    }

    #[test]
    fn records_expire_and_stay_within_their_count() {
        let key = |name: &str| IdempotencyKey::new(name).unwrap();
        let start = Instant::now();
        let mut records = IdempotencyRecords::new(Duration::from_secs(60), 3);
        records.insert(&"room", &key("a"), "1".into(), start);
        assert_eq!(records.get(&"room", &key("a"), start), Some("1".into()));
        assert_eq!(records.get(&"other", &key("a"), start), None, "per key");
        for (n, name) in ["b", "c", "d"].into_iter().enumerate() {
            records.insert(&"room", &key(name), n.to_string(), start);
        }
        assert_eq!(records.len(), 3, "the oldest forgotten past the count");
        assert_eq!(records.get(&"room", &key("a"), start), None);
        let later = start + Duration::from_secs(61);
        assert_eq!(records.get(&"room", &key("d"), later), None, "expired");
        assert_eq!(records.len(), 0);
    }
}
