//! Registry event ids (`<epoch>-<sequence>`) and the `Last-Event-ID` extractor.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use http::request::Parts;

/// The longest `Last-Event-ID` (header or `lastEventId` query parameter) read;
/// anything longer is treated as an id this server never issued.
/// Long enough for the combined id of a subscription over tens of keys
/// ([`Registry::subscribe_many`](crate::Registry::subscribe_many)).
pub const MAX_LAST_EVENT_ID_LEN: usize = 1024;

/// The id a client says it saw last: the `Last-Event-ID` header a browser sends
/// when it reconnects, or a `lastEventId` query parameter (for polyfills and
/// for the first connection of a page that kept the id itself).
///
/// Extracting never fails. A value that is too long or not UTF-8 is kept as an
/// unparseable id, so the registry answers it with its reset signal rather than
/// silently treating the client as new.
///
/// ```
/// use axum::extract::Path;
/// use futures_util::Stream;
/// use sse_runtime::{LastEventId, Registry, Subscription, sse, sse_controller};
///
/// #[derive(Clone)]
/// struct Rooms { registry: Registry<String> }
///
/// #[sse_controller("/rooms")]
/// impl Rooms {
///     #[sse("/:room")]
///     fn room(&self, Path(room): Path<String>, last: LastEventId) -> Subscription {
///         self.registry.subscribe_from(&room, last.as_deref())
///     }
/// }
/// # let _app: axum::Router = Rooms { registry: Registry::new() }.router();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastEventId(Option<String>);

const UNREADABLE: &str = "unreadable";

impl LastEventId {
    /// A `LastEventId` holding `id` (for tests and non-HTTP callers).
    pub fn new(id: Option<&str>) -> Self {
        LastEventId(id.map(bounded))
    }

    /// The id, if the client sent one.
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// `id`, or [`UNREADABLE`] when it is too long or holds a CR, LF or NUL: no
/// `id:` field can carry those (a browser never sends them back), so such a
/// value is a forged one and is never passed on, let alone echoed.
fn bounded(id: &str) -> String {
    if id.len() > MAX_LAST_EVENT_ID_LEN || id.contains(['\r', '\n', '\0']) {
        UNREADABLE.to_owned()
    } else {
        id.to_owned()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(header) = parts.headers.get("last-event-id") {
            return Ok(LastEventId(Some(match header.to_str() {
                Ok(id) => bounded(id),
                Err(_) => UNREADABLE.to_owned(),
            })));
        }
        let from_query = parts.uri.query().and_then(|query| {
            query.split('&').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                (name == "lastEventId").then(|| percent_decode(value))
            })
        });
        Ok(LastEventId(from_query.map(|id| bounded(&id))))
    }
}

/// Decodes `%XX` and `+`; an invalid escape or non-UTF-8 result is unreadable.
fn percent_decode(value: &str) -> String {
    if value.len() > MAX_LAST_EVENT_ID_LEN * 3 {
        return UNREADABLE.to_owned();
    }
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next(), bytes.next()];
                let digit = |d: Option<u8>| (d? as char).to_digit(16);
                match (digit(hex[0]), digit(hex[1])) {
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => return UNREADABLE.to_owned(),
                }
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| UNREADABLE.to_owned())
}

/// The id space of one registry: `<epoch>-<sequence>`. The epoch is random per
/// registry, so an id from an earlier run of the server is recognised as
/// unknown instead of being mistaken for a position in this run's history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdSpace {
    epoch: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParsedId {
    /// A sequence number of this registry.
    Ours(u64),
    /// Well formed, but from another registry (another run of the server).
    OtherEpoch,
    /// Not an id this library writes.
    Invalid,
}

impl IdSpace {
    pub(crate) fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS: different per process and per registry.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        IdSpace {
            epoch: hasher.finish() as u32,
        }
    }

    pub(crate) fn format(self, sequence: u64) -> String {
        format!("{:08x}-{sequence}", self.epoch)
    }

    pub(crate) fn parse(self, id: &str) -> ParsedId {
        let Some((epoch, sequence)) = id.split_once('-') else {
            return ParsedId::Invalid;
        };
        let epoch = match (epoch.len(), u32::from_str_radix(epoch, 16)) {
            (8, Ok(epoch)) => epoch,
            _ => return ParsedId::Invalid,
        };
        // Only canonical decimal (no sign, no leading zeros) is ours.
        let canonical = !sequence.is_empty()
            && sequence.bytes().all(|b| b.is_ascii_digit())
            && (sequence == "0" || !sequence.starts_with('0'));
        match sequence.parse::<u64>() {
            Ok(sequence) if canonical && epoch == self.epoch => ParsedId::Ours(sequence),
            Ok(_) if canonical => ParsedId::OtherEpoch,
            _ => ParsedId::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_garbage_is_classified() {
        let ids = IdSpace { epoch: 0xdead_beef };
        assert_eq!(ids.format(42), "deadbeef-42");
        assert_eq!(ids.parse("deadbeef-42"), ParsedId::Ours(42));
        assert_eq!(ids.parse("deadbeef-0"), ParsedId::Ours(0));
        assert_eq!(ids.parse("00000001-42"), ParsedId::OtherEpoch);
        for garbage in [
            "",
            "42",
            "-",
            "deadbeef-",
            "deadbeef-042",
            "deadbeef-+4",
            "deadbeef--1",
            "xyz-1",
            "deadbee-1",
            "deadbeef-99999999999999999999",
            "deadbeef-1-2",
            "dеadbeef-1",
        ] {
            assert_eq!(ids.parse(garbage), ParsedId::Invalid, "{garbage:?}");
        }
    }

    #[test]
    fn query_values_decode_and_bad_escapes_are_unreadable() {
        assert_eq!(percent_decode("a%2Db+c"), "a-b c");
        assert_eq!(percent_decode("%zz"), UNREADABLE);
        assert_eq!(percent_decode("%e9"), UNREADABLE);
        assert_eq!(percent_decode("%"), UNREADABLE);
    }

    #[tokio::test]
    async fn extractor_prefers_the_header_and_bounds_the_length() {
        async fn extract(uri: &str, header: Option<&str>) -> LastEventId {
            let mut request = http::Request::builder().uri(uri);
            if let Some(header) = header {
                request = request.header("last-event-id", header);
            }
            let (mut parts, ()) = request.body(()).unwrap().into_parts();
            LastEventId::from_request_parts(&mut parts, &())
                .await
                .unwrap()
        }
        assert_eq!(extract("/", None).await.as_deref(), None);
        assert_eq!(extract("/", Some("a-1")).await.as_deref(), Some("a-1"));
        assert_eq!(
            extract("/?lastEventId=b-2", Some("a-1")).await.as_deref(),
            Some("a-1")
        );
        assert_eq!(
            extract("/?x=1&lastEventId=b-2", None).await.as_deref(),
            Some("b-2")
        );
        let long = "x".repeat(MAX_LAST_EVENT_ID_LEN + 1);
        assert_eq!(extract("/", Some(&long)).await.as_deref(), Some(UNREADABLE));
        for forged in ["x%0Adata%0A%0A", "x%0D", "x%00", "s:x%0Adata"] {
            assert_eq!(
                extract(&format!("/?lastEventId={forged}"), None)
                    .await
                    .as_deref(),
                Some(UNREADABLE),
                "{forged}"
            );
        }
        assert_eq!(LastEventId::new(Some("a\nb")).as_deref(), Some(UNREADABLE));
        assert_eq!(
            extract(&format!("/?lastEventId={long}"), None)
                .await
                .as_deref(),
            Some(UNREADABLE)
        );
    }
}
