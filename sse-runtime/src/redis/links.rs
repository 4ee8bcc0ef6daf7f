//! The connections that carry this instance's PUB/SUB interest: one RESP3
//! connection ("link") per node that holds channels of ours (one on a single
//! Redis), and, on a cluster, which master serves each slot.
//!
//! Every link gets a number of its own, never reused, and tags what it
//! receives with it: a channel counts messages only from the link that last
//! confirmed its subscription (see `live.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, PushInfo};
use tokio::sync::mpsc::UnboundedSender;

use super::connection::{CLUSTER_ATTEMPT_TIMEOUT, Client, cluster_epoch};

/// How long a link waits for a node's answer to a (un)subscribe.
pub(super) const LINK_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a link received, tagged with the link's number.
pub(super) type Pushed = (u64, PushInfo);

/// One node's link.
pub(super) struct Link {
    pub(super) number: u64,
    pub(super) connection: MultiplexedConnection,
}

/// The links, the nodes they reach, and where each slot is served.
pub(super) struct Links {
    client: Client,
    /// Connection settings (credentials, database) taken from the client,
    /// with the address of each node put in.
    settings: ConnectionInfo,
    /// On a cluster: each slot's master, by address; empty off a cluster.
    slots: Vec<Option<Arc<str>>>,
    nodes: HashMap<Arc<str>, Link>,
    next_number: u64,
    received: UnboundedSender<Pushed>,
}

impl Links {
    pub(super) fn new(
        client: Client,
        received: UnboundedSender<Pushed>,
    ) -> redis::RedisResult<Links> {
        let settings = match &client {
            Client::Node(client) => client.get_connection_info().clone(),
            Client::Cluster(_, seeds) => seeds
                .first()
                .map(String::as_str)
                .unwrap_or("redis://127.0.0.1/")
                .into_connection_info()?,
        };
        let protocol = settings
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        Ok(Links {
            settings: settings.set_redis_settings(protocol),
            slots: Vec::new(),
            client,
            nodes: HashMap::new(),
            next_number: 1,
            received,
        })
    }

    /// The node that serves `channel`: the one Redis, or its slot's master;
    /// `None` while the slot map has no master for it.
    pub(super) fn home_of(&self, channel: &str) -> Option<Arc<str>> {
        match &self.client {
            Client::Node(_) => Some(Arc::from("")),
            Client::Cluster(..) => self
                .slots
                .get(usize::from(key_slot(channel.as_bytes())))
                .cloned()
                .flatten(),
        }
    }

    /// The link to `node`, connected first if there is none.
    pub(super) async fn link(&mut self, node: &Arc<str>) -> redis::RedisResult<&mut Link> {
        if !self.nodes.contains_key(node) {
            let number = self.next_number;
            self.next_number += 1;
            let info = match &self.client {
                Client::Node(_) => self.settings.clone(),
                Client::Cluster(..) => {
                    let (host, port) = node.rsplit_once(':').ok_or_else(|| {
                        redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "a cluster node without a port",
                        ))
                    })?;
                    let port = port.parse().map_err(|_| {
                        redis::RedisError::from((redis::ErrorKind::Client, "a bad node port"))
                    })?;
                    self.settings
                        .clone()
                        .set_addr(ConnectionAddr::Tcp(host.to_owned(), port))
                }
            };
            let received = self.received.clone();
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(LINK_RESPONSE_TIMEOUT))
                .set_response_timeout(Some(LINK_RESPONSE_TIMEOUT))
                .set_push_sender(move |info: PushInfo| received.send((number, info)));
            let connection = redis::Client::open(info)?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            self.nodes
                .insert(Arc::clone(node), Link { number, connection });
        }
        Ok(self.nodes.get_mut(node).expect("inserted above"))
    }

    /// The node whose link is number `number`.
    pub(super) fn node_of_link(&self, number: u64) -> Option<Arc<str>> {
        self.nodes
            .iter()
            .find(|(_, link)| link.number == number)
            .map(|(node, _)| Arc::clone(node))
    }

    /// Drops the link to `node` (broken, or no longer needed).
    pub(super) fn drop_link(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    /// The nodes that have a link.
    pub(super) fn linked_nodes(&self) -> Vec<Arc<str>> {
        self.nodes.keys().cloned().collect()
    }

    /// On a cluster, asks each seed node for the slot map at once and keeps
    /// the one from the node that has seen the latest failover (the highest
    /// epoch): a node frozen or just rejoined may answer an old map.
    pub(super) async fn refresh_slots(&mut self) -> redis::RedisResult<()> {
        let Client::Cluster(_, seeds) = &self.client else {
            return Ok(());
        };
        let answers = futures_util::future::join_all(seeds.iter().map(|seed| async move {
            tokio::time::timeout(CLUSTER_ATTEMPT_TIMEOUT * 2, slot_map_of(seed))
                .await
                .ok()
                .and_then(Result::ok)
        }))
        .await;
        let best = answers
            .into_iter()
            .flatten()
            .max_by_key(|(epoch, _)| *epoch)
            .ok_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no Redis Cluster node answered for the slot map",
                ))
            })?;
        self.slots = best.1;
        Ok(())
    }
}

