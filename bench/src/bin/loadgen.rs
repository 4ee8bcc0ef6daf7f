//! The load generator: the side-by-side comparison, the load sweep, and
//! single runs for profiling.
//!
//! ```text
//! cargo build --release -p bench && target/release/loadgen compare            # writes BENCHMARKS.md
//! cargo build --release -p bench && target/release/loadgen sweep              # the curves, into BENCHMARKS.md
//! cargo build --release -p bench && target/release/loadgen compare --smoke    # tiny sizes (CI smoke test)
//! cargo build --release -p bench && target/release/loadgen chaos --seed 7 --faults 50   # the fault checker
//! cargo build --release -p bench && target/release/loadgen compression        # compressed against plain streams
//! cargo build --release -p bench && target/release/loadgen acks               # a replica's acknowledgement per send
//! ```
//!
//! Each scenario starts a fresh server process on a free 127.0.0.1 port,
//! alternating ours and the plain-axum baseline (ours, baseline, baseline,
//! ours, ...) so drift on this shared machine hits both, and reports figures as
//! ratios ours ÷ baseline measured in the same run.

use std::path::PathBuf;

use bench::compare::{FULL, SMOKE, Scenario, comparison, redis_fan_out, run};
use bench::report::{draw_bars, render, write_section};
use bench::sweep::{SWEEP, SWEEP_SMOKE, sweep};

