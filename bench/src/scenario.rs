//! The load scenarios. Each runs against one server process, bounded in count
//! and time, on 127.0.0.x only, and returns its figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client::{EventStream, Publisher};
use crate::{ProcessSample, sample_process};

/// What one scenario run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub delivered: u64,
    pub expected: u64,
    pub events_per_second: f64,
    pub cpu_seconds: f64,
    pub cpu_ns_per_event: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_max_us: f64,
    /// Latency to when the event's bytes came off the client's socket,
    /// before the client decoded them (a compressed stream's decoding is
    /// the client's cost, not a delay of the server's).
    pub arrival_latency_p50_us: f64,
    pub arrival_latency_p99_us: f64,
    pub rss_per_connection_bytes: f64,
    /// The server's live heap per stream, where it counts it (feature
    /// `heap-count`); NaN otherwise.
    pub heap_per_connection_bytes: f64,
    pub connected: u64,
    /// The server's write system calls per delivered event.
    pub writes_per_event: f64,
    /// Events whose publishing POST was answered, per second of publishing.
    pub published_per_second: f64,
    /// The stream's bytes on the wire (chunk data) per delivered event.
    pub wire_bytes_per_event: f64,
}

/// Which stream the subscribers of a fan-out read, and what each event
/// carries.
#[derive(Clone, Copy, Debug)]
pub struct StreamSpec {
    pub path: &'static str,
    /// Sent as `Accept-Encoding`.
    pub accept_encoding: Option<&'static str>,
    /// Whether each event carries a JSON notification of about 200 bytes
    /// after its sequence number and time stamp (otherwise just those two).
    pub json: bool,
}

impl StreamSpec {
    /// The broadcast topic, plain, with the bare `"<seq> <sent-at-ns>"`.
    pub const BROADCAST: StreamSpec = StreamSpec {
        path: "/events/broadcast",
        accept_encoding: None,
        json: false,
    };
}

/// An event's JSON of about 200 bytes, like an app's notification: what
/// the events of a `json` [`StreamSpec`] and of `loadgen interest` carry.
pub(crate) fn notification(seq: u64) -> String {
    format!(
        r#"{{"seq":{seq:>10},"kind":"notification","user":"u-{:>6}","title":"Your report is ready","body":"The export you asked for finished; it is ready to download for the next 24 hours."}}"#,
        seq % 1_000_000
    )
}

/// The `p` percentile of sorted `samples`; NaN with none.
fn at_percentile(samples: &[u32], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples[((samples.len() - 1) as f64 * p).round() as usize] as f64
}

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Shared {
    delivered: AtomicU64,
    last_receive_ns: AtomicU64,
    connected: AtomicU64,
    /// Wire bytes of every stream, its opening and the warm-up included.
    wire_bytes: AtomicU64,
}

/// Fan-out: `subscribers` connections to `/events/broadcast`; then `events`
/// POSTs, at `rate` per second or as fast as the publisher can.
pub async fn fan_out(
    server: SocketAddr,
    pid: u32,
    subscribers: usize,
    events: u64,
    rate: Option<u64>,
) -> Figures {
    fan_out_over(
        server,
        pid,
        subscribers,
        events,
        rate,
        StreamSpec::BROADCAST,
    )
    .await
}

/// Fan-out over `spec`'s stream, from one publisher.
pub async fn fan_out_over(
    server: SocketAddr,
    pid: u32,
    subscribers: usize,
    events: u64,
    rate: Option<u64>,
    spec: StreamSpec,
) -> Figures {
    fan_out_impl(&[server], &[pid], subscribers, events, rate, 1, spec).await
}

/// Fan-out with subscribers spread over several instances (round robin) and
/// the events published by `publishers` concurrent connections to the first
/// server, together at `rate` per second or as fast as they can (CPU is the
/// sum over `pids`); `published_per_second` is the rate at which their POSTs
/// were accepted.
pub async fn concurrent_publish(
    servers: &[SocketAddr],
    pids: &[u32],
    subscribers: usize,
    events: u64,
    publishers: usize,
    rate: Option<u64>,
) -> Figures {
    fan_out_impl(
        servers,
        pids,
        subscribers,
        events,
        rate,
        publishers,
        StreamSpec::BROADCAST,
    )
    .await
}

