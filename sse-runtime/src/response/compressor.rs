//! One event stream's compressor: every write comes out as the encoder's
//! complete output (nothing waits in it for the next event), and the
//! encoder is dropped while the stream is quiet, so an idle compressed stream
//! holds no more than an idle plain one.
//!
//! The wire format makes the drop possible:
//! - **gzip** is one deflate stream. Each write ends with a sync flush, so
//!   the stream is at a byte boundary between writes; a new raw deflate
//!   encoder goes on from there (its blocks refer to nothing before them),
//!   and the decoder never knows. The CRC and length for the trailer are
//!   kept across (8 bytes).
//! - **zstd** allows concatenated frames (RFC 8878 §3.1). A quiet stream ends
//!   its frame; the next event starts a new one.
//!
//! A keep-alive comment on a quiet stream is written without an encoder: in
//! gzip as a stored deflate block, in zstd as a frame holding one raw
//! block. Both are plain framing of uncompressed bytes, checked against the
//! real decoders in the tests.

use std::io;

use bytes::Bytes;
use crc32fast::Hasher as Crc;
use miniz_oxide::deflate::core::{
    CompressionStrategy, CompressorOxide, TDEFLFlush, TDEFLStatus, compress as deflate,
    create_comp_flags_from_zip_params,
};
use zstd::stream::raw::{CParameter, Encoder as ZstdEncoder, InBuffer, Operation, OutBuffer};

use super::accept_encoding::Encoding;
use super::lineage::Position;
use super::segments::{Segment, Segments};

/// gzip's level. With fixed-Huffman blocks (see [`deflate_encoder`]) and
/// one event per flush, level 6 sends 0.16 of the plain bytes of chat
/// events (level 1: 0.20) and 0.10 of the bench's JSON events (the same),
/// for 2.8–4.1 µs an event against 1.4–2.1; shared compression pays that
/// once per topic, not per subscriber.
const GZIP_LEVEL: u8 = 6;

/// zstd's level (its default). Written one event per flush, every level
/// from -7 to 3 costs about the same (2.0–2.4 µs an event: the flush
/// dominates), and 3 sends the fewest bytes (0.136 of the plain; -7: 0.234).
const ZSTD_LEVEL: i32 = 3;

/// zstd's window: 16 KiB, enough for the repetition of event streams (the
/// last few dozen events), and it bounds what an active stream's encoder
/// holds.
const ZSTD_WINDOW_LOG: u32 = 14;

/// zstd's match-finder tables, sized to the window rather than to the level's
/// defaults (which are for megabytes of input): an active encoder holds
/// about 34 KB (107 KB with the level's tables), for the same size within
/// 1% on chat events.
const ZSTD_HASH_LOG: u32 = 12;
const ZSTD_CHAIN_LOG: u32 = 12;

/// The fixed gzip header: deflate, no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The end of a zstd frame that holds no checksum, written without its
/// encoder: an empty raw block marked last (RFC 8878 §3.1.1.2).
const ZSTD_FRAME_END: [u8; 3] = [1, 0, 0];

/// The compressing side of one event stream.
pub(crate) struct StreamCompressor {
    encoding: Encoding,
    /// The encoder state the stream is at, shared with the streams that
    /// carry the same events; none at rest.
    position: Position,
    /// Whether anything has gone out (the gzip header, a zstd frame).
    started: bool,
    /// gzip: the CRC-32 and length (modulo 2^32) of everything compressed,
    /// for the trailer.
    crc: Crc,
    length: u32,
}

/// An encoder: what one [`Lineage`](super::lineage::Lineage) holds.
pub(crate) enum Encoder {
    Gzip(Box<CompressorOxide>),
    Zstd(ZstdEncoder<'static>),
}

impl Encoder {
    pub(crate) fn new(encoding: Encoding) -> io::Result<Encoder> {
        Ok(match encoding {
            // Raw deflate: the gzip framing is the stream's.
            Encoding::Gzip => Encoder::Gzip(deflate_encoder()),
            Encoding::Zstd => Encoder::Zstd(zstd_encoder()?),
        })
    }

