//! Loopback ports for tests that start servers of their own (an example's
//! binary, `redis-server`).

use std::time::Duration;

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it), and
/// that this process has not handed out before: tests run in parallel, and
/// two of them given the same port a moment apart (each server binds it
/// later) would each start a server on it, the second failing while the
/// first answers both tests.
///
/// # Panics
///
/// When no port can be bound at all.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|error| panic!("no free loopback port: {error}"));
        let mut handed_out = crate::sync::lock(&HANDED_OUT);
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
///
/// # Panics
///
/// When nothing does within 30 seconds (a generous bound: a server that
/// starts slowly on a busy machine is not a failure).
pub async fn wait_for_port(port: u16) {
    const WAIT: Duration = Duration::from_secs(30);
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