const USAGE: &str = "usage: loadgen compare [--smoke] [--out FILE] | loadgen sweep [--smoke] [--out FILE] \
    | loadgen compression [--smoke] [--out FILE] \
    | loadgen fan-out <server> <subscribers> <events> [<events/s>] | loadgen idle <server> <connections> | loadgen h2-idle <streams> \
    | loadgen redis <subscribers> <events> [<instances> [<publishers> [<events/s>]]] | loadgen keys [--smoke] | loadgen keys redis|memory <keys> <events> <events/s> \
    | loadgen interest [--smoke] [--instances 1,8] [--baseline BIN] | loadgen joins <subscribers> <per second> | loadgen cluster-load [--smoke] | loadgen acks [--smoke] \
    | loadgen chaos [--seed N] [--faults N] [--replicas-to-acknowledge N (default 1)] [--kinds kill-master,freeze-master,cut-replication-then-kill,kill-instance | restart-node,kill-instance (one node)]";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let words: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let smoke = words.contains(&"--smoke");
    let out = words
        .iter()
        .position(|a| *a == "--out")
        .and_then(|i| words.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(if smoke {
                "target/BENCHMARKS-smoke.md"
            } else {
                "BENCHMARKS.md"
            })
        });
    // The command as a reader would run it: where the report goes is left out.
    let shown: Vec<&str> = words
        .iter()
        .enumerate()
        .filter(|(i, word)| **word != "--out" && (*i == 0 || words[i - 1] != "--out"))
        .map(|(_, word)| *word)
        .collect();
    let command = format!(
        "cargo build --release -p bench && target/release/loadgen {}",
        shown.join(" ")
    );
    match words.as_slice() {
        ["compare", ..] => {
            let rows = comparison(if smoke { SMOKE } else { FULL }).await;
            draw_bars(&rows, &picture(&out, smoke, "benchmarks"));
            let report = render("Comparison", &rows, smoke, &command);
            write_section(&out, "comparison", &report);
            println!("{report}");
        }
        ["compression", ..] => {
            let sizes = if smoke {
                bench::compression::SMOKE
            } else {
                bench::compression::FULL
            };
            let rows = bench::compression::comparison(sizes).await;
            let report = render(
                "Compressed streams against plain (ours: compressed; baseline: the same stream plain)",
                &rows,
                smoke,
                &command,
            );
            write_section(&out, "compression", &report);
            println!("{report}");
        }
        ["sweep", ..] => {
            let points = sweep(if smoke { SWEEP_SMOKE } else { SWEEP }).await;
            let (latency, cpu) = (
                picture(&out, smoke, "sweep-latency"),
                picture(&out, smoke, "sweep-cpu"),
            );
            if let Err(error) = bench::sweep::draw(&points, &latency, &cpu) {
                panic!("could not draw the sweep: {error}");
            }
            let report = bench::sweep::render(&points, &command);
            write_section(&out, "sweep", &report);
            println!("{report}");
        }
        // One run, for profiling: `loadgen keys redis|memory <keys> <events> <events/s>`.
        ["keys", broker @ ("redis" | "memory"), keys, events, rate] => {
            let (run, commands) = bench::keys::run(
                *broker == "redis",
                keys.parse().expect("keys"),
                events.parse().expect("events"),
                rate.parse().expect("events/s"),
            )
            .await;
            eprintln!(
                "  {broker}, {keys} keys {:?}; delivery {:.0} ns/event; idle {:.1}% CPU; {commands:.2} Redis commands per event",
                run.figures,
                run.delivery_ns_per_event(),
                run.idle_cpu_per_second * 100.0
            );
        }
        // Reads by interest: Redis bytes and instance CPU per delivered
        // event from 1 to 8 instances (`--baseline <bench-ours of an
        // earlier build>` measures that build in the same run).
        ["interest", ..] => {
            let baseline = words
                .iter()
                .position(|a| *a == "--baseline")
                .and_then(|i| words.get(i + 1))
                .copied();
            let (mut counts, keys, events, rate) = if smoke {
                (vec![1, 2], 200, 2_000, 1_000)
            } else {
                (vec![1, 8], 8_000, 16_000, 2_000)
            };
            if let Some(list) = words
                .iter()
                .position(|a| *a == "--instances")
                .and_then(|i| words.get(i + 1))
            {
                counts = list
                    .split(',')
                    .map(|n| n.parse().expect("--instances 1,8"))
                    .collect();
            }
            let control = words.contains(&"--control");
            let report =
                bench::interest::compare(baseline, control, &counts, keys, events, rate, &command)
                    .await;
            write_section(&out, "interest", &report);
            println!("{report}");
        }
        // The same load on the tests' three-master Redis Cluster and on one node.
        ["cluster-load", ..] => {
            let (keys, events, rate, rounds) = if smoke {
                (200, 2_000, 1_000, 1)
            } else {
                (2_000, 20_000, 4_000, 2)
            };
            let report =
                bench::interest::cluster_against_node(2, keys, events, rate, rounds, &command)
                    .await;
            write_section(&out, "cluster-load", &report);
            println!("{report}");
        }
        // What a replica's acknowledgement (`WAIT`) costs a send, on the
        // tests' cluster with replicas.
        ["acks", ..] => {
            let (sends, publishers, rounds) = if smoke { (200, 4, 1) } else { (2_000, 16, 4) };
            let report = bench::acks::compare(sends, publishers, rounds, &command).await;
            write_section(&out, "acks", &report);
            println!("{report}");
        }
        // Join latency: `loadgen joins <subscribers> <per second>`.
        ["joins", subscribers, rate] => {
            let latencies = bench::interest::joins(
                subscribers.parse().expect("subscribers"),
                rate.parse().expect("per second"),
            )
            .await;
            let at = |q: f64| bench::report::percentile(&latencies, q);
            println!(
                "{} of {subscribers} joined at {rate}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                latencies.len(),
                at(0.5).as_secs_f64() * 1e3,
                at(0.99).as_secs_f64() * 1e3,
                latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
            );
        }
        ["keys", ..] => {
            let (events, rate, rounds) = if smoke {
                (10_000, 5_000, 1)
            } else {
                (20_000, 4_000, 2)
            };
            let report = bench::keys::compare(100, 10_000, events, rate, rounds, &command).await;
            write_section(&out, "keys", &report);
            println!("{report}");
        }
        // One run, for profiling.
        ["fan-out", server, subscribers, events, rest @ ..] if rest.len() <= 1 => {
            let mut sizes = SMOKE;
            sizes.light_subscribers = subscribers.parse().expect("subscribers");
            sizes.light_events = events.parse().expect("events");
            let scenario = match rest.first() {
                Some(rate) => {
                    sizes.light_rate = rate.parse().expect("events/s");
                    Scenario::Light
                }
                None => {
                    sizes.fan_out_subscribers = sizes.light_subscribers;
                    sizes.fan_out_events = sizes.light_events;
                    Scenario::FanOut
                }
            };
            run(scenario, server, sizes).await;
        }
        ["h2-idle", streams] => {
            let streams: usize = streams.parse().expect("streams");
            let per_stream = bench::h2_idle::rss_per_stream(streams).await;
            eprintln!(
                "  {streams} idle streams over one HTTP/2 connection (TLS): {per_stream:.0} bytes of server RSS each"
            );
        }
        ["idle", server, connections] => {
            let mut sizes = SMOKE;
            sizes.idle_connections = connections.parse().expect("connections");
            run(Scenario::Idle, server, sizes).await;
        }
        ["redis", subscribers, events, rest @ ..] if rest.len() <= 3 => {
            let instances = rest.first().map_or(2, |n| n.parse().expect("instances"));
            let publishers = rest.get(1).map_or(1, |n| n.parse().expect("publishers"));
            let rate = rest.get(2).map(|n| n.parse().expect("events/s"));
            let (figures, commands) = redis_fan_out(
                subscribers.parse().expect("subscribers"),
                events.parse().expect("events"),
                instances,
                publishers,
                rate,
            )
            .await;
            eprintln!(
                "  redis, {instances} instance(s) {figures:?}; {commands:.2} Redis commands per event"
            );
        }
        ["chaos", ..] => chaos(&words, &command).await,
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

/// `loadgen chaos`: the fault checker (see `tests/support/chaos`), with a
/// seeded schedule of `--faults` faults of `--kinds`; prints the report and
/// exits non-zero on any violation.
async fn chaos(words: &[&str], command: &str) {
    use sse_tests::chaos::{self, ChaosSettings, FaultKind};
    let value = |flag: &str| {
        words
            .iter()
            .position(|word| *word == flag)
            .and_then(|at| words.get(at + 1))
            .copied()
    };
    let seed = value("--seed").map_or(1, |seed| seed.parse().expect("--seed N"));
    let mut settings = ChaosSettings::short(seed);
    if let Some(faults) = value("--faults") {
        settings.faults = faults.parse().expect("--faults N");
    }
    if let Some(kinds) = value("--kinds") {
        settings.kinds = kinds
            .split(',')
            .map(|kind| FaultKind::parse(kind).unwrap_or_else(|| panic!("no fault kind {kind}")))
            .collect();
    }
    // A single node (restart-node) has no replica to wait for.
    if settings.kinds.iter().any(|kind| kind.needs_single_node()) {
        settings.replicas_to_acknowledge = 0;
    }
    if let Some(replicas) = value("--replicas-to-acknowledge") {
        settings.replicas_to_acknowledge = replicas.parse().expect("--replicas-to-acknowledge N");
    }
    let Some(report) = chaos::run(settings).await else {
        eprintln!("redis-server and redis-cli are needed");
        std::process::exit(2);
    };
    println!("{command}\n\n{}", report.table());
    if report.violations() > 0 {
        std::process::exit(1);
    }
}

/// Where a picture goes: `docs/NAME.png`, or beside the smoke report.
fn picture(out: &std::path::Path, smoke: bool, name: &str) -> PathBuf {
    if smoke {
        out.with_file_name(format!("{name}-smoke.png"))
    } else {
        PathBuf::from(format!("docs/{name}.png"))
    }
}
