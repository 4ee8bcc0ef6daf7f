//! The processes a benchmark measures: a bench server on a free loopback
//! port, and a `redis-server` of the benchmark's own.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// A running bench server.
pub struct ServerProcess {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    pub pid: u32,
}

/// Starts `binary` (beside the running executable) on a free port.
pub async fn start(binary: &str) -> ServerProcess {
    start_with(binary, &[]).await
}

/// [`start`] with extra environment variables.
pub async fn start_with(binary: &str, env: &[(&str, String)]) -> ServerProcess {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().unwrap().port()
    };
    let path = std::env::current_exe().unwrap().with_file_name(binary);
    let mut child = tokio::process::Command::new(&path)
        .env("PORT", port.to_string())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (build with `cargo build --release -p bench`)",
                path.display()
            )
        });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    assert!(
        matches!(ready, Ok(Ok(Some(ref line))) if line.starts_with("listening")),
        "{binary} did not start"
    );
    let pid = child.id().unwrap();
    ServerProcess {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        pid,
    }
}

impl ServerProcess {
    /// Kills the server and lets the kernel release its connections.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        // Let the kernel release the connections before the next scenario.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn start_redis() -> (tokio::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start redis-server (apt-get install redis-server)");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, port)
}

/// `total_commands_processed` of the Redis on `port`.
pub fn redis_commands(port: u16) -> u64 {
    redis_stat(port, "total_commands_processed")
}

/// The counter `name` of `INFO stats` of the Redis on `port` (0 if it
/// cannot be read).
pub fn redis_stat(port: u16, name: &str) -> u64 {
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "stats"])
        .output();
    output
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}
