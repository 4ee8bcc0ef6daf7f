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
    let app = llm::Completions::new(Duration::from_millis(80)).router();
    sse_runtime::serve(listener, app)
        .with_graceful_shutdown(sse_runtime::shutdown_signal())
        .await
}
