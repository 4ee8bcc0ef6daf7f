//! `cargo run -p basic`, then open the printed URL.
//!
//! Settings from the environment: `PORT` (3000), `TOKEN_TTL_SECS` (how long a
//! login token is valid: 3600), `ADMIN_TOKEN` (a credential that may push to
//! any user: none). `GET /metrics` serves the runtime's metrics.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let port: u16 = setting("PORT", 3000)?;
    let token_ttl = Duration::from_secs(setting("TOKEN_TTL_SECS", 3600)?);
    if token_ttl > basic::Tokens::MAX_TTL {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "TOKEN_TTL_SECS={}: at most {} (a year)",
                token_ttl.as_secs(),
                basic::Tokens::MAX_TTL.as_secs()
            ),
        ));
    }
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    println!(
        "basic example listening on http://{}/",
        listener.local_addr()?
    );

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(std::io::Error::other)?;
    let controller = basic::EventsController::new()
        .with_metrics(metrics)
        .with_tokens(basic::Tokens::new(token_ttl))
        .with_admin_token(&std::env::var("ADMIN_TOKEN").unwrap_or_default());
    let registry = controller.users().clone();
    // On Ctrl-C or SIGTERM, open streams end with a spread-out `retry:` and
    // whatever is still open after 10 s is closed.
    // One address may hold this many connections: a client opening
    // streams in a loop cannot take the places of everyone else.
    sse_runtime::serve(listener, controller.app())
        .max_connections_per_ip(MAX_CONNECTIONS_PER_IP)
        .with_graceful_shutdown(sse_runtime::shutdown_signal())
        .await?;
    // Stops what feeds the streams.
    registry.shutdown();
    Ok(())
}

/// The environment variable `name` parsed, or `default` when it is not set.
fn setting<T: FromStr>(name: &str, default: T) -> std::io::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) => value.parse().map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name}={value:?}: {error}"),
            )
        }),
        Err(_) => Ok(default),
    }
}

/// Connections one client address may hold (an IPv6 client counts with its
/// /64). A browser opens at most six per origin over HTTP/1.1, so this leaves
/// room for many tabs, and for a few users sharing one address.
const MAX_CONNECTIONS_PER_IP: usize = 64;
