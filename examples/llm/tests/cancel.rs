//! The token stream over loopback: every token then `done`, and a client
//! that goes away stops the generation.

use std::time::Duration;

use futures_util::StreamExt;
use llm::Completion;
use sse_runtime::FromEvent;
use sse_runtime::testing::TestClient;

async fn serve(app: axum::Router) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { sse_runtime::serve(listener, app).await.unwrap() });
    (addr, task)
}

#[tokio::test]
async fn a_prompt_streams_its_tokens_then_done() {
    let completions = llm::Completions::new(Duration::from_millis(1));
    let client = TestClient::new(completions.clone().router());
    let mut response = client
        .post("/completions")
        .json(&serde_json::json!({ "prompt": "one two  three" }))
        .send()
        .await;
    assert_eq!(response.status(), 200);
    let events = response.take(4).await;
    let wire: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(
        wire,
        [
            ("token", "\"one\""),
            ("token", "\" two\""),
            ("token", "\" three\""),
            ("done", "null")
        ]
    );
    // Read back as the typed client reads them.
    let read: Vec<Completion> = events
        .iter()
        .map(|e| Completion::from_event(&e.event, &e.data).unwrap().unwrap())
        .collect();
    assert_eq!(
        read,
        [
            Completion::Token("one".into()),
            Completion::Token(" two".into()),
            Completion::Token(" three".into()),
            Completion::Done
        ]
    );
    assert!(response.next_event().await.is_none());
    assert_eq!(completions.running(), 0);
}

#[tokio::test]
async fn a_client_that_cancels_stops_the_generation() {
    let completions = llm::Completions::new(Duration::from_millis(20));
    let (addr, server) = serve(completions.clone().router()).await;
    let prompt: String = (0..500).map(|n| format!("w{n} ")).collect();
    let mut stream = Box::pin(
        tokio::time::timeout(Duration::from_secs(5), sse_reader(addr, &prompt))
            .await
            .unwrap(),
    );
    // Two tokens in, the client aborts (as the page's Cancel does).
    let mut seen = 0;
    while seen < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .expect("open")
            .unwrap();
        seen += String::from_utf8_lossy(&chunk)
            .matches("event: token")
            .count();
    }
    assert_eq!(completions.running(), 1);
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while completions.running() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the generation went on"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped_at = completions.generated();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        completions.generated(),
        stopped_at,
        "no token after the client left"
    );
    assert!(stopped_at < 10, "{stopped_at} of 500 tokens generated");
    server.abort();
}

/// `POST /completions` over a real socket; the body's chunks as they come.
async fn sse_reader(
    addr: std::net::SocketAddr,
    prompt: &str,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = serde_json::json!({ "prompt": prompt }).to_string();
    let request = format!(
        "POST /completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    futures_util::stream::unfold(socket, |mut socket| async move {
        let mut buf = vec![0u8; 4096];
        match socket.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), socket))
            }
            Err(error) => Some((Err(error), socket)),
        }
    })
}
