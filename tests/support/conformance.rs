//! The conformance table (`conformance/cases.json`) and a server that plays it.
//!
//! Each case lists the events the server sends and the exact events a client
//! must see. The same table is run through eventsource-stream (Rust), the
//! browser's `EventSource` (headless Chromium) and httpx-sse (Python).
//!
//! `GET /conformance/{case}?run=R` streams the case. The first request of a run
//! gets the events and the stream ends; a reconnect gets `204 No Content`, which
//! makes a client stop, so a client that saw anything extra is caught. The
//! reconnect case instead answers a reconnect carrying `Last-Event-ID: 2` with
//! its remaining events. `GET /conformance/page` is the browser's test page;
//! with `&transport=fetch` it reads through the generated module's
//! `FetchEventSource` (served at `/conformance/transport.js`) instead of the
//! browser's `EventSource`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, stream};
use serde::Deserialize;
use serde_json::Value;
use sse_runtime::{AcceptEncoding, KeepAlive, MessageEvent, Sse};

/// The table, shared by every client.
pub const CASES_JSON: &str = include_str!("../conformance/cases.json");

#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    pub name: String,
    pub events: Vec<EventSpec>,
    #[serde(default)]
    pub after_reconnect: Vec<EventSpec>,
    #[serde(default)]
    pub reconnect: bool,
    pub keep_alive_ms: Option<u64>,
    pub split_bytes: Option<usize>,
    pub expect: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventSpec {
    data: Option<String>,
    json: Option<Value>,
    repeat: Option<Repeat>,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    comment: Option<String>,
    pause_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repeat {
    text: String,
    times: usize,
}

impl Repeat {
    pub fn build(&self) -> String {
        self.text.repeat(self.times)
    }
}

pub fn cases() -> Vec<Case> {
    serde_json::from_str(CASES_JSON).expect("conformance/cases.json parses")
}

impl EventSpec {
    /// The event to send, or `None` for a pause.
    fn to_event(&self) -> Option<MessageEvent> {
        if self.pause_ms.is_some() {
            return None;
        }
        let mut event = MessageEvent::default();
        if let Some(data) = &self.data {
            event = event.with_data(data.as_str());
        }
        if let Some(json) = &self.json {
            event = MessageEvent::json(json).expect("JSON value serialises");
        }
        if let Some(repeat) = &self.repeat {
            event = event.with_data(repeat.build());
        }
        if let Some(event_type) = &self.event {
            event = event
                .with_event_type(event_type.as_str())
                .expect("case event types are valid");
        }
        if let Some(id) = &self.id {
            event = event.with_id(id.as_str()).expect("case ids are valid");
        }
        if let Some(retry) = self.retry {
            event = event.with_retry(Duration::from_millis(retry));
        }
        if let Some(comment) = &self.comment {
            event = event.with_comment(comment.as_str());
        }
        Some(event)
    }
}

/// One event as a client saw it, in the shape every client reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub event_type: String,
    pub data: String,
    pub last_event_id: String,
    pub retry: Option<u64>,
}

impl From<sse_runtime::testing::Event> for Seen {
    /// An event as `sse_runtime`'s own clients (`testing`, `client`) report it.
    fn from(event: sse_runtime::testing::Event) -> Seen {
        Seen {
            event_type: event.event,
            data: event.data,
            last_event_id: event.id,
            retry: event.retry.map(|retry| retry.as_millis() as u64),
        }
    }
}

impl From<eventsource_stream::Event> for Seen {
    /// An event as eventsource-stream reports it.
    fn from(event: eventsource_stream::Event) -> Seen {
        Seen {
            event_type: event.event,
            data: event.data,
            last_event_id: event.id,
            retry: event.retry.map(|retry| retry.as_millis() as u64),
        }
    }
}

