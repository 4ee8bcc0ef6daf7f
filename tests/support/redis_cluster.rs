//! A Redis Cluster of the test's own: three masters on free loopback ports
//! (with replicas if asked), joined with `redis-cli --cluster create`,
//! stopped when dropped. Under `CI=true` a missing `redis-server` or
//! `redis-cli` fails the test.

use std::path::PathBuf;
use std::time::Duration;

use sse_runtime::{RedisBroker, Registry, RegistryConfig};

use crate::external::{require, runs};
use sse_runtime::testing::{free_port_and, wait_for_port};

const MASTERS: usize = 3;

pub struct RedisCluster {
    nodes: Vec<tokio::process::Child>,
    /// The ports of the nodes that run (not killed or frozen).
    pub ports: Vec<u16>,
    /// Frozen nodes, killed when the cluster is dropped.
    frozen: Vec<tokio::process::Child>,
    /// The port of each frozen node, by process id.
    frozen_ports: std::collections::HashMap<u32, u16>,
    dir: PathBuf,
}

/// How long a node may be unreachable before the others count it as failed
/// (Redis's default is 15 s; short here so a failover takes a few seconds).
const NODE_TIMEOUT_MS: u32 = 1_000;

/// `Some(cluster)` once every slot is served, or `None` (after printing why)
/// when redis-server or redis-cli is missing outside CI.
pub async fn start() -> Option<RedisCluster> {
    start_with_replicas(0).await
}

