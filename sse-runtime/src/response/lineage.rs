//! Compression shared by the streams that carry the same events, so that a
//! topic's event is compressed once, not once per subscriber.
//!
//! An encoder's output depends only on what it was given since it was
//! built. Two streams whose encoders were built at the same event and then
//! given the same events hold the same state, and would write the same
//! bytes: a [`Lineage`] is that state, held once. The first stream to give
//! it an event compresses it and leaves the result behind
//! ([`Step::Advanced`]); the others, given the same event (the same shared
//! bytes: an [`EncodedEvent`](crate::EncodedEvent) that a registry encoded
//! once for every subscriber), take that result and follow on.
//!
//! Streams meet in a lineage by starting at the same event: a stream that
//! has no encoder (new, at rest, or one whose events differed from its
//! lineage's) looks its event up among the lineages that started at it
//! ([`FRESH`]). So that streams which opened at different times meet, a
//! fixed share of events (one in [`RESTART_EVERY`], picked by a hash of the
//! event's bytes, which every stream computes alike) starts a new lineage:
//! every stream that comes to such an event leaves its own and starts again
//! there, and all of them start the same one. The format allows it: in
//! gzip, each compressed write ends with a sync flush, on a byte boundary,
//! where a new deflate encoder goes on; in zstd, the stream's frame ends
//! and a new one begins (RFC 8878 §3.1).
//!
//! What it holds: a topic's encoder, once, in the newest state; and each
//! state left behind, with its event and that event compressed, while a
//! stream is still at it or before it. A stream that stops reading keeps
//! the states from its own on, until it reads again or the server drops it
//! at the write-stall limit.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use super::accept_encoding::Encoding;
use super::compressor::Encoder;
use crate::sync::lock;

/// One in this many events starts a new lineage (see the module's docs):
/// a stream that opened alone meets the others within this many events; a
/// new lineage's first event compresses without history, which costs a few
/// hundred bytes, once per this many events.
const RESTART_EVERY: u32 = 64;

/// An encoder state reached by compressing a sequence of events from a
/// fresh encoder; shared by every stream that gave it those events.
pub(super) struct Lineage {
    step: Mutex<Step>,
}

enum Step {
    /// The newest state: the encoder itself.
    Head(Encoder),
    /// A state the lineage has left: the event it was given next, that
    /// event compressed, and the state after it.
    Advanced {
        event: Bytes,
        compressed: Bytes,
        next: Arc<Lineage>,
    },
    /// The encoder failed: nothing goes on from here.
    Broken,
}

