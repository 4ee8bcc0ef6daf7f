//! One Redis node or a Redis Cluster, behind one connection type, so the
//! broker's commands are written once.

use std::time::Duration;

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
    Cluster(ClusterConnection),
}

impl Client {
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(_))
    }

    /// The connection commands share: it reconnects by itself.
    pub(crate) async fn shared_connection(&self) -> redis::RedisResult<Connection> {
        match self {
            Client::Node(client) => Ok(Connection::Managed(client.get_connection_manager().await?)),
            Client::Cluster(client) => {
                Ok(Connection::Cluster(client.get_async_connection().await?))
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Managed(connection) => connection.get_db(),
            Connection::Node(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}