    /// `data`, compressed and flushed: decodable whole from what came
    /// before and this.
    pub(crate) fn compress(&mut self, data: &[u8]) -> io::Result<Bytes> {
        #[cfg(test)]
        super::lineage::COMPRESSIONS.with(|count| count.set(count.get() + 1));
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        match self {
            Encoder::Gzip(deflate) => deflate_flushed(deflate, data, &mut out)?,
            Encoder::Zstd(zstd) => {
                let mut input = InBuffer::around(data);
                while input.pos() < data.len() {
                    out.reserve(data.len() - input.pos() + 64);
                    let written = out.len();
                    let mut output = OutBuffer::around_pos(&mut out, written);
                    zstd.run(&mut input, &mut output)?;
                }
                drain(&mut out, |output| zstd.flush(output))?;
            }
        }
        Ok(Bytes::from(out))
    }
}

impl StreamCompressor {
    pub(crate) fn new(encoding: Encoding) -> Self {
        StreamCompressor {
            encoding,
            position: Position::new(encoding),
            started: false,
            crc: Crc::new(),
            length: 0,
        }
    }

    /// Whether an encoder is held or shared (the stream is not at rest).
    pub(crate) fn is_active(&self) -> bool {
        self.position.is_active()
    }

    /// `data`, compressed and flushed: the client can decode all of it from
    /// what is returned. Bytes of this stream's own: see [`compress_events`](Self::compress_events).
    #[cfg(test)]
    pub(crate) fn compress(&mut self, data: &[u8]) -> io::Result<Bytes> {
        self.compress_events(
            data,
            &Segments::one(Segment {
                end: data.len(),
                shared: None,
                no_event: false,
            }),
        )
    }

    /// One write: `frame`, made of the events `segments` mark, each
    /// compressed and flushed, so that each of a topic's events is
    /// compressed once for all the streams that carry it (see
    /// [`lineage`](super::lineage)). Bytes past the last segment are
    /// compressed as the stream's own.
    pub(crate) fn compress_events(
        &mut self,
        frame: &[u8],
        segments: &Segments,
    ) -> io::Result<Bytes> {
        let mut out = Output::new(frame.len());
        if let Some(header) = self.opening() {
            out.extend_from_slice(&header);
        }
        let mut from = 0;
        let rest = Segment {
            end: frame.len(),
            shared: None,
            no_event: false,
        };
        for segment in segments.iter().chain(std::iter::once(&rest)) {
            let data = &frame[from.min(segment.end)..segment.end.min(frame.len())];
            from = segment.end;
            if data.is_empty() {
                continue;
            }
            let shared = segment.shared.as_ref().filter(|shared| shared[..] == *data);
            if segment.no_event && !self.is_active() && data.len() <= RAW_FRAME_MAX {
                // No event, while the stream holds no encoder (its
                // `retry:` field, its resume point): framed as it is, so a
                // stream that never gets an event builds no encoder, and
                // one that does joins the others at its first.
                self.frame_plain(out.joined(), data);
                continue;
            }
            let compressed = self.position.compress(data, shared)?;
            if compressed.left && self.encoding == Encoding::Zstd {
                out.extend_from_slice(&ZSTD_FRAME_END);
            }
            out.push(compressed.bytes);
            if self.encoding == Encoding::Gzip {
                self.checksum(data);
            }
        }
        Ok(out.into_bytes())
    }

    /// What goes out before anything else, once: the gzip header (zstd's
    /// frames carry their own). The body writes it when it starts, as
    /// bytes of no allocation, so that a stream's first event can go out
    /// as the very bytes its lineage compressed.
    pub(crate) fn opening(&mut self) -> Option<Bytes> {
        let first = !std::mem::replace(&mut self.started, true);
        (first && self.encoding == Encoding::Gzip).then(|| Bytes::from_static(&GZIP_HEADER))
    }

