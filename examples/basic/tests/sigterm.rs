//! The built `basic` binary, stopped the way a container runtime stops it:
//! SIGTERM with streams open. It must end every stream with a spread-out
//! `retry:` and exit well within its 10 s shutdown deadline.
#![cfg(unix)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

/// Opens `path` and reads the response head.
async fn open_stream(addr: &str, path: &str) -> TcpStream {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            within(stream.read(&mut byte)).await.unwrap(),
            1,
            "closed early"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    stream
}

#[tokio::test]
async fn sigterm_with_open_streams_ends_them_with_a_retry_hint_and_exits_promptly() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_basic"))
        .env("PORT", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the basic binary");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let banner = within(lines.next_line())
        .await
        .unwrap()
        .expect("a banner line");
    let addr = banner
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_owned();

    let mut streams = Vec::new();
    for path in [
        "/events/sse-stream",
        "/events/dynamic",
        "/events/sse-stream",
    ] {
        streams.push(open_stream(&addr, path).await);
    }
    let pid = server.id().unwrap().to_string();
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let status = within(server.wait()).await.unwrap();
    let took = signalled.elapsed();
    eprintln!(
        "exited {took:?} after SIGTERM with {} open streams",
        streams.len()
    );
    assert!(status.success(), "{status}");
    // Well before the 10 s shutdown deadline, so the streams ended at once
    // rather than being cut at it; generous for a busy machine.
    assert!(took < Duration::from_secs(8), "took {took:?}");

    for mut stream in streams {
        let mut rest = Vec::new();
        within(stream.read_to_end(&mut rest)).await.unwrap();
        let rest = String::from_utf8(rest).unwrap();
        // The last chunk before the end of the body: `retry: <ms>`.
        let retry = rest
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("retry: "))
            .unwrap_or_else(|| panic!("no retry field before the end: {rest:?}"));
        let millis: u64 = retry.parse().unwrap();
        assert!((1000..=5000).contains(&millis), "retry: {millis}");
        assert!(
            rest.ends_with("0\r\n\r\n"),
            "the chunked body ended cleanly: {rest:?}"
        );
    }
}
