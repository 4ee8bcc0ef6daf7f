//! Two instances of the chat app, on `$PORT` and `$PORT + 1` (default 3002 and
//! 3003), sharing one Redis (`$REDIS_URL`, default `redis://127.0.0.1:6379/`).
//! Each instance has its own registry and its own Redis connections, exactly as
//! two processes behind a load balancer would; a message posted to one reaches
//! pages open on the other, and a page that reconnects to the other instance
//! resumes with its `Last-Event-ID`.
//!
//! ```text
//! redis-server --port 6379 --save "" --appendonly yes --appendfsync always &
//! cargo run -p cluster
//! ```
//!
//! `INSTANCES=1` runs one instance per process (as behind a real load
//! balancer; the freeze test does).

use std::net::{Ipv4Addr, SocketAddr};

use sse_runtime::{RedisBroker, Registry, RegistryConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let first_port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 3002,
    };

    let instances: u16 = match std::env::var("INSTANCES") {
        Ok(count) => count.parse()?,
        Err(_) => 2,
    };

    let mut servers = Vec::new();
    for port in (0..instances).map(|n| first_port + n) {
        // Only the registry's construction differs from the single-process chat.
        let broker = RedisBroker::connect(&redis_url, RegistryConfig::default())
            .await
            .map_err(|error| format!("{error} (is redis-server running at {redis_url}?)"))?;
        let registry: Registry<String> = Registry::with_broker(broker);
        let chat =
            chat::ChatController::with_registry(["general", "random", "rust"], registry.clone())
                .with_admin_token(&std::env::var("ADMIN_TOKEN").unwrap_or_default());
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        println!(
            "chat instance listening on http://{}/ (Redis {redis_url})",
            listener.local_addr()?
        );
        servers.push(tokio::spawn(async move {
            // As in the chat example: one address cannot take every place.
            sse_runtime::serve(listener, chat.app())
                .max_connections_per_ip(MAX_CONNECTIONS_PER_IP)
                .with_graceful_shutdown(sse_runtime::shutdown_signal())
                .await?;
            registry.shutdown();
            std::io::Result::Ok(())
        }));
    }
    for server in servers {
        server.await??;
    }
    Ok(())
}

/// Connections one client address may hold (an IPv6 client counts with its
/// /64): room for many tabs and a few users behind one address.
const MAX_CONNECTIONS_PER_IP: usize = 64;
