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
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
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
            Some(b"gzip") => Coding::Gzip(Box::new(flate2::write::GzDecoder::new(Vec::new()))),
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
            Coding::Gzip(decoder) => {
                use std::io::Write;
                decoder
                    .write_all(data)
                    .and_then(|()| decoder.flush())
                    .unwrap_or_else(|error| panic!("{_what}: invalid gzip body: {error}"));
                std::mem::take(decoder.get_mut())
            }
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
