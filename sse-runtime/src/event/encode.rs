//! The `text/event-stream` encoder (WHATWG HTML, "Server-sent events").
//!
//! Every writer appends straight into the caller's buffer; nothing here
//! allocates per field. Values are always written after `": "`: a parser strips
//! exactly one leading space, so a value that itself starts with a space keeps it.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::BytesMut;

/// The comment a connection receives when it has been idle for the keep-alive interval.
pub(crate) const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Writes `name: value\n`.
///
/// The event builders refuse a type or id with CR or LF (and an id with
/// NUL), which is what makes field injection impossible. This check stays in
/// release builds as the last guard, because some values never pass through
/// a builder: the ids a broker stamps and the combined id of a multi-key
/// stream, which is built from a client's resume id. Any such byte that got
/// this far is written as U+FFFD, never as itself.
pub(crate) fn write_field(buf: &mut BytesMut, name: &[u8], value: &str) {
    buf.reserve(name.len() + value.len() + 3);
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    // NUL ends only an id; an event type may hold it.
    let forbidden = if name == b"id" {
        memchr::memchr3(b'\r', b'\n', b'\0', value.as_bytes())
    } else {
        memchr::memchr2(b'\r', b'\n', value.as_bytes())
    };
    match forbidden {
        None => buf.extend_from_slice(value.as_bytes()),
        Some(_) => write_replacing_breaks(buf, name, value),
    }
    buf.extend_from_slice(b"\n");
}

/// `value` with CR, LF and NUL as U+FFFD (NUL only in an id). Reaching
/// this is a bug upstream, so it is logged.
#[cold]
fn write_replacing_breaks(buf: &mut BytesMut, name: &[u8], value: &str) {
    tracing::error!(
        field = %String::from_utf8_lossy(name),
        "a field value with a line break reached the encoder; it was neutralised"
    );
    for ch in value.chars() {
        match ch {
            '\r' | '\n' => buf.extend_from_slice("\u{fffd}".as_bytes()),
            '\0' if name == b"id" => buf.extend_from_slice("\u{fffd}".as_bytes()),
            ch => buf.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

/// Writes `data` as one `data:` line per line of text, splitting on `\r\n`,
/// `\r` and `\n` exactly as a parser does, so a client joins the lines back with
/// `\n`. Empty data is one empty `data:` line, which still dispatches an event.
pub(crate) fn write_data(buf: &mut BytesMut, data: &str) {
    write_lines(buf, b"\ndata: ", data);
}

/// Writes `text` as comment lines (`: line`), splitting on any line break so no
/// part of a comment can be read as a field.
pub(crate) fn write_comment(buf: &mut BytesMut, text: &str) {
    write_lines(buf, b"\n: ", text);
}

/// Writes `retry: <milliseconds>\n`.
pub(crate) fn write_retry(buf: &mut BytesMut, retry: Duration) {
    // Writing into a BytesMut cannot fail.
    let _ = writeln!(buf, "retry: {}", retry.as_millis());
}

/// `break_then_prefix` is a line break followed by the prefix every line
/// starts with (`"\ndata: "`): one append ends a line and starts the next.
#[inline(always)]
fn write_lines(buf: &mut BytesMut, break_then_prefix: &[u8], text: &str) {
    let bytes = text.as_bytes();
    // Room for the text plus a prefix per ~40 bytes of it, without a counting
    // pass (measured slower): the buffer rarely grows, and copies, mid-event.
    buf.reserve(bytes.len() + bytes.len() / 4 + break_then_prefix.len());
    buf.extend_from_slice(&break_then_prefix[1..]);
    let finder = LineBreakFinder::new();
    let mut rest = bytes;
    while let Some(at) = finder.find(rest) {
        buf.extend_from_slice(&rest[..at]);
        buf.extend_from_slice(break_then_prefix);
        // CRLF is one break, not two.
        let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[at + skip..];
    }
    buf.extend_from_slice(rest);
    buf.extend_from_slice(b"\n");
}

/// Finds the next CR or LF. `memchr::memchr2` picks its implementation on
/// every call, which for the short lines of multi-line text costs as much as
/// the search; this picks once per text.
struct LineBreakFinder {
    #[cfg(target_arch = "x86_64")]
    sse2: Option<memchr::arch::x86_64::sse2::memchr::Two>,
}

impl LineBreakFinder {
    fn new() -> Self {
        LineBreakFinder {
            #[cfg(target_arch = "x86_64")]
            sse2: memchr::arch::x86_64::sse2::memchr::Two::new(b'\r', b'\n'),
        }
    }

    fn find(&self, haystack: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(sse2) = &self.sse2 {
            return sse2.find(haystack);
        }
        memchr::memchr2(b'\r', b'\n', haystack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> String {
        let mut buf = BytesMut::new();
        write_data(&mut buf, text);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn splits_like_a_parser() {
        let cases = [
            ("", "data: \n"),
            ("a", "data: a\n"),
            ("a\nb", "data: a\ndata: b\n"),
            ("a\r\nb", "data: a\ndata: b\n"),
            ("a\rb", "data: a\ndata: b\n"),
            ("a\n\rb", "data: a\ndata: \ndata: b\n"),
            ("a\r\r\nb", "data: a\ndata: \ndata: b\n"),
            ("a\r\rb", "data: a\ndata: \ndata: b\n"),
            ("\r\r\n\n", "data: \ndata: \ndata: \ndata: \n"),
            ("a\r", "data: a\ndata: \n"),
            ("\n", "data: \ndata: \n"),
            ("é😀", "data: é😀\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(data(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn a_line_break_in_a_field_value_never_reaches_the_wire_in_any_build() {
        let mut buf = BytesMut::new();
        write_field(&mut buf, b"id", "a\nb\rc\0d");
        write_field(&mut buf, b"event", "x\r\ny\0");
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            "id: a\u{fffd}b\u{fffd}c\u{fffd}d\nevent: x\u{fffd}\u{fffd}y\0\n"
        );
    }

    #[test]
    fn retry_is_whole_milliseconds() {
        let mut buf = BytesMut::new();
        write_retry(&mut buf, Duration::from_micros(2_500_900));
        assert_eq!(&buf[..], b"retry: 2500\n");
    }
}
