//! The load generator and the side-by-side comparison.
//!
//! ```text
//! cargo build --release -p bench && target/release/loadgen compare            # full run, writes BENCHMARKS.md
//! cargo build --release -p bench && target/release/loadgen compare --smoke    # tiny sizes (CI smoke test)
//! ```
//!
//! Each scenario starts a fresh server process on a free 127.0.0.1 port,
//! alternating ours and the plain-axum baseline (ours, baseline, baseline,
//! ours, ...) so drift on this shared machine hits both, and reports figures as
//! ratios ours ÷ baseline measured in the same run.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bench::scenario::{self, Figures};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Clone, Copy)]
struct Sizes {
    fan_out_subscribers: usize,
    fan_out_events: u64,
    wide_subscribers: usize,
    wide_events: u64,
    latency_subscribers: usize,
    latency_events: u64,
    latency_rate: u64,
    idle_connections: usize,
    fast_events: u64,
    most_connections: usize,
    rounds: usize,
}

const FULL: Sizes = Sizes {
    fan_out_subscribers: 1_000,
    fan_out_events: 2_000,
    wide_subscribers: 10_000,
    wide_events: 200,
    latency_subscribers: 1_000,
    latency_events: 2_500,
    latency_rate: 500,
    idle_connections: 10_000,
    fast_events: 1_000_000,
    most_connections: 19_000,
    rounds: 2,
};

const SMOKE: Sizes = Sizes {
    fan_out_subscribers: 20,
    fan_out_events: 20,
    wide_subscribers: 50,
    wide_events: 5,
    latency_subscribers: 20,
    latency_events: 50,
    latency_rate: 500,
    idle_connections: 50,
    fast_events: 10_000,
    most_connections: 100,
    rounds: 1,
};

struct Server {
    child: tokio::process::Child,
    addr: SocketAddr,
    pid: u32,
}

async fn start(binary: &str) -> Server {
    start_with(binary, &[]).await
}

async fn start_with(binary: &str, env: &[(&str, String)]) -> Server {
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
    Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        pid,
    }
}

impl Server {
    async fn stop(mut self) {
        let _ = self.child.kill().await;
        // Let the kernel release the connections before the next scenario.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    FanOut,
    Wide,
    Latency,
    Idle,
    Fast,
    Most,
}

async fn run(scenario: Scenario, binary: &str, sizes: Sizes) -> Figures {
    let server = start(binary).await;
    let figures = match scenario {
        Scenario::FanOut => {
            scenario::fan_out(
                server.addr,
                server.pid,
                sizes.fan_out_subscribers,
                sizes.fan_out_events,
                None,
            )
            .await
        }
        Scenario::Wide => {
            scenario::fan_out(
                server.addr,
                server.pid,
                sizes.wide_subscribers,
                sizes.wide_events,
                None,
            )
            .await
        }
        Scenario::Latency => {
            scenario::fan_out(
                server.addr,
                server.pid,
                sizes.latency_subscribers,
                sizes.latency_events,
                Some(sizes.latency_rate),
            )
            .await
        }
        Scenario::Idle => scenario::idle(server.addr, server.pid, sizes.idle_connections).await,
        Scenario::Fast => scenario::fast(server.addr, server.pid, sizes.fast_events).await,
        Scenario::Most => {
            scenario::fan_out(server.addr, server.pid, sizes.most_connections, 1, None).await
        }
    };
    server.stop().await;
    eprintln!("  {binary:<17} {figures:?}");
    figures
}

/// Runs `scenario` for each binary, alternating the order each round; returns
/// the mean figures per binary.
async fn compare(scenario: Scenario, binaries: &[&str], sizes: Sizes) -> Vec<Figures> {
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); binaries.len()];
    for round in 0..sizes.rounds {
        let mut order: Vec<usize> = (0..binaries.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            runs[index].push(run(scenario, binaries[index], sizes).await);
        }
    }
    runs.iter().map(|r| mean(r)).collect()
}

fn mean(runs: &[Figures]) -> Figures {
    let n = runs.len() as f64;
    let avg = |f: fn(&Figures) -> f64| runs.iter().map(f).sum::<f64>() / n;
    Figures {
        delivered: runs.iter().map(|r| r.delivered).min().unwrap_or(0),
        expected: runs.first().map_or(0, |r| r.expected),
        connected: runs.iter().map(|r| r.connected).min().unwrap_or(0),
        events_per_second: avg(|r| r.events_per_second),
        cpu_seconds: avg(|r| r.cpu_seconds),
        cpu_ns_per_event: avg(|r| r.cpu_ns_per_event),
        latency_p50_us: avg(|r| r.latency_p50_us),
        latency_p99_us: avg(|r| r.latency_p99_us),
        latency_max_us: avg(|r| r.latency_max_us),
        rss_per_connection_bytes: avg(|r| r.rss_per_connection_bytes),
        writes_per_event: avg(|r| r.writes_per_event),
    }
}

