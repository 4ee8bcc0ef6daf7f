//! A deliberately cheap HTTP/1.1 + chunked + SSE client for the load
//! generator: it shares two cores with the server it measures, so it parses
//! only what it needs (the `data:` lines) and allocates little.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use sse_runtime::testing::ContentDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Source addresses are spread over 127.0.0.2..=127.0.0.61, so tens of
/// thousands of connections never run out of one address's ports.
pub fn source_address(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (index % 60) as u8))
}

pub async fn connect(server: SocketAddr, index: usize) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source_address(index), 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An open event stream: the response head was 200, the body is chunked.
pub struct EventStream {
    stream: TcpStream,
    /// Set when the body is compressed (`Content-Encoding`).
    decoder: Option<ContentDecoder>,
    /// The body's bytes as they came over the wire (chunk data).
    wire_bytes: u64,
    buf: Vec<u8>,
    /// Start of unread bytes in `buf`.
    pos: usize,
    chunk_left: usize,
    /// Bytes of the current, incomplete SSE line.
    line: Vec<u8>,
    ended: bool,
    /// When the bytes being read came off the socket (ns since the epoch,
    /// as the events' send times), before any decoding.
    arrived_ns: u64,
}

impl EventStream {
    pub async fn open(
        server: SocketAddr,
        index: usize,
        path: &str,
    ) -> std::io::Result<EventStream> {
        EventStream::open_accepting(server, index, path, None).await
    }

