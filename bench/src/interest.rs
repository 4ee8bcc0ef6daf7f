//! Reads by interest (issue 22): how much Redis sends, and how much CPU the
//! instances spend, per delivered event, from one instance to many.
//!
//! `instances` processes of `bench-ours` over one `redis-server`; `keys`
//! keys with one subscriber each, key `k`'s subscriber on instance
//! `k % instances` (each key's subscribers on one instance, as per-user
//! streams behind a sticky load balancer are); events sent to the keys in
//! turn at a fixed rate, each POSTed to the instance that serves its key.
//! Measured: Redis's output bytes (`total_net_output_bytes`) per delivered
//! event, as a multiple of the event's size (its stored fields), and the
//! instances' CPU per delivered event, summed over the processes, less what
//! the same open streams cost with no event.
//!
//! `--control` adds the same load on the in-memory broker: every instance
//! on its own, sharing nothing, so whatever its CPU per event does from one
//! process to many is what co-locating the processes costs, with no Redis
//! and no routing in it.
//!
//! `joins` measures the other side: subscribers opening at a fixed rate on
//! one instance, each timed from its request to its first event (the resume
//! point, sent once the key's channel is subscribed and its position read).

use std::time::{Duration, Instant};

use crate::client::{EventStream, Publisher};
use crate::keyed::{KeyedSubscribers, send_paced, warm_up};
use crate::sample_process;
use crate::scenario::notification;
use crate::server_process::{ServerProcess, redis_stat, start_redis, start_with};

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct InterestRun {
    pub instances: usize,
    pub delivered: u64,
    pub expected: u64,
    /// Redis's output bytes while the events were sent and delivered.
    pub redis_out_bytes: u64,
    /// The bytes of one event as a subscriber receives it (its id line,
    /// its `data:` line and the blank line that ends it).
    pub event_bytes: usize,
    /// The instances' CPU seconds per second with the streams open and no
    /// event sent.
    pub idle_cpu_per_second: f64,
    pub seconds: f64,
    /// What the instances did while sending and delivering: their CPU
    /// time, system calls and context switches.
    pub activity: Activity,
}

/// The instances' CPU seconds, system calls (the reads and writes that
/// `/proc/<pid>/io` counts) and their threads' context switches, summed:
/// besides the CPU, the work per event that more processes could add.
#[derive(Debug, Clone, Copy, Default)]
pub struct Activity {
    pub cpu_seconds: f64,
    pub syscalls: u64,
    pub context_switches: u64,
}

impl Activity {
    /// So far, from one sample of each process.
    fn of(servers: &[ServerProcess]) -> Activity {
        servers
            .iter()
            .map(|server| sample_process(server.pid).unwrap_or_default())
            .fold(Activity::default(), |sum, sample| Activity {
                cpu_seconds: sum.cpu_seconds + sample.cpu_seconds,
                syscalls: sum.syscalls + sample.read_syscalls + sample.write_syscalls,
                context_switches: sum.context_switches + sample.context_switches,
            })
    }

    fn since(self, before: Activity) -> Activity {
        Activity {
            cpu_seconds: self.cpu_seconds - before.cpu_seconds,
            syscalls: self.syscalls.saturating_sub(before.syscalls),
            context_switches: self
                .context_switches
                .saturating_sub(before.context_switches),
        }
    }
}

impl InterestRun {
    /// Redis output bytes per delivered event, as a multiple of its size.
    pub fn redis_bytes_ratio(&self) -> f64 {
        self.redis_bytes_per_event() / self.event_bytes as f64
    }

    /// Redis output bytes per delivered event.
    pub fn redis_bytes_per_event(&self) -> f64 {
        self.redis_out_bytes as f64 / self.delivered.max(1) as f64
    }

    /// Instance CPU per delivered event, in µs, as measured.
    pub fn cpu_us_per_event(&self) -> f64 {
        self.activity.cpu_seconds * 1e6 / self.delivered.max(1) as f64
    }

    /// System calls per delivered event.
    pub fn syscalls_per_event(&self) -> f64 {
        self.activity.syscalls as f64 / self.delivered.max(1) as f64
    }

    /// Context switches per delivered event.
    pub fn switches_per_event(&self) -> f64 {
        self.activity.context_switches as f64 / self.delivered.max(1) as f64
    }

    /// The same less the open streams' cost with no event.
    pub fn delivery_us_per_event(&self) -> f64 {
        let idle = self.idle_cpu_per_second * self.seconds;
        (self.activity.cpu_seconds - idle).max(0.0) * 1e6 / self.delivered.max(1) as f64
    }
}

/// How long the open streams are watched with no event sent.
const IDLE_WATCH: Duration = Duration::from_secs(3);

