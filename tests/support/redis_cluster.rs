//! A Redis Cluster of the test's own: three masters on free loopback ports,
//! joined with `redis-cli --cluster create`, stopped when dropped. Under
//! `CI=true` a missing `redis-server` or `redis-cli` fails the test.

use std::path::PathBuf;
use std::time::Duration;

use sse_runtime::{RedisBroker, Registry, RegistryConfig};

use crate::external::{require, runs};

const MASTERS: usize = 3;

pub struct RedisCluster {
    nodes: Vec<tokio::process::Child>,
    pub ports: Vec<u16>,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `Some(cluster)` once every slot is served, or `None` (after printing why)
/// when redis-server or redis-cli is missing outside CI.
pub async fn start() -> Option<RedisCluster> {
    require(&[
        ("redis-server", runs("redis-server")),
        ("redis-cli", runs("redis-cli")),
    ])
    .ok()?;
    // A node also listens on its port + 10000 for the cluster bus: both free.
    let ports: Vec<u16> = (0..MASTERS)
        .map(|_| {
            loop {
                let port = free_port();
                if port < 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
                {
                    break port;
                }
            }
        })
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
        dir,
    };
    for port in &ports {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(cluster.dir.join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&cluster.dir)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        cluster.nodes.push(child);
        wait_for_port(*port).await;
    }
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = tokio::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .await
        .expect("run redis-cli --cluster create");
    assert!(
        created.status.success(),
        "redis-cli --cluster create failed: {}",
        String::from_utf8_lossy(&created.stdout)
    );
    cluster.wait_until_ok().await;
    Some(cluster)
}

async fn wait_for_port(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl RedisCluster {
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

    async fn wait_until_ok(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut ok = true;
            for port in &self.ports {
                ok &= self
                    .cli(*port, &["CLUSTER", "INFO"])
                    .await
                    .contains("cluster_state:ok");
            }
            if ok {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the redis cluster did not reach cluster_state:ok"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