/// A `redis-server` of the benchmark's own on a free loopback port.
async fn start_redis() -> (tokio::process::Child, u16) {
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
fn redis_commands(port: u16) -> u64 {
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "stats"])
        .output();
    output
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("total_commands_processed:")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// Fan-out over the Redis broker, subscribers split over two instances and
/// the publisher on the first; returns the figures and Redis commands per
/// published event (the whole run, warm-up included).
async fn redis_fan_out(subscribers: usize, events: u64) -> (Figures, f64) {
    let (mut redis, port) = start_redis().await;
    let url = format!("redis://127.0.0.1:{port}/");
    let a = start_with("bench-ours", &[("REDIS_URL", url.clone())]).await;
    let b = start_with("bench-ours", &[("REDIS_URL", url)]).await;
    let before = redis_commands(port);
    let figures = scenario::fan_out_across(
        &[a.addr, b.addr],
        &[a.pid, b.pid],
        subscribers,
        events,
        None,
    )
    .await;
    let commands = redis_commands(port).saturating_sub(before);
    a.stop().await;
    b.stop().await;
    let _ = redis.kill().await;
    eprintln!("  redis, 2 instances {figures:?}; {commands} Redis commands");
    (figures, commands as f64 / events.max(1) as f64)
}

struct Row {
    scenario: String,
    figure: &'static str,
    ours: String,
    baseline: String,
    ratio: f64,
    target: &'static str,
    met: bool,
}

