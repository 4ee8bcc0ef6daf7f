//! `send` and `broadcast`: one script per event, retried only on answers
//! that say Redis did not run it, so an event is never written twice.

use std::time::Duration;

use super::Inner;

/// How long `send` waits between tries of a command Redis did not run.
const SEND_RETRY_WAIT: Duration = Duration::from_millis(100);

/// How long a send's `WAIT` gives the replicas to confirm it
/// ([`RegistryConfig::replicas_to_acknowledge`](crate::RegistryConfig::replicas_to_acknowledge)),
/// in ms: under one attempt's timeout on a cluster
/// ([`CLUSTER_ATTEMPT_TIMEOUT`](super::connection::CLUSTER_ATTEMPT_TIMEOUT)),
/// so its answer comes before the connection gives up on the node.
const REPLICA_WAIT_MS: u64 = 400;

/// What one send did: the entry's id (empty without an idempotency record:
/// nobody asks for it), whether the record showed it a repeat, and whether
/// the replicas it had to reach confirmed it (always, when none are asked).
pub(super) struct Written {
    pub(super) id: String,
    pub(super) repeat: bool,
    pub(super) replicated: bool,
}

/// `send`, atomically: the entry, its bounds by count, age and key expiry,
/// and its live message on the key's channel (named as the key's stream,
/// so it shares its slot): `<entry before> <entry>\n<fields>`, the entry
/// before being the stream's last (`0-0` when it was empty or gone), so a
/// receiver knows whether it missed one (see `live.rs`). The entry before
/// is written as its distance from the entry (`<ms before>-<sequence>`,
/// where the milliseconds count back from the entry's): a few bytes where
/// the full id is 15, on every message to every instance.
///
/// With an idempotency record (KEYS[2]), a send whose record exists writes
/// nothing but the record's expiry (so that a `WAIT` after it covers the
/// record's own write, whoever made it) and answers the id it holds after
/// `=`; one that writes leaves the
/// record, expiring after ARGV[5] ms, and answers the entry's id. Without
/// one, nobody asks for the id: the answer is empty, the shortest reply
/// (this one is sent for every event). KEYS: the key's stream, and the
/// record if any. ARGV: history length, the fields, the oldest id kept, the
/// key's expiry in ms, the record's expiry in ms.
pub(super) const SEND_SCRIPT: &str = r"
if KEYS[2] then
  local first = redis.call('GET', KEYS[2])
  if first then
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
    return '=' .. first
  end
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local dash = string.find(id, '-', 1, true)
local millis = tonumber(string.sub(id, 1, dash - 1))
local before = millis .. '-0'
if last[1] then
  local previous = last[1][1]
  local previous_dash = string.find(previous, '-', 1, true)
  before = string.format('%d', millis - tonumber(string.sub(previous, 1, previous_dash - 1)))
    .. string.sub(previous, previous_dash)
end
redis.call('SPUBLISH', KEYS[1], before .. ' ' .. id .. '\n' .. ARGV[2])
if KEYS[2] then
  redis.call('SET', KEYS[2], id, 'PX', ARGV[5])
  return id
end
return ''
";

impl Inner {
    /// The history's age bound now: the oldest entry id kept, and the
    /// expiry of a key nobody writes to, in ms. Reckoned by this server's
    /// clock against Redis's entry ids, which are Redis's time: keep the
    /// clocks in sync (NTP) or the history's age is off by their skew.
    pub(super) fn age_bounds(&self) -> (u64, u64) {
        let ttl_ms = u64::try_from(self.config.history_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |now| now.as_millis() as u64);
        (now_ms.saturating_sub(ttl_ms), ttl_ms)
    }

    /// Sends one event to `stream` ([`SEND_SCRIPT`]): `XADD … MAXLEN ~
    /// <history_len>`, `XTRIM … MINID <now - history_ttl>`, `PEXPIRE`, and
    /// the live message, in one round trip (retried as [`until_run`]
    /// says); with an idempotency `record`, only if it is not there; with
    /// replicas to acknowledge, followed by `WAIT` in the same round trip.
    pub(super) async fn send(
        &self,
        stream: &str,
        fields: &[u8],
        record: Option<&str>,
    ) -> redis::RedisResult<Written> {
        until_run(self.config.send_timeout, || {
            self.send_once(stream, fields, record)
        })
        .await
    }

