//! Which compression a client accepts: the `Accept-Encoding` request header,
//! read as RFC 9110 §12.5.3 says, against the codings this crate writes.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use http::HeaderMap;
use http::header::ACCEPT_ENCODING;
use http::request::Parts;

/// A content coding an event stream can be compressed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// Zstandard (RFC 8878), which Chromium and Firefox accept.
    Zstd,
    /// gzip (RFC 1952), which every HTTP client accepts.
    Gzip,
}

impl Encoding {
    /// Ours, best first: where a client accepts several equally, the first.
    const PREFERRED: [Encoding; 2] = [Encoding::Zstd, Encoding::Gzip];

    /// The coding's name in `Content-Encoding`.
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }

    fn from_name(name: &str) -> Option<Encoding> {
        if name.eq_ignore_ascii_case("zstd") {
            Some(Encoding::Zstd)
        } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            Some(Encoding::Gzip)
        } else {
            None
        }
    }
}

/// The compression a request accepts for its event stream, read from its
/// `Accept-Encoding` header; an extractor, for [`Sse::compress`](crate::Sse::compress).
///
/// The coding with the highest `q` that this crate writes is chosen; among
/// equals, zstd before gzip. No header, `identity`, `q=0` or only codings
/// this crate does not write (`br`, `deflate`) choose none: the stream goes
/// out uncompressed.
///
/// ```
/// use http::{HeaderMap, HeaderValue};
/// use sse_runtime::{AcceptEncoding, Encoding};
///
/// let mut headers = HeaderMap::new();
/// // What Chromium sends.
/// headers.insert("accept-encoding", HeaderValue::from_static("gzip, deflate, br, zstd"));
/// assert_eq!(AcceptEncoding::from_headers(&headers).encoding(), Some(Encoding::Zstd));
/// headers.insert("accept-encoding", HeaderValue::from_static("gzip;q=1, zstd;q=0.5"));
/// assert_eq!(AcceptEncoding::from_headers(&headers).encoding(), Some(Encoding::Gzip));
/// assert_eq!(AcceptEncoding::from_headers(&HeaderMap::new()).encoding(), None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptEncoding {
    chosen: Option<Encoding>,
}

impl AcceptEncoding {
    /// Chooses from every `Accept-Encoding` header of `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut offers = Offers::default();
        for value in headers.get_all(ACCEPT_ENCODING) {
            // A value that is not text offers nothing.
            if let Ok(value) = value.to_str() {
                offers.read(value);
            }
        }
        AcceptEncoding {
            chosen: offers.best(),
        }
    }

    /// The coding chosen, or `None` for an uncompressed stream.
    pub const fn encoding(self) -> Option<Encoding> {
        self.chosen
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AcceptEncoding {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(AcceptEncoding::from_headers(&parts.headers))
    }
}

/// The weights (`q`, in thousandths) a client gave our codings and `*`.
#[derive(Default)]
struct Offers {
    zstd: Option<u16>,
    gzip: Option<u16>,
    any: Option<u16>,
}

impl Offers {
    fn read(&mut self, value: &str) {
        for entry in value.split(',') {
            let mut parts = entry.split(';');
            let name = parts.next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            let mut weight = Some(1000);
            for parameter in parts {
                let Some((key, value)) = parameter.split_once('=') else {
                    continue;
                };
                if key.trim().eq_ignore_ascii_case("q") {
                    weight = parse_weight(value.trim());
                }
            }
            // An entry whose weight is malformed is ignored.
            let Some(weight) = weight else { continue };
            let slot = match Encoding::from_name(name) {
                Some(Encoding::Zstd) => &mut self.zstd,
                Some(Encoding::Gzip) => &mut self.gzip,
                None if name == "*" => &mut self.any,
                None => continue,
            };
            // Listed twice: the higher weight counts.
            *slot = Some(slot.map_or(weight, |before| before.max(weight)));
        }
    }

    fn best(&self) -> Option<Encoding> {
        let weight = |encoding| {
            match encoding {
                Encoding::Zstd => self.zstd,
                Encoding::Gzip => self.gzip,
            }
            .or(self.any)
            .unwrap_or(0)
        };
        let mut best: Option<(Encoding, u16)> = None;
        for encoding in Encoding::PREFERRED {
            let q = weight(encoding);
            if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
                best = Some((encoding, q));
            }
        }
        best.map(|(encoding, _)| encoding)
    }
}

