//! The chaos run's clients, over HTTP to random live instances:
//! publishers that post in sequence and retry with their idempotency key,
//! and subscribers that drop and reconnect with `Last-Event-ID`, parsing
//! the stream as a browser does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::random::Random;

/// A post the server acknowledged (`202`).
#[derive(Debug, Clone)]
pub struct Acked {
    pub publisher: usize,
    pub room: String,
    pub seq: u64,
    pub at: Instant,
}

/// What a subscriber saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Message { publisher: usize, seq: u64 },
    Reset,
}

/// One subscriber's record, shared with the run while it goes.
#[derive(Debug)]
pub struct SubscriberLog {
    pub room: String,
    pub seen: Vec<(Seen, Instant)>,
    pub connected: bool,
    pub connections: usize,
    /// What happened on the wire, for the report of a silent gap: each
    /// connection (instance, `Last-Event-ID`), each event's id, each end.
    pub trace: Vec<(Instant, String)>,
}

impl SubscriberLog {
    pub fn new(room: String) -> Arc<Mutex<SubscriberLog>> {
        Arc::new(Mutex::new(SubscriberLog {
            room,
            seen: Vec::new(),
            connected: false,
            connections: 0,
            trace: Vec::new(),
        }))
    }
}

fn pick_live(live: &Mutex<Vec<u16>>, random: &mut Random) -> Option<u16> {
    let live = live.lock().unwrap();
    (!live.is_empty()).then(|| *random.pick(&live))
}

