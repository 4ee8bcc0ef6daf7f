//! One stream for many keys: a subscription over several keys whose SSE id
//! holds every key's position, so one `Last-Event-ID` resumes them all.
//!
//! The id is `<set>:<id of key 1>_<id of key 2>_...`, where `<set>` is a
//! fingerprint of the keys (in order) and each part is the key's own id (with
//! `%`, `_` and `:` escaped). The first key's subscription carries the
//! broadcasts and the others' do not, so each broadcast arrives once.

use std::fmt::{Display, Write as _};
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};

use crate::event::EncodedEvent;
use crate::registry::broker::{Broker, ResetReason};
use crate::registry::reset;

/// The subscription `Registry::subscribe_many` returns.
pub(crate) fn subscribe_many<K>(
    broker: Arc<dyn Broker<K>>,
    keys: Vec<K>,
    last_event_id: Option<&str>,
) -> BoxStream<'static, EncodedEvent>
where
    K: Display + Send + Sync + 'static,
{
    let set = fingerprint(&keys);
    let resume = last_event_id.map(|id| parse(id, &set, keys.len()));
    let (starts, reset_all) = match resume {
        None => (vec![None; keys.len()], None),
        Some(Ok(ids)) => (ids.into_iter().map(Some).collect(), None),
        Some(Err(reason)) => (vec![None; keys.len()], Some(reason)),
    };
    // Each key's events tagged with its index, and `None` when its stream
    // ends. The first key's subscription carries the broadcasts.
    let tagged: Vec<Tagged> = keys
        .iter()
        .zip(&starts)
        .enumerate()
        .map(|(index, (key, start))| {
            let events = if index == 0 {
                broker.subscribe(key, start.as_deref())
            } else {
                broker.subscribe_key_only(key, start.as_deref())
            };
            events
                .map(Some)
                .chain(stream::once(async { None }))
                .map(move |item| (index, item))
                .boxed()
        })
        .collect();
    let mut combined = Combined {
        positions: starts
            .iter()
            .map(|s| s.clone().unwrap_or_default())
            .collect(),
        set,
        keys: keys.iter().map(ToString::to_string).collect(),
        reset_type: broker.reset_event_type().to_owned(),
    };
    Box::pin(async_stream::stream! {
        let mut tagged = tagged;
        let Some(early) = combined.take_resume_points(&mut tagged, &starts).await else {
            return;
        };
        yield combined.opening(reset_all);
        for (index, event) in early {
            if let Some(event) = combined.stamp(index, &event) {
                yield event;
            }
        }
        let mut merged = stream::select_all(tagged);
        // One key's stream ended (the lag policy, shutdown): end, and let the
        // client resume every key from the combined id.
        while let Some((index, Some(event))) = merged.next().await {
            if let Some(event) = combined.stamp(index, &event) {
                yield event;
            }
        }
    })
}

/// One key's events, tagged with its index; `None` once its stream ended.
type Tagged = BoxStream<'static, (usize, Option<EncodedEvent>)>;

/// The combined position of a multi-key stream.
struct Combined {
    /// Each key's id, as its broker stamped it.
    positions: Vec<String>,
    set: String,
    keys: Vec<String>,
    reset_type: String,
}

impl Combined {
    /// Every new key's resume point (its broker's first event): until each
    /// key has a position, the combined id could not resume it. Returns the
    /// events that came first instead (a reset), to yield after the
    /// opening; `None` if a key's stream ended first.
    async fn take_resume_points(
        &mut self,
        tagged: &mut [Tagged],
        starts: &[Option<String>],
    ) -> Option<Vec<(usize, EncodedEvent)>> {
        let mut early = Vec::new();
        for (index, start) in starts.iter().enumerate() {
            if start.is_some() {
                continue;
            }
            let (_, Some(first)) = tagged[index].next().await? else {
                return None;
            };
            self.positions[index] = first.id().unwrap_or_default().to_owned();
            if !first.is_resume_point() {
                early.push((index, first));
            }
        }
        Some(early)
    }

    /// The stream's first event: the combined resume point, or the reset
    /// signal when the client's combined id could not be read.
    fn opening(&self, reset_all: Option<ResetReason>) -> EncodedEvent {
        let id = format(&self.set, &self.positions);
        match reset_all {
            Some(reason) => reset::reset_signal(&self.reset_type, reason, None).encode_with_id(&id),
            None => EncodedEvent::resume_point(&id),
        }
    }

    /// Key `index`'s `event` with the combined id, after moving that key's
    /// position to the event's id; `None` for a resume point, which only
    /// moves it. A reset concerns that key alone, so it names the key.
    fn stamp(&mut self, index: usize, event: &EncodedEvent) -> Option<EncodedEvent> {
        if let Some(id) = event.id() {
            id.clone_into(&mut self.positions[index]);
        }
        if event.is_resume_point() {
            return None;
        }
        let id = format(&self.set, &self.positions);
        Some(match event.reset_reason() {
            Some(reason) => reset::reset_event(&self.reset_type, reason, Some(&self.keys[index]))
                .encode_with_id(&id),
            None => event.with_id(&id),
        })
    }
}