/// A `qvalue` (`0`, `1`, `0.5`, `1.000`, at most three decimals) in
/// thousandths; `None` if it is not one.
fn parse_weight(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |sum, digit| sum * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn chosen(values: &[&str]) -> Option<Encoding> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        }
        AcceptEncoding::from_headers(&headers).encoding()
    }

    #[test]
    fn what_browsers_and_tools_send() {
        assert_eq!(
            chosen(&["gzip, deflate, br, zstd"]),
            Some(Encoding::Zstd),
            "Chromium"
        );
        assert_eq!(
            chosen(&["gzip, deflate, br"]),
            Some(Encoding::Gzip),
            "Safari"
        );
        assert_eq!(
            chosen(&["deflate, gzip, br, zstd"]),
            Some(Encoding::Zstd),
            "curl --compressed"
        );
        assert_eq!(chosen(&["gzip, deflate"]), Some(Encoding::Gzip), "httpx");
        assert_eq!(chosen(&[]), None, "no header: never compressed");
        assert_eq!(chosen(&["identity"]), None);
        assert_eq!(chosen(&["br, deflate"]), None, "codings we do not write");
    }

    #[test]
    fn weights_choose_and_zero_refuses() {
        assert_eq!(chosen(&["zstd;q=0.5, gzip"]), Some(Encoding::Gzip));
        assert_eq!(
            chosen(&["zstd;q=0.5, gzip;q=0.5"]),
            Some(Encoding::Zstd),
            "equal: ours"
        );
        assert_eq!(chosen(&["zstd;q=0, gzip;q=0.001"]), Some(Encoding::Gzip));
        assert_eq!(chosen(&["zstd;q=0, gzip;q=0"]), None);
        assert_eq!(chosen(&["*"]), Some(Encoding::Zstd), "anything");
        assert_eq!(
            chosen(&["*;q=0.2, zstd;q=0.1"]),
            Some(Encoding::Gzip),
            "gzip by `*`"
        );
        assert_eq!(chosen(&["*;q=0, gzip"]), Some(Encoding::Gzip));
        assert_eq!(
            chosen(&["GZIP ; Q=1.000"]),
            Some(Encoding::Gzip),
            "case-insensitive"
        );
        assert_eq!(chosen(&["x-gzip"]), Some(Encoding::Gzip));
        assert_eq!(
            chosen(&["br", "gzip"]),
            Some(Encoding::Gzip),
            "several headers"
        );
    }

    #[test]
    fn malformed_entries_are_ignored_without_a_panic() {
        assert_eq!(chosen(&["zstd;q=2, gzip"]), Some(Encoding::Gzip));
        assert_eq!(chosen(&["zstd;q=0.1234"]), None);
        assert_eq!(
            chosen(&["zstd;q=-1, zstd;q=abc, zstd;q=, zstd;q=1.5"]),
            None
        );
        assert_eq!(
            chosen(&[",,, ;q=1, ;;;, zstd;;q=1;x"]),
            Some(Encoding::Zstd)
        );
        // `0.` is a weight of 0; `.5` is not a weight.
        assert_eq!(chosen(&["gzip;q=0.", "zstd;q=.5"]), None);
        assert_eq!(chosen(&["gzip;q=1."]), Some(Encoding::Gzip));
        for text in ["", ";", "=", "q=1", "\u{7f}", "é, gzip"] {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(text) {
                headers.insert(ACCEPT_ENCODING, value);
            }
            let _ = AcceptEncoding::from_headers(&headers);
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_bytes(b"gzip\xff").unwrap(),
        );
        assert_eq!(
            AcceptEncoding::from_headers(&headers).encoding(),
            None,
            "not text"
        );
    }

    #[test]
    fn weights_are_read_exactly() {
        assert_eq!(parse_weight("1"), Some(1000));
        assert_eq!(parse_weight("1.0"), Some(1000));
        assert_eq!(parse_weight("0.5"), Some(500));
        assert_eq!(parse_weight("0.05"), Some(50));
        assert_eq!(parse_weight("0"), Some(0));
        assert_eq!(parse_weight("1.001"), None);
        assert_eq!(parse_weight("01"), None);
    }
}
