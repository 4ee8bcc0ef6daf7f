//! Undoing a response's `Content-Encoding` as its frames arrive, as a
//! browser does, so a test reads a compressed stream's events one by one.

use http::HeaderMap;
use http::header::CONTENT_ENCODING;

/// Undoes one response body's `Content-Encoding` as its bytes arrive:
/// gzip and zstd with feature `compression`, and none.
///
/// [`TestResponse`](super::TestResponse) uses it; a test that reads a
/// stream from a socket can too.
///
/// ```
/// use http::HeaderMap;
/// use sse_runtime::testing::ContentDecoder;
///
/// let mut decoder = ContentDecoder::for_headers(&HeaderMap::new(), "GET /events");
/// assert_eq!(decoder.decode(b"data: hi\n\n"), b"data: hi\n\n");
/// ```
pub struct ContentDecoder {
    coding: Coding,
    what: String,
}

enum Coding {
    Identity,
    #[cfg(feature = "compression")]
    Gzip(Box<gzip::Member>),
    #[cfg(feature = "compression")]
    Zstd(Box<zstd::stream::raw::Decoder<'static>>),
}

impl ContentDecoder {
    /// The decoder for a response with these headers; `what` names the
    /// response in panic messages.
    ///
    /// # Panics
    ///
    /// On a coding it cannot decode: the test asked for one it cannot read.
    pub fn for_headers(headers: &HeaderMap, what: &str) -> Self {
        let coding = match headers
            .get(CONTENT_ENCODING)
            .map(|coding| coding.as_bytes())
        {
            None | Some(b"identity") => Coding::Identity,
            #[cfg(feature = "compression")]
            Some(b"gzip") => Coding::Gzip(Box::default()),
            #[cfg(feature = "compression")]
            Some(b"zstd") => Coding::Zstd(Box::new(
                zstd::stream::raw::Decoder::new()
                    .unwrap_or_else(|error| panic!("{what}: no zstd decoder: {error}")),
            )),
            Some(other) => panic!(
                "{what}: cannot decode content-encoding {:?} (feature `compression` reads gzip and zstd)",
                String::from_utf8_lossy(other)
            ),
        };
        ContentDecoder {
            coding,
            what: what.to_owned(),
        }
    }

    /// Whether the body is compressed.
    pub fn is_compressed(&self) -> bool {
        !matches!(self.coding, Coding::Identity)
    }

    /// Everything the body decodes to with `data`, the bytes that came next.
    ///
    /// # Panics
    ///
    /// When the body is not valid in its coding.
    pub fn decode(&mut self, data: &[u8]) -> Vec<u8> {
        // Only the decoders of feature `compression` fail, and name it.
        let _what = &self.what;
        match &mut self.coding {
            Coding::Identity => data.to_vec(),
            #[cfg(feature = "compression")]
            Coding::Gzip(member) => member
                .decode(data)
                .unwrap_or_else(|error| panic!("{_what}: invalid gzip body: {error}")),
            #[cfg(feature = "compression")]
            Coding::Zstd(decoder) => {
                use zstd::stream::raw::Operation;
                let mut decoded = Vec::new();
                let mut input = zstd::stream::raw::InBuffer::around(data);
                loop {
                    decoded.reserve(16 * 1024);
                    let written = decoded.len();
                    let mut output =
                        zstd::stream::raw::OutBuffer::around_pos(&mut decoded, written);
                    decoder
                        .run(&mut input, &mut output)
                        .unwrap_or_else(|error| panic!("{_what}: invalid zstd body: {error}"));
                    // All input taken, and room left: nothing more to come out.
                    let full = output.pos() == output.capacity();
                    if input.pos() == data.len() && !full {
                        return decoded;
                    }
                }
            }
        }
    }
}

/// A gzip member (RFC 1952) read as its bytes arrive: the header, the raw
/// deflate stream (through flate2's `Decompress`, whichever inflate backs
/// it), then the trailer, whose CRC-32 and length are checked.
#[cfg(feature = "compression")]
mod gzip {
    use flate2::{Decompress, FlushDecompress, Status};

    /// Header flags (RFC 1952 §2.3.1).
    const FHCRC: u8 = 1 << 1;
    const FEXTRA: u8 = 1 << 2;
    const FNAME: u8 = 1 << 3;
    const FCOMMENT: u8 = 1 << 4;

    pub(super) struct Member {
        /// Header or trailer bytes that came so far (the body streams).
        pending: Vec<u8>,
        part: Part,
        inflate: Decompress,
        crc: crc32fast::Hasher,
        length: u32,
    }

    enum Part {
        Header,
        Body,
        Trailer,
        Done,
    }

    impl Default for Member {
        fn default() -> Self {
            Member {
                pending: Vec::new(),
                part: Part::Header,
                inflate: Decompress::new(false),
                crc: crc32fast::Hasher::new(),
                length: 0,
            }
        }
    }