/// Fails, saying why, unless Redis is 7.0 or newer (sharded PUB/SUB came
/// with 7.0); on a cluster, the first seed that answers is asked.
pub(super) async fn require_sharded_pubsub(client: &Client) -> redis::RedisResult<()> {
    let urls: Vec<ConnectionInfo> = match client {
        Client::Node(client) => vec![client.get_connection_info().clone()],
        Client::Cluster(_, seeds) => seeds
            .iter()
            .map(|seed| seed.as_str().into_connection_info())
            .collect::<redis::RedisResult<_>>()?,
    };
    let mut last_error = None;
    for url in urls {
        let asked = async {
            let mut connection = redis::Client::open(url)?
                .get_multiplexed_async_connection()
                .await?;
            redis::cmd("INFO")
                .arg("server")
                .query_async::<String>(&mut connection)
                .await
        };
        let info = match asked.await {
            Ok(info) => info,
            Err(error) => {
                last_error = Some(error);
                continue;
            }
        };
        return has_sharded_pubsub(&info).map_err(|version| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "Redis 7.0 or newer is needed (the broker delivers by sharded PUB/SUB)",
                format!("this server is Redis {version}"),
            ))
        });
    }
    Err(last_error.unwrap_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Client, "no Redis node to connect to"))
    }))
}

/// Whether the server whose `INFO server` is `info` has sharded PUB/SUB
/// (Redis 7.0 or newer); if not, its version.
fn has_sharded_pubsub(info: &str) -> Result<(), String> {
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0);
    if major >= 7 {
        Ok(())
    } else {
        Err(version.to_owned())
    }
}

/// `node`'s epoch and its slot map (`CLUSTER SLOTS`: each range's master).
async fn slot_map_of(seed: &str) -> redis::RedisResult<(u64, Vec<Option<Arc<str>>>)> {
    let mut connection = redis::Client::open(seed)?
        .get_multiplexed_async_connection()
        .await?;
    let epoch = cluster_epoch(&mut connection).await?;
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut connection)
        .await?;
    let mut slots = vec![None; SLOTS];
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let (Some(redis::Value::Int(first)), Some(redis::Value::Int(last))) =
            (parts.first(), parts.get(1))
        else {
            continue;
        };
        let Some(redis::Value::Array(master)) = parts.get(2) else {
            continue;
        };
        let host = match master.first() {
            Some(redis::Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
            Some(redis::Value::SimpleString(host)) => host.clone(),
            _ => continue,
        };
        let Some(redis::Value::Int(port)) = master.get(1) else {
            continue;
        };
        let node: Arc<str> = Arc::from(format!("{host}:{port}"));
        let (first, last) = (*first as usize, *last as usize);
        for slot in slots.iter_mut().take(last.min(SLOTS - 1) + 1).skip(first) {
            *slot = Some(Arc::clone(&node));
        }
    }
    Ok((epoch, slots))
}

/// The slots of a Redis Cluster.
const SLOTS: usize = 16_384;

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text
/// between the first `{` and the next `}`, when not empty) or of the whole
/// key, modulo 16,384, as Redis reckons it.
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|byte| *byte == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|byte| *byte == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    (crc16(tagged.unwrap_or(key)) as usize % SLOTS) as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, byte| {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_before_7_is_refused_with_its_version() {
        let info = |version: &str| {
            format!("# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n")
        };
        assert_eq!(has_sharded_pubsub(&info("7.0.15")), Ok(()));
        assert_eq!(has_sharded_pubsub(&info("8.2.1")), Ok(()));
        assert_eq!(
            has_sharded_pubsub(&info("6.2.14")),
            Err("6.2.14".to_owned())
        );
        assert_eq!(
            has_sharded_pubsub("# Server\r\n"),
            Err("unknown".to_owned())
        );
    }

    #[test]
    fn slots_are_the_ones_redis_reckons() {
        // CRC16/XMODEM's check value, and `CLUSTER KEYSLOT` answers.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }
}
