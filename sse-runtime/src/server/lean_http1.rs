//! A lean HTTP/1.1 connection for the requests an event stream is made of:
//! `GET`s without a body. It parses the head with `httparse`, answers through
//! the app, and streams the response straight onto the socket, so an open
//! event stream holds no HTTP buffers at all (hyper keeps an 8 KiB read and an
//! 8 KiB write buffer per connection, most of the memory of an idle stream).
//!
//! Anything else (a request with a body, `HEAD`, HTTP/1.0, an upgrade, an
//! `Expect`) hands the connection, with the bytes already read, to hyper,
//! which serves it from then on.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::server::write_stall::WriteStallIo;

/// The longest request head read: past it the request is answered `431`.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most headers a request may have.
const MAX_HEADERS: usize = 64;

/// What the next request on a connection is. Lives only between reading a
/// head and answering it, so its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    /// A bodiless `GET`, for the lean path; `close` when the client asked
    /// for the connection to end after it.
    Lean { request: Request<Body>, close: bool },
    /// Anything else: hyper takes the connection, `pending` included.
    Hyper,
    /// A head that cannot be a request: answered with this status, then closed.
    Refuse(StatusCode),
    /// The client closed the connection between requests.
    Closed,
}

/// Reads until `pending` holds a whole request head, and classifies it. The
/// head of a lean request is consumed from `pending`; anything else is left
/// there for hyper.
pub(crate) async fn read_head(socket: &TcpStream, pending: &mut BytesMut) -> io::Result<Next> {
    loop {
        if !pending.is_empty() {
            match classify(pending) {
                Some(next) => return Ok(next),
                None if pending.len() >= MAX_HEAD_BYTES => {
                    return Ok(Next::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
                }
                None => {}
            }
        }
        socket.readable().await?;
        let mut chunk = [0u8; 2048];
        match socket.try_read(&mut chunk) {
            Ok(0) if pending.is_empty() => return Ok(Next::Closed),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => pending.extend_from_slice(&chunk[..read]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}

/// `None` while the head is incomplete.
fn classify(pending: &mut BytesMut) -> Option<Next> {
    // Blank lines before a request are allowed (RFC 9112, 2.2).
    let blank = pending
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    pending.advance(blank);
    if pending.is_empty() {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(pending) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return None,
        // Too many headers, or anything odd: hyper answers those its own way.
        Err(_) => return Some(Next::Hyper),
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return Some(Next::Hyper);
    }
    let mut close = false;
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = match HeaderName::from_bytes(header.name.as_bytes()) {
            Ok(name) => name,
            Err(_) => return Some(Next::Refuse(StatusCode::BAD_REQUEST)),
        };
        let body_or_upgrade = match name.as_str() {
            "content-length" => header.value != b"0",
            "transfer-encoding" | "expect" | "upgrade" => true,
            _ => false,
        };
        if body_or_upgrade {
            return Some(Next::Hyper);
        }
        if name == CONNECTION {
            let tokens = String::from_utf8_lossy(header.value).to_ascii_lowercase();
            if tokens.split(',').any(|token| token.trim() == "upgrade") {
                return Some(Next::Hyper);
            }
            close |= tokens.split(',').any(|token| token.trim() == "close");
        }
        match HeaderValue::from_bytes(header.value) {
            Ok(value) => {
                map.append(name, value);
            }
            Err(_) => return Some(Next::Refuse(StatusCode::BAD_REQUEST)),
        }
    }
    let Ok(uri) = http::Uri::try_from(parsed.path.unwrap_or("/")) else {
        return Some(Next::Refuse(StatusCode::BAD_REQUEST));
    };
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    pending.advance(head_len);
    Some(Next::Lean { request, close })
}

/// Whether a response of `status` has a body (RFC 9112, 6.3).
fn has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Writes `response` onto `io`: its head, then its body as it comes, chunked
/// unless its length is known. Returns `Ok(true)` when the connection may
/// serve another request, `Ok(false)` when it must close (the client went
/// away, or the response could not be completed).
///
/// While the body waits for its next frame, the socket is watched: a client
/// that closes its end ends the response at once, as hyper would, and bytes
/// it sends meanwhile (a pipelined request) are kept in `pending`.
pub(crate) async fn write_response(
    io: &mut WriteStallIo<TcpStream>,
    pending: &mut BytesMut,
    response: Response<Body>,
    close: bool,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let length = if has_body(parts.status) {
        Some(http_body::Body::size_hint(&body).exact())
    } else {
        None
    };
    let mut head = BytesMut::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        // Framing is ours to state.
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let chunked = matches!(length, Some(None));
    match length {
        Some(Some(length)) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(length.to_string().as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        Some(None) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    // A streamed body is asked for its first frame once before the head
    // goes out. A subscription takes its place in the stream in its first
    // poll; asked after, a client that saw `200` and at once published
    // could find its event before the stream's start (the fault checker
    // found one under load).
    let mut first = Poll::Pending;
    if length == Some(None) {
        let mut frame = std::pin::pin!(body.frame());
        first = std::future::poll_fn(|cx| Poll::Ready(frame.as_mut().poll(cx))).await;
    }
    // The response's head is written: its headers need not live as long as
    // the stream does.
    drop(parts);
    io.write_all(&head).await?;
    drop(head);
    if length.is_none() {
        return Ok(!close);
    }

    loop {
        let frame = match std::mem::replace(&mut first, Poll::Pending) {
            Poll::Ready(frame) => frame,
            Poll::Pending => tokio::select! {
                frame = body.frame() => frame,
                () = peer_gone(io.get_ref(), pending) => return Ok(false),
            },
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue, // Trailers and empty frames are not sent.
            },
            Some(Err(error)) => {
                tracing::debug!(%error, "response body failed; closing the connection");
                return Ok(false);
            }
        };
        if chunked {
            write_chunk(io, data).await?;
        } else {
            io.write_all(&data).await?;
        }
    }
    if chunked {
        io.write_all(b"0\r\n\r\n").await?;
    }
    Ok(!close)
}

/// One chunk: its size line, its data and its end in one vectored write.
async fn write_chunk(io: &mut WriteStallIo<TcpStream>, data: Bytes) -> io::Result<()> {
    let mut size = [0u8; 18];
    let size = chunk_size_line(data.len(), &mut size);
    let mut parts = [
        IoSlice::new(size),
        IoSlice::new(&data),
        IoSlice::new(b"\r\n"),
    ];
    let mut parts = &mut parts[..];
    while !parts.is_empty() {
        let written = io.write_vectored(parts).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, written);
    }
    Ok(())
}

/// `len` in hex followed by CRLF, written into `buf`.
fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (index, slot) in buf[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - index))) & 0xf;
        *slot = b"0123456789abcdef"[nibble];
    }
    buf[digits..digits + 2].copy_from_slice(b"\r\n");
    &buf[..digits + 2]
}

