//! Loopback ports for tests that start servers of their own (an example's
//! binary, `redis-server`).

use std::time::Duration;

/// The ports this process has handed out (see [`free_port`]).
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

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
    free_port_and(0)
}

/// A free port `p` such that `p + offset` is free too, both handed out as
/// [`free_port`] hands out one: for a server that listens on two ports, as
/// a Redis Cluster node does on its port and on port + 10000 for the
/// cluster bus. (A bus port handed to another test's server as its own
/// port made that server answer for a cluster node that could not bind.)
///
/// # Panics
///
/// When no such pair can be found.
pub fn free_port_and(offset: u16) -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|error| panic!("no free loopback port: {error}"));
        let Some(second) = port.checked_add(offset) else {
            continue;
        };
        if offset != 0 && !free(second) {
            continue;
        }
        let mut handed_out = crate::sync::lock(&HANDED_OUT);
        if !handed_out.contains(&port) && !handed_out.contains(&second) {
            handed_out.push(port);
            if offset != 0 {
                handed_out.push(second);
            }
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
