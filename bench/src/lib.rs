//! Shared by the benchmark servers and the load generator: the endpoint
//! contract, the event payload, and process measurements from `/proc`.
//!
//! Every server serves, on `127.0.0.1:$PORT`:
//! - `GET  /events/broadcast`: subscribe to the one broadcast topic;
//! - `POST /events/broadcast`: send the body as the data of one event to every
//!   subscriber; answers the number of subscribers reached;
//! - `GET  /events/fast?n=N`: N small JSON events as fast as possible, then the end;
//! - `GET  /events/sse-stream`: `ping` every second.
//!
//! `bench-ours` also serves, for `loadgen keys`, `GET /events/keys/<n>` and
//! `POST /events/keys/<n>` (one key each), and `POST /events/keys-warmup`
//! (a broadcast to them, answering how many it reached).

pub mod acks;
pub mod chart;
pub mod client;
pub mod compare;
pub mod compression;
pub mod h2_idle;
#[cfg(feature = "heap-count")]
pub mod heap;
pub mod interest;
pub mod keyed;
pub mod keys;
pub mod report;
pub mod scenario;
pub mod server_process;
pub mod sweep;

use serde::{Deserialize, Serialize};

/// Events a subscriber may fall behind by before it loses some, in every server.
pub const SUBSCRIBER_BUFFER: usize = 16_384;

/// `?n=` of `/events/fast`.
#[derive(Deserialize)]
pub struct Fast {
    pub n: u64,
}

/// One small JSON event of `/events/fast`.
#[derive(Serialize)]
pub struct Small {
    pub seq: u64,
    pub kind: &'static str,
}

/// The one topic of the broadcast endpoints.
pub const TOPIC: &str = "broadcast";

/// `POST /events/broadcast` for our two servers: the body as one event to every
/// subscriber; answers how many it reached.
pub async fn publish(
    axum::extract::State(registry): axum::extract::State<sse_runtime::Registry<&'static str>>,
    body: String,
) -> String {
    registry
        .send(&TOPIC, sse_runtime::MessageEvent::new(body))
        .await
        .unwrap_or(0)
        .to_string()
}

/// The port from `$PORT` (default 3100).
pub fn port() -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3100)
}

/// Which server loop a bench binary runs.
pub enum Server {
    /// `sse_runtime::serve` (HTTP/1.1 only).
    Ours,
    /// `axum::serve`, as the axum docs show.
    Axum,
}

/// Serves `app` with `server` on 127.0.0.1:$PORT until killed; prints
/// `listening` when ready.
pub async fn serve(app: axum::Router, server: Server) {
    // A listen backlog of 4,096 (tokio's default is 1,024), as a server
    // that expects reconnect storms is set up: the same for every server
    // measured.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], port())))
        .expect("bind");
    let listener = socket.listen(4096).expect("listen");
    println!("listening on {}", listener.local_addr().unwrap());
    match server {
        // With TLS_CERT and TLS_KEY (PEM files): over TLS, HTTP/2 by ALPN.
        Server::Ours => match (std::env::var("TLS_CERT"), std::env::var("TLS_KEY")) {
            (Ok(cert), Ok(key)) => {
                let tls =
                    sse_runtime::TlsConfig::from_pem_files(cert, key).expect("TLS_CERT, TLS_KEY");
                sse_runtime::serve(listener, app)
                    .tls(tls)
                    .await
                    .expect("serve")
            }
            _ => sse_runtime::serve(listener, app).await.expect("serve"),
        },
        Server::Axum => axum::serve(listener, app).await.expect("serve"),
    }
}

/// CPU seconds (user + system) and resident memory of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// Write system calls so far (`syscw` of `/proc/<pid>/io`; 0 if unreadable).
    pub write_syscalls: u64,
    /// Read system calls so far (`syscr`: the `read` and `readv` family, on
    /// sockets too; not `recv`, `epoll_wait` or `futex`; 0 if unreadable).
    pub read_syscalls: u64,
    /// Times its live threads were switched out so far (`nr_switches` of
    /// each thread's `sched`; 0 where the kernel does not show it).
    pub context_switches: u64,
}

/// The CPU time of every thread of `pid` (`se.sum_exec_runtime` of
/// `/proc/<pid>/task/*/sched`, in milliseconds with microsecond digits) and
/// how many times they were switched out (`nr_switches`), if the kernel
/// exposes them.
fn scheduler_totals(pid: u32) -> Option<(f64, u64)> {
    let field = |sched: &str, name: &str| {
        sched.lines().find_map(|line| {
            line.strip_prefix(name)?
                .trim_start_matches([' ', ':'])
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let (mut total_ms, mut switches) = (0.0, 0u64);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let sched = std::fs::read_to_string(task.ok()?.path().join("sched")).ok()?;
        total_ms += field(&sched, "se.sum_exec_runtime")?;
        switches += field(&sched, "nr_switches").unwrap_or(0.0) as u64;
    }
    Some((total_ms / 1e3, switches))
}

/// Reads `/proc/<pid>/stat`, `/proc/<pid>/status` and `/proc/<pid>/io`.
pub fn sample_process(pid: u32) -> std::io::Result<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the name,
    // in ticks of 10 ms: too coarse for a light load, so the scheduler's own
    // count (microseconds) is preferred where the kernel shows it.
    let clock_ticks_per_second = 100.0;
    let scheduler = scheduler_totals(pid);
    let cpu_seconds = scheduler.map_or_else(
        || (ticks(11) + ticks(12)) / clock_ticks_per_second,
        |(seconds, _)| seconds,
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let io_count = |name: &str| {
        io.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ProcessSample {
        cpu_seconds,
        rss_bytes: rss_kib * 1024,
        write_syscalls: io_count("syscw:"),
        read_syscalls: io_count("syscr:"),
        context_switches: scheduler.map_or(0, |(_, switches)| switches),
    })
}