    /// A keep-alive comment: no event, so through the encoder while active,
    /// or framed uncompressed while at rest, so that a quiet stream builds no
    /// encoder (as [`compress_events`](Self::compress_events) does).
    pub(crate) fn keep_alive(&mut self, comment: &[u8]) -> io::Result<Bytes> {
        self.compress_events(
            comment,
            &Segments::one(Segment {
                end: comment.len(),
                shared: None,
                no_event: true,
            }),
        )
    }

    /// `data` (at most [`RAW_FRAME_MAX`] bytes) framed uncompressed, with no
    /// encoder: a stored deflate block, or a zstd frame of one raw block.
    /// Only while the stream is at rest: in gzip, an encoder's later blocks
    /// refer to nothing before them.
    fn frame_plain(&mut self, out: &mut Vec<u8>, data: &[u8]) {
        match self.encoding {
            Encoding::Gzip => {
                stored_block(out, data, false);
                self.checksum(data);
            }
            Encoding::Zstd => raw_frame(out, data),
        }
    }

    /// Leaves the encoder of a quiet stream; returns what must still go out
    /// for the client to decode up to here (zstd's frame end; nothing in
    /// gzip, whose last write already ended on a byte boundary).
    pub(crate) fn rest(&mut self) -> io::Result<Option<Bytes>> {
        let was_active = self.position.leave();
        Ok((was_active && self.encoding == Encoding::Zstd)
            .then(|| Bytes::from_static(&ZSTD_FRAME_END)))
    }

    /// The end of the compressed body, after the last write.
    pub(crate) fn finish(&mut self) -> io::Result<Bytes> {
        let mut out = Vec::with_capacity(32);
        let started = self.started;
        if let Some(header) = self.opening() {
            out.extend_from_slice(&header);
        }
        match self.encoding {
            Encoding::Gzip => {
                self.position.leave();
                // The final block (empty), then the trailer.
                stored_block(&mut out, &[], true);
                out.extend_from_slice(&self.crc.clone().finalize().to_le_bytes());
                out.extend_from_slice(&self.length.to_le_bytes());
            }
            Encoding::Zstd => match self.rest()? {
                Some(end) => out.extend_from_slice(&end),
                // A body with no frame at all is not zstd: one empty frame.
                None if !started => raw_frame(&mut out, &[]),
                None => {}
            },
        }
        Ok(Bytes::from(out))
    }

    /// Counts `data` into the gzip trailer.
    fn checksum(&mut self, data: &[u8]) {
        self.crc.update(data);
        self.length = self.length.wrapping_add(data.len() as u32);
    }
}

/// One write's bytes: a single piece of compressed bytes goes out as it is
/// (a stream's usual write, one event its lineage compressed, allocates
/// nothing); anything more is joined.
struct Output {
    single: Option<Bytes>,
    joined: Vec<u8>,
    /// What to reserve once joining starts.
    expected: usize,
}

impl Output {
    fn new(frame_len: usize) -> Output {
        Output {
            single: None,
            joined: Vec::new(),
            expected: frame_len / 2 + 64,
        }
    }

    /// The joined bytes so far, the single piece moved in first.
    fn joined(&mut self) -> &mut Vec<u8> {
        if self.joined.capacity() == 0 {
            self.joined.reserve(self.expected);
        }
        if let Some(single) = self.single.take() {
            self.joined.extend_from_slice(&single);
        }
        &mut self.joined
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.joined().extend_from_slice(bytes);
    }

    fn push(&mut self, bytes: Bytes) {
        if self.single.is_none() && self.joined.is_empty() {
            self.single = Some(bytes);
        } else {
            self.extend_from_slice(&bytes);
        }
    }