/// Compares what a client saw with the case's expectation. `check_retry` is
/// false for clients that do not expose the retry field (the browser).
pub fn check(case: &Case, seen: &[Seen], check_retry: bool) -> Result<(), String> {
    if seen.len() != case.expect.len() {
        return Err(format!(
            "{}: expected {} events, got {}: {:?}",
            case.name,
            case.expect.len(),
            seen.len(),
            seen.iter().map(|s| abbreviate(&s.data)).collect::<Vec<_>>()
        ));
    }
    for (n, (expected, seen)) in case.expect.iter().zip(seen).enumerate() {
        let field = |name: &str| {
            expected
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        if seen.event_type != field("type") {
            return Err(format!(
                "{} #{n}: type {:?}, expected {:?}",
                case.name,
                seen.event_type,
                field("type")
            ));
        }
        if seen.last_event_id != field("lastEventId") {
            return Err(format!(
                "{} #{n}: lastEventId {:?}, expected {:?}",
                case.name,
                seen.last_event_id,
                field("lastEventId")
            ));
        }
        let data_ok = if let Some(json) = expected.get("json") {
            serde_json::from_str::<Value>(&seen.data).ok().as_ref() == Some(json)
        } else if let Some(repeat) = expected.get("repeat") {
            let repeat: Repeat = serde_json::from_value(repeat.clone()).unwrap();
            seen.data == repeat.build()
        } else {
            seen.data == field("data")
        };
        if !data_ok {
            return Err(format!(
                "{} #{n}: data {:?} is not what was sent",
                case.name,
                abbreviate(&seen.data)
            ));
        }
        if check_retry {
            let expected_retry = expected.get("retry").and_then(Value::as_u64);
            if expected_retry.is_some() && seen.retry != expected_retry {
                return Err(format!(
                    "{} #{n}: retry {:?}, expected {expected_retry:?}",
                    case.name, seen.retry
                ));
            }
        }
    }
    Ok(())
}

/// What a client reported for one case, as `[{"type", "data", "lastEventId", "retry"?}]`.
pub fn seen_from_json(events: &Value) -> Vec<Seen> {
    let text = |event: &Value, key: &str| {
        event[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {event}"))
            .to_owned()
    };
    events
        .as_array()
        .unwrap_or_else(|| panic!("not a list of events: {events}"))
        .iter()
        .map(|event| Seen {
            event_type: text(event, "type"),
            data: text(event, "data"),
            last_event_id: text(event, "lastEventId"),
            retry: event.get("retry").and_then(Value::as_u64),
        })
        .collect()
}

/// Checks every case against what `client` saw for it, and fails the test
/// with every mismatch at once.
pub fn assert_all_cases(client: &str, check_retry: bool, mut seen: impl FnMut(&Case) -> Vec<Seen>) {
    let cases = cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| check(case, &seen(case), check_retry).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed with {client}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

/// What the server has played: each run's request count, and the
/// compressed responses by coding.
#[derive(Clone, Default)]
pub struct Runs {
    requests: Arc<Mutex<HashMap<(String, String), usize>>>,
    compressed: Arc<Mutex<HashMap<String, usize>>>,
}

impl Runs {
    /// Asserts that every case's stream went out compressed with `coding`
    /// (the split-bytes cases excepted: they write raw bytes, not `Sse`).
    pub fn assert_all_compressed_with(&self, coding: &str) {
        let compressed = self.compressed.lock().unwrap().get(coding).copied();
        let streamed = cases()
            .iter()
            .filter(|case| case.split_bytes.is_none())
            .count();
        assert!(
            compressed.unwrap_or(0) >= streamed,
            "{coding}: only {compressed:?} of {streamed} streams went out compressed"
        );
    }
}

#[derive(Deserialize)]
struct RunQuery {
    run: Option<String>,
    /// A short `retry:` first, so a browser's reconnect (answered 204) is quick.
    fast_retry: Option<u8>,
    /// `gzip` or `zstd`: the stream is compressed with that coding, if the
    /// client offers it (it is the only one the server considers).
    coding: Option<String>,
}

/// The server that plays the table.
pub fn app() -> Router {
    app_with_runs().0
}

/// The same, with what it records.
pub fn app_with_runs() -> (Router, Runs) {
    let runs = Runs::default();
    let app = Router::new()
        .route("/conformance/page", get(|| async { Html(PAGE) }))
        .route(
            "/conformance/transport.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    chat::EVENTS_SCRIPT,
                )
            }),
        )
        .route(
            "/conformance/cases.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], CASES_JSON) }),
        )
        .route("/conformance/{case}", get(play))
        .with_state(runs.clone());
    (app, runs)
}