    impl Member {
        /// Everything `data`, the next bytes of the body, decodes to.
        pub(super) fn decode(&mut self, mut data: &[u8]) -> Result<Vec<u8>, String> {
            let mut decoded = Vec::new();
            while !data.is_empty() {
                match self.part {
                    Part::Header => {
                        self.pending.extend_from_slice(data);
                        let Some(length) = header_length(&self.pending)? else {
                            return Ok(decoded);
                        };
                        let rest = self.pending.split_off(length);
                        self.pending.clear();
                        self.part = Part::Body;
                        decoded.extend(self.decode(&rest)?);
                        return Ok(decoded);
                    }
                    Part::Body => {
                        data = self.inflate_some(data, &mut decoded)?;
                    }
                    Part::Trailer => {
                        let take = (8 - self.pending.len()).min(data.len());
                        self.pending.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if self.pending.len() == 8 {
                            self.check_trailer()?;
                        }
                    }
                    Part::Done => return Err("bytes after the gzip trailer".to_owned()),
                }
            }
            Ok(decoded)
        }

        /// Inflates from `data` until the deflate stream ends or `data` is
        /// used up; returns what is left (the trailer's bytes, if it ended).
        fn inflate_some<'a>(
            &mut self,
            mut data: &'a [u8],
            decoded: &mut Vec<u8>,
        ) -> Result<&'a [u8], String> {
            loop {
                decoded.reserve(4 * 1024);
                let (read_before, written_before) = (self.inflate.total_in(), decoded.len());
                let status = self
                    .inflate
                    .decompress_vec(data, decoded, FlushDecompress::Sync)
                    .map_err(|error| error.to_string())?;
                let read = (self.inflate.total_in() - read_before) as usize;
                data = &data[read..];
                let fresh = &decoded[written_before..];
                self.crc.update(fresh);
                self.length = self.length.wrapping_add(fresh.len() as u32);
                if let Status::StreamEnd = status {
                    self.part = Part::Trailer;
                    return Ok(data);
                }
                // All read, and the output had room left: nothing more yet.
                if data.is_empty() && decoded.len() < decoded.capacity() {
                    return Ok(data);
                }
                if read == 0 && decoded.len() == written_before && !data.is_empty() {
                    return Err("the deflate stream makes no progress".to_owned());
                }
            }
        }

        fn check_trailer(&mut self) -> Result<(), String> {
            let crc = u32::from_le_bytes(self.pending[..4].try_into().expect("4 bytes"));
            let length = u32::from_le_bytes(self.pending[4..].try_into().expect("4 bytes"));
            if crc != self.crc.clone().finalize() {
                return Err("the gzip trailer's CRC-32 does not match".to_owned());
            }
            if length != self.length {
                return Err("the gzip trailer's length does not match".to_owned());
            }
            self.part = Part::Done;
            Ok(())
        }
    }

    /// The length of the gzip header at the start of `bytes`, once all of
    /// it has come.
    fn header_length(bytes: &[u8]) -> Result<Option<usize>, String> {
        if bytes.len() < 10 {
            return Ok(None);
        }
        if bytes[..3] != [0x1f, 0x8b, 8] {
            return Err("not a gzip header (deflate)".to_owned());
        }
        let flags = bytes[3];
        let mut at = 10;
        if flags & FEXTRA != 0 {
            let Some(extra) = bytes.get(at..at + 2) else {
                return Ok(None);
            };
            at += 2 + usize::from(u16::from_le_bytes([extra[0], extra[1]]));
        }
        for flag in [FNAME, FCOMMENT] {
            if flags & flag != 0 {
                let Some(end) = bytes
                    .get(at..)
                    .and_then(|rest| rest.iter().position(|&b| b == 0))
                else {
                    return Ok(None);
                };
                at += end + 1;
            }
        }
        if flags & FHCRC != 0 {
            at += 2;
        }
        Ok((bytes.len() >= at).then_some(at))
    }
}

#[cfg(all(test, feature = "compression"))]
mod tests {
    use std::io::Write;

    use super::gzip::Member;

    fn gzip_with_every_header_field(text: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::GzBuilder::new()
            .filename("events.txt")
            .comment("a comment")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::default());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_gzip_body_fed_a_byte_at_a_time_decodes_whole_and_checks_its_trailer() {
        let text = b"data: hello\n\n".repeat(50);
        let body = gzip_with_every_header_field(&text);
        let mut member = Member::default();
        let mut decoded = Vec::new();
        for byte in &body {
            decoded.extend(member.decode(std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(decoded, text);
        assert!(
            member.decode(b"x").is_err(),
            "nothing may follow the trailer"
        );
    }

    #[test]
    fn a_gzip_body_whose_trailer_does_not_match_is_an_error() {
        let text = b"data: hello\n\n".repeat(5);
        let mut body = gzip_with_every_header_field(&text);
        let crc_at = body.len() - 8;
        body[crc_at] ^= 1;
        let error = Member::default().decode(&body).unwrap_err();
        assert!(error.contains("CRC-32"), "{error}");
        let mut body = gzip_with_every_header_field(&text);
        body[0] = 0;
        assert!(Member::default().decode(&body).is_err(), "not gzip");
    }
}