    fn into_bytes(self) -> Bytes {
        match self.single {
            Some(single) => single,
            None => Bytes::from(self.joined),
        }
    }
}

/// A raw deflate encoder (the gzip framing is the stream's) that writes
/// only fixed-Huffman blocks (RFC 1951 §3.2.6). Every write is its own
/// block, ended by a sync flush, and an event is a few hundred bytes, most
/// of them matches: a dynamic block's code tables cost more than they save.
/// Measured on the bench's JSON events, one per write: fixed blocks send
/// 0.10 of the plain bytes against 0.19, compress in 2 µs against 14, and a
/// zlib decoder (a browser's) reads a write in 0.2 µs against 0.9 µs, since
/// it builds no tables.
fn deflate_encoder() -> Box<CompressorOxide> {
    let flags = create_comp_flags_from_zip_params(
        i32::from(GZIP_LEVEL),
        // Negative window bits: raw deflate, no zlib header.
        -15,
        CompressionStrategy::Fixed as i32,
    );
    Box::new(CompressorOxide::new(flags))
}

fn zstd_encoder() -> io::Result<ZstdEncoder<'static>> {
    let mut encoder = ZstdEncoder::new(ZSTD_LEVEL)?;
    encoder.set_parameter(CParameter::WindowLog(ZSTD_WINDOW_LOG))?;
    encoder.set_parameter(CParameter::HashLog(ZSTD_HASH_LOG))?;
    encoder.set_parameter(CParameter::ChainLog(ZSTD_CHAIN_LOG))?;
    // No checksum: a stream ends its frame without the encoder
    // ([`ZSTD_FRAME_END`]).
    encoder.set_parameter(CParameter::ChecksumFlag(false))?;
    Ok(encoder)
}

/// Runs `step` until it reports nothing left to write.
fn drain(
    out: &mut Vec<u8>,
    mut step: impl FnMut(&mut OutBuffer<'_, Vec<u8>>) -> io::Result<usize>,
) -> io::Result<()> {
    loop {
        out.reserve(64);
        let written = out.len();
        let mut output = OutBuffer::around_pos(out, written);
        if step(&mut output)? == 0 {
            return Ok(());
        }
    }
}

/// Deflates all of `input` into `out`, then sync-flushes: the output ends
/// on a byte boundary, decodable up to there.
fn deflate_flushed(
    deflate_state: &mut CompressorOxide,
    mut input: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        // Fixed blocks take at most 9 bits a byte, plus the block ends: the
        // room reserved is enough for one call in practice.
        let written = out.len();
        out.resize(written + input.len() + input.len() / 4 + 64, 0);
        let (status, consumed, produced) =
            deflate(deflate_state, input, &mut out[written..], TDEFLFlush::Sync);
        let room = out.len() - written;
        out.truncate(written + produced);
        if status != TDEFLStatus::Okay {
            return Err(io::Error::other(format!("deflate failed: {status:?}")));
        }
        input = &input[consumed.min(input.len())..];
        // Done once all input is taken and the output had room to spare:
        // the flush is complete.
        if input.is_empty() && produced < room {
            return Ok(());
        }
    }
}

/// A stored (uncompressed) deflate block holding `data`, from a byte
/// boundary (RFC 1951 §3.2.4); the last one if `last`.
fn stored_block(out: &mut Vec<u8>, data: &[u8], last: bool) {
    for (index, chunk) in data.chunks(usize::from(u16::MAX)).enumerate() {
        let is_last = last && (index + 1) * usize::from(u16::MAX) >= data.len();
        push_stored(out, chunk, is_last);
    }
    if data.is_empty() {
        push_stored(out, &[], last);
    }
}

fn push_stored(out: &mut Vec<u8>, chunk: &[u8], last: bool) {
    let len = chunk.len() as u16;
    out.push(u8::from(last)); // BFINAL, BTYPE = 00, padding to the byte.
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(chunk);
}

/// The zstd frame magic number (RFC 8878 §3.1.1).
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// The most bytes [`raw_frame`] holds.
const RAW_FRAME_MAX: usize = 255;

