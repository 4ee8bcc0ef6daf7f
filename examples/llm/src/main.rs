//! `cargo run -p llm`, then open the printed URL, type a prompt, and press
//! Cancel while it streams. `PORT` sets the port (3004).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(3004);
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    println!(
        "llm example listening on http://{}/",
        listener.local_addr()?
    );
    let app = llm::Completions::new(Duration::from_millis(80)).app();
    // One address may hold this many connections: a client opening
    // streams in a loop cannot take the places of everyone else.
    sse_runtime::serve(listener, app)
        .max_connections_per_ip(MAX_CONNECTIONS_PER_IP)
        .with_graceful_shutdown(sse_runtime::shutdown_signal())
        .await
}

/// Connections one client address may hold (an IPv6 client counts with its
/// /64). A browser opens at most six per origin over HTTP/1.1, so this leaves
/// room for many tabs, and for a few users sharing one address.
const MAX_CONNECTIONS_PER_IP: usize = 64;