async fn fan_out_impl(
    servers: &[SocketAddr],
    pids: &[u32],
    subscribers: usize,
    events: u64,
    rate: Option<u64>,
    concurrent_publishers: usize,
    spec: StreamSpec,
) -> Figures {
    let shared = Arc::new(Shared {
        delivered: AtomicU64::new(0),
        last_receive_ns: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        wire_bytes: AtomicU64::new(0),
    });
    // Sample about 1 event in `every` for latency, to keep the samples bounded.
    let every = ((subscribers as u64 * events) / 2_000_000).max(1);
    let mut tasks = Vec::with_capacity(subscribers);
    for index in 0..subscribers {
        let shared = Arc::clone(&shared);
        let server = servers[index % servers.len()];
        tasks.push(tokio::spawn(async move {
            // Each sample: to the event decoded, and to its bytes' arrival.
            let mut latencies: Vec<(u32, u32)> = Vec::new();
            let Ok(mut stream) =
                open_retrying(server, index, spec.path, spec.accept_encoding).await
            else {
                return latencies;
            };
            shared.connected.fetch_add(1, Ordering::Relaxed);
            let mut received = 0u64;
            let _ = stream
                .for_each_data_arrived(|data, arrived| {
                    // "w" is the warm-up; "<seq> <sent-at-ns>" the measured events.
                    if data == b"w" {
                        return true;
                    }
                    received += 1;
                    let text = std::str::from_utf8(data).unwrap_or("");
                    let mut parts = text.split(' ');
                    let seq: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                    if seq % every == 0 {
                        if let Some(sent) = parts.next().and_then(|v| v.parse::<u64>().ok()) {
                            let now = now_nanos();
                            latencies.push((
                                (now.saturating_sub(sent) / 1_000) as u32,
                                (arrived.saturating_sub(sent) / 1_000) as u32,
                            ));
                            shared.last_receive_ns.fetch_max(now, Ordering::Relaxed);
                        }
                    }
                    received < events
                })
                .await;
            shared.delivered.fetch_add(received, Ordering::Relaxed);
            shared
                .wire_bytes
                .fetch_add(stream.wire_bytes(), Ordering::Relaxed);
            shared
                .last_receive_ns
                .fetch_max(now_nanos(), Ordering::Relaxed);
            latencies
        }));
    }

    let mut publishers = Vec::new();
    for &server in servers {
        publishers.push(
            Publisher::connect(server)
                .await
                .expect("publisher connects"),
        );
    }
    // Warm up until every subscriber is registered with its instance.
    crate::keyed::warm_up(&mut publishers, "/events/broadcast", "w", subscribers).await;
    // Instances sharing a broker join their readers asynchronously.
    if servers.len() > 1 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first = servers[0];
    let publisher = publishers.swap_remove(0);
    // CPU seconds and write system calls, summed over the servers.
    let cpu_and_writes = || -> (f64, u64) {
        pids.iter()
            .map(|&pid| sample_process(pid).unwrap_or_default())
            .fold((0.0, 0), |(cpu, writes), sample| {
                (cpu + sample.cpu_seconds, writes + sample.write_syscalls)
            })
    };
    let (before_cpu, before_writes) = cpu_and_writes();
    let started_ns = now_nanos();
    let publishing = Instant::now();
    // Each publisher sends every `concurrent_publishers`-th sequence number,
    // at its share of `rate` when one is given.
    let period =
        rate.map(|r| Duration::from_nanos(1_000_000_000 * concurrent_publishers as u64 / r.max(1)));
    let lanes = concurrent_publishers as u64;
    let mut senders = Vec::new();
    let mut first_publisher = Some(publisher);
    for lane in 0..lanes {
        let reused = first_publisher.take();
        senders.push(tokio::spawn(async move {
            let mut publisher = match reused {
                Some(publisher) => publisher,
                None => match Publisher::connect(first).await {
                    Ok(publisher) => publisher,
                    Err(_) => return,
                },
            };
            let mut next_send = Instant::now();
            if let Some(period) = period {
                next_send += period * lane as u32 / lanes as u32;
            }
            for seq in (lane..events).step_by(lanes as usize) {
                if let Some(period) = period {
                    tokio::time::sleep_until(next_send.into()).await;
                    next_send += period;
                }
                let body = if spec.json {
                    format!("{seq} {} {}", now_nanos(), notification(seq))
                } else {
                    format!("{seq} {}", now_nanos())
                };
                if publisher.post("/events/broadcast", &body).await.is_err() {
                    return;
                }
            }
        }));
    }
    for sender in senders {
        let _ = sender.await;
    }
    let published_per_second = events as f64 / publishing.elapsed().as_secs_f64();
    // Wait for delivery, bounded.
    let limit = Duration::from_secs(60);
    let collect = async {
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap_or_default());
        }
        latencies
    };
    let samples: Vec<(u32, u32)> = tokio::time::timeout(limit, collect)
        .await
        .unwrap_or_default();
    let (mut latencies, mut arrivals): (Vec<u32>, Vec<u32>) = samples.into_iter().unzip();
    arrivals.sort_unstable();
    let (after_cpu, after_writes) = cpu_and_writes();

    let delivered = shared.delivered.load(Ordering::Relaxed);
    let elapsed = (shared
        .last_receive_ns
        .load(Ordering::Relaxed)
        .saturating_sub(started_ns)) as f64
        / 1e9;
    latencies.sort_unstable();
    let percentile = |p: f64| at_percentile(&latencies, p);
    let cpu_seconds = after_cpu - before_cpu;
    Figures {
        delivered,
        expected: subscribers as u64 * events,
        events_per_second: delivered as f64 / elapsed.max(1e-9),
        cpu_seconds,
        cpu_ns_per_event: cpu_seconds * 1e9 / (delivered.max(1) as f64),
        latency_p50_us: percentile(0.50),
        latency_p99_us: percentile(0.99),
        latency_max_us: percentile(1.0),
        arrival_latency_p50_us: at_percentile(&arrivals, 0.50),
        arrival_latency_p99_us: at_percentile(&arrivals, 0.99),
        connected: shared.connected.load(Ordering::Relaxed),
        writes_per_event: after_writes.saturating_sub(before_writes) as f64
            / delivered.max(1) as f64,
        published_per_second,
        wire_bytes_per_event: shared.wire_bytes.load(Ordering::Relaxed) as f64
            / delivered.max(1) as f64,
        ..Figures::default()
    }
}