/// A zstd frame holding `data` (at most 255 bytes) in one raw block: a
/// single-segment frame whose one-byte content size is `data`'s length,
/// no checksum, no dictionary (RFC 8878 §3.1.1.1, §3.1.1.2).
fn raw_frame(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(data.len() <= 255, "a keep-alive comment is short");
    let data = &data[..data.len().min(255)];
    out.extend_from_slice(&ZSTD_MAGIC.to_le_bytes());
    // Frame header descriptor: Single_Segment_flag set; a 1-byte
    // Frame_Content_Size follows.
    out.push(0x20);
    out.push(data.len() as u8);
    // Block header: Last_Block = 1, Block_Type = Raw (0), Block_Size.
    let header = 1 | ((data.len() as u32) << 3);
    out.extend_from_slice(&header.to_le_bytes()[..3]);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(body: &[u8]) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .expect("valid gzip");
        text
    }

    /// What a client that decodes as bytes arrive can read from `body` so
    /// far (a deflate stream cut after a flush).
    fn gunzip_so_far(body: &[u8]) -> String {
        let mut decoder = flate2::read::GzDecoder::new(body);
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match decoder.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8(bytes).expect("UTF-8")
    }

    fn unzstd(body: &[u8]) -> String {
        String::from_utf8(zstd::stream::decode_all(body).expect("valid zstd")).expect("UTF-8")
    }

    const EVENT: &[u8] = b"id: 7\ndata: {\"user\":\"ada\",\"text\":\"hello there\"}\n\n";

    /// Writes, rests, keep-alives and writes again, as a quiet stream does,
    /// and returns the body and the text it carries.
    fn a_stream_with_rests(encoding: Encoding) -> (Vec<u8>, String) {
        let mut compressor = StreamCompressor::new(encoding);
        let mut body = Vec::new();
        let mut text = Vec::new();
        for round in 0..3 {
            for _ in 0..4 {
                body.extend_from_slice(&compressor.compress(EVENT).unwrap());
                text.extend_from_slice(EVENT);
            }
            assert!(compressor.is_active());
            if let Some(end) = compressor.rest().unwrap() {
                body.extend_from_slice(&end);
            }
            assert!(!compressor.is_active(), "at rest, no encoder");
            if round == 1 {
                body.extend_from_slice(&compressor.keep_alive(b": keep-alive\n\n").unwrap());
                text.extend_from_slice(b": keep-alive\n\n");
                assert!(!compressor.is_active(), "a keep-alive builds none");
            }
        }
        body.extend_from_slice(&compressor.finish().unwrap());
        (body, String::from_utf8(text).unwrap())
    }

    #[test]
    fn a_gzip_stream_that_rests_and_resumes_decodes_whole() {
        let (body, text) = a_stream_with_rests(Encoding::Gzip);
        assert_eq!(gunzip(&body), text);
    }

    /// A chat room's `said` events, one write each, as a quiet room sends
    /// them.
    fn said_events() -> Vec<String> {
        let users = ["ada", "grace", "linus", "barbara"];
        let words = [
            "hello", "deploy", "is", "green", "again", "lunch?", "ship", "it", "now", "thanks",
        ];
        (0..300)
            .map(|n: usize| {
                let text: Vec<&str> = (0..(3 + n % 7)).map(|i| words[(n * 7 + i * 3) % words.len()]).collect();
                format!(
                    "id: 1764671{:06}-0\nevent: said\ndata: {{\"room\":\"lobby\",\"user\":\"{}\",\"text\":\"{}\",\"at\":17646712{:05}}}\n\n",
                    n * 37,
                    users[n % users.len()],
                    text.join(" "),
                    n * 911 % 100_000,
                )
            })
            .collect()
    }

    #[test]
    fn one_event_per_write_still_compresses_to_a_third() {
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let mut compressor = StreamCompressor::new(encoding);
            let (mut plain, mut wire) = (0, 0);
            for event in said_events() {
                plain += event.len();
                wire += compressor.compress(event.as_bytes()).unwrap().len();
            }
            let ratio = wire as f64 / plain as f64;
            eprintln!("{encoding:?}: {wire} of {plain} bytes, {ratio:.3}");
            assert!(ratio <= 0.35, "{encoding:?}: {ratio:.3} of the plain bytes");
        }
    }

    #[test]
    fn a_zstd_stream_that_rests_and_resumes_decodes_whole() {
        let (body, text) = a_stream_with_rests(Encoding::Zstd);
        assert_eq!(unzstd(&body), text);
    }

    #[test]
    fn every_write_decodes_on_its_own_arrival() {
        let mut compressor = StreamCompressor::new(Encoding::Gzip);
        let mut body = Vec::new();
        for n in 1..=5 {
            body.extend_from_slice(&compressor.compress(EVENT).unwrap());
            assert_eq!(
                gunzip_so_far(&body),
                String::from_utf8(EVENT.repeat(n)).unwrap()
            );
        }
        let mut compressor = StreamCompressor::new(Encoding::Zstd);
        let mut decoder = zstd::stream::raw::Decoder::new().unwrap();
        for _ in 1..=5 {
            let written = compressor.compress(EVENT).unwrap();
            let mut decoded = vec![0u8; 1024];
            let status = decoder.run_on_buffers(&written, &mut decoded).unwrap();
            assert_eq!(status.bytes_read, written.len());
            assert_eq!(&decoded[..status.bytes_written], EVENT, "all of it, now");
        }
    }

    #[test]
    fn a_stream_with_no_event_is_still_valid() {
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let mut compressor = StreamCompressor::new(encoding);
            let mut body = compressor.keep_alive(b": hi\n\n").unwrap().to_vec();
            body.extend_from_slice(&compressor.finish().unwrap());
            let text = match encoding {
                Encoding::Gzip => gunzip(&body),
                Encoding::Zstd => unzstd(&body),
            };
            assert_eq!(text, ": hi\n\n");
            let empty = StreamCompressor::new(encoding).finish().unwrap();
            let text = match encoding {
                Encoding::Gzip => gunzip(&empty),
                Encoding::Zstd => unzstd(&empty),
            };
            assert_eq!(text, "");
        }
    }

    #[test]
    fn large_writes_compress_whole() {
        let big: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let mut compressor = StreamCompressor::new(encoding);
            let mut body = compressor.compress(&big).unwrap().to_vec();
            body.extend_from_slice(&compressor.finish().unwrap());
            let decoded = match encoding {
                Encoding::Gzip => {
                    let mut bytes = Vec::new();
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_end(&mut bytes)
                        .unwrap();
                    bytes
                }
                Encoding::Zstd => zstd::stream::decode_all(&body[..]).unwrap(),
            };
            assert!(decoded == big, "{encoding:?}");
        }
    }
}
/// What an active encoder holds, measured (not a test: resident memory is
/// the process's, which other tests move):
/// `cargo test -p sse-runtime --features compression --release --lib encoder_memory -- --ignored --nocapture`
#[cfg(test)]
mod measure {
    use super::*;

    fn resident_bytes() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches(" kB").parse::<usize>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    #[test]
    #[ignore = "a measurement: run alone, with --release"]
    fn encoder_memory() {
        const STREAMS: usize = 1000;
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let before = resident_bytes();
            let mut streams: Vec<StreamCompressor> = (0..STREAMS)
                .map(|_| StreamCompressor::new(encoding))
                .collect();
            let at_rest = resident_bytes();
            for stream in &mut streams {
                stream
                    .compress(b"id: 1\ndata: {\"hello\":\"world\"}\n\n")
                    .unwrap();
            }
            let active = resident_bytes();
            for stream in &mut streams {
                stream.rest().unwrap();
            }
            eprintln!(
                "{encoding:?}: {} bytes per stream at rest, {} per active stream",
                at_rest.saturating_sub(before) / STREAMS,
                active.saturating_sub(before) / STREAMS,
            );
        }
    }
}