/// The size of one event as delivered: `id: <13-digit ms>-0\ndata: …\n\n`.
fn delivered_event_bytes() -> usize {
    format!(
        "id: {}-0\ndata: {}\n\n",
        1_800_000_000_000u64,
        notification(0)
    )
    .len()
}

fn redis_output_bytes(port: u16) -> u64 {
    redis_stat(port, "total_net_output_bytes")
}

/// Where the instances keep their keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One `redis-server`.
    Node,
    /// The tests' three-master Redis Cluster.
    Cluster,
    /// No Redis: each instance on its in-memory broker (the control).
    Memory,
}

impl Backend {
    /// Whether Redis's output is counted (it is not in the control).
    fn has_redis(self) -> bool {
        self != Backend::Memory
    }
}

/// What keeps a benchmark's Redis running until it is dropped.
type RedisGuard = Box<dyn std::any::Any + Send>;

/// A fresh Redis of `backend`'s kind: the instances' environment, the ports
/// whose output is counted, and what keeps it running.
async fn start_backend(backend: Backend) -> (Vec<(&'static str, String)>, Vec<u16>, RedisGuard) {
    match backend {
        Backend::Node => {
            let (redis, port) = start_redis().await;
            (
                vec![("REDIS_URL", format!("redis://127.0.0.1:{port}/"))],
                vec![port],
                Box::new(redis),
            )
        }
        Backend::Memory => (Vec::new(), Vec::new(), Box::new(())),
        Backend::Cluster => {
            let cluster = sse_tests::redis_cluster::start()
                .await
                .expect("redis-server and redis-cli for the cluster");
            (
                vec![("REDIS_CLUSTER_URLS", cluster.urls().join(","))],
                cluster.ports.clone(),
                Box::new(cluster),
            )
        }
    }
}

/// One run: `instances` processes of `binary` over a fresh Redis of
/// `backend`'s kind.
pub async fn run_on(
    backend: Backend,
    binary: &str,
    instances: usize,
    keys: usize,
    events: u64,
    rate: u64,
) -> InterestRun {
    let (environment, ports, redis) = start_backend(backend).await;
    let mut servers = Vec::with_capacity(instances);
    for _ in 0..instances {
        servers.push(start_with(binary, &environment).await);
    }
    let per_key = events / keys as u64;
    let addresses: Vec<_> = servers.iter().map(|server| server.addr).collect();
    // Subscribers stay connected until the figures are taken: leaving (and
    // the instances unsubscribing) is not part of delivering.
    let subscribers = KeyedSubscribers::open(&addresses, keys, per_key, true);
    let mut publishers = Vec::with_capacity(instances);
    for server in &servers {
        publishers.push(
            Publisher::connect(server.addr)
                .await
                .expect("publisher connects"),
        );
    }
    // Until every subscriber is registered: a broadcast answers how many
    // streams it reached on the instance asked.
    warm_up(&mut publishers, "/events/keys-warmup", "", keys).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_from = Activity::of(&servers);
    tokio::time::sleep(IDLE_WATCH).await;
    let idle_cpu_per_second =
        Activity::of(&servers).since(idle_from).cpu_seconds / IDLE_WATCH.as_secs_f64();
    let activity_before = Activity::of(&servers);
    let bytes_before: u64 = ports.iter().map(|port| redis_output_bytes(*port)).sum();
    let started = Instant::now();
    // Each event is POSTed to the instance that serves its key.
    send_paced(
        &mut publishers,
        keys,
        per_key * keys as u64,
        rate,
        notification,
    )
    .await;
    subscribers.until_finished(Duration::from_secs(60)).await;
    let seconds = started.elapsed().as_secs_f64();
    let run = InterestRun {
        instances,
        delivered: subscribers.delivered(),
        expected: per_key * keys as u64,
        redis_out_bytes: ports
            .iter()
            .map(|port| redis_output_bytes(*port))
            .sum::<u64>()
            .saturating_sub(bytes_before),
        event_bytes: delivered_event_bytes(),
        idle_cpu_per_second,
        seconds,
        activity: Activity::of(&servers).since(activity_before),
    };
    subscribers.close(Duration::from_secs(60)).await;
    for server in servers {
        server.stop().await;
    }
    drop(redis);
    run
}

/// The cluster row: the same load on the tests' three-master Redis Cluster
/// and on one node, alternating, `rounds` each.
pub async fn cluster_against_node(
    instances: usize,
    keys: usize,
    events: u64,
    rate: u64,
    rounds: usize,
    command: &str,
) -> String {
    let mut out = format!(
        "Command: `{command}`\n\n{instances} instances, {keys} keys with one subscriber each \
         (key k's on instance k mod {instances}), {events} events sent to the keys in turn at \
         {rate}/s, each POSTed to the instance that serves its key; the tests' Redis Cluster \
         (three masters, no replicas) against one `redis-server`, {rounds} runs each, \
         alternating; all on this machine's 2 cores.\n\n\
         | Redis | publishes/s | deliveries/s | delivered | Redis bytes per event | instance CPU per event | ratio to one node |\n\
         |---|---|---|---|---|---|---|\n"
    );
    let mut runs: [Vec<InterestRun>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Backend::Node, Backend::Cluster]
        } else {
            [Backend::Cluster, Backend::Node]
        };
        for backend in order {
            let run = run_on(backend, "bench-ours", instances, keys, events, rate).await;
            eprintln!(
                "  {backend:?}: {}/{} delivered in {:.1} s, {:.1} µs CPU/event",
                run.delivered,
                run.expected,
                run.seconds,
                run.cpu_us_per_event()
            );
            runs[usize::from(backend == Backend::Cluster)].push(run);
        }
    }
    let mean = |runs: &[InterestRun], of: fn(&InterestRun) -> f64| {
        runs.iter().map(of).sum::<f64>() / runs.len().max(1) as f64
    };
    let node_cpu = mean(&runs[0], InterestRun::cpu_us_per_event);
    for (name, runs) in [("one node", &runs[0]), ("cluster, 3 masters", &runs[1])] {
        let delivered: u64 = runs.iter().map(|run| run.delivered).sum();
        let expected: u64 = runs.iter().map(|run| run.expected).sum();
        let cpu = mean(runs, InterestRun::cpu_us_per_event);
        out.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {delivered}/{expected} | {:.0} | {cpu:.1} µs | {:.2}× |\n",
            mean(runs, |run| run.expected as f64 / run.seconds),
            mean(runs, |run| run.delivered as f64 / run.seconds),
            mean(runs, InterestRun::redis_bytes_per_event),
            cpu / node_cpu.max(1e-9),
        ));
    }
    out
}