/// As [`start`], with `replicas` replicas of each master, ready to take over
/// when it fails.
pub async fn start_with_replicas(replicas: usize) -> Option<RedisCluster> {
    require(&[
        ("redis-server", runs("redis-server")),
        ("redis-cli", runs("redis-cli")),
    ])
    .ok()?;
    // A node also listens on its port + 10000 for the cluster bus: both free.
    let ports: Vec<u16> = (0..MASTERS * (1 + replicas))
        .map(|_| free_port_and(10000))
        .collect();
    let dir = std::env::temp_dir().join(format!(
        "sse-redis-cluster-{}-{}",
        std::process::id(),
        ports[0]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cluster = RedisCluster {
        nodes: Vec::new(),
        ports: ports.clone(),
        frozen: Vec::new(),
        frozen_ports: std::collections::HashMap::new(),
        dir,
    };
    for port in &ports {
        let child = cluster.spawn_node(*port);
        cluster.nodes.push(child);
        wait_for_port(*port).await;
    }
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = tokio::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .await
        .expect("run redis-cli --cluster create");
    assert!(
        created.status.success(),
        "redis-cli --cluster create failed: {}",
        String::from_utf8_lossy(&created.stdout)
    );
    cluster.wait_until_ok().await;
    if replicas > 0 {
        cluster.wait_for_replicas(MASTERS * replicas).await;
    }
    Some(cluster)
}

impl RedisCluster {
    /// Starts the node of `port` (its cluster config file in the cluster's
    /// directory: a node started again rejoins with its identity).
    fn spawn_node(&self, port: u16) -> tokio::process::Child {
        tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .arg("--cluster-config-file")
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server")
    }

    /// Starts a killed node again, with no data: it rejoins the cluster
    /// (as a replica, once another node took its slots).
    pub async fn restart(&mut self, port: u16) {
        assert!(!self.ports.contains(&port), "{port} is running");
        let child = self.spawn_node(port);
        self.nodes.push(child);
        self.ports.push(port);
        wait_for_port(port).await;
    }

    /// Wakes a frozen node (SIGCONT): it finds its slots taken over, if
    /// they were, and becomes a replica.
    pub async fn thaw(&mut self, port: u16) {
        let index = self
            .frozen
            .iter()
            .position(|node| self.frozen_ports.get(&node.id().unwrap_or(0)) == Some(&port))
            .expect("a frozen node of this cluster");
        let node = self.frozen.remove(index);
        let pid = node.id().expect("a frozen redis-server");
        self.frozen_ports.remove(&pid);
        let resumed = tokio::process::Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(resumed.success(), "kill -CONT {pid}");
        self.nodes.push(node);
        self.ports.push(port);
    }

    /// Cuts `master`'s replication for good (until it restarts): its
    /// replicas' links are closed and may not come back, so what it writes
    /// from now on is lost when it fails.
    pub async fn cut_replication(&self, master: u16) {
        self.cli(master, &["ACL", "SETUSER", "default", "-psync", "-sync"])
            .await;
        self.cli(master, &["CLIENT", "KILL", "TYPE", "replica"])
            .await;
    }

    /// Waits until every running node reports the cluster healthy, with
    /// three masters and every running replica in sync.
    pub async fn wait_until_settled(&self) {
        self.wait_until_ok().await;
        poll_until(async || {
            let masters = self.masters().await;
            let running_masters = masters
                .iter()
                .filter(|port| self.ports.contains(port))
                .count();
            if running_masters == MASTERS && self.is_ok().await {
                return Ok(());
            }
            Err(format!("the cluster did not settle: masters {masters:?}"))
        })
        .await;
        self.wait_for_replicas(self.ports.len() - MASTERS).await;
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// A registry over this cluster: one instance of an app.
    pub async fn registry(&self, config: RegistryConfig) -> Registry<String> {
        let urls = self.urls();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        Registry::with_broker(
            RedisBroker::connect_cluster(&urls, config)
                .await
                .expect("connect to the redis cluster"),
        )
    }

    /// How many keys each master holds, in the order of `ports`.
    pub async fn keys_per_node(&self) -> Vec<usize> {
        let mut counts = Vec::new();
        for port in &self.ports {
            let out = self.cli(*port, &["DBSIZE"]).await;
            counts.push(out.trim().parse().expect("a DBSIZE"));
        }
        counts
    }

    /// The ports of the nodes that are masters now.
    pub async fn masters(&self) -> Vec<u16> {
        let nodes = self.cli(self.ports[0], &["CLUSTER", "NODES"]).await;
        // `<id> <ip>:<port>@<bus port> <flags> ...`, one line per node.
        nodes
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let address = words.nth(1)?;
                let flags = words.next()?;
                let port = address.split('@').next()?.rsplit(':').next()?;
                (flags.split(',').any(|flag| flag == "master") && !flags.contains("fail"))
                    .then(|| port.parse().ok())
                    .flatten()
            })
            .collect()
    }

    /// Every replica takes over its master's slots (`CLUSTER FAILOVER`, the
    /// graceful kind): the old masters stay up, as replicas of the new ones,
    /// and no connection to them breaks. Returns when the new masters serve
    /// and the old ones are in sync again.
    pub async fn fail_over_every_master(&self) {
        let masters = self.masters().await;
        let replicas: Vec<u16> = self
            .ports
            .iter()
            .copied()
            .filter(|port| !masters.contains(port))
            .collect();
        for replica in &replicas {
            let answer = self.cli(*replica, &["CLUSTER", "FAILOVER"]).await;
            assert!(
                answer.contains("OK"),
                "CLUSTER FAILOVER on {replica}: {answer}"
            );
        }
        let mut expected = replicas.clone();
        expected.sort_unstable();
        poll_until(async || {
            let mut now: Vec<u16> = self.masters().await;
            now.sort_unstable();
            if now == expected && self.is_ok().await {
                return Ok(());
            }
            Err(format!(
                "the failovers did not complete: masters {now:?}, expected {expected:?}"
            ))
        })
        .await;
        self.wait_for_replicas(masters.len()).await;
    }

    /// Kills the node on `port` at once (SIGKILL: no goodbye to the others),
    /// as a crashed host would go.
    pub async fn kill(&mut self, port: u16) {
        let mut node = self.take(port);
        node.kill().await.expect("kill the redis-server");
    }

    /// Freezes the node on `port` (SIGSTOP) for the rest of the test: its
    /// connections stay open and nothing answers, as on a stalled host.
    pub async fn freeze(&mut self, port: u16) {
        let node = self.take(port);
        let pid = node.id().expect("a running redis-server");
        let stopped = tokio::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(stopped.success(), "kill -STOP {pid}");
        self.frozen_ports.insert(pid, port);
        self.frozen.push(node);
    }

    fn take(&mut self, port: u16) -> tokio::process::Child {
        let index = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a running node of this cluster");
        self.ports.remove(index);
        self.nodes.remove(index)
    }

    /// Waits until every remaining node reports the cluster healthy again
    /// (after a kill: a replica took over its master's slots).
    pub async fn wait_until_ok(&self) {
        poll_until(async || {
            if self.is_ok().await {
                return Ok(());
            }
            Err("the redis cluster did not reach cluster_state:ok".to_owned())
        })
        .await;
    }

    /// Whether every remaining node reports the cluster healthy.
    pub async fn is_ok(&self) -> bool {
        for port in &self.ports {
            if !self
                .cli(*port, &["CLUSTER", "INFO"])
                .await
                .contains("cluster_state:ok")
            {
                return false;
            }
        }
        true
    }

    /// Waits until `count` replicas are in sync with their masters.
    pub async fn wait_for_replicas(&self, count: usize) {
        poll_until(async || {
            let mut synced = 0;
            for port in &self.ports {
                let info = self.cli(*port, &["INFO", "replication"]).await;
                synced += usize::from(
                    info.contains("role:slave") && info.contains("master_link_status:up"),
                );
            }
            if synced >= count {
                return Ok(());
            }
            Err(format!("the replicas did not sync: {synced} of {count}"))
        })
        .await;
    }

    /// The ports of the running nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    /// Runs `redis-cli` against the node on `port` and returns what it printed.
    pub async fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .await
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Asks `reached` every 50 ms until it answers `Ok`, failing with its last
/// answer after 60 s (generous: a cluster settles in a few seconds, slower
/// with every core busy).
async fn poll_until(mut reached: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let not_yet = match reached().await {
            Ok(()) => return,
            Err(not_yet) => not_yet,
        };
        assert!(tokio::time::Instant::now() < deadline, "{not_yet}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().chain(&mut self.frozen) {
            let _ = node.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
