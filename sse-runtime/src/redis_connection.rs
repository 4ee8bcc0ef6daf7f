//! One Redis node or a Redis Cluster, behind one connection type, so the
//! broker's commands are written once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Where the broker's data lives.
#[derive(Clone)]
pub(crate) enum Client {
    Node(redis::Client),
    Cluster(ClusterClient),
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
    /// The commands' shared one: rebuilt after a timeout.
    SharedCluster(Arc<SharedCluster>),
}

/// The cluster connection that commands share, rebuilt (with a fresh slot
/// map from the seed nodes) when a command times out. The Redis client
/// refreshes its slot map on `MOVED` and on connection errors, but a node that
/// stops answering (a stalled host) keeps its connection open: without this,
/// every command for its slots would go on timing out after a replica took
/// them over.
pub(crate) struct SharedCluster {
    client: ClusterClient,
    current: std::sync::Mutex<ClusterConnection>,
    /// When it was last rebuilt; held while rebuilding, so one caller does it.
    rebuilt_at: tokio::sync::Mutex<Instant>,
}

/// At most one rebuild per this long, however many commands time out.
const REBUILD_AT_MOST_EVERY: Duration = Duration::from_secs(1);

impl SharedCluster {
    fn connection(&self) -> ClusterConnection {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After `error`: if it was a timeout, rebuilds the connection in the
    /// background, unless that happened in the last
    /// [`REBUILD_AT_MOST_EVERY`].
    fn after_error(self: &Arc<Self>, error: &redis::RedisError) {
        if !error.is_timeout() {
            return;
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(mut rebuilt_at) = shared.rebuilt_at.try_lock() else {
                return; // another caller is rebuilding
            };
            if rebuilt_at.elapsed() < REBUILD_AT_MOST_EVERY {
                return;
            }
            *rebuilt_at = Instant::now();
            match shared.client.get_async_connection().await {
                Ok(connection) => {
                    *shared
                        .current
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = connection;
                    tracing::warn!(
                        "SSE Redis Cluster command timed out; reconnected with a fresh slot map"
                    );
                }
                Err(error) => tracing::warn!(
                    %error,
                    "SSE Redis Cluster command timed out, and reconnecting failed"
                ),
            }
        });
    }
}

impl Client {
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(_))
    }

    /// The connection commands share: it reconnects by itself.
    pub(crate) async fn shared_connection(&self) -> redis::RedisResult<Connection> {
        match self {
            Client::Node(client) => Ok(Connection::Managed(client.get_connection_manager().await?)),
            Client::Cluster(client) => Ok(Connection::SharedCluster(Arc::new(SharedCluster {
                current: std::sync::Mutex::new(client.get_async_connection().await?),
                client: client.clone(),
                rebuilt_at: tokio::sync::Mutex::new(Instant::now()),
            }))),
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
            Client::Cluster(client) => {
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
                let result = shared.connection().req_packed_command(cmd).await;
                if let Err(error) = &result {
                    shared.after_error(error);
                }
                result
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
                let result = shared
                    .connection()
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                if let Err(error) = &result {
                    shared.after_error(error);
                }
                result
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