/// The report: Redis bytes and instance CPU per delivered event at each
/// instance count, with ours and, when given, a baseline binary (an earlier
/// build) and the in-memory control measured in the same run, alternating
/// which goes first.
pub async fn compare(
    baseline: Option<&str>,
    control: bool,
    instance_counts: &[usize],
    keys: usize,
    events: u64,
    rate: u64,
    command: &str,
) -> String {
    let mut out = format!(
        "Command: `{command}`\n\n{keys} keys, one subscriber each, key k's on instance k mod N; \
         {events} events sent to the keys in turn at {rate}/s, each POSTed to the instance \
         that serves its key; one `redis-server`, everything on this machine's 2 cores. \
         \"Redis bytes\" is Redis's output (`total_net_output_bytes`) per delivered event, \
         and as a multiple of the event's size as a subscriber receives it ({} bytes: its \
         `id:` line, a JSON `data:` line of {} bytes, the blank line); CPU is the \
         instances' together, per \
         delivered event, and \"delivery\" less what the same open streams cost with no event \
         (measured for {idle} s before each run); system calls (`syscr` + `syscw` of \
         `/proc/<pid>/io`: reads and writes, not `epoll_wait`) and context switches (`nr_switches` of each thread) are the \
         instances' together, per delivered event. {control}\n\n\
         | build | instances | delivered | Redis bytes per event | × event size | CPU per event | delivery CPU per event | idle CPU | system calls per event | context switches per event |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        delivered_event_bytes(),
        notification(0).len(),
        idle = IDLE_WATCH.as_secs(),
        control = if control {
            "The in-memory control is the same instances with no Redis, each on its own \
             in-memory broker and sharing nothing: what its CPU per event does from one \
             process to many is what co-locating the processes on these cores costs."
        } else {
            ""
        }
    );
    let mut builds = vec![("ours", "bench-ours".to_owned(), Backend::Node)];
    if let Some(baseline) = baseline {
        builds.push(("bells (before)", baseline.to_owned(), Backend::Node));
    }
    if control {
        builds.push((CONTROL, "bench-ours".to_owned(), Backend::Memory));
    }
    let mut rows = Vec::new();
    for (round, instances) in instance_counts.iter().enumerate() {
        let mut order: Vec<usize> = (0..builds.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let (name, binary, backend) = &builds[index];
            let run = run_on(*backend, binary, *instances, keys, events, rate).await;
            eprintln!(
                "  {name}, {instances} instance(s): {}/{} delivered, Redis {:.2}× the event, {:.1} µs CPU/event ({:.1} delivery), idle {:.1}%, {:.2} system calls and {:.2} context switches per event",
                run.delivered,
                run.expected,
                run.redis_bytes_ratio(),
                run.cpu_us_per_event(),
                run.delivery_us_per_event(),
                run.idle_cpu_per_second * 100.0,
                run.syscalls_per_event(),
                run.switches_per_event()
            );
            rows.push((index, *name, run));
        }
    }
    rows.sort_by_key(|(index, _, run)| (*index, run.instances));
    for (index, name, run) in &rows {
        let (redis_bytes, ratio) = if builds[*index].2.has_redis() {
            (
                format!("{:.0}", run.redis_bytes_per_event()),
                format!("{:.2}×", run.redis_bytes_ratio()),
            )
        } else {
            ("—".to_owned(), "—".to_owned())
        };
        out.push_str(&format!(
            "| {name} | {} | {}/{} | {redis_bytes} | {ratio} | {:.1} µs | {:.1} µs | {:.1}% of a core | {:.2} | {:.2} |\n",
            run.instances,
            run.delivered,
            run.expected,
            run.cpu_us_per_event(),
            run.delivery_us_per_event(),
            run.idle_cpu_per_second * 100.0,
            run.syscalls_per_event(),
            run.switches_per_event()
        ));
    }
    // Each build's mean at the most instances against its mean at the fewest.
    for (index, (name, _, backend)) in builds.iter().enumerate() {
        let runs: Vec<&InterestRun> = rows
            .iter()
            .filter(|(row, _, _)| *row == index)
            .map(|(_, _, run)| run)
            .collect();
        out.push_str(&growth(name, *backend, &runs));
    }
    out
}

