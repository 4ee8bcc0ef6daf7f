//! `cargo run -p basic`, then open the printed URL.

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
        Err(_) => 3000,
    };
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    println!(
        "basic example listening on http://{}/",
        listener.local_addr()?
    );

    let controller = basic::EventsController::new();
    let registry = controller.users().clone();
    sse_runtime::serve(listener, controller.app())
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // Ends every open SSE response, so the server can stop.
            registry.shutdown();
        })
        .await
}
