//! `cargo run -p chat`, then open the printed URL in two windows.
//!
//! Settings from the environment: `PORT` (3001), `ADMIN_TOKEN` (the
//! credential for `POST /admin/drop-streams` and `POST /admin/announce`:
//! none, which refuses them).

use std::net::{Ipv4Addr, SocketAddr};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let port = match std::env::var("PORT") {
        Ok(port) => port.parse::<u16>().map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("PORT={port:?}: {error}"),
            )
        })?,
        Err(_) => 3001,
    };
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    println!(
        "chat example listening on http://{}/",
        listener.local_addr()?
    );

    let chat = chat::ChatController::new(["general", "random", "rust"])
        .with_admin_token(&std::env::var("ADMIN_TOKEN").unwrap_or_default());
    let registry = chat.registry().clone();
    // On Ctrl-C or SIGTERM, open streams end with a spread-out `retry:` and
    // whatever is still open after 10 s is closed.
    // One address may hold this many connections: a client opening
    // streams in a loop cannot take the places of everyone else.
    sse_runtime::serve(listener, chat.app())
        .max_connections_per_ip(MAX_CONNECTIONS_PER_IP)
        .with_graceful_shutdown(sse_runtime::shutdown_signal())
        .await?;
    registry.shutdown();
    Ok(())
}

/// Connections one client address may hold (an IPv6 client counts with its
/// /64). A browser opens at most six per origin over HTTP/1.1, so this leaves
/// room for many tabs, and for a few users sharing one address.
const MAX_CONNECTIONS_PER_IP: usize = 64;