/// FNV-1a over the keys as written, so a combined id given for another set
/// of keys (or another order) is recognised.
fn fingerprint<K: Display>(keys: &[K]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for key in keys {
        for byte in key.to_string().bytes().chain([0]) {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
    }
    format!("{hash:08x}")
}

/// `<set>:<id>_<id>...`, each id escaped: `%`, `_`, `:` and every byte
/// outside printable ASCII as `%XX`, so the combined id is printable ASCII
/// whatever the keys' ids hold.
fn format(set: &str, positions: &[String]) -> String {
    let mut out =
        String::with_capacity(set.len() + 1 + positions.iter().map(|p| p.len() + 1).sum::<usize>());
    out.push_str(set);
    out.push(':');
    for (index, position) in positions.iter().enumerate() {
        if index > 0 {
            out.push('_');
        }
        for &byte in position.as_bytes() {
            if is_plain(byte) {
                out.push(char::from(byte));
            } else {
                // Writing into a String cannot fail.
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// Bytes a combined id carries as themselves: printable ASCII but the escape
/// and the two separators.
fn is_plain(byte: u8) -> bool {
    matches!(byte, 0x21..=0x7e) && !matches!(byte, b'%' | b'_' | b':')
}

/// The keys' ids in a combined id, or why it cannot resume this set.
///
/// The id comes from a client and its parts are written back in the stream's
/// first `id:` line, so anything [`format`] would not have written is
/// refused: a raw byte outside printable ASCII, a bad escape, or a part that
/// decodes to CR, LF or NUL (no broker issues such an id, and the `id:`
/// field cannot carry one).
fn parse(id: &str, set: &str, keys: usize) -> Result<Vec<String>, ResetReason> {
    let (given_set, rest) = id.split_once(':').ok_or(ResetReason::InvalidId)?;
    if !rest
        .bytes()
        .all(|byte| matches!(byte, 0x21..=0x7e) && byte != b':')
    {
        return Err(ResetReason::InvalidId);
    }
    if given_set != set {
        // Another set of keys, or another order: no position of this one.
        return Err(ResetReason::UnknownId);
    }
    let parts: Vec<&str> = rest.split('_').collect();
    if parts.len() != keys {
        return Err(ResetReason::InvalidId);
    }
    parts
        .into_iter()
        .map(|part| unescape(part).ok_or(ResetReason::InvalidId))
        .collect()
}

/// A part with its `%XX` escapes decoded; `None` for a bad escape, bytes that
/// are not UTF-8, or a CR, LF or NUL.
fn unescape(part: &str) -> Option<String> {
    let mut out = Vec::with_capacity(part.len());
    let mut bytes = part.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let digit = |d: Option<u8>| char::from(d?).to_digit(16);
            let (hi, lo) = (digit(bytes.next())?, digit(bytes.next())?);
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(byte);
        }
    }
    let text = String::from_utf8(out).ok()?;
    (!text.contains(['\r', '\n', '\0'])).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_combined_id_reads_back_what_it_writes_whatever_the_key_ids_hold() {
        let positions = vec![
            "e1-5".to_owned(),
            "17-3.18-0".to_owned(),
            "a_b:c%d".to_owned(),
        ];
        let id = format("0badcafe", &positions);
        assert!(!id[9..].contains(':'), "{id}");
        assert_eq!(parse(&id, "0badcafe", 3).unwrap(), positions);
        assert_eq!(parse(&id, "0badcafd", 3), Err(ResetReason::UnknownId));
        assert_eq!(parse(&id, "0badcafe", 2), Err(ResetReason::InvalidId));
        for bad in ["", "0badcafe", "0badcafe:%zz_1_2", "0badcafe:%5"] {
            assert!(parse(bad, "0badcafe", 3).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_resume_part_that_could_break_the_id_line_is_refused() {
        for bad in [
            "0badcafe:x\ndata\ndata\n\n",
            "0badcafe:x\r",
            "0badcafe:x\0",
            "0badcafe:%0A",
            "0badcafe:%0d",
            "0badcafe:%00",
            "0badcafe:a b",
            "0badcafe:%FF",
            "0badcafe:é",
            "0badcafe:a:b",
        ] {
            assert_eq!(
                parse(bad, "0badcafe", 1),
                Err(ResetReason::InvalidId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn any_key_id_round_trips_through_printable_ascii() {
        let positions = vec!["a b\té😀".to_owned(), "%_:".to_owned(), String::new()];
        let id = format("0badcafe", &positions);
        assert!(id.bytes().all(|b| matches!(b, 0x21..=0x7e)), "{id}");
        assert_eq!(parse(&id, "0badcafe", 3).unwrap(), positions);
    }

    #[test]
    fn a_stamped_event_keeps_its_fields_and_a_reset_names_its_key() {
        let mut combined = Combined {
            positions: vec![String::new(), "x".to_owned()],
            set: "set".to_owned(),
            keys: vec!["general".to_owned(), "random".to_owned()],
            reset_type: "reset".to_owned(),
        };
        let event = crate::MessageEvent::new("a\nb")
            .with_event_type("said")
            .unwrap()
            .encode_with_id("e1-5");
        assert_eq!(
            combined.stamp(0, &event).unwrap().as_bytes(),
            b"event: said\nid: set:e1-5_x\ndata: a\ndata: b\n\n"
        );
        let reset =
            reset::reset_signal("reset", ResetReason::HistoryExpired, None).encode_with_id("e1-9");
        assert_eq!(
            combined.stamp(0, &reset).unwrap().as_bytes(),
            b"event: reset\nid: set:e1-9_x\ndata: {\"reason\":\"history_expired\",\"key\":\"general\"}\n\n"
        );
        // An application event of the reset type is not a reset: untouched.
        let lookalike = crate::MessageEvent::new("{\"reason\":\"mine\"}")
            .with_event_type("reset")
            .unwrap()
            .encode_with_id("e1-10");
        assert_eq!(
            combined.stamp(1, &lookalike).unwrap().as_bytes(),
            b"event: reset\nid: set:e1-9_e1-10\ndata: {\"reason\":\"mine\"}\n\n"
        );
        let point = EncodedEvent::resume_point("e1-11");
        assert!(combined.stamp(1, &point).is_none());
        assert_eq!(combined.positions, ["e1-9", "e1-11"]);
    }
}
