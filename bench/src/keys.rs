//! Delivery cost against the number of keys: one subscriber per key, events
//! sent to the keys in turn at a fixed rate, so every event is one delivery
//! and one write whatever the number of keys. What changes with the number
//! of keys is the broker's own work: its maps, and over Redis the readers
//! (about one per 256 keys) and the keys each `XREAD` names; and the cost of
//! having that many connections open at all (keep-alive comments, timers),
//! which is measured apart, with no event sent, and reported beside.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::Publisher;
use crate::keyed::{KeyedSubscribers, send_paced, warm_up};
use crate::sample_process;
use crate::scenario::Figures;
use crate::server_process::{redis_commands, start, start_redis, start_with};

/// What one run measured: its figures, and the server's CPU seconds per
/// second while the same streams were open and no event was sent.
pub struct KeysRun {
    pub figures: Figures,
    pub idle_cpu_per_second: f64,
    pub seconds: f64,
}

impl KeysRun {
    /// CPU per delivered event, less what the open streams cost meanwhile
    /// with no event at all.
    pub fn delivery_ns_per_event(&self) -> f64 {
        let idle = self.idle_cpu_per_second * self.seconds;
        (self.figures.cpu_seconds - idle).max(0.0) * 1e9 / self.figures.delivered.max(1) as f64
    }
}

/// How long the open streams are watched with no event sent.
const IDLE_WATCH: Duration = Duration::from_secs(3);

/// `keys` subscribers, one per key (`/events/keys/<n>`), then `events` events
/// sent to key `seq % keys` at `rate` per second.
pub async fn many_keys(
    server: SocketAddr,
    pid: u32,
    keys: usize,
    events: u64,
    rate: u64,
) -> KeysRun {
    let per_key = events / keys as u64;
    let subscribers = KeyedSubscribers::open(&[server], keys, per_key, false);
    let mut publisher = [Publisher::connect(server)
        .await
        .expect("publisher connects")];
    // Warm up until every subscriber is registered (a broadcast answers how
    // many it reached).
    warm_up(&mut publisher, "/events/keys-warmup", "", keys).await;
    // Over Redis, let every reader take up its keys.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_from = sample_process(pid).unwrap_or_default().cpu_seconds;
    tokio::time::sleep(IDLE_WATCH).await;
    let idle_cpu_per_second = (sample_process(pid).unwrap_or_default().cpu_seconds - idle_from)
        / IDLE_WATCH.as_secs_f64();
    let before = sample_process(pid).unwrap_or_default().cpu_seconds;
    let started = Instant::now();
    send_paced(&mut publisher, keys, per_key * keys as u64, rate, |seq| {
        seq.to_string()
    })
    .await;
    subscribers.until_finished(Duration::from_secs(60)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_seconds = sample_process(pid).unwrap_or_default().cpu_seconds - before;
    let (delivered, connected) = (subscribers.delivered(), subscribers.connected());
    subscribers.close(Duration::from_secs(60)).await;
    let figures = Figures {
        delivered,
        expected: per_key * keys as u64,
        events_per_second: delivered as f64 / elapsed.max(1e-9),
        cpu_seconds,
        cpu_ns_per_event: cpu_seconds * 1e9 / delivered.max(1) as f64,
        connected,
        ..Figures::default()
    };
    KeysRun {
        figures,
        idle_cpu_per_second,
        seconds: elapsed,
    }
}

/// One run of [`many_keys`] on a fresh `bench-ours`, over Redis when `redis`.
/// Returns the figures and, over Redis, Redis commands per event.
pub async fn run(redis: bool, keys: usize, events: u64, rate: u64) -> (KeysRun, f64) {
    if !redis {
        let server = start("bench-ours").await;
        let figures = many_keys(server.addr, server.pid, keys, events, rate).await;
        server.stop().await;
        return (figures, 0.0);
    }
    let (mut redis, port) = start_redis().await;
    let url = format!("redis://127.0.0.1:{port}/");
    let server = start_with("bench-ours", &[("REDIS_URL", url)]).await;
    let before = redis_commands(port);
    let figures = many_keys(server.addr, server.pid, keys, events, rate).await;
    let commands = redis_commands(port).saturating_sub(before);
    server.stop().await;
    let _ = redis.kill().await;
    (figures, commands as f64 / events.max(1) as f64)
}

/// The report: CPU per delivered event at `few` and `many` keys, in memory
/// and over Redis, each the mean of `rounds` runs (alternating which goes
/// first), and the ratio many ÷ few measured in the same run: as measured,
/// and less the cost of the open streams with no event (keep-alives, timers).
pub async fn compare(
    few: usize,
    many: usize,
    events: u64,
    rate: u64,
    rounds: usize,
    command: &str,
) -> String {
    let mut out = format!(
        "Command: `{command}`\n\n{events} events sent to the keys in turn at {rate}/s, one \
         subscriber per key; server CPU per delivered event, mean of {rounds} runs. \
         \"Delivery\" subtracts what the same open streams cost with no event \
         (measured for {idle} s before each run: keep-alive comments and timers, which grow \
         with the number of streams, not of events).\n\n\
         | broker | {few} keys | {many} keys | ratio | delivery, {few} keys | delivery, {many} keys | delivery ratio | idle CPU, {many} streams | delivered | Redis commands/event |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        idle = IDLE_WATCH.as_secs()
    );
    for redis in [false, true] {
        let (mut at_few, mut at_many) = (Vec::new(), Vec::new());
        let mut commands = 0.0;
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [few, many]
            } else {
                [many, few]
            };
            for keys in order {
                let (run, per_event) = run(redis, keys, events, rate).await;
                eprintln!(
                    "  {} {keys} keys: {:.0} ns/event, delivery {:.0} ns/event, idle {:.1}% CPU, {}/{} delivered",
                    if redis { "redis" } else { "memory" },
                    run.figures.cpu_ns_per_event,
                    run.delivery_ns_per_event(),
                    run.idle_cpu_per_second * 100.0,
                    run.figures.delivered,
                    run.figures.expected
                );
                if keys == few {
                    at_few.push(run);
                } else {
                    commands += per_event / rounds as f64;
                    at_many.push(run);
                }
            }
        }
        let mean = |runs: &[KeysRun], of: fn(&KeysRun) -> f64| {
            runs.iter().map(of).sum::<f64>() / runs.len().max(1) as f64
        };
        let raw = |run: &KeysRun| run.figures.cpu_ns_per_event;
        let net = |run: &KeysRun| run.delivery_ns_per_event();
        let (few_raw, many_raw) = (mean(&at_few, raw), mean(&at_many, raw));
        let (few_net, many_net) = (mean(&at_few, net), mean(&at_many, net));
        let idle = mean(&at_many, |run| run.idle_cpu_per_second);
        let delivered: u64 = at_few
            .iter()
            .chain(&at_many)
            .map(|r| r.figures.delivered)
            .sum();
        let expected: u64 = at_few
            .iter()
            .chain(&at_many)
            .map(|r| r.figures.expected)
            .sum();
        out.push_str(&format!(
            "| {} | {:.1} µs | {:.1} µs | {:.2}× | {:.1} µs | {:.1} µs | {:.2}× | {:.1}% of a core | {delivered}/{expected} | {} |\n",
            if redis { "Redis" } else { "in-memory" },
            few_raw / 1000.0,
            many_raw / 1000.0,
            many_raw / few_raw,
            few_net / 1000.0,
            many_net / 1000.0,
            many_net / few_net,
            idle * 100.0,
            if redis {
                format!("{commands:.2} ({many} keys)")
            } else {
                "–".to_owned()
            },
        ));
    }
    out
}