async fn play(
    State(runs): State<Runs>,
    Path(name): Path<String>,
    Query(query): Query<RunQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(case) = cases().into_iter().find(|case| case.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let attempt = {
        let mut requests = runs.requests.lock().unwrap();
        let count = requests
            .entry((name, query.run.unwrap_or_default()))
            .or_default();
        *count += 1;
        *count
    };
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let specs = match (attempt, case.reconnect, last_event_id) {
        (1, _, _) => case.events.clone(),
        (2, true, Some("2")) => case.after_reconnect.clone(),
        _ => return StatusCode::NO_CONTENT.into_response(),
    };
    let fast_retry = query.fast_retry == Some(1);

    if let Some(split) = case.split_bytes {
        // The encoder's bytes, written a few at a time with a pause between.
        let mut wire = BytesMut::new();
        if fast_retry {
            MessageEvent::default()
                .with_retry(Duration::from_millis(50))
                .encode_into(&mut wire);
        }
        specs
            .iter()
            .filter_map(EventSpec::to_event)
            .for_each(|event| event.encode_into(&mut wire));
        let chunks: Vec<Bytes> = wire
            .freeze()
            .chunks(split)
            .map(Bytes::copy_from_slice)
            .collect();
        let body = stream::iter(chunks).then(|chunk| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, std::convert::Infallible>(chunk)
        });
        return (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response();
    }

    let events = stream::iter(specs).filter_map(|spec| async move {
        if let Some(ms) = spec.pause_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        spec.to_event()
    });
    let keep_alive = case.keep_alive_ms.map_or(KeepAlive::default(), |ms| {
        KeepAlive::every(Duration::from_millis(ms))
    });
    let response = Sse::new(events).keep_alive(keep_alive);
    let response = match &query.coding {
        Some(coding) => {
            let accept = only_coding(&headers, coding);
            if let Some(encoding) = accept.encoding() {
                *runs
                    .compressed
                    .lock()
                    .unwrap()
                    .entry(encoding.name().to_owned())
                    .or_default() += 1;
            }
            response.compress(accept)
        }
        None => response,
    };
    if fast_retry {
        response.retry(Duration::from_millis(50)).into_response()
    } else {
        response.into_response()
    }
}

/// What the client accepts, narrowed to `coding`: the chosen coding is
/// `coding` if the client offered it, and none otherwise.
fn only_coding(headers: &HeaderMap, coding: &str) -> AcceptEncoding {
    let offered = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|entry| entry.split(';').next().unwrap_or("").trim() == coding);
    let mut narrowed = HeaderMap::new();
    if let Ok(value) = header::HeaderValue::from_str(coding) {
        if offered {
            narrowed.insert(header::ACCEPT_ENCODING, value);
        }
    }
    AcceptEncoding::from_headers(&narrowed)
}

/// The browser's page: plays `?case=` with `EventSource` (or, with
/// `&transport=fetch`, the generated `FetchEventSource`), listening to every
/// event type the case expects, and records what arrives until the server's
/// 204 closes the source.
const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>conformance</title>
<script>
  const params = new URLSearchParams(location.search);
  const name = params.get('case');
  window.__events = [];
  window.__done = false;
  const transport = params.get('transport') === 'fetch'
    ? import('/conformance/transport.js').then((module) => module.FetchEventSource)
    : Promise.resolve(EventSource);
  Promise.all([fetch('/conformance/cases.json').then((r) => r.json()), transport]).then(([cases, Source]) => {
    const c = cases.find((c) => c.name === name);
    const coding = params.get('coding') ? `&coding=${params.get('coding')}` : '';
    const source = new Source(`/conformance/${name}?run=${params.get('run')}&fast_retry=1${coding}`);
    const record = (e) => window.__events.push({ type: e.type, data: e.data, lastEventId: e.lastEventId });
    source.onmessage = record;
    for (const t of new Set(c.expect.map((e) => e.type))) if (t !== 'message') source.addEventListener(t, record);
    source.onerror = () => { if (source.readyState === 2) window.__done = true; };
  });
</script>"#;
