//! One Redis node or a Redis Cluster, behind one connection type, so the
//! broker's commands are written once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::sync::lock;

/// Where the broker's data lives.
#[derive(Clone)]
pub(crate) enum Client {
    Node(redis::Client),
    /// The cluster, and the nodes it was reached through (asked one by one
    /// for the cluster's epoch: see [`watch_topology`]).
    Cluster(ClusterClient, Arc<[String]>),
}

/// A connection to a node, or to a whole cluster, which routes each command
/// (or same-slot pipeline) to the node that owns its keys and follows the
/// slots as they move.
#[derive(Clone)]
pub(crate) enum Connection {
    /// Reconnects by itself after Redis comes back.
    Managed(ConnectionManager),
    Node(MultiplexedConnection),
    /// A reader's own: the reader reconnects after any error.
    Cluster(ClusterConnection),
    /// The commands' shared one: rebuilt when a command waits too long.
    SharedCluster(Arc<SharedCluster>),
}

/// On a Redis Cluster, how long one attempt at a command waits for its
/// node's answer (as the single-node connection does); a command's whole
/// time, retries through a failover included, is bounded by
/// [`Client::cluster`]'s `timeout`, so a node that stops answering fails the
/// command in bounded time instead of holding it.
pub(super) const CLUSTER_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// The cluster connection that commands share, rebuilt (with a fresh slot
/// map from the seed nodes) when a command is slow or times out. The Redis
/// client refreshes its slot map on `MOVED` and on connection errors, but a
/// node that stops answering (a stalled host) keeps its connection open:
/// without this, every command for its slots would go on timing out after a
/// replica took them over.
///
/// It is also rebuilt when the cluster's topology changed under it, which
/// the client does not notice by itself when no command failed: every node
/// connection is in `READONLY` mode, so a master demoted while its slots
/// were idle keeps answering reads (from a replica: possibly stale) and runs
/// the send script, refusing only its writes. A `READONLY` answer
/// ([`Connection::refresh_topology`]) and a rise of the cluster's epoch,
/// checked every [`TOPOLOGY_CHECK_EVERY`], each start a rebuild.
pub(crate) struct SharedCluster {
    client: ClusterClient,
    current: std::sync::Mutex<ClusterConnection>,
    /// When it was last rebuilt; held while rebuilding, so one caller does it.
    rebuilt_at: tokio::sync::Mutex<Instant>,
    /// How many times it was rebuilt: a reader seeing it change reconnects.
    rebuilds: AtomicU64,
}

/// How often the cluster's epoch is checked (one `CLUSTER INFO` per seed
/// node, at once): soon enough that a master frozen past its failover is
/// off the slot map before it wakes.
const TOPOLOGY_CHECK_EVERY: Duration = Duration::from_millis(250);

/// At most one rebuild per this long, however many commands are slow.
const REBUILD_AT_MOST_EVERY: Duration = Duration::from_millis(250);

impl SharedCluster {
    fn connection(&self) -> ClusterConnection {
        lock(&self.current).clone()
    }

    /// Runs one command (or pipeline) on the current connection. While it
    /// has no answer, a rebuild starts in the background after each attempt's
    /// timeout (it still waits for its own answer, on the old connection), so
    /// that commands after it go where the slots are now.
    async fn run<T>(
        self: &Arc<Self>,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        let mut command = std::pin::pin!(command);
        loop {
            match tokio::time::timeout(CLUSTER_ATTEMPT_TIMEOUT, &mut command).await {
                Ok(result) => {
                    if result.as_ref().is_err_and(redis::RedisError::is_timeout) {
                        self.rebuild_in_background();
                    }
                    return result;
                }
                Err(_still_waiting) => self.rebuild_in_background(),
            }
        }
    }

    /// Rebuilds the connection, unless that happened in the last
    /// [`REBUILD_AT_MOST_EVERY`] or is happening now.
    fn rebuild_in_background(self: &Arc<Self>) {
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(mut rebuilt_at) = shared.rebuilt_at.try_lock() else {
                return;
            };
            if rebuilt_at.elapsed() < REBUILD_AT_MOST_EVERY {
                return;
            }
            *rebuilt_at = Instant::now();
            match shared.client.get_async_connection().await {
                Ok(connection) => {
                    *lock(&shared.current) = connection;
                    shared.rebuilds.fetch_add(1, Ordering::SeqCst);
                    tracing::warn!(
                        "SSE Redis Cluster command slow or timed out; reconnected with a fresh \
                         slot map"
                    );
                }
                Err(error) => tracing::warn!(
                    %error,
                    "SSE Redis Cluster command slow or timed out, and reconnecting failed"
                ),
            }
        });
    }
}

