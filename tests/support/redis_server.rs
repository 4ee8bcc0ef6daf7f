//! A `redis-server` of the test's own, on a free loopback port, stopped when
//! dropped. Under `CI=true` a missing server fails the test.

use std::path::PathBuf;

use sse_runtime::testing::{free_port, wait_for_port};
use sse_runtime::{RedisBroker, Registry, RegistryConfig};

use crate::external::{require, runs};

pub struct RedisServer {
    child: Option<tokio::process::Child>,
    pub port: u16,
    dir: PathBuf,
    persistent: bool,
}

/// `Some(server)`, or `None` (after printing why) when redis-server is missing outside CI.
pub async fn start(persistent: bool) -> Option<RedisServer> {
    require(&[("redis-server", runs("redis-server"))]).ok()?;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("sse-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = RedisServer {
        child: None,
        port,
        dir,
        persistent,
    };
    server.launch().await;
    Some(server)
}

impl RedisServer {
    /// Closes every PUB/SUB connection to the server (`CLIENT KILL TYPE
    /// pubsub`), as a network fault would; answers how many there were.
    pub async fn kill_pub_sub_connections(&self) -> i64 {
        let answer = self.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLIENT KILL answered {answer:?}"))
    }

    /// How many connections are subscribed to each of `channels` (`PUBSUB
    /// SHARDNUMSUB`), in their order.
    pub async fn shard_subscribers(&self, channels: &[String]) -> Vec<i64> {
        let mut args = vec!["PUBSUB", "SHARDNUMSUB"];
        args.extend(channels.iter().map(String::as_str));
        let answer = self.cli(&args).await;
        let counts: Vec<i64> = answer
            .lines()
            .skip(1)
            .step_by(2)
            .map(|count| {
                count
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("SHARDNUMSUB answered {answer:?}"))
            })
            .collect();
        assert_eq!(
            counts.len(),
            channels.len(),
            "SHARDNUMSUB answered {answer:?}"
        );
        counts
    }

    /// Runs `redis-cli` with `args` against the server; answers its output.
    async fn cli(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .await
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A registry over this server: one instance of an app.
    pub async fn registry(&self, config: RegistryConfig) -> Registry<String> {
        Registry::with_broker(
            RedisBroker::connect(&self.url(), config)
                .await
                .expect("connect to redis"),
        )
    }

    async fn launch(&mut self) {
        let appendonly = if self.persistent { "yes" } else { "no" };
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                appendonly,
            ])
            .args([
                "--appendfsync",
                "always",
                "--dir",
                self.dir.to_str().unwrap(),
                "--protected-mode",
                "yes",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        wait_for_port(self.port).await;
    }

    /// Kills the server (as a crash would), so nothing is saved at exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port and directory.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
