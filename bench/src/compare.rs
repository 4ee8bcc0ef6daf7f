//! The side-by-side comparison: each scenario run against a fresh server
//! process, ours and the baseline alternating, figures as ratios.

use crate::report::{Row, loss, loss_row, ratio_row, row_with};
use crate::scenario::{self, Figures};
use crate::server_process::{redis_commands, start, start_redis, start_with};

/// How big each scenario is.
#[derive(Clone, Copy)]
pub struct Sizes {
    pub light_subscribers: usize,
    pub light_rate: u64,
    pub light_events: u64,
    pub moderate_subscribers: usize,
    pub moderate_rate: u64,
    pub moderate_events: u64,
    pub fan_out_subscribers: usize,
    pub fan_out_events: u64,
    /// The two paces at which the Redis and in-memory brokers are compared.
    pub redis_light_rate: u64,
    pub redis_rate: u64,
    pub wide_subscribers: usize,
    pub wide_events: u64,
    pub latency_subscribers: usize,
    pub latency_events: u64,
    pub latency_rate: u64,
    pub idle_connections: usize,
    pub fast_events: u64,
    pub most_connections: usize,
    pub rounds: usize,
    /// Rounds of the light and moderate loads, judged on their p99 latency.
    pub latency_rounds: usize,
}

/// The publishers of the concurrent fan-out.
const CONCURRENT_PUBLISHERS: usize = 4;

/// The measured run.
pub const FULL: Sizes = Sizes {
    light_subscribers: 100,
    light_rate: 100,
    light_events: 600,
    moderate_subscribers: 1_000,
    moderate_rate: 50,
    moderate_events: 300,
    fan_out_subscribers: 1_000,
    fan_out_events: 2_000,
    redis_light_rate: 200,
    redis_rate: 800,
    wide_subscribers: 10_000,
    wide_events: 200,
    latency_subscribers: 1_000,
    latency_events: 2_500,
    latency_rate: 500,
    idle_connections: 10_000,
    fast_events: 1_000_000,
    most_connections: 19_000,
    rounds: 2,
    latency_rounds: 8,
};

/// CI's smoke test: every scenario, tiny.
pub const SMOKE: Sizes = Sizes {
    light_subscribers: 10,
    light_rate: 100,
    light_events: 20,
    moderate_subscribers: 20,
    moderate_rate: 50,
    moderate_events: 10,
    fan_out_subscribers: 20,
    fan_out_events: 20,
    redis_light_rate: 100,
    redis_rate: 400,
    wide_subscribers: 50,
    wide_events: 5,
    latency_subscribers: 20,
    latency_events: 50,
    latency_rate: 500,
    idle_connections: 50,
    fast_events: 10_000,
    most_connections: 100,
    rounds: 1,
    latency_rounds: 1,
};

#[derive(Clone, Copy, PartialEq)]
/// A load scenario.
pub enum Scenario {
    Light,
    Moderate,
    FanOut,
    /// The fan-out with four publishers posting concurrently.
    FanOutConcurrent,
    Wide,
    Latency,
    Idle,
    Fast,
    Most,
}