/// The name of the in-memory control's rows.
const CONTROL: &str = "in-memory (control)";

/// One build's runs at its most instances against its fewest (means), as a
/// line of the report.
fn growth(name: &str, backend: Backend, runs: &[&InterestRun]) -> String {
    let mean_at = |instances: usize, of: fn(&InterestRun) -> f64| {
        let at: Vec<f64> = runs
            .iter()
            .filter(|run| run.instances == instances)
            .map(|run| of(run))
            .collect();
        at.iter().sum::<f64>() / at.len().max(1) as f64
    };
    let (Some(fewest), Some(most)) = (
        runs.iter().map(|run| run.instances).min(),
        runs.iter().map(|run| run.instances).max(),
    ) else {
        return String::new();
    };
    let ratio = |of: fn(&InterestRun) -> f64| mean_at(most, of) / mean_at(fewest, of).max(1e-9);
    let redis = if backend.has_redis() {
        format!(
            "; Redis bytes per event {:.2}×",
            ratio(InterestRun::redis_bytes_per_event)
        )
    } else {
        String::new()
    };
    format!(
        "\n{name}, {most} instances against {fewest} (means of the runs above): delivery CPU per \
         event {:.2}×, as measured {:.2}×{redis}; system calls per event {:.2}×; context \
         switches per event {:.2}×.\n",
        ratio(InterestRun::delivery_us_per_event),
        ratio(InterestRun::cpu_us_per_event),
        ratio(InterestRun::syscalls_per_event),
        ratio(InterestRun::switches_per_event),
    )
}

/// Join latency: `subscribers` new subscribers (one key each) opening on
/// one instance over Redis at `rate` per second, each timed from sending
/// its request to its first event. Answers the sorted latencies.
pub async fn joins(subscribers: usize, rate: u64) -> Vec<Duration> {
    let (mut redis, port) = start_redis().await;
    let url = format!("redis://127.0.0.1:{port}/");
    let server = start_with("bench-ours", &[("REDIS_URL", url)]).await;
    let addr = server.addr;
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut next = Instant::now();
    let mut tasks = Vec::with_capacity(subscribers);
    for key in 0..subscribers {
        tokio::time::sleep_until(next.into()).await;
        next += period;
        tasks.push(tokio::spawn(async move {
            let asked = Instant::now();
            let path = format!("/events/keys/{key}");
            let mut stream = EventStream::open(addr, key, &path).await.ok()?;
            // The resume point is the stream's first line: `id: …`.
            let mut first = false;
            let _ = tokio::time::timeout(
                Duration::from_secs(60),
                stream.for_each_line(|line| {
                    first = line.starts_with(b"id:");
                    !first
                }),
            )
            .await;
            let took = asked.elapsed();
            first.then_some((took, stream))
        }));
    }
    let mut latencies = Vec::with_capacity(subscribers);
    let mut streams = Vec::with_capacity(subscribers);
    for task in tasks {
        if let Ok(Some((took, stream))) = task.await {
            latencies.push(took);
            streams.push(stream);
        }
    }
    drop(streams);
    server.stop().await;
    let _ = redis.kill().await;
    latencies.sort();
    latencies
}