fn loss(f: &Figures) -> u64 {
    f.expected.saturating_sub(f.delivered)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `loadgen fan-out <server binary> <subscribers> <events>`: one run, for profiling.
    if args.get(1).map(String::as_str) == Some("fan-out") && args.len() == 5 {
        let mut sizes = SMOKE;
        sizes.fan_out_subscribers = args[3].parse().expect("subscribers");
        sizes.fan_out_events = args[4].parse().expect("events");
        run(Scenario::FanOut, &args[2], sizes).await;
        return;
    }
    // `loadgen redis <subscribers> <events>`: one run over two instances sharing a Redis.
    if args.get(1).map(String::as_str) == Some("redis") && args.len() == 4 {
        let (figures, commands) = redis_fan_out(
            args[2].parse().expect("subscribers"),
            args[3].parse().expect("events"),
        )
        .await;
        eprintln!("  redis, 2 instances {figures:?}; {commands:.2} Redis commands per event");
        return;
    }
    // `loadgen idle <server binary> <connections>`: one run, for profiling memory.
    if args.get(1).map(String::as_str) == Some("idle") && args.len() == 4 {
        let mut sizes = SMOKE;
        sizes.idle_connections = args[3].parse().expect("connections");
        run(Scenario::Idle, &args[2], sizes).await;
        return;
    }
    if args.get(1).map(String::as_str) != Some("compare") {
        eprintln!(
            "usage: loadgen compare [--smoke] [--out FILE] | loadgen fan-out <server> <subscribers> <events> | loadgen idle <server> <connections> | loadgen redis <subscribers> <events>"
        );
        std::process::exit(2);
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    let sizes = if smoke { SMOKE } else { FULL };
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(if smoke {
                "target/BENCHMARKS-smoke.md"
            } else {
                "BENCHMARKS.md"
            })
        });
    let both = ["bench-ours", "bench-baseline"];
    let mut rows = Vec::new();

    let s = sizes;
    eprintln!(
        "fan-out, {} subscribers, {} events as fast as possible",
        s.fan_out_subscribers, s.fan_out_events
    );
    let fan_out = compare(Scenario::FanOut, &both, s).await;
    let name = format!(
        "fan-out, {} subscribers, publisher as fast as it can",
        s.fan_out_subscribers
    );
    rows.push(ratio_row(
        &name,
        "server CPU per delivered event (ns)",
        &fan_out,
        |f| f.cpu_ns_per_event,
        "≤ 0.6×",
        |r| r <= 0.6,
    ));
    rows.push(ratio_row(
        &name,
        "delivered events/s",
        &fan_out,
        |f| f.events_per_second,
        "≥ 1.5×",
        |r| r >= 1.5,
    ));
    rows.push(ratio_row(
        &name,
        "server write system calls per 100 delivered events",
        &fan_out,
        |f| f.writes_per_event * 100.0,
        "(info)",
        |_| true,
    ));
    rows.push(loss_row(&name, &fan_out));

    eprintln!("fan-out, {} subscribers", s.wide_subscribers);
    let wide = compare(Scenario::Wide, &both, s).await;
    let name = format!("fan-out, {} subscribers", s.wide_subscribers);
    rows.push(ratio_row(
        &name,
        "server CPU per delivered event (ns)",
        &wide,
        |f| f.cpu_ns_per_event,
        "≤ 0.6×",
        |r| r <= 0.6,
    ));
    rows.push(loss_row(&name, &wide));

    eprintln!("latency at {} events/s", s.latency_rate);
    let latency = compare(Scenario::Latency, &both, s).await;
    let name = format!(
        "fan-out, {} subscribers at {} events/s",
        s.latency_subscribers, s.latency_rate
    );
    rows.push(ratio_row(
        &name,
        "latency p99 (µs)",
        &latency,
        |f| f.latency_p99_us,
        "≤ 1.0×",
        |r| r <= 1.0,
    ));
    rows.push(ratio_row(
        &name,
        "latency p50 (µs)",
        &latency,
        |f| f.latency_p50_us,
        "(info)",
        |_| true,
    ));
    rows.push(ratio_row(
        &name,
        "latency max (µs)",
        &latency,
        |f| f.latency_max_us,
        "(info)",
        |_| true,
    ));

    eprintln!("idle connections");
    let idle = compare(Scenario::Idle, &both, s).await;
    let name = format!("{} idle connections (ping stream)", s.idle_connections);
    rows.push(ratio_row(
        &name,
        "server RSS per connection (bytes)",
        &idle,
        |f| f.rss_per_connection_bytes,
        "≤ 0.75×",
        |r| r <= 0.75,
    ));

    eprintln!("one fast client");
    let fast = compare(Scenario::Fast, &both, s).await;
    let name = format!("one client reading /events/fast?n={}", s.fast_events);
    rows.push(ratio_row(
        &name,
        "events/s",
        &fast,
        |f| f.events_per_second,
        "≥ 1.5×",
        |r| r >= 1.5,
    ));
    rows.push(ratio_row(
        &name,
        "server CPU per event (ns)",
        &fast,
        |f| f.cpu_ns_per_event,
        "(info)",
        |_| true,
    ));

    eprintln!("{} connections in one server", s.most_connections);
    let most = compare(Scenario::Most, &both, s).await;
    let name = format!(
        "{} concurrent connections, one broadcast",
        s.most_connections
    );
    rows.push(Row {
        scenario: name,
        figure: "connected; received the broadcast",
        ours: format!("{}; {}", most[0].connected, most[0].delivered),
        baseline: format!("{}; {}", most[1].connected, most[1].delivered),
        ratio: f64::NAN,
        target: "all, zero loss",
        met: most[0].connected as usize == s.most_connections && loss(&most[0]) == 0,
    });

    eprintln!("Redis broker, two instances, vs in-memory on one");
    let (subscribers, events) = (s.fan_out_subscribers, s.fan_out_events / 2);
    let mut redis_runs = Vec::new();
    let mut memory_runs = Vec::new();
    let mut round_trips = 0.0;
    for round in 0..s.rounds {
        let memory = async {
            let server = start("bench-ours").await;
            let figures =
                scenario::fan_out(server.addr, server.pid, subscribers, events, None).await;
            server.stop().await;
            eprintln!("  in-memory, 1 instance {figures:?}");
            figures
        };
        if round % 2 == 0 {
            let (figures, trips) = redis_fan_out(subscribers, events).await;
            redis_runs.push(figures);
            round_trips += trips;
            memory_runs.push(memory.await);
        } else {
            memory_runs.push(memory.await);
            let (figures, trips) = redis_fan_out(subscribers, events).await;
            redis_runs.push(figures);
            round_trips += trips;
        }
    }
    let redis_vs_memory = [mean(&redis_runs), mean(&memory_runs)];
    let name =
        format!("Redis broker, {subscribers} subscribers over 2 instances (vs in-memory on 1)");
    rows.push(ratio_row(
        &name,
        "delivered events/s (Redis ÷ in-memory)",
        &redis_vs_memory,
        |f| f.events_per_second,
        "(info)",
        |_| true,
    ));
    rows.push(ratio_row(
        &name,
        "latency p99 (µs) (Redis ÷ in-memory)",
        &redis_vs_memory,
        |f| f.latency_p99_us,
        "(info)",
        |_| true,
    ));
    rows.push(Row {
        scenario: name.clone(),
        figure: "Redis commands per published event",
        ours: format!("{:.2}", round_trips / s.rounds as f64),
        baseline: "—".into(),
        ratio: f64::NAN,
        target: "(info)",
        met: true,
    });
    rows.push(loss_row(&name, &redis_vs_memory));

    eprintln!("macro vs hand-wired");
    let wiring = compare(Scenario::FanOut, &["bench-ours", "bench-handwired"], s).await;
    let name = format!(
        "macro vs hand-wired, fan-out {} subscribers",
        s.fan_out_subscribers
    );
    // Wall-clock figures swing by more than 2% between identical runs on a
    // shared machine; the 2% target is judged by instruction counts
    // (examples/bench/instructions.sh), recorded beside this table.
    const BY_INSTRUCTIONS: &str = "(info) within 2%: judged by instruction count";
    rows.push(ratio_row(
        &name,
        "delivered events/s (macro ÷ hand-wired)",
        &wiring,
        |f| f.events_per_second,
        BY_INSTRUCTIONS,
        |_| true,
    ));
    rows.push(ratio_row(
        &name,
        "CPU per event (macro ÷ hand-wired)",
        &wiring,
        |f| f.cpu_ns_per_event,
        BY_INSTRUCTIONS,
        |_| true,
    ));

    let chart_path = out.with_file_name(if smoke {
        "benchmarks-smoke.png"
    } else {
        "docs/benchmarks.png"
    });
    let bars: Vec<bench::chart::Bar> = rows
        .iter()
        .filter(|row| row.ratio.is_finite() && !row.target.starts_with("(info)"))
        .map(|row| bench::chart::Bar {
            label: format!(
                "{}: {}",
                short(&row.scenario),
                row.figure.split(" (").next().unwrap_or(row.figure)
            ),
            ratio: row.ratio,
            target: row
                .target
                .split_whitespace()
                .find_map(|w| w.trim_end_matches('×').parse().ok()),
            met: row.met,
        })
        .collect();
    if let Some(dir) = chart_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).unwrap();
    }
    match bench::chart::draw(
        &bars,
        &chart_path,
        "sse-runtime vs plain axum: ratio per figure (green: target met)",
    ) {
        Ok(()) => eprintln!("wrote {}", chart_path.display()),
        Err(error) => panic!("could not draw the chart: {error}"),
    }
    let report = render(&rows, smoke, &args[1..].join(" "));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).unwrap();
    }
    // Only the marked section is rewritten: the rest of the file is prose.
    let (start, end) = ("<!-- comparison:start -->", "<!-- comparison:end -->");
    let previous = std::fs::read_to_string(&out).unwrap_or_default();
    let updated = match (previous.find(start), previous.find(end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{start}\n{report}{}", &previous[..a], &previous[b..])
        }
        _ => format!("{start}\n{report}{end}\n"),
    };
    std::fs::write(&out, updated).unwrap();
    println!("{report}");
    eprintln!("wrote {}", out.display());
}