/// Whether two shared event bytes are the same event: the same allocation
/// and length. Sound while one of them is held, so the allocation cannot
/// be another event's.
fn same_event(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// Whether `event` starts a new lineage: the same answer in every stream.
fn restarts(event: &[u8]) -> bool {
    crc32fast::hash(event) % RESTART_EVERY == 0
}

/// The lineages that start at an event: the event (held, so its address
/// stays its own), its compressed form from a fresh encoder, and the state
/// after it, for as long as some stream holds that state.
struct Start {
    event: Bytes,
    compressed: Bytes,
    lineage: Weak<Lineage>,
}

/// A start's event: its encoding, and its shared bytes' address and length.
type StartKey = (Encoding, usize, usize);

/// Every encoding's starts, and when to forget those no stream holds.
static FRESH: Mutex<Option<Starts>> = Mutex::new(None);

struct Starts {
    by_event: HashMap<StartKey, Start>,
    /// At this many starts, those no stream holds any more are forgotten;
    /// then it is twice what is left (at least [`FRESH_PRUNE_AT`]), so the
    /// scan costs O(1) per start however many topics are live.
    prune_at: usize,
}

/// The fewest starts at which the forgotten are pruned.
const FRESH_PRUNE_AT: usize = 256;

/// Where one stream is: its lineage, or none (no encoder).
pub(super) struct Position {
    encoding: Encoding,
    at: Option<Arc<Lineage>>,
}

/// What [`Position::compress`] wrote: whether the stream's frame had to end
/// first (it left its lineage), and the compressed event.
pub(super) struct Compressed {
    pub(super) left: bool,
    pub(super) bytes: Bytes,
}

impl Position {
    pub(super) fn new(encoding: Encoding) -> Position {
        Position { encoding, at: None }
    }

    /// Whether the stream is in a lineage (holds, or shares, an encoder).
    pub(super) fn is_active(&self) -> bool {
        self.at.is_some()
    }

    /// Leaves the lineage (the stream rests, or its frame ends); whether it
    /// was in one.
    pub(super) fn leave(&mut self) -> bool {
        self.at.take().is_some()
    }

    /// `data` compressed and flushed from where the stream is. `shared` is
    /// `data` as bytes other streams may carry too (a registry's event);
    /// `None` for bytes of this stream's own, which leave any lineage it
    /// shares.
    pub(super) fn compress(
        &mut self,
        data: &[u8],
        shared: Option<&Bytes>,
    ) -> io::Result<Compressed> {
        let mut left = false;
        if let Some(at) = self.at.clone() {
            let mut step = lock(&at.step);
            match &mut *step {
                Step::Advanced {
                    event,
                    compressed,
                    next,
                } if shared.is_some_and(|shared| same_event(shared, event)) => {
                    let bytes = compressed.clone();
                    self.at = Some(Arc::clone(next));
                    return Ok(Compressed { left, bytes });
                }
                Step::Head(encoder) if !shared.is_some_and(|shared| restarts(shared)) => {
                    // Nobody else holds or can reach this state: it changes
                    // in place.
                    let alone = Arc::strong_count(&at) <= 2 && Arc::weak_count(&at) == 0;
                    if alone || shared.is_some() {
                        let bytes = match encoder.compress(data) {
                            Ok(bytes) => bytes,
                            Err(error) => {
                                *step = Step::Broken;
                                return Err(error);
                            }
                        };
                        if !alone {
                            let Step::Head(encoder) = std::mem::replace(&mut *step, Step::Broken)
                            else {
                                unreachable!("matched as the head")
                            };
                            let next = Arc::new(Lineage {
                                step: Mutex::new(Step::Head(encoder)),
                            });
                            *step = Step::Advanced {
                                event: shared.expect("shared when not alone").clone(),
                                compressed: bytes.clone(),
                                next: Arc::clone(&next),
                            };
                            self.at = Some(next);
                        }
                        return Ok(Compressed { left, bytes });
                    }
                }
                _ => {}
            }
            // The lineage went on with another event, or this one starts
            // a new lineage, or these bytes are this stream's own: the
            // stream leaves it.
            drop(step);
            self.at = None;
            left = true;
        }
        let (bytes, lineage) = self.start(data, shared)?;
        self.at = Some(lineage);
        Ok(Compressed { left, bytes })
    }

    /// Starts a lineage at `data`: the one other streams started at the
    /// same shared event, or a new one.
    fn start(&self, data: &[u8], shared: Option<&Bytes>) -> io::Result<(Bytes, Arc<Lineage>)> {
        let Some(shared) = shared else {
            return new_lineage(self.encoding, data);
        };
        let key = (self.encoding, shared.as_ptr() as usize, shared.len());
        let mut fresh = lock(&FRESH);
        let starts = fresh.get_or_insert_with(|| Starts {
            by_event: HashMap::new(),
            prune_at: FRESH_PRUNE_AT,
        });
        if let Some(start) = starts.by_event.get(&key) {
            if let Some(lineage) = start.lineage.upgrade() {
                if same_event(&start.event, shared) {
                    return Ok((start.compressed.clone(), lineage));
                }
            }
        }
        let (compressed, lineage) = new_lineage(self.encoding, data)?;
        if starts.by_event.len() >= starts.prune_at {
            starts
                .by_event
                .retain(|_, start| start.lineage.strong_count() > 0);
            starts.prune_at = (2 * starts.by_event.len()).max(FRESH_PRUNE_AT);
        }
        starts.by_event.insert(
            key,
            Start {
                event: shared.clone(),
                compressed: compressed.clone(),
                lineage: Arc::downgrade(&lineage),
            },
        );
        Ok((compressed, lineage))
    }
}

fn new_lineage(encoding: Encoding, data: &[u8]) -> io::Result<(Bytes, Arc<Lineage>)> {
    let mut encoder = Encoder::new(encoding)?;
    let compressed = encoder.compress(data)?;
    Ok((
        compressed,
        Arc::new(Lineage {
            step: Mutex::new(Step::Head(encoder)),
        }),
    ))
}

#[cfg(test)]
thread_local! {
    /// How many times this thread's encoders compressed something.
    pub(super) static COMPRESSIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::response::compressor::StreamCompressor;
    use crate::response::segments::{Segment, Segments};

    fn compressions() -> usize {
        COMPRESSIONS.with(std::cell::Cell::get)
    }

    /// A topic's events, each encoded once (as a registry does) and so
    /// shared by every stream that carries it.
    fn events(count: usize) -> Vec<Bytes> {
        (0..count)
            .map(|n| {
                Bytes::from(format!(
                    "id: 1764671{n:06}-0\nevent: said\ndata: {{\"room\":\"lobby\",\"user\":\"u{}\",\"text\":\"message number {n}\"}}\n\n",
                    n % 7
                ))
            })
            .collect()
    }

    fn write(compressor: &mut StreamCompressor, batch: &[&Bytes]) -> Vec<u8> {
        let mut frame = Vec::new();
        let mut segments = Segments::default();
        for event in batch {
            frame.extend_from_slice(event);
            segments.push(Segment {
                end: frame.len(),
                shared: Some((*event).clone()),
                no_event: false,
            });
        }
        compressor
            .compress_events(&frame, &segments)
            .unwrap()
            .to_vec()
    }

    fn decode(encoding: Encoding, body: &[u8]) -> String {
        match encoding {
            Encoding::Gzip => {
                let mut text = String::new();
                flate2::read::GzDecoder::new(body)
                    .read_to_string(&mut text)
                    .expect("valid gzip");
                text
            }
            Encoding::Zstd => {
                String::from_utf8(zstd::stream::decode_all(body).expect("valid zstd")).unwrap()
            }
        }
    }

    fn plain(events: &[Bytes]) -> String {
        events
            .iter()
            .map(|event| std::str::from_utf8(event).unwrap())
            .collect()
    }

    #[test]
    fn starts_no_stream_holds_are_forgotten() {
        // Per-user streams: each starts a lineage at an event of its own,
        // then rests.
        for (index, event) in events(5_000).iter().enumerate() {
            let mut compressor = StreamCompressor::new(if index % 2 == 0 {
                Encoding::Zstd
            } else {
                Encoding::Gzip
            });
            write(&mut compressor, &[event]);
            compressor.rest().unwrap();
        }
        let remembered = lock(&FRESH)
            .as_ref()
            .map_or(0, |starts| starts.by_event.len());
        // Other tests' live starts share the map; theirs are few.
        assert!(remembered < 1_000, "{remembered} starts remembered");
    }

    #[test]
    fn streams_that_open_together_compress_each_event_once_between_them() {
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let events = events(300);
            let mut streams: Vec<_> = (0..10)
                .map(|_| (StreamCompressor::new(encoding), Vec::new()))
                .collect();
            let before = compressions();
            for event in &events {
                for (compressor, body) in &mut streams {
                    body.extend(write(compressor, &[event]));
                }
            }
            assert_eq!(compressions() - before, events.len(), "{encoding:?}");
            for (mut compressor, mut body) in streams {
                body.extend_from_slice(&compressor.finish().unwrap());
                assert_eq!(decode(encoding, &body), plain(&events), "{encoding:?}");
            }
        }
    }

    #[test]
    fn a_stream_that_opens_later_joins_the_others_at_the_next_restart() {
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let events = events(400);
            let joins_at = 50;
            let restart = (joins_at..events.len())
                .find(|&index| restarts(&events[index]))
                .expect("a restart within 350 events");
            let (mut early, mut late) = (
                StreamCompressor::new(encoding),
                StreamCompressor::new(encoding),
            );
            let (mut early_body, mut late_body) = (Vec::new(), Vec::new());
            let mut late_compressions = 0;
            for (index, event) in events.iter().enumerate() {
                early_body.extend(write(&mut early, &[event]));
                if index >= joins_at {
                    let before = compressions();
                    late_body.extend(write(&mut late, &[event]));
                    late_compressions += compressions() - before;
                }
            }
            // Alone until the restart (its own compressions), then none:
            // the early stream compresses and the late one follows.
            assert_eq!(late_compressions, restart - joins_at, "{encoding:?}");
            early_body.extend_from_slice(&early.finish().unwrap());
            late_body.extend_from_slice(&late.finish().unwrap());
            assert_eq!(decode(encoding, &early_body), plain(&events));
            assert_eq!(decode(encoding, &late_body), plain(&events[joins_at..]));
        }
    }

    /// Batches, rests, keep-alives, an event only some streams carry, and
    /// bytes of a stream's own: every stream still decodes to exactly what
    /// it was given.
    #[test]
    fn streams_whose_events_differ_leave_their_lineage_and_still_decode_whole() {
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let events = events(200);
            let extra = Bytes::from_static(b"event: private\ndata: only for stream 1\n\n");
            let mut streams: Vec<_> = (0..4)
                .map(|_| (StreamCompressor::new(encoding), Vec::new(), String::new()))
                .collect();
            for (index, chunk) in events.chunks(3).enumerate() {
                for (number, (compressor, body, text)) in streams.iter_mut().enumerate() {
                    // Stream 2 batches its events; the others write each alone.
                    if number == 2 {
                        body.extend(write(compressor, &chunk.iter().collect::<Vec<_>>()));
                    } else {
                        for event in chunk {
                            body.extend(write(compressor, &[event]));
                        }
                    }
                    text.push_str(&plain(chunk));
                    if number == 1 && index % 5 == 0 {
                        body.extend(write(compressor, &[&extra]));
                        text.push_str(std::str::from_utf8(&extra).unwrap());
                    }
                    if number == 3 && index % 7 == 0 {
                        body.extend_from_slice(
                            &compressor.keep_alive(b": keep-alive\n\n").unwrap(),
                        );
                        text.push_str(": keep-alive\n\n");
                    }
                    if index % 11 == 10 {
                        if let Some(end) = compressor.rest().unwrap() {
                            body.extend_from_slice(&end);
                        }
                        assert!(!compressor.is_active());
                    }
                }
            }
            for (mut compressor, mut body, text) in streams {
                body.extend_from_slice(&compressor.finish().unwrap());
                assert_eq!(decode(encoding, &body), text, "{encoding:?}");
            }
        }
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use crate::response::compressor::StreamCompressor;
    use crate::response::segments::{Segment, Segments};

    /// What a stream pays per event when the others already compressed it:
    /// `cargo test -p sse-runtime --features compression --release --lib
    /// lineage_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn lineage_cost() {
        for encoding in [Encoding::Zstd, Encoding::Gzip] {
            let events: Vec<Bytes> = (0..2000)
                .map(|n| Bytes::from(format!("id: {n}\ndata: {{\"seq\":{n},\"kind\":\"notification\",\"title\":\"Your report is ready\",\"body\":\"The export you asked for finished; it is ready to download.\"}}\n\n")))
                .collect();
            let mut streams: Vec<StreamCompressor> =
                (0..1000).map(|_| StreamCompressor::new(encoding)).collect();
            let mut writes = Vec::new();
            let started = std::time::Instant::now();
            for event in &events {
                for (index, stream) in streams.iter_mut().enumerate() {
                    let segments = Segments::one(Segment {
                        end: event.len(),
                        shared: Some(event.clone()),
                        no_event: false,
                    });
                    let written = stream.compress_events(event, &segments).unwrap();
                    if index == 0 {
                        writes.push(written);
                    }
                }
            }
            let per = started.elapsed() / (events.len() * streams.len()) as u32;
            let started = std::time::Instant::now();
            for event in &events[..200] {
                let mut encoder = Encoder::new(encoding).unwrap();
                std::hint::black_box(encoder.compress(event).unwrap());
            }
            let start = started.elapsed() / 200;
            // What a client pays to decode one write, as the bench's client
            // decodes (flate2's inflate: miniz_oxide here, zlib-rs in the
            // bench's build; libzstd).
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static(encoding.name()),
            );
            let mut decoder = crate::testing::ContentDecoder::for_headers(&headers, "cost");
            let started = std::time::Instant::now();
            let decoded: usize = writes.iter().map(|write| decoder.decode(write).len()).sum();
            let decode = started.elapsed() / writes.len() as u32;
            assert!(decoded > 0);
            eprintln!("{encoding:?}: a client decodes a write in {decode:?}");
            eprintln!(
                "{encoding:?}: {per:?} per stream and event; a new lineage (encoder built, first event) {start:?}"
            );
        }
    }
}