    /// One try of [`send`](Self::send): `EVALSHA`, or, where the node does
    /// not have the script (a replica promoted by a failover, while loading
    /// it on every master fails because one is down), `EVAL` with its source,
    /// which the node then keeps.
    pub(super) async fn send_once(
        &self,
        stream: &str,
        fields: &[u8],
        record: Option<&str>,
    ) -> redis::RedisResult<Written> {
        let (min_id, ttl_ms) = self.age_bounds();
        let record_ttl_ms = u64::try_from(self.config.idempotency_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut connection = self.commands.clone();
        let command = |verb: &str, script: &str| {
            let mut command = redis::cmd(verb);
            command
                .arg(script)
                .arg(if record.is_some() { 2 } else { 1 })
                .arg(stream);
            if let Some(record) = record {
                command.arg(record);
            }
            command
                .arg(self.config.history_len)
                .arg(fields)
                .arg(min_id)
                .arg(ttl_ms)
                .arg(record_ttl_ms);
            command
        };
        let by_hash = self
            .acknowledged(
                &mut connection,
                command("EVALSHA", self.send_script.get_hash()),
            )
            .await;
        let answer = match by_hash {
            Err(error) if error.code() == Some("NOSCRIPT") => {
                self.acknowledged(&mut connection, command("EVAL", SEND_SCRIPT))
                    .await
            }
            answer => answer,
        };
        if answer
            .as_ref()
            .is_err_and(|error| error.code() == Some("READONLY"))
        {
            // The node is a replica now (demoted while its slots were idle):
            // the retry goes where the slot map says after a refresh.
            self.commands.refresh_topology();
        }
        answer.map(|(id, replicated)| {
            let (id, repeat) = match id.strip_prefix('=') {
                Some(first) => (first.to_owned(), true),
                None => (id, false),
            };
            Written {
                id,
                repeat,
                replicated,
            }
        })
    }

    /// Runs `command`, followed in the same round trip (so on the same
    /// node and connection) by `WAIT` when replicas must acknowledge: its
    /// answer, and whether enough replicas confirmed what it wrote.
    async fn acknowledged(
        &self,
        connection: &mut super::connection::Connection,
        command: redis::Cmd,
    ) -> redis::RedisResult<(String, bool)> {
        if self.config.replicas_to_acknowledge == 0 {
            return command
                .query_async(connection)
                .await
                .map(|answer| (answer, true));
        }
        let mut pipeline = redis::pipe();
        pipeline.add_command(command);
        self.wait_for_replicas(&mut pipeline);
        let (answer, confirmed): (String, redis::Value) = pipeline.query_async(connection).await?;
        Ok((answer, self.replicated(Some(&confirmed))))
    }

    /// Appends `WAIT` for the replicas to acknowledge to `pipeline`, if any.
    pub(super) fn wait_for_replicas(&self, pipeline: &mut redis::Pipeline) {
        if self.config.replicas_to_acknowledge > 0 {
            pipeline
                .cmd("WAIT")
                .arg(self.config.replicas_to_acknowledge)
                .arg(REPLICA_WAIT_MS);
        }
    }

    /// Whether a pipeline ending in [`wait_for_replicas`](Self::wait_for_replicas)'s
    /// `WAIT` (its answer: `last`) reached enough replicas.
    pub(super) fn replicated(&self, last: Option<&redis::Value>) -> bool {
        let replicas = self.config.replicas_to_acknowledge;
        replicas == 0
            || matches!(last, Some(redis::Value::Int(confirmed))
                if usize::try_from(*confirmed).is_ok_and(|confirmed| confirmed >= replicas))
    }

    /// Appends one broadcast to `pipeline`, with the history's bounds by
    /// count and age. No `PEXPIRE`: emptied by age, the broadcast stream
    /// keeps its last id, against which clients' positions are checked.
    pub(super) fn append_broadcast(&self, pipeline: &mut redis::Pipeline, fields: &[u8]) {
        let (min_id, _) = self.age_bounds();
        pipeline
            .cmd("XADD")
            .arg(&*self.broadcast_stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.history_len)
            .arg("*")
            .arg("e")
            .arg(fields)
            .cmd("XTRIM")
            .arg(&*self.broadcast_stream)
            .arg("MINID")
            .arg(min_id)
            .ignore();
    }
}

/// Runs `attempt` until Redis runs it, for up to `limit` in all
/// ([`RegistryConfig::send_timeout`]): an answer that says it did not
/// ([`not_run`]) is retried every [`SEND_RETRY_WAIT`]; nothing else is, so an
/// event is never written twice.
pub(super) async fn until_run<T, F: Future<Output = redis::RedisResult<T>>>(
    limit: Duration,
    mut attempt: impl FnMut() -> F,
) -> redis::RedisResult<T> {
    let started = std::time::Instant::now();
    loop {
        let remaining = limit.saturating_sub(started.elapsed());
        let error = match tokio::time::timeout(remaining, attempt()).await {
            Ok(Err(error)) if not_run(&error) => error,
            Ok(answer) => return answer,
            Err(_elapsed) => {
                return Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer from Redis in time",
                )));
            }
        };
        // The last try goes out just before the limit.
        let remaining = limit.saturating_sub(started.elapsed());
        if remaining < SEND_RETRY_WAIT / 10 {
            return Err(error);
        }
        tokio::time::sleep(SEND_RETRY_WAIT.min(remaining - SEND_RETRY_WAIT / 10)).await;
    }
}

/// Whether Redis answered `error` without running the command: a write to a
/// replica (one not yet promoted in a failover), a cluster that is down or
/// mid-resharding, a master without its replicas, a node loading its data.
/// Retrying such a command cannot write it twice.
fn not_run(error: &redis::RedisError) -> bool {
    matches!(
        error.code(),
        Some("READONLY" | "CLUSTERDOWN" | "TRYAGAIN" | "MASTERDOWN" | "LOADING")
    )
}
