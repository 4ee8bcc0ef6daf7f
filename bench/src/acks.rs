//! What acknowledgement by a replica costs a send (issue 21):
//! `RegistryConfig::replicas_to_acknowledge(1)` (Redis's `WAIT` after each
//! send) against the master's word alone, on the tests' Redis Cluster of
//! three masters with a replica each, in the same run.
//!
//! Two publishers as apps have them: one that sends its events one after
//! another, each waiting for its answer (timed per send), and many that
//! send at once (sends per second). Rounds alternate the two settings, so
//! drift on this shared machine hits both.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sse_runtime::{MessageEvent, Registry, RegistryConfig};

use crate::report::percentile;

/// What one round of one setting measured.
#[derive(Debug, Clone, Default)]
struct Round {
    /// Sequential sends' latencies, sorted.
    latencies: Vec<Duration>,
    /// Sequential sends per second.
    sequential_per_second: f64,
    /// Concurrent sends per second, all publishers together.
    concurrent_per_second: f64,
}

/// `sends` sends one after another, then `sends` more spread over
/// `publishers` tasks sending at once, each to keys of its own.
async fn round(registry: &Registry<String>, sends: usize, publishers: usize) -> Round {
    let event = || MessageEvent::new(crate::scenario::notification(0));
    let mut latencies = Vec::with_capacity(sends);
    let started = Instant::now();
    for index in 0..sends {
        let key = format!("sequential-{}", index % 64);
        let asked = Instant::now();
        registry.send(&key, event()).await.expect("a send");
        latencies.push(asked.elapsed());
    }
    let sequential_per_second = sends as f64 / started.elapsed().as_secs_f64();
    latencies.sort();

    let started = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|publisher| {
            let registry = registry.clone();
            let each = sends / publishers.max(1);
            tokio::spawn(async move {
                for index in 0..each {
                    let key = format!("concurrent-{publisher}-{}", index % 16);
                    registry.send(&key, event()).await.expect("a send");
                }
                each
            })
        })
        .collect();
    let mut sent = 0;
    for task in tasks {
        sent += task.await.expect("a publisher");
    }
    Round {
        latencies,
        sequential_per_second,
        concurrent_per_second: sent as f64 / started.elapsed().as_secs_f64(),
    }
}

/// Runs `rounds` rounds of each setting, alternating, and returns the
/// report as Markdown (with `command`).
pub async fn compare(sends: usize, publishers: usize, rounds: usize, command: &str) -> String {
    let cluster = sse_tests::redis_cluster::start_with_replicas(1)
        .await
        .expect("redis-server and redis-cli are needed");
    let plain = cluster.registry(RegistryConfig::default()).await;
    let acknowledged = cluster
        .registry(RegistryConfig::default().replicas_to_acknowledge(1))
        .await;
    // Warm both up: connections, scripts, keys.
    round(&plain, 200, publishers).await;
    round(&acknowledged, 200, publishers).await;
    let (mut plain_rounds, mut acknowledged_rounds) = (Vec::new(), Vec::new());
    for index in 0..rounds {
        if index % 2 == 0 {
            plain_rounds.push(round(&plain, sends, publishers).await);
            acknowledged_rounds.push(round(&acknowledged, sends, publishers).await);
        } else {
            acknowledged_rounds.push(round(&acknowledged, sends, publishers).await);
            plain_rounds.push(round(&plain, sends, publishers).await);
        }
    }
    let mut out = format!(
        "`{command}`: {sends} sequential sends, then {sends} from {publishers} publishers at \
         once, per round; {rounds} rounds of each setting, alternating; the tests' Redis \
         Cluster (3 masters, a replica each), on this machine's 2 cores.\n\n\
         | replicas to acknowledge | round | sequential p50 | sequential p99 | sequential sends/s | concurrent sends/s |\n\
         |---|---|---|---|---|---|\n"
    );
    let row = |out: &mut String, setting: &str, index: usize, round: &Round| {
        let _ = writeln!(
            out,
            "| {setting} | {} | {:.2} ms | {:.2} ms | {:.0} | {:.0} |",
            index + 1,
            percentile(&round.latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&round.latencies, 0.99).as_secs_f64() * 1e3,
            round.sequential_per_second,
            round.concurrent_per_second,
        );
    };
    for (index, (plain, acknowledged)) in plain_rounds.iter().zip(&acknowledged_rounds).enumerate()
    {
        row(&mut out, "0", index, plain);
        row(&mut out, "1", index, acknowledged);
    }
    let mean = |rounds: &[Round], field: fn(&Round) -> f64| {
        rounds.iter().map(field).sum::<f64>() / rounds.len().max(1) as f64
    };
    let p50 = |round: &Round| percentile(&round.latencies, 0.5).as_secs_f64();
    let _ = writeln!(
        out,
        "\nWith a replica's acknowledgement, against without (means over the rounds): \
         sequential p50 {:.2}×, sequential sends/s {:.2}×, concurrent sends/s {:.2}×.",
        mean(&acknowledged_rounds, p50) / mean(&plain_rounds, p50),
        mean(&acknowledged_rounds, |round| round.sequential_per_second)
            / mean(&plain_rounds, |round| round.sequential_per_second),
        mean(&acknowledged_rounds, |round| round.concurrent_per_second)
            / mean(&plain_rounds, |round| round.concurrent_per_second),
    );
    out
}