/// One run of `scenario` against a fresh `binary`.
pub async fn run(scenario: Scenario, binary: &str, sizes: Sizes) -> Figures {
    let server = start(binary).await;
    let figures = match scenario {
        Scenario::Light => {
            scenario::fan_out(
                server.addr,
                server.pid,
                sizes.light_subscribers,
                sizes.light_events,
                Some(sizes.light_rate),
            )
            .await
        }
        Scenario::Moderate => {
            scenario::fan_out(
                server.addr,
                server.pid,
                sizes.moderate_subscribers,
                sizes.moderate_events,
                Some(sizes.moderate_rate),
            )
            .await
        }
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
        Scenario::FanOutConcurrent => {
            scenario::concurrent_publish(
                &[server.addr],
                &[server.pid],
                sizes.fan_out_subscribers,
                sizes.fan_out_events,
                CONCURRENT_PUBLISHERS,
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
pub async fn compare(scenario: Scenario, binaries: &[&str], sizes: Sizes) -> Vec<Figures> {
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

pub(crate) fn mean(runs: &[Figures]) -> Figures {
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
        arrival_latency_p50_us: avg(|r| r.arrival_latency_p50_us),
        arrival_latency_p99_us: avg(|r| r.arrival_latency_p99_us),
        rss_per_connection_bytes: avg(|r| r.rss_per_connection_bytes),
        heap_per_connection_bytes: avg(|r| r.heap_per_connection_bytes),
        writes_per_event: avg(|r| r.writes_per_event),
        published_per_second: avg(|r| r.published_per_second),
        wire_bytes_per_event: avg(|r| r.wire_bytes_per_event),
    }
}

/// A `redis-server` of the benchmark's own on a free loopback port.
/// Fan-out over the Redis broker, subscribers split over two instances and
/// the publisher on the first; returns the figures and Redis commands per
/// published event (the whole run, warm-up included).
pub async fn redis_fan_out(
    subscribers: usize,
    events: u64,
    instances: usize,
    publishers: usize,
    rate: Option<u64>,
) -> (Figures, f64) {
    let (mut redis, port) = start_redis().await;
    let url = format!("redis://127.0.0.1:{port}/");
    let mut servers = Vec::new();
    for _ in 0..instances.max(1) {
        servers.push(start_with("bench-ours", &[("REDIS_URL", url.clone())]).await);
    }
    let addrs: Vec<_> = servers.iter().map(|server| server.addr).collect();
    let pids: Vec<_> = servers.iter().map(|server| server.pid).collect();
    let before = redis_commands(port);
    let figures =
        scenario::concurrent_publish(&addrs, &pids, subscribers, events, publishers, rate).await;
    let commands = redis_commands(port).saturating_sub(before);
    for server in servers {
        server.stop().await;
    }
    let _ = redis.kill().await;
    eprintln!("  redis, {instances} instance(s) {figures:?}; {commands} Redis commands");
    (figures, commands as f64 / events.max(1) as f64)
}

/// How a comparison run publishes: `publishers` concurrent connections,
/// together at `rate` events per second or as fast as they can.
#[derive(Clone, Copy)]
struct Publishing {
    publishers: usize,
    rate: Option<u64>,
}

/// One sequential publisher, as fast as it can.
const ONE_AS_FAST_AS_IT_CAN: Publishing = Publishing {
    publishers: 1,
    rate: None,
};

/// Fan-out over the Redis broker on `instances` instances against the
/// in-memory broker on one, both published the same way, alternating which
/// goes first each round: the mean figures of each, and the Redis commands
/// per published event.
async fn redis_against_memory(
    s: Sizes,
    subscribers: usize,
    events: u64,
    instances: usize,
    publishing: Publishing,
) -> ([Figures; 2], f64) {
    let Publishing { publishers, rate } = publishing;
    let mut redis_runs = Vec::new();
    let mut memory_runs = Vec::new();
    let mut commands = 0.0;
    for round in 0..s.rounds {
        let memory = || async {
            let server = start("bench-ours").await;
            let figures = scenario::concurrent_publish(
                &[server.addr],
                &[server.pid],
                subscribers,
                events,
                publishers,
                rate,
            )
            .await;
            server.stop().await;
            eprintln!("  in-memory, 1 instance {figures:?}");
            figures
        };
        let memory_first = round % 2 == 1;
        if memory_first {
            memory_runs.push(memory().await);
        }
        let (figures, per_event) =
            redis_fan_out(subscribers, events, instances, publishers, rate).await;
        redis_runs.push(figures);
        commands += per_event;
        if !memory_first {
            memory_runs.push(memory().await);
        }
    }
    (
        [mean(&redis_runs), mean(&memory_runs)],
        commands / s.rounds.max(1) as f64,
    )
}

/// Every scenario of the comparison, ours against the baseline (and the
/// other pairs it names), as report rows.
pub async fn comparison(s: Sizes) -> Vec<Row> {
    let both = ["bench-ours", "bench-baseline"];
    let mut rows = Vec::new();

    for (scenario, subscribers, rate) in [
        (Scenario::Light, s.light_subscribers, s.light_rate),
        (Scenario::Moderate, s.moderate_subscribers, s.moderate_rate),
    ] {
        eprintln!("{subscribers} subscribers at {rate} events/s");
        // Judged on tail latency, which moves most between runs: more rounds.
        let sizes = Sizes {
            rounds: s.latency_rounds,
            ..s
        };
        let figures = compare(scenario, &both, sizes).await;
        let name = format!("{subscribers} subscribers at {rate} events/s");
        rows.push(row_with(
            &name,
            "latency p50 (µs)",
            &figures,
            |f| f.latency_p50_us,
            // Issue 23: no more than the baseline's p50 + 0.2 ms.
            "≤ baseline + 0.2 ms",
            |ours, baseline| ours <= baseline + 200.0,
        ));
        rows.push(ratio_row(
            &name,
            "latency p99 (µs)",
            &figures,
            |f| f.latency_p99_us,
            "≤ 1.0×",
            |r| r <= 1.0,
        ));
        rows.push(ratio_row(
            &name,
            "server CPU per delivered event (ns)",
            &figures,
            |f| f.cpu_ns_per_event,
            "≤ 1.0×",
            |r| r <= 1.0,
        ));
        rows.push(ratio_row(
            &name,
            "server write system calls per 100 delivered events",
            &figures,
            |f| f.writes_per_event * 100.0,
            "(info)",
            |_| true,
        ));
        rows.push(loss_row(&name, &figures));
    }

    for (scenario, publishers) in [
        (Scenario::FanOut, "one publisher posting sequentially"),
        (
            Scenario::FanOutConcurrent,
            "4 publishers posting concurrently",
        ),
    ] {
        eprintln!(
            "fan-out, {} subscribers, {} events from {publishers}, as fast as possible",
            s.fan_out_subscribers, s.fan_out_events
        );
        let fan_out = compare(scenario, &both, s).await;
        let name = format!(
            "fan-out, {} subscribers, {publishers} as fast as it can",
            s.fan_out_subscribers
        );
        // The targets of saturation (issue 23) hold for the sequential
        // publisher, the harder case for batching: its events come
        // 1–3 ms apart, not all at once.
        let sequential = scenario == Scenario::FanOut;
        rows.push(ratio_row(
            &name,
            "server CPU per delivered event (ns)",
            &fan_out,
            |f| f.cpu_ns_per_event,
            if sequential { "≤ 0.4×" } else { "(info)" },
            |r| !sequential || r <= 0.4,
        ));
        rows.push(ratio_row(
            &name,
            "delivered events/s",
            &fan_out,
            |f| f.events_per_second,
            if sequential { "≥ 2.5×" } else { "(info)" },
            |r| !sequential || r >= 2.5,
        ));
        rows.push(row_with(
            &name,
            "server write system calls per 100 delivered events",
            &fan_out,
            |f| f.writes_per_event * 100.0,
            if sequential { "≤ 15" } else { "(info)" },
            |ours, _| !sequential || ours <= 15.0,
        ));
        rows.push(ratio_row(
            &name,
            "latency p99 (µs)",
            &fan_out,
            |f| f.latency_p99_us,
            "(info)",
            |_| true,
        ));
        rows.push(loss_row(&name, &fan_out));
    }

    eprintln!("fan-out, {} subscribers", s.wide_subscribers);
    let wide = compare(Scenario::Wide, &both, s).await;
    let name = format!("fan-out, {} subscribers", s.wide_subscribers);
    rows.push(ratio_row(
        &name,
        "server CPU per delivered event (ns)",
        &wide,
        |f| f.cpu_ns_per_event,
        "≤ 0.5×",
        |r| r <= 0.5,
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
    rows.push(row_with(
        &name,
        "server RSS per connection (bytes)",
        &idle,
        |f| f.rss_per_connection_bytes,
        "≤ 8 KiB (about 0.4×)",
        |ours, _| ours <= 8_192.0,
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
    let (redis_vs_memory, round_trips) =
        redis_against_memory(s, subscribers, events, 2, ONE_AS_FAST_AS_IT_CAN).await;
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
        ours: format!("{round_trips:.2}"),
        baseline: "—".into(),
        ratio: f64::NAN,
        target: "(info)",
        met: true,
    });
    rows.push(loss_row(&name, &redis_vs_memory));

    // The goal compares what each broker costs per delivered event, so both
    // get the same events at the same pace: two publishers (so a Redis round
    // trip per POST does not hold the pace back) together at each rate.
    // Unpaced, one sequential publisher goes slower over Redis (each POST
    // waits for Redis), fewer events share each write, and CPU per event
    // rises with it; that run is reported beside, for what it is.
    let subscribers = s.fan_out_subscribers;
    for (rate, events) in [
        (s.redis_light_rate, s.fan_out_events / 2),
        (s.redis_rate, s.fan_out_events),
    ] {
        eprintln!("Redis broker on one instance vs in-memory, {rate} events/s");
        let paced = Publishing {
            publishers: 2,
            rate: Some(rate),
        };
        let (one_instance, _) = redis_against_memory(s, subscribers, events, 1, paced).await;
        let name = format!(
            "Redis broker, {subscribers} subscribers on 1 instance, {rate} events/s (vs in-memory)"
        );
        let kept_pace = one_instance
            .iter()
            .all(|f| f.published_per_second >= 0.95 * rate as f64);
        rows.push(ratio_row(
            &name,
            "server CPU per delivered event (Redis ÷ in-memory)",
            &one_instance,
            |f| f.cpu_ns_per_event,
            "≤ 1.3× (both keeping the pace)",
            |r| r <= 1.3 && kept_pace,
        ));
        rows.push(ratio_row(
            &name,
            "published events/s (Redis ÷ in-memory)",
            &one_instance,
            |f| f.published_per_second,
            "(info)",
            |_| true,
        ));
        rows.push(loss_row(&name, &one_instance));
    }
    eprintln!("Redis broker on one instance vs in-memory, one publisher as fast as it can");
    let events = s.fan_out_events;
    let (saturated, _) =
        redis_against_memory(s, subscribers, events, 1, ONE_AS_FAST_AS_IT_CAN).await;
    let name = format!(
        "Redis broker, {subscribers} subscribers on 1 instance, one publisher as fast as it can (vs in-memory)"
    );
    rows.push(ratio_row(
        &name,
        "published events/s (Redis ÷ in-memory)",
        &saturated,
        |f| f.published_per_second,
        "(info)",
        |_| true,
    ));
    rows.push(ratio_row(
        &name,
        "server CPU per delivered event (Redis ÷ in-memory)",
        &saturated,
        |f| f.cpu_ns_per_event,
        "(info) fewer events share a write at a lower rate",
        |_| true,
    ));
    rows.push(loss_row(&name, &saturated));

    let (publishers, subscribers, events) = (16, 10, s.fan_out_events * 10);
    eprintln!("Redis broker, {publishers} concurrent publishers");
    let (published, commands) = redis_fan_out(subscribers, events, 1, publishers, None).await;
    let name = format!(
        "Redis broker, 1 instance, {publishers} concurrent publishers, {subscribers} subscribers"
    );
    rows.push(Row {
        scenario: name.clone(),
        figure: "published events/s",
        ours: format!("{:.0}", published.published_per_second),
        baseline: "—".into(),
        ratio: f64::NAN,
        target: "≥ 20,000",
        met: published.published_per_second >= 20_000.0,
    });
    rows.push(Row {
        scenario: name.clone(),
        figure: "Redis commands per published event",
        ours: format!("{commands:.2}"),
        baseline: "—".into(),
        ratio: f64::NAN,
        target: "(info)",
        met: true,
    });
    rows.push(Row {
        scenario: name,
        figure: "events lost (of expected)",
        ours: format!("{} of {}", loss(&published), published.expected),
        baseline: "—".into(),
        ratio: f64::NAN,
        target: "zero loss",
        met: loss(&published) == 0,
    });

    eprintln!("macro vs hand-wired");
    let wiring = compare(Scenario::FanOut, &["bench-ours", "bench-handwired"], s).await;
    let name = format!(
        "macro vs hand-wired, fan-out {} subscribers",
        s.fan_out_subscribers
    );
    // Wall-clock figures swing by more than 2% between identical runs on a
    // shared machine; the 2% target is judged by instruction counts
    // (bench/instructions.sh), recorded beside this table.
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
    rows
}