/// Checks the cluster's epoch every [`TOPOLOGY_CHECK_EVERY`] while
/// `shared` lives, asking each of the `seeds` directly (a frozen node does
/// not answer, so the others' word counts), and rebuilds the connection
/// when the highest epoch rose (a failover, or slots moved): commands then
/// follow the new masters even when none of them failed, and before a
/// frozen old master wakes.
async fn watch_topology(shared: std::sync::Weak<SharedCluster>, seeds: Arc<[String]>) {
    let mut epoch_seen: Option<u64> = None;
    let mut nodes: Vec<Option<MultiplexedConnection>> = vec![None; seeds.len()];
    loop {
        tokio::time::sleep(TOPOLOGY_CHECK_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let epochs = futures_util::future::join_all(
            seeds
                .iter()
                .zip(&mut nodes)
                .map(|(seed, node)| node_epoch(seed, node)),
        )
        .await;
        let Some(epoch) = epochs.into_iter().flatten().max() else {
            continue;
        };
        if epoch_seen.is_some_and(|seen| epoch > seen) {
            tracing::info!(
                epoch,
                "SSE Redis Cluster epoch rose (a failover?); refreshing the slot map"
            );
            shared.rebuild_in_background();
        }
        epoch_seen = Some(epoch_seen.map_or(epoch, |seen| seen.max(epoch)));
    }
}

/// `cluster_current_epoch` of the node at `url`, through `node` (connected
/// when missing, dropped on any failure); `None` if it does not answer in
/// [`CLUSTER_ATTEMPT_TIMEOUT`].
async fn node_epoch(url: &str, node: &mut Option<MultiplexedConnection>) -> Option<u64> {
    let asked = async {
        if node.is_none() {
            let client = redis::Client::open(url).ok()?;
            *node = Some(client.get_multiplexed_async_connection().await.ok()?);
        }
        cluster_epoch(node.as_mut()?).await.ok()
    };
    match tokio::time::timeout(CLUSTER_ATTEMPT_TIMEOUT, asked).await {
        Ok(Some(epoch)) => Some(epoch),
        _ => {
            *node = None;
            None
        }
    }
}

/// `cluster_current_epoch` of the node `connection` reaches (`CLUSTER
/// INFO`): the highest epoch it knows, which a failover raises.
pub(super) async fn cluster_epoch(
    connection: &mut MultiplexedConnection,
) -> redis::RedisResult<u64> {
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(connection)
        .await?;
    info.lines()
        .find_map(|line| line.strip_prefix("cluster_current_epoch:"))
        .and_then(|epoch| epoch.trim().parse().ok())
        .ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "CLUSTER INFO without cluster_current_epoch",
            ))
        })
}

impl Connection {
    /// A command reached a node that is no longer its slot's master (it
    /// answered `READONLY`): on a cluster, reconnect with a fresh slot map.
    pub(crate) fn refresh_topology(&self) {
        if let Connection::SharedCluster(shared) = self {
            shared.rebuild_in_background();
        }
    }

    /// How many times the connection was rebuilt with a fresh slot map
    /// (always 0 off a cluster): a reader reconnects when it changes.
    pub(crate) fn topology_generation(&self) -> u64 {
        match self {
            Connection::SharedCluster(shared) => shared.rebuilds.load(Ordering::SeqCst),
            _ => 0,
        }
    }
}

impl Client {
    /// A Redis Cluster reached through any of `urls`, each command bounded
    /// by `timeout` in all.
    pub(crate) fn cluster(urls: &[&str], timeout: Duration) -> redis::RedisResult<Client> {
        Ok(Client::Cluster(
            ClusterClient::builder(urls.to_vec())
                .response_timeout(CLUSTER_ATTEMPT_TIMEOUT)
                .overall_response_timeout(Some(timeout))
                // Retry every 0.1 to 1 s (the client's default waits at
                // least 1.28 s), so a command waiting for a failover goes
                // through soon after it.
                .min_retry_wait(100)
                .max_retry_wait(1_000)
                .build()?,
            urls.iter().map(|url| (*url).to_owned()).collect(),
        ))
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(..))
    }

    /// The connection commands share: it reconnects by itself.
    pub(crate) async fn shared_connection(&self) -> redis::RedisResult<Connection> {
        match self {
            Client::Node(client) => Ok(Connection::Managed(client.get_connection_manager().await?)),
            Client::Cluster(client, seeds) => {
                let shared = Arc::new(SharedCluster {
                    current: std::sync::Mutex::new(client.get_async_connection().await?),
                    client: client.clone(),
                    rebuilt_at: tokio::sync::Mutex::new(Instant::now()),
                    rebuilds: AtomicU64::new(0),
                });
                tokio::spawn(watch_topology(Arc::downgrade(&shared), Arc::clone(seeds)));
                Ok(Connection::SharedCluster(shared))
            }
        }
    }

    /// A connection of a reader's own, for its blocking reads (a blocked
    /// `XREAD` holds the replies of everything behind it on its connection),
    /// with a response timeout above the read's `BLOCK`.
    pub(crate) async fn reader_connection(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<Connection> {
        match self {
            Client::Node(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(response_timeout));
                Ok(Connection::Node(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Client::Cluster(client, _) => {
                let config = ClusterConfig::new().set_response_timeout(response_timeout);
                Ok(Connection::Cluster(
                    client.get_async_connection_with_config(config).await?,
                ))
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Managed(connection) => connection.req_packed_command(cmd),
            Connection::Node(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
            Connection::SharedCluster(shared) => Box::pin(async move {
                let mut connection = shared.connection();
                shared.run(connection.req_packed_command(cmd)).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Managed(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Node(connection) => connection.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::SharedCluster(shared) => Box::pin(async move {
                let mut connection = shared.connection();
                shared
                    .run(connection.req_packed_commands(pipeline, offset, count))
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Managed(connection) => connection.get_db(),
            Connection::Node(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
            Connection::SharedCluster(_) => 0,
        }
    }
}
