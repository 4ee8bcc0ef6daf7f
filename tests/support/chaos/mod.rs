//! The fault checker: a Redis Cluster of 3 masters and 3 replicas, two
//! instances of the chat app over it, publishers that retry with
//! idempotency keys, subscribers that drop and reconnect with
//! `Last-Event-ID` at random, and a seeded random schedule of faults.
//! Every subscriber is then checked against the acknowledged sends: no
//! duplicate (a message seen twice with no `reset` between), nothing out of
//! order, no silent gap (every acknowledged message a subscriber missed
//! falls where a `reset` told it so), no stuck slot. A message seen again
//! after a reset (delivered, lost with its master before it was
//! replicated, and sent again by its publisher's retry) is counted apart:
//! the reset told the client to trust nothing from before it.
//!
//! `tests/chaos.rs` runs a short schedule in CI; `loadgen chaos` runs
//! long ones (`RELIABILITY.md`). Everything talks to 127.0.0.1 only, and
//! every wait is bounded.

mod check;
mod clients;
mod faults;
mod instances;
mod random;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use check::{ChaosReport, FaultRow};
pub use faults::FaultKind;

use crate::{redis_cluster, redis_server};
use faults::Deployment;
use instances::{Instance, InstanceSetup};
use random::Random;
use sse_runtime::RegistryConfig;

/// What a run does.
#[derive(Debug, Clone)]
pub struct ChaosSettings {
    /// Seeds the schedule and every client's choices: a run is repeated by
    /// its seed (the timing of the machine aside).
    pub seed: u64,
    /// How many faults to inject, one after another.
    pub faults: usize,
    /// The kinds to pick from.
    pub kinds: Vec<FaultKind>,
    /// App instances serving the chat over the cluster.
    pub instances: usize,
    /// Sequential publishers, each posting to one room.
    pub publishers: usize,
    /// Subscribers, each following one room.
    pub subscribers: usize,
    /// The pause between a publisher's posts.
    pub publish_every: Duration,
    /// How many replicas must confirm a post before the instances
    /// acknowledge it ([`RegistryConfig::replicas_to_acknowledge`]): 1,
    /// every master's replica, or 0 for the master's word alone.
    pub replicas_to_acknowledge: usize,
}

impl ChaosSettings {
    /// A short schedule on a single Redis node without persistence: its
    /// restart and an instance's death, once each. No replica to wait for.
    pub fn single_node(seed: u64) -> ChaosSettings {
        ChaosSettings {
            faults: FaultKind::SINGLE_NODE.len(),
            kinds: FaultKind::SINGLE_NODE.to_vec(),
            replicas_to_acknowledge: 0,
            ..ChaosSettings::short(seed)
        }
    }

    /// A short schedule: one fault of each kind, in a seeded order.
    pub fn short(seed: u64) -> ChaosSettings {
        ChaosSettings {
            seed,
            faults: FaultKind::ALL.len(),
            kinds: FaultKind::ALL.to_vec(),
            instances: 2,
            publishers: 3,
            subscribers: 6,
            publish_every: Duration::from_millis(20),
            replicas_to_acknowledge: 1,
        }
    }
}

impl ChaosSettings {
    /// The faults in the order they come: every kind once (in a seeded
    /// order) while the count allows, then kinds drawn at random.
    fn schedule(&self, random: &mut Random) -> Vec<FaultKind> {
        let mut kinds = self.kinds.clone();
        for index in (1..kinds.len()).rev() {
            let other = (random.next() % (index as u64 + 1)) as usize;
            kinds.swap(index, other);
        }
        (0..self.faults)
            .map(|index| match kinds.get(index) {
                Some(kind) => *kind,
                None => *random.pick(&self.kinds),
            })
            .collect()
    }
}

/// The rooms: publisher and subscriber `i` use room `i % ROOMS`.
const ROOMS: usize = 2;

fn room(index: usize) -> String {
    format!("room{}", index % ROOMS)
}

/// Runs the checker: `None` when redis-server or redis-cli is missing
/// outside CI (under `CI=true` that fails instead).
pub async fn run(settings: ChaosSettings) -> Option<ChaosReport> {
    let single_node = settings.kinds.iter().any(|kind| kind.needs_single_node());
    let (mut redis, urls) = if single_node {
        let server = redis_server::start(false).await?;
        let url = server.url();
        (Deployment::Node(server), vec![url])
    } else {
        let cluster = redis_cluster::start_with_replicas(1).await?;
        let urls = cluster.urls();
        (Deployment::Cluster(cluster), urls)
    };
    let mut random = Random::new(settings.seed);
    let setup = InstanceSetup {
        urls,
        cluster: !single_node,
        rooms: (0..ROOMS).map(room).collect(),
        config: RegistryConfig::default().replicas_to_acknowledge(settings.replicas_to_acknowledge),
    };
    let mut instances = Vec::new();
    for _ in 0..settings.instances.max(1) {
        instances.push(Instance::start(&setup).await);
    }
    let live: Arc<Mutex<Vec<u16>>> =
        Arc::new(Mutex::new(instances.iter().map(|i| i.port).collect()));
    let started = tokio::time::Instant::now();

    let (stop_publishing, publishing) = tokio::sync::watch::channel(false);
    let (stop_reading, reading) = tokio::sync::watch::channel(false);
    let logs: Vec<_> = (0..settings.subscribers)
        .map(|index| clients::SubscriberLog::new(room(index)))
        .collect();
    let subscribers: Vec<_> = logs
        .iter()
        .map(|log| {
            tokio::spawn(clients::subscribe(
                Arc::clone(log),
                Arc::clone(&live),
                reading.clone(),
                random.fork(),
            ))
        })
        .collect();
    clients::wait_until_connected(&logs).await;
    let publishers: Vec<_> = (0..settings.publishers)
        .map(|index| {
            tokio::spawn(clients::publish(
                index,
                room(index),
                Arc::clone(&live),
                publishing.clone(),
                settings.publish_every,
                random.fork(),
            ))
        })
        .collect();

    let mut injected = Vec::new();
    for kind in settings.schedule(&mut random) {
        tokio::time::sleep(random.between(Duration::from_secs(2), Duration::from_secs(4))).await;
        injected.push(
            faults::inject(kind, &mut redis, &mut instances, &setup, &live, &mut random).await,
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_publishing.send(true);
    let mut acknowledged = Vec::new();
    let mut unacknowledged = 0;
    for publisher in publishers {
        let (acked, gave_up) = publisher.await.expect("a publisher panicked");
        acknowledged.extend(acked);
        unacknowledged += gave_up;
    }
    clients::wait_until_caught_up(&logs, &acknowledged).await;
    let _ = stop_reading.send(true);
    for subscriber in subscribers {
        subscriber.await.expect("a subscriber panicked");
    }
    let seen: Vec<clients::SubscriberLog> = logs
        .into_iter()
        .map(|log| {
            Arc::try_unwrap(log)
                .expect("the subscriber ended")
                .into_inner()
                .unwrap()
        })
        .collect();
    let stuck_slots = instances::stuck_slots(&instances).await;
    Some(check::report(
        &settings,
        started,
        &injected,
        &acknowledged,
        unacknowledged,
        &seen,
        stuck_slots,
    ))
}
