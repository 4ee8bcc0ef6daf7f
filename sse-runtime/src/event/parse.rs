//! The `text/event-stream` parser of the test client and the Rust client.

use std::time::Duration;

/// One event, as a browser's `EventSource` delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The event type (`message` when the event named none).
    pub event: String,
    /// The data, its lines joined with `\n`.
    pub data: String,
    /// The last event id at this event (`lastEventId`), which persists
    /// across events until the server sets another.
    pub id: String,
    /// The reconnection time the stream set so far, if any.
    pub retry: Option<Duration>,
}

/// The `text/event-stream` parser of the WHATWG HTML standard (9.2.6).
#[derive(Default)]
pub(crate) struct Parser {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    /// A CR ended the last line: an LF right after it belongs to it.
    after_cr: bool,
    started: bool,
    data: String,
    has_data: bool,
    event_type: String,
    /// The last event ID buffer: set by an `id:` line as it is read.
    last_event_id: String,
    /// The event source's last event ID: the buffer as of the last blank
    /// line (with data or not), which is what a client reconnects with.
    dispatched_id: String,
    retry: Option<Duration>,
    /// Each event, with the last event ID as it was just before it.
    events: std::collections::VecDeque<(Event, String)>,
}

impl Parser {
    /// A parser for the next connection of a stream: the last event ID and
    /// the reconnection time go on from the last one (WHATWG 9.2.3).
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn continuing(last_event_id: String, retry: Option<Duration>) -> Parser {
        Parser {
            last_event_id: last_event_id.clone(),
            dispatched_id: last_event_id,
            retry,
            ..Parser::default()
        }
    }

    /// The next event parsed and not yet taken.
    pub(crate) fn pop_event(&mut self) -> Option<Event> {
        self.events.pop_front().map(|(event, _)| event)
    }

    /// What a client that took the events popped so far reconnects with:
    /// the last event ID just before the next event not taken, or, when all
    /// were taken, the last one dispatched.
    pub(crate) fn last_event_id(&self) -> &str {
        match self.events.front() {
            Some((_, id_before)) => id_before,
            None => &self.dispatched_id,
        }
    }

    /// The reconnection time the stream set so far, if any.
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn retry(&self) -> Option<Duration> {
        self.retry
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_ended(&line);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                }
            }
        }
    }

    fn line_ended(&mut self, line: &[u8]) {
        let mut line = String::from_utf8_lossy(line).into_owned();
        if !self.started {
            self.started = true;
            // A leading byte order mark is dropped.
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_owned();
            }
        }
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.starts_with(':') {
            return; // A comment.
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_event_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(millis) = value.parse() {
                    self.retry = Some(Duration::from_millis(millis));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event_type = std::mem::take(&mut self.event_type);
        let id_before = std::mem::replace(&mut self.dispatched_id, self.last_event_id.clone());
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // The LF after the last line.
        let event = Event {
            event: if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type
            },
            data,
            id: self.last_event_id.clone(),
            retry: self.retry,
        };
        self.events.push_back((event, id_before));
    }

    /// At the end of the stream an unfinished event is dropped, as a browser does.
    pub(crate) fn finish(&mut self) {
        self.line.clear();
        self.data.clear();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> (Vec<Event>, String) {
        let mut parser = Parser::default();
        for chunk in chunks {
            parser.feed(chunk);
        }
        parser.finish();
        (
            parser.events.into_iter().map(|(event, _)| event).collect(),
            parser.dispatched_id,
        )
    }

    #[test]
    fn lines_end_with_lf_cr_or_crlf_even_split_across_chunks() {
        let (events, _) = parse(&[
            b"data: a\r",
            b"\ndata: b\rdata: c\n\n",
            b"event: x\r\ndata:d\r\n\r\n",
        ]);
        assert_eq!(events[0].data, "a\nb\nc");
        assert_eq!(events[0].event, "message");
        assert_eq!(
            (events[1].event.as_str(), events[1].data.as_str()),
            ("x", "d")
        );
    }

    #[test]
    fn an_id_alone_sets_the_last_event_id_without_an_event() {
        let (events, last) = parse(&[b"id: 7\n\n: comment\ndata: after\n\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].id.as_str(), events[0].data.as_str()),
            ("7", "after")
        );
        assert_eq!(last, "7");
    }

    #[test]
    fn the_last_event_id_follows_the_events_taken_not_those_received() {
        let mut parser = Parser::default();
        parser.feed(b"id: 1\n\nid: 2\ndata: a\n\nid: 3\ndata: b\n\nid: 4\n\nid: 5\ndata");
        // Two events received; none taken: a reconnect resumes after `1`.
        assert_eq!(parser.last_event_id(), "1");
        assert_eq!(parser.pop_event().unwrap().id, "2");
        assert_eq!(parser.last_event_id(), "2");
        assert_eq!(parser.pop_event().unwrap().id, "3");
        // The id-only block after it counts; the unfinished one does not.
        assert_eq!(parser.last_event_id(), "4");
    }

    #[test]
    fn an_unfinished_event_at_the_end_is_dropped_and_retry_is_digits_only() {
        let (events, _) = parse(&[b"retry: 12x\nretry: 1500\ndata: kept\n\ndata: lost"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].retry, Some(Duration::from_millis(1500)));
    }
}