/// Resolves when the peer has closed its end (or the socket failed). Bytes
/// it sends meanwhile are kept in `pending`, up to [`MAX_HEAD_BYTES`]; past
/// that the client is not reading what it is sent and counts as gone.
async fn peer_gone(socket: &TcpStream, pending: &mut BytesMut) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        // Declared after the wait, so the buffer is not part of what an idle
        // stream keeps while it waits.
        let mut chunk = [0u8; 512];
        match socket.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(read) if pending.len() + read <= MAX_HEAD_BYTES => {
                pending.extend_from_slice(&chunk[..read]);
            }
            Ok(_) => return,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Answers a head that cannot be served with `status` and an empty body.
pub(crate) async fn refuse(io: &mut WriteStallIo<TcpStream>, status: StatusCode) {
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    let _ = io.write_all(answer.as_bytes()).await;
    let _ = io.shutdown().await;
}

pin_project! {
    /// `inner`, whose first reads return the bytes already read from it.
    pub(crate) struct Rewind<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

impl<T> Rewind<T> {
    pub(crate) fn new(prefix: Bytes, inner: T) -> Self {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let take = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(take));
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(head: &str) -> Option<Next> {
        classify(&mut BytesMut::from(head))
    }

    #[test]
    fn a_bodiless_get_is_lean_and_its_head_is_consumed() {
        let mut pending = BytesMut::from(
            "\r\nGET /events?x=1 HTTP/1.1\r\nhost: a\r\naccept: text/event-stream\r\nlast-event-id: 7\r\n\r\nGET /next",
        );
        match classify(&mut pending) {
            Some(Next::Lean { request, close }) => {
                assert_eq!(request.uri(), "/events?x=1");
                assert_eq!(request.headers()["last-event-id"], "7");
                assert!(!close);
            }
            _ => panic!("not lean"),
        }
        assert_eq!(&pending[..], b"GET /next", "the next request stays");
    }

    #[test]
    fn anything_with_a_body_or_an_upgrade_goes_to_hyper() {
        for head in [
            "POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc",
            "GET /x HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
            "GET /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET /x HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            "GET /x HTTP/1.1\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
            "HEAD /x HTTP/1.1\r\n\r\n",
            "GET /x HTTP/1.0\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            assert!(matches!(next(head), Some(Next::Hyper)), "{head:?}");
        }
        // Left for hyper to read again.
        let mut pending = BytesMut::from("POST /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        classify(&mut pending);
        assert!(pending.starts_with(b"POST"));
    }

    #[test]
    fn a_partial_head_waits_and_connection_close_is_honoured() {
        assert!(next("GET /x HTTP/1.1\r\nhost: a\r\n").is_none());
        assert!(matches!(
            next("GET /x HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"),
            Some(Next::Lean { close: true, .. })
        ));
        assert!(matches!(
            next("GET /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n"),
            Some(Next::Lean { close: false, .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Whatever a client sends, classifying it neither panics nor
        /// consumes more than one head.
        #[test]
        fn any_bytes_are_classified_without_panicking(
            prefix in proptest::sample::select(vec!["", "GET / HTTP/1.1\r\n", "GET /x HTTP/1.1\r\nhost: a\r\n"]),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        ) {
            let mut input = prefix.as_bytes().to_vec();
            input.extend_from_slice(&bytes);
            let mut pending = BytesMut::from(&input[..]);
            if let Some(Next::Lean { .. }) = classify(&mut pending) {
                proptest::prop_assert!(pending.len() < input.len());
            }
        }
    }

    #[test]
    fn chunk_sizes_are_lowercase_hex_lines() {
        let mut buf = [0u8; 18];
        for (len, line) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (10, "a\r\n"),
            (255, "ff\r\n"),
            (65536, "10000\r\n"),
        ] {
            assert_eq!(chunk_size_line(len, &mut buf), line.as_bytes(), "{len}");
        }
        assert_eq!(
            chunk_size_line(usize::MAX, &mut buf),
            b"ffffffffffffffff\r\n"
        );
    }

    #[test]
    fn response_bodies_follow_the_status() {
        assert!(has_body(StatusCode::OK));
        assert!(!has_body(StatusCode::NO_CONTENT));
        assert!(!has_body(StatusCode::NOT_MODIFIED));
        assert!(!has_body(StatusCode::CONTINUE));
    }
}