    /// The same, sending `accept_encoding` as `Accept-Encoding` and
    /// decoding what the server compresses.
    pub async fn open_accepting(
        server: SocketAddr,
        index: usize,
        path: &str,
        accept_encoding: Option<&str>,
    ) -> std::io::Result<EventStream> {
        let mut stream = connect(server, index).await?;
        let accept = accept_encoding.map_or(String::new(), |value| {
            format!("accept-encoding: {value}\r\n")
        });
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {server}\r\naccept: text/event-stream\r\n{accept}\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut this = EventStream {
            stream,
            decoder: None,
            wire_bytes: 0,
            arrived_ns: 0,
            buf: Vec::with_capacity(8192),
            pos: 0,
            chunk_left: 0,
            line: Vec::new(),
            ended: false,
        };
        let head = this.read_until(b"\r\n\r\n").await?;
        if !head.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other(format!(
                "unexpected response: {}",
                String::from_utf8_lossy(&head)
            )));
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if let Some(coding) = head
            .lines()
            .find_map(|line| line.strip_prefix("content-encoding:"))
        {
            let mut headers = http::HeaderMap::new();
            let coding =
                http::HeaderValue::from_str(coding.trim()).map_err(std::io::Error::other)?;
            headers.insert(http::header::CONTENT_ENCODING, coding);
            this.decoder = Some(ContentDecoder::for_headers(&headers, path));
        }
        Ok(this)
    }

    /// The body's bytes on the wire so far.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// Calls `on_data` with each `data:` line's value until the stream ends
    /// (`Ok(())`) or `on_data` returns false.
    pub async fn for_each_data(
        &mut self,
        mut on_data: impl FnMut(&[u8]) -> bool,
    ) -> std::io::Result<()> {
        self.for_each_data_arrived(|data, _| on_data(data)).await
    }

    /// As [`for_each_data`](Self::for_each_data), with when the bytes that
    /// ended the line came off the socket (ns since the epoch), before they
    /// were decoded.
    pub async fn for_each_data_arrived(
        &mut self,
        mut on_data: impl FnMut(&[u8], u64) -> bool,
    ) -> std::io::Result<()> {
        self.for_each_line_arrived(|line, arrived| {
            handle_line(line, &mut |data| on_data(data, arrived))
        })
        .await
    }

    /// Calls `on_line` with each line of the stream (without its line
    /// end) until the stream ends (`Ok(())`) or `on_line` returns false.
    pub async fn for_each_line(
        &mut self,
        mut on_line: impl FnMut(&[u8]) -> bool,
    ) -> std::io::Result<()> {
        self.for_each_line_arrived(|line, _| on_line(line)).await
    }

    async fn for_each_line_arrived(
        &mut self,
        mut on_line: impl FnMut(&[u8], u64) -> bool,
    ) -> std::io::Result<()> {
        loop {
            if self.chunk_left == 0 {
                let size_line = self.read_until(b"\r\n").await?;
                let text = std::str::from_utf8(&size_line[..size_line.len() - 2]).unwrap_or("");
                // Skip the CRLF that ends the previous chunk's data.
                if text.is_empty() {
                    continue;
                }
                self.chunk_left = usize::from_str_radix(text, 16).map_err(std::io::Error::other)?;
                if self.chunk_left == 0 {
                    self.ended = true;
                    return Ok(());
                }
            }
            if self.pos == self.buf.len() {
                self.fill().await?;
            }
            let available = (self.buf.len() - self.pos).min(self.chunk_left);
            let start = self.pos;
            self.pos += available;
            self.chunk_left -= available;
            self.wire_bytes += available as u64;
            let data = &self.buf[start..start + available];
            let arrived = self.arrived_ns;
            let mut on_line = |line: &[u8]| on_line(line, arrived);
            let keep_going = match self.decoder.as_mut() {
                None => split_lines(&mut self.line, data, &mut on_line),
                Some(decoder) => {
                    let decoded = decoder.decode(data);
                    split_lines(&mut self.line, &decoded, &mut on_line)
                }
            };
            if !keep_going {
                return Ok(());
            }
        }
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.arrived_ns = crate::scenario::now_nanos();
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_until(&mut self, delimiter: &[u8]) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(at) = self.buf[self.pos..]
                .windows(delimiter.len())
                .position(|w| w == delimiter)
            {
                let end = self.pos + at + delimiter.len();
                let found = self.buf[self.pos..end].to_vec();
                self.pos = end;
                return Ok(found);
            }
            // Keep unread bytes, then read more.
            self.buf.drain(..self.pos);
            self.pos = 0;
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            self.arrived_ns = crate::scenario::now_nanos();
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Calls `on_line` with each complete line of `data`, `partial` holding
/// the start of a line that an earlier piece left open; false once
/// `on_line` says stop.
fn split_lines(
    partial: &mut Vec<u8>,
    data: &[u8],
    on_line: &mut impl FnMut(&[u8]) -> bool,
) -> bool {
    let mut from = 0;
    for at in memchr::memchr_iter(b'\n', data) {
        let keep_going = if partial.is_empty() {
            on_line(&data[from..at])
        } else {
            partial.extend_from_slice(&data[from..at]);
            let keep = on_line(partial);
            partial.clear();
            keep
        };
        from = at + 1;
        if !keep_going {
            return false;
        }
    }
    partial.extend_from_slice(&data[from..]);
    true
}

fn handle_line(line: &[u8], on_data: &mut impl FnMut(&[u8]) -> bool) -> bool {
    match line
        .strip_prefix(b"data: ")
        .or_else(|| line.strip_prefix(b"data:"))
    {
        Some(value) => on_data(value),
        None => true,
    }
}

/// A keep-alive connection that POSTs bodies and reads the text answers.
pub struct Publisher {
    stream: TcpStream,
    server: SocketAddr,
    buf: Vec<u8>,
}

impl Publisher {
    pub async fn connect(server: SocketAddr) -> std::io::Result<Publisher> {
        Ok(Publisher {
            stream: connect(server, 0).await?,
            server,
            buf: Vec::with_capacity(1024),
        })
    }

    /// POSTs `body` to `path`; returns the answer's body.
    pub async fn post(&mut self, path: &str, body: &str) -> std::io::Result<String> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            self.server,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        loop {
            if let Some(head_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let total = head_end + 4 + length;
                if self.buf.len() >= total {
                    let answer =
                        String::from_utf8_lossy(&self.buf[head_end + 4..total]).into_owned();
                    self.buf.drain(..total);
                    return Ok(answer);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .map_err(std::io::Error::other)??;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "publisher connection closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
