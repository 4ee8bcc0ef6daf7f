//! Compressed streams (the chat example's rooms, `compress = true`) over
//! loopback: negotiated from `Accept-Encoding`, every event decodable as
//! soon as it is written, never compressed for a client that did not ask,
//! and read by the testing client and `curl --compressed`.

use std::process::Stdio;
use std::time::Duration;

use chat::{ChatController, ChatMessage};
use sse_runtime::testing::{ContentDecoder, TestClient};
use sse_tests::external::{require, runs};
use sse_tests::{RawResponse, TestServer, within};
use tokio::io::AsyncReadExt;

async fn chat() -> TestServer {
    TestServer::start(ChatController::new(["general"]).app()).await
}

async fn say(server: &TestServer, text: &str) {
    let response = within(
        reqwest::Client::new()
            .post(server.url("/rooms/general/messages"))
            .json(&ChatMessage {
                user: "ada".into(),
                text: text.into(),
            })
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
}

/// The response head's value of `name` (lower-case), if any.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// A raw stream and its decoder, read chunk by chunk.
struct Decoded {
    raw: RawResponse,
    decoder: ContentDecoder,
    text: String,
}

impl Decoded {
    async fn open(server: &TestServer, accept_encoding: Option<&str>) -> Decoded {
        let extra = accept_encoding.map_or(String::new(), |value| {
            format!("accept-encoding: {value}\r\n")
        });
        let raw = RawResponse::get_with(server.addr, "/rooms/general/events", &extra).await;
        let mut headers = http::HeaderMap::new();
        if let Some(coding) = header(&raw.head, "content-encoding") {
            headers.insert("content-encoding", coding.parse().unwrap());
        }
        Decoded {
            decoder: ContentDecoder::for_headers(&headers, "GET /rooms/general/events"),
            raw,
            text: String::new(),
        }
    }

    /// Reads chunks until the decoded text contains `wanted`; the chunks
    /// read, and their total bytes on the wire.
    async fn until(&mut self, wanted: &str) -> (usize, usize) {
        let (mut chunks, mut bytes) = (0, 0);
        while !self.text.contains(wanted) {
            let chunk = self.raw.next_chunk().await.expect("the stream goes on");
            chunks += 1;
            bytes += chunk.len();
            let decoded = self.decoder.decode(&chunk);
            self.text.push_str(std::str::from_utf8(&decoded).unwrap());
        }
        (chunks, bytes)
    }
}

#[tokio::test]
async fn each_coding_delivers_every_event_as_it_is_written() {
    let server = chat().await;
    for coding in ["gzip", "zstd"] {
        let mut stream = Decoded::open(&server, Some(coding)).await;
        assert_eq!(
            header(&stream.raw.head, "content-encoding"),
            Some(coding),
            "{}",
            stream.raw.head
        );
        assert_eq!(header(&stream.raw.head, "vary"), Some("accept-encoding"));
        assert!(stream.decoder.is_compressed());
        stream.until("retry: 1000").await;
        // Each message is read back before the next is sent: nothing waits
        // in the encoder for more input.
        for n in 0..5 {
            let text = format!("{coding} message {n}");
            say(&server, &text).await;
            stream.until(&text).await;
        }
    }
}

#[tokio::test]
async fn a_client_that_does_not_ask_gets_the_stream_plain() {
    let server = chat().await;
    for accept_encoding in [
        None,
        Some("identity"),
        Some("br, deflate"),
        Some("gzip;q=0"),
    ] {
        let mut stream = Decoded::open(&server, accept_encoding).await;
        assert_eq!(
            header(&stream.raw.head, "content-encoding"),
            None,
            "{accept_encoding:?}"
        );
        assert_eq!(header(&stream.raw.head, "vary"), Some("accept-encoding"));
        let first = stream.raw.next_chunk().await.unwrap();
        assert!(
            first.starts_with(b"retry: 1000\n\n"),
            "{accept_encoding:?}: plain text"
        );
    }
}

#[tokio::test]
async fn a_compressed_stream_is_a_third_of_the_plain_bytes_or_less() {
    let server = chat().await;
    let mut plain = Decoded::open(&server, None).await;
    let mut zstd = Decoded::open(&server, Some("zstd")).await;
    let mut gzip = Decoded::open(&server, Some("gzip")).await;
    for stream in [&mut plain, &mut zstd, &mut gzip] {
        stream.until("retry: 1000").await;
        stream.until("\n\n").await;
    }
    let (mut plain_bytes, mut zstd_bytes, mut gzip_bytes) = (0, 0, 0);
    for n in 0..60 {
        let text = format!("message {n}: the deploy is green again, lunch at noon?");
        say(&server, &text).await;
        plain_bytes += plain.until(&text).await.1;
        zstd_bytes += zstd.until(&text).await.1;
        gzip_bytes += gzip.until(&text).await.1;
    }
    // The chunks also carry what the stream had when they were read, so
    // sizes are compared over the same 60 messages on all three.
    for (coding, bytes) in [("zstd", zstd_bytes), ("gzip", gzip_bytes)] {
        let ratio = bytes as f64 / plain_bytes as f64;
        assert!(
            ratio <= 0.35,
            "{coding}: {bytes} of {plain_bytes} bytes ({ratio:.2})"
        );
    }
}

#[tokio::test]
async fn the_testing_client_reads_a_compressed_stream() {
    let chat = ChatController::new(["general"]);
    let client = TestClient::new(chat.clone().app());
    for coding in ["gzip", "zstd"] {
        let mut stream = client
            .get("/rooms/general/events")
            .header("accept-encoding", coding)
            .send()
            .await;
        assert_eq!(stream.headers()["content-encoding"], coding);
        let posted = client
            .post("/rooms/general/messages")
            .json(&ChatMessage {
                user: "ada".into(),
                text: format!("over {coding}"),
            })
            .send()
            .await;
        assert_eq!(posted.status(), 202);
        let event = stream.next_event().await.expect("an event");
        let message: ChatMessage = serde_json::from_str(&event.data).unwrap();
        assert_eq!(message.text, format!("over {coding}"));
    }
}

#[tokio::test]
async fn curl_compressed_reads_the_stream_and_was_sent_it_compressed() {
    if require(&[("curl", runs("curl"))]).is_err() {
        return;
    }
    let server = chat().await;
    let mut curl = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--no-buffer",
            "--compressed",
            "--max-time",
            "60",
        ])
        .args(["--dump-header", "/dev/stderr"])
        .arg(server.url("/rooms/general/events"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl starts");
    let mut stdout = curl.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // The stream opens (its resume point arrives), then a message is read.
    while !seen.contains("id: ") {
        let n = within(stdout.read(&mut buf)).await.unwrap();
        assert!(n > 0, "curl ended: {seen:?}");
        seen.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    say(&server, "hello curl").await;
    while !seen.contains("hello curl") {
        let n = within(stdout.read(&mut buf)).await.unwrap();
        assert!(n > 0, "curl ended: {seen:?}");
        seen.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    curl.kill().await.unwrap();
    let mut head = String::new();
    let mut stderr = curl.stderr.take().unwrap();
    within(stderr.read_to_string(&mut head)).await.unwrap();
    let coding = header(&head, "content-encoding");
    assert!(
        matches!(coding, Some("zstd" | "gzip")),
        "curl was sent {coding:?}: {head}"
    );
}

#[tokio::test]
async fn an_idle_compressed_stream_rests_and_goes_on_decoding() {
    // The encoder is dropped after 5 s without an event; the next event
    // starts a new one (a new zstd frame; new deflate blocks in gzip), and
    // the client decodes on. Waiting longer than needed only makes sure the
    // rest happened.
    let server = chat().await;
    let mut streams = [
        Decoded::open(&server, Some("gzip")).await,
        Decoded::open(&server, Some("zstd")).await,
    ];
    for stream in &mut streams {
        stream.until("retry: 1000").await;
    }
    say(&server, "before the rest").await;
    for stream in &mut streams {
        stream.until("before the rest").await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    say(&server, "after the rest").await;
    for stream in &mut streams {
        stream.until("after the rest").await;
    }
}

/// Streams of one room share their encoder's state (one compression per
/// event for all of them): streams that open at different times, over
/// both codings, each decode every message once and in order, through
/// the shared path and the restarts where late ones join it.
#[tokio::test]
async fn streams_that_open_at_different_times_each_decode_every_message_once() {
    let server = chat().await;
    let mut streams = Vec::new();
    for coding in ["zstd", "zstd", "gzip", "gzip"] {
        streams.push((0, Decoded::open(&server, Some(coding)).await));
    }
    for (_, stream) in &mut streams {
        stream.until("retry: 1000").await;
    }
    let total = 200;
    for n in 0..total {
        if n == 50 {
            for coding in ["zstd", "gzip"] {
                let mut late = Decoded::open(&server, Some(coding)).await;
                late.until("retry: 1000").await;
                streams.push((n, late));
            }
        }
        say(&server, &format!("shared message {n}")).await;
    }
    for (first, stream) in &mut streams {
        stream
            .until(&format!("shared message {}\"", total - 1))
            .await;
        let seen: Vec<usize> = stream
            .text
            .match_indices("shared message ")
            .map(|(at, found)| {
                let digits: String = stream.text[at + found.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().unwrap()
            })
            .collect();
        assert_eq!(seen, (*first..total).collect::<Vec<_>>());
    }
}