/// Posts `0, 1, 2, …` to `room` as user `p<index>` until `stop`, each
/// until acknowledged (retried with its idempotency key, on any live
/// instance) or 60 s have passed. The acknowledged posts, and how many it
/// gave up on.
pub async fn publish(
    index: usize,
    room: String,
    live: Arc<Mutex<Vec<u16>>>,
    stop: watch::Receiver<bool>,
    every: Duration,
    mut random: Random,
) -> (Vec<Acked>, usize) {
    let client = reqwest::Client::new();
    let (mut acked, mut gave_up) = (Vec::new(), 0);
    let mut seq = 0;
    while !*stop.borrow() {
        let idempotency_key = format!("p{index}-{seq}");
        let began = Instant::now();
        loop {
            if began.elapsed() > Duration::from_secs(60) {
                gave_up += 1;
                break;
            }
            let Some(port) = pick_live(&live, &mut random) else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let post = client
                .post(format!("http://127.0.0.1:{port}/rooms/{room}/messages"))
                .header("idempotency-key", &idempotency_key)
                .json(&serde_json::json!({ "user": format!("p{index}"), "text": seq.to_string() }))
                .send();
            match tokio::time::timeout(Duration::from_secs(10), post).await {
                Ok(Ok(response)) if response.status() == 202 => {
                    acked.push(Acked {
                        publisher: index,
                        room: room.clone(),
                        seq,
                        at: Instant::now(),
                    });
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        seq += 1;
        tokio::time::sleep(every).await;
    }
    (acked, gave_up)
}

/// Follows `room` until `stop`: each connection to a random live instance
/// is held for 0.3 to 3 s, then dropped, and the next resumes with the
/// last event ID, as `EventSource` does.
pub async fn subscribe(
    log: Arc<Mutex<SubscriberLog>>,
    live: Arc<Mutex<Vec<u16>>>,
    mut stop: watch::Receiver<bool>,
    mut random: Random,
) {
    let room = log.lock().unwrap().room.clone();
    let client = reqwest::Client::new();
    let mut parser = Parser::default();
    while !*stop.borrow() {
        let Some(port) = pick_live(&live, &mut random) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut request = client.get(format!("http://127.0.0.1:{port}/rooms/{room}/events"));
        if let Some(id) = &parser.last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = match tokio::time::timeout(Duration::from_secs(5), request.send()).await {
            Ok(Ok(response)) if response.status() == 200 => response,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        {
            let mut log = log.lock().unwrap();
            log.connected = true;
            log.connections += 1;
            let line = format!(
                "connected to :{port} with Last-Event-ID {:?}",
                parser.last_event_id
            );
            log.trace.push((Instant::now(), line));
        }
        parser.reconnected();
        let hold =
            tokio::time::sleep(random.between(Duration::from_millis(300), Duration::from_secs(3)));
        tokio::pin!(hold);
        let mut body = response.bytes_stream();
        loop {
            tokio::select! {
                chunk = body.next() => match chunk {
                    Some(Ok(bytes)) => {
                        let seen = parser.feed(&bytes);
                        let now = Instant::now();
                        let mut log = log.lock().unwrap();
                        log.seen.extend(seen.iter().filter_map(|(seen, _)| Some(((*seen)?, now))));
                        log.trace.extend(seen.into_iter().map(|(seen, id)| (now, format!("{seen:?} id {id:?}"))));
                    }
                    other => {
                        let line = format!("ended by the server ({:?})", other.map(|chunk| chunk.err()));
                        log.lock().unwrap().trace.push((Instant::now(), line));
                        break;
                    }
                },
                () = &mut hold => {
                    log.lock().unwrap().trace.push((Instant::now(), "dropped".to_owned()));
                    break;
                }
                _ = stop.changed() => break,
            }
        }
    }
}

/// The `text/event-stream` rules a browser follows, for what this run
/// needs: `id`, `event` and `data` fields, dispatch on a blank line, and
/// the last event ID kept across connections.
#[derive(Default)]
struct Parser {
    line: Vec<u8>,
    event_type: String,
    data: Option<String>,
    id_buffer: Option<String>,
    /// What the next connection sends as `Last-Event-ID`.
    last_event_id: Option<String>,
}

impl Parser {
    /// A new connection: an unfinished event of the old one is dropped.
    fn reconnected(&mut self) {
        self.line.clear();
        self.event_type.clear();
        self.data = None;
        self.id_buffer = self.last_event_id.clone();
    }

    /// What the bytes complete: each message or reset (`None` for another
    /// block, such as the id alone of a resume point), with the last event
    /// ID after it.
    fn feed(&mut self, bytes: &[u8]) -> Vec<(Option<Seen>, Option<String>)> {
        let mut seen = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.line))
                .trim_end_matches('\r')
                .to_owned();
            if line.is_empty() {
                self.last_event_id = self.id_buffer.clone();
                let event_type = std::mem::take(&mut self.event_type);
                let one = self
                    .data
                    .take()
                    .and_then(|data| interpret(&event_type, &data));
                seen.push((one, self.last_event_id.clone()));
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" if !value.contains('\0') => self.id_buffer = Some(value.to_owned()),
                "event" => self.event_type = value.to_owned(),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        seen
    }
}

/// A chat message (`said`, from `p<publisher>` with text `<seq>`) or the
/// reset signal; anything else is passed over.
fn interpret(event_type: &str, data: &str) -> Option<Seen> {
    match event_type {
        "reset" => Some(Seen::Reset),
        "said" => {
            let message: serde_json::Value = serde_json::from_str(data).ok()?;
            let publisher = message["user"].as_str()?.strip_prefix('p')?.parse().ok()?;
            let seq = message["text"].as_str()?.parse().ok()?;
            Some(Seen::Message { publisher, seq })
        }
        _ => None,
    }
}

/// Waits (up to 30 s) until every subscriber has connected once.
pub async fn wait_until_connected(logs: &[Arc<Mutex<SubscriberLog>>]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs.iter().all(|log| log.lock().unwrap().connected) {
        assert!(Instant::now() < deadline, "the subscribers did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 30 s) until every subscriber has seen the last
/// acknowledged post of each publisher of its room, or a reset after the
/// last one it saw (what Redis lost, it cannot see).
pub async fn wait_until_caught_up(logs: &[Arc<Mutex<SubscriberLog>>], acknowledged: &[Acked]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let caught_up = logs.iter().all(|log| {
            let log = log.lock().unwrap();
            acknowledged
                .iter()
                .filter(|acked| acked.room == log.room)
                .map(|acked| (acked.publisher, acked.seq))
                .fold(
                    std::collections::HashMap::new(),
                    |mut last, (publisher, seq)| {
                        let entry = last.entry(publisher).or_insert(seq);
                        *entry = (*entry).max(seq);
                        last
                    },
                )
                .into_iter()
                .all(|(publisher, seq)| {
                    log.seen
                        .iter()
                        .any(|(seen, _)| *seen == Seen::Message { publisher, seq })
                })
        });
        if caught_up || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