/// Idle: `connections` ping streams; the server's RSS growth per connection.
pub async fn idle(server: SocketAddr, pid: u32, connections: usize) -> Figures {
    let before: ProcessSample = sample_process(pid).unwrap_or_default();
    let mut streams = Vec::with_capacity(connections);
    for index in 0..connections {
        if let Ok(stream) = open_retrying(server, index, "/events/sse-stream", None).await {
            streams.push(stream);
        }
    }
    // Let every connection see a ping, so their buffers are in use.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    memory_per_stream(pid, before, streams, connections)
}

/// The server's RSS growth since `before` per open stream of `streams`
/// (then closed), and its CPU seconds since.
pub(crate) fn memory_per_stream(
    pid: u32,
    before: ProcessSample,
    streams: Vec<EventStream>,
    connections: usize,
) -> Figures {
    let after = sample_process(pid).unwrap_or_default();
    let connected = streams.len() as u64;
    drop(streams);
    Figures {
        connected,
        expected: connections as u64,
        rss_per_connection_bytes: (after.rss_bytes as f64 - before.rss_bytes as f64)
            / connected.max(1) as f64,
        cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        ..Figures::default()
    }
}

/// One client reads `/events/fast?n=events` to the end.
pub async fn fast(server: SocketAddr, pid: u32, events: u64) -> Figures {
    let before = sample_process(pid).unwrap_or_default();
    let started = Instant::now();
    let mut stream = EventStream::open(server, 0, &format!("/events/fast?n={events}"))
        .await
        .expect("open /events/fast");
    let mut received = 0u64;
    let _ = tokio::time::timeout(
        Duration::from_secs(120),
        stream.for_each_data(|_| {
            received += 1;
            true
        }),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = sample_process(pid).unwrap_or_default();
    let cpu_seconds = after.cpu_seconds - before.cpu_seconds;
    Figures {
        delivered: received,
        expected: events,
        events_per_second: received as f64 / elapsed,
        cpu_seconds,
        cpu_ns_per_event: cpu_seconds * 1e9 / received.max(1) as f64,
        ..Figures::default()
    }
}

pub(crate) async fn open_retrying(
    server: SocketAddr,
    index: usize,
    path: &str,
    accept_encoding: Option<&str>,
) -> std::io::Result<EventStream> {
    let mut last_error = None;
    for attempt in 0..5u64 {
        match EventStream::open_accepting(server, index, path, accept_encoding).await {
            Ok(stream) => return Ok(stream),
            Err(error) => {
                last_error = Some(error);
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
        }
    }
    Err(last_error.unwrap())
}
