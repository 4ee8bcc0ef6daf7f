//! One stream for many keys: a subscription over several keys whose SSE id
//! holds every key's position, so one `Last-Event-ID` resumes them all.
//!
//! The id is `<set>:<id of key 1>_<id of key 2>_...`, where `<set>` is a
//! fingerprint of the keys (in order) and each part is the key's own id (with
//! `%`, `_` and `:` escaped). The first key's subscription carries the
//! broadcasts and the others' do not, so each broadcast arrives once.

use std::fmt::Display;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};

use crate::event::encode;
use crate::event::{EncodedEvent, MessageEvent};
use crate::registry::broker::{Broker, ResetReason};
use crate::telemetry;

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
    let streams: Vec<BoxStream<'static, EncodedEvent>> = keys
        .iter()
        .zip(&starts)
        .enumerate()
        .map(|(index, (key, start))| {
            if index == 0 {
                broker.subscribe(key, start.as_deref())
            } else {
                broker.subscribe_key_only(key, start.as_deref())
            }
        })
        .collect();
    let names: Vec<String> = keys
        .iter()
        .map(|key| serde_json::to_string(&key.to_string()).unwrap_or_default())
        .collect();
    let reset_type = broker.reset_event_type().to_owned();
    Box::pin(async_stream::stream! {
        let mut positions: Vec<String> = starts.iter().map(|s| s.clone().unwrap_or_default()).collect();
        // Each item tagged with its key, and `None` when a key's stream ends.
        let mut tagged: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(index, s)| s.map(Some).chain(stream::once(async { None })).map(move |item| (index, item)).boxed())
            .collect();
        // Every new key's resume point first: until each key has a position,
        // the combined id could not resume it.
        let mut early = Vec::new();
        for (index, start) in starts.iter().enumerate() {
            if start.is_some() {
                continue;
            }
            match tagged[index].next().await {
                Some((_, Some(first))) => {
                    positions[index] = id_of(&first).unwrap_or_default().to_owned();
                    if !first.is_resume_point() {
                        early.push((index, first));
                    }
                }
                _ => return,
            }
        }
        let combined = format(&set, &positions);
        match reset_all {
            Some(reason) => {
                telemetry::reset(reason);
                let data = format!("{{\"reason\":\"{}\"}}", reason.as_str());
                yield MessageEvent::new(data)
                    .with_event_type(reset_type.as_str())
                    .unwrap_or_else(|_| MessageEvent::new(""))
                    .encode_with_id(&combined);
            }
            None => yield EncodedEvent::resume_point(&combined),
        }
        for (index, event) in early {
            if let Some(id) = id_of(&event) {
                positions[index] = id.to_owned();
            }
            yield restamp(&event, &format(&set, &positions), &reset_type, &names[index]);
        }
        let mut merged = stream::select_all(tagged);
        while let Some((index, item)) = merged.next().await {
            // One key's stream ended (the lag policy, shutdown): end, and
            // let the client resume every key from the combined id.
            let Some(event) = item else { return };
            if let Some(id) = id_of(&event) {
                positions[index] = id.to_owned();
            }
            if event.is_resume_point() {
                continue;
            }
            yield restamp(&event, &format(&set, &positions), &reset_type, &names[index]);
        }
    })
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
                out.push_str(&format!("%{byte:02X}"));
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

/// The `id:` of an encoded event: the line this crate writes for it.
fn id_of(event: &EncodedEvent) -> Option<&str> {
    let text = std::str::from_utf8(event.as_bytes()).ok()?;
    text.split('\n').find_map(|line| line.strip_prefix("id: "))
}

/// `event` with the combined id in place of its key's; a reset signal also
/// names its key (`{"reason":"...","key":"..."}`), since it concerns that
/// key only.
fn restamp(event: &EncodedEvent, combined: &str, reset_type: &str, key_json: &str) -> EncodedEvent {
    let bytes = event.as_bytes();
    let body = bytes.strip_suffix(b"\n\n").unwrap_or(bytes);
    let is_reset = body
        .split(|&b| b == b'\n')
        .any(|line| line.strip_prefix(b"event: ") == Some(reset_type.as_bytes()));
    let mut out = BytesMut::with_capacity(bytes.len() + combined.len() + key_json.len() + 16);
    for line in body.split(|&b| b == b'\n') {
        if line.starts_with(b"id: ") {
            continue;
        }
        match line
            .strip_prefix(b"data: {\"reason\":")
            .filter(|_| is_reset)
        {
            Some(rest) if rest.ends_with(b"}") => {
                out.extend_from_slice(b"data: {\"reason\":");
                out.extend_from_slice(&rest[..rest.len() - 1]);
                out.extend_from_slice(b",\"key\":");
                out.extend_from_slice(key_json.as_bytes());
                out.extend_from_slice(b"}");
            }
            _ => out.extend_from_slice(line),
        }
        out.extend_from_slice(b"\n");
    }
    encode::write_field(&mut out, b"id", combined);
    out.extend_from_slice(b"\n");
    EncodedEvent::from_trusted(out.freeze())
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
    fn a_restamped_event_keeps_its_fields_and_a_reset_names_its_key() {
        let event = MessageEvent::new("a\nb")
            .with_event_type("said")
            .unwrap()
            .encode_with_id("e1-5");
        let restamped = restamp(&event, "set:e1-5_x", "reset", "\"general\"");
        assert_eq!(
            restamped.as_bytes(),
            b"event: said\ndata: a\ndata: b\nid: set:e1-5_x\n\n"
        );
        let reset = MessageEvent::new("{\"reason\":\"history_expired\"}")
            .with_event_type("reset")
            .unwrap()
            .encode_with_id("e1-9");
        assert_eq!(
            restamp(&reset, "set:e1-9_x", "reset", "\"general\"").as_bytes(),
            b"event: reset\ndata: {\"reason\":\"history_expired\",\"key\":\"general\"}\nid: set:e1-9_x\n\n"
        );
    }
}