/// The scenario's name, shortened for a chart label.
fn short(scenario: &str) -> String {
    scenario
        .split(',')
        .take(2)
        .collect::<Vec<_>>()
        .join(",")
        .chars()
        .take(44)
        .collect()
}

fn ratio_row(
    scenario: &str,
    figure: &'static str,
    figures: &[Figures],
    value: fn(&Figures) -> f64,
    target: &'static str,
    met: impl Fn(f64) -> bool,
) -> Row {
    let (ours, other) = (value(&figures[0]), value(&figures[1]));
    let ratio = ours / other;
    Row {
        scenario: scenario.to_owned(),
        figure,
        ours: format!("{ours:.1}"),
        baseline: format!("{other:.1}"),
        ratio,
        target,
        met: met(ratio),
    }
}

fn loss_row(scenario: &str, figures: &[Figures]) -> Row {
    Row {
        scenario: scenario.to_owned(),
        figure: "events lost (of expected)",
        ours: format!("{} of {}", loss(&figures[0]), figures[0].expected),
        baseline: format!("{} of {}", loss(&figures[1]), figures[1].expected),
        ratio: f64::NAN,
        target: "zero loss",
        met: loss(&figures[0]) == 0,
    }
}

fn render(rows: &[Row], smoke: bool, command: &str) -> String {
    let mut out = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "## Comparison{}\n",
        if smoke {
            " (smoke sizes: not a measurement)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "Command: `cargo build --release -p bench && target/release/loadgen {command}`\n"
    );
    let _ = writeln!(
        out,
        "Machine: {cores} cores ({cpu}), {rustc}, loopback only; the load generator shares the cores with the server.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | figure | ours | baseline | ratio | target | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for row in rows {
        let ratio = if row.ratio.is_nan() {
            "—".to_owned()
        } else {
            format!("{:.2}×", row.ratio)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.figure,
            row.ours,
            row.baseline,
            ratio,
            row.target,
            match (row.target.starts_with("(info)"), row.met) {
                (true, _) => "—",
                (false, true) => "yes",
                (false, false) => "**no**",
            }
        );
    }
    out
}
