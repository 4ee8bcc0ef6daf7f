//! The faults the checker injects, and how each is undone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::instances::{Instance, InstanceSetup};
use super::random::Random;
use crate::redis_cluster::RedisCluster;
use crate::redis_server::RedisServer;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a master; a replica takes over; the old one restarts empty
    /// and rejoins as a replica.
    KillMaster,
    /// SIGSTOP a master for 3 s (a stalled host): its replica takes over
    /// meanwhile; woken, it finds itself a replica.
    FreezeMaster,
    /// Cut a master's replication, let 300 ms of posts go to it alone, then
    /// SIGKILL it: what it acknowledged meanwhile is lost with it.
    CutReplicationThenKill,
    /// Kill an app instance (its runtime, every task and socket), and start
    /// a new one.
    KillInstance,
    /// Single-node Redis only: kill the server and start it again without
    /// persistence, so every stream and idempotency record is gone.
    RestartNode,
}

impl FaultKind {
    /// Every kind on a cluster.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::KillMaster,
        FaultKind::FreezeMaster,
        FaultKind::CutReplicationThenKill,
        FaultKind::KillInstance,
    ];

    /// Every kind on a single node.
    pub const SINGLE_NODE: [FaultKind; 2] = [FaultKind::RestartNode, FaultKind::KillInstance];

    /// Whether the kind needs a single Redis node (not a cluster).
    pub fn needs_single_node(self) -> bool {
        self == FaultKind::RestartNode
    }

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillMaster => "kill-master",
            FaultKind::FreezeMaster => "freeze-master",
            FaultKind::CutReplicationThenKill => "cut-replication-then-kill",
            FaultKind::KillInstance => "kill-instance",
            FaultKind::RestartNode => "restart-node",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .chain(FaultKind::SINGLE_NODE)
            .find(|kind| kind.name() == name)
    }
}

/// A fault injected: when, and how long until the system was whole again.
#[derive(Debug, Clone, Copy)]
pub struct Injected {
    pub kind: FaultKind,
    pub at: Instant,
    pub recovered_after: Duration,
}

/// The Redis a run uses.
pub enum Deployment {
    Cluster(RedisCluster),
    Node(RedisServer),
}

impl Deployment {
    fn cluster(&mut self) -> &mut RedisCluster {
        match self {
            Deployment::Cluster(cluster) => cluster,
            Deployment::Node(_) => panic!("a cluster fault on a single node"),
        }
    }
}

/// Injects `kind`, then undoes it and waits until the cluster has settled
/// (three masters, every replica in sync), the node is back, or the new
/// instance serves.
pub async fn inject(
    kind: FaultKind,
    redis: &mut Deployment,
    instances: &mut Vec<Instance>,
    setup: &InstanceSetup,
    live: &Arc<Mutex<Vec<u16>>>,
    random: &mut Random,
) -> Injected {
    let at = Instant::now();
    eprintln!("chaos: {}", kind.name());
    match kind {
        FaultKind::KillMaster => {
            let cluster = redis.cluster();
            let master = running_master(cluster, random).await;
            kill_until_it_rejoins(cluster, master).await;
        }
        FaultKind::FreezeMaster => {
            let cluster = redis.cluster();
            let master = running_master(cluster, random).await;
            cluster.freeze(master).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            cluster.thaw(master).await;
            cluster.wait_until_settled().await;
        }
        FaultKind::CutReplicationThenKill => {
            let cluster = redis.cluster();
            let master = running_master(cluster, random).await;
            cluster.cut_replication(master).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            kill_until_it_rejoins(cluster, master).await;
        }
        FaultKind::KillInstance => {
            let victim = (random.next() % instances.len() as u64) as usize;
            let port = instances[victim].port;
            live.lock().unwrap().retain(|live| *live != port);
            drop(instances.remove(victim));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let replacement = Instance::start(setup).await;
            live.lock().unwrap().push(replacement.port);
            instances.push(replacement);
        }
        FaultKind::RestartNode => match redis {
            Deployment::Node(server) => {
                server.kill().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                server.restart().await;
            }
            Deployment::Cluster(_) => panic!("restart-node needs a single node"),
        },
    }
    Injected {
        kind,
        at,
        recovered_after: at.elapsed(),
    }
}

/// Kills `master`, waits for its replica to take over, then restarts it
/// (empty) and waits until it has rejoined as a replica, in sync.
async fn kill_until_it_rejoins(cluster: &mut RedisCluster, master: u16) {
    cluster.kill(master).await;
    cluster.wait_until_settled().await;
    cluster.restart(master).await;
    cluster.wait_until_settled().await;
}

async fn running_master(cluster: &RedisCluster, random: &mut Random) -> u16 {
    let masters: Vec<u16> = cluster
        .masters()
        .await
        .into_iter()
        .filter(|port| cluster.ports.contains(port))
        .collect();
    *random.pick(&masters)
}
