//! The Redis broker on Redis's bad days, against a real `redis-server` started
//! per test on a free loopback port: entries it did not write, a key of
//! another type, Redis paused, a reader that lagged past the history, and a
//! restart without persistence while subscribers stay connected; and a
//! Redis Cluster master killed, its replica taking over. Never a silent gap,
//! and no spinning.

use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use sse_runtime::testing::{fields, next_event};
use sse_runtime::{EncodedEvent, MessageEvent, Registry, RegistryConfig, Subscription};
use sse_tests::redis_cluster;
use sse_tests::redis_server::{self, RedisServer};

/// The next event's fields, past resume points; `None` once the stream ends.
async fn next(
    stream: &mut (impl Stream<Item = EncodedEvent> + Unpin),
) -> Option<(String, String, String)> {
    next_event(stream).await.map(|event| fields(&event))
}

/// This test binary's metrics recorder, installed by the first test that asks.
fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this test binary")
    })
}

/// The value of a counter `series` (name and labels), 0 before it is counted.
fn counter(series: &str) -> f64 {
    metrics()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// A plain connection to the test's Redis, for what another program would do.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Subscribes to `key` and waits until the instance follows it: its
/// channel subscribed and its position read (the subscription is open).
async fn joined(registry: &Registry<String>, key: &str) -> Subscription {
    joined_quietly(registry, key).await.opened().await
}

/// Redis's count of commands processed so far.
async fn commands_processed(connection: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Appends to `stream` an entry without the broker's field, as another
/// program (or an older version, or someone debugging) would.
async fn add_foreign_entry(redis: &mut redis::aio::MultiplexedConnection, stream: &str) {
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("x")
        .arg("1")
        .query_async(redis)
        .await
        .unwrap();
}

/// Redis commands in one idle second, after half a second for the readers
/// to meet whatever was just done. A reader that re-reads an entry, or
/// retries a failing read, runs thousands a second; one that waits blocks
/// 200 ms per read.
async fn idle_commands_per_second(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = commands_processed(redis).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    commands_processed(redis).await - before
}

#[tokio::test]
async fn an_entry_another_program_wrote_is_skipped_without_spinning_and_delivery_goes_on() {
    let Some(server) = redis_server::start(false).await else {
        return;
    };
    let registry = server.registry(RegistryConfig::default()).await;
    let mut subscription = joined(&registry, "general").await;
    let mut redis = raw(&server).await;
    add_foreign_entry(&mut redis, "sse:general").await;
    let per_second = idle_commands_per_second(&mut redis).await;
    eprintln!("Redis commands in an idle second after a foreign entry: {per_second}");
    // A reader that re-reads the entry runs thousands a second; one that
    // passed it blocks 200 ms per read.
    assert!(per_second < 50, "{per_second} commands/s: the reader spins");
    registry
        .send(&"general".to_owned(), MessageEvent::new("after"))
        .await
        .unwrap();
    assert_eq!(next(&mut subscription).await.unwrap().2, "after");
}

#[tokio::test]
async fn a_key_turned_into_another_type_ends_only_its_own_subscriptions() {
    let Some(server) = redis_server::start(false).await else {
        return;
    };
    metrics();
    let ended = r#"sse_broker_ended_streams_total{reason="not_a_stream"}"#;
    let ended_before = counter(ended);
    let registry = server.registry(RegistryConfig::default()).await;
    let mut good = joined(&registry, "good").await;
    let mut bad = joined(&registry, "bad").await;
    let mut redis = raw(&server).await;
    let () = redis::cmd("SET")
        .arg("sse:bad")
        .arg("not a stream")
        .query_async(&mut redis)
        .await
        .unwrap();
    // Sending to it fails, and its subscriptions here end.
    assert!(
        registry
            .send(&"bad".to_owned(), MessageEvent::new("lost"))
            .await
            .is_err()
    );
    assert_eq!(
        next(&mut bad).await,
        None,
        "the bad key's subscription is ended"
    );
    for n in 0..3 {
        registry
            .send(&"good".to_owned(), MessageEvent::new(n.to_string()))
            .await
            .unwrap();
    }
    for n in 0..3 {
        assert_eq!(
            next(&mut good).await.unwrap().2,
            n.to_string(),
            "other keys keep flowing"
        );
    }
    // A new subscription to the bad key ends at once instead of hanging.
    assert_eq!(next(&mut registry.subscribe(&"bad".to_owned())).await, None);
    // Both ends are counted (no other test here ends a stream this way).
    assert_eq!(counter(ended) - ended_before, 2.0);
}

#[tokio::test]
async fn a_broken_broadcast_key_stops_broadcasts_only_and_never_spins() {
    let Some(server) = redis_server::start(false).await else {
        return;
    };
    let registry = server.registry(RegistryConfig::default()).await;
    let mut subscription = joined(&registry, "room").await;
    let mut redis = raw(&server).await;
    // A foreign entry in the broadcast stream is passed over.
    add_foreign_entry(&mut redis, "sse!broadcast").await;
    registry
        .broadcast(MessageEvent::new("to all"))
        .await
        .unwrap();
    assert_eq!(next(&mut subscription).await.unwrap().2, "to all");
    // Then the broadcast key becomes a string.
    let () = redis::cmd("SET")
        .arg("sse!broadcast")
        .arg("not a stream")
        .query_async(&mut redis)
        .await
        .unwrap();
    let per_second = idle_commands_per_second(&mut redis).await;
    assert!(per_second < 50, "{per_second} commands/s: the reader spins");
    assert!(
        registry.broadcast(MessageEvent::new("lost")).await.is_err(),
        "a broadcast that cannot be recorded says so"
    );
    registry
        .send(&"room".to_owned(), MessageEvent::new("still"))
        .await
        .unwrap();
    assert_eq!(next(&mut subscription).await.unwrap().2, "still");
    // New subscriptions still start and receive.
    let mut late = joined(&registry, "late").await;
    registry
        .send(&"late".to_owned(), MessageEvent::new("hello"))
        .await
        .unwrap();
    assert_eq!(next(&mut late).await.unwrap().2, "hello");
}

/// Makes the test's Redis a replica of a master that is not there (it keeps
/// its data, read-only, answering writes with `READONLY`), as a replica is
/// until a failover promotes it.
async fn demote(redis: &mut redis::aio::MultiplexedConnection) {
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(sse_runtime::testing::free_port())
        .query_async(redis)
        .await
        .unwrap();
}

/// Makes it a master again.
async fn promote(redis: &mut redis::aio::MultiplexedConnection) {
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(redis)
        .await
        .unwrap();
}

/// How many entries `stream` holds.
async fn stream_length(redis: &mut redis::aio::MultiplexedConnection, stream: &str) -> usize {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(redis)
        .await
        .unwrap()
}

/// Redis answers writes with `READONLY` while it is a replica (as a replica
/// does until a failover promotes it): `send` retries until it is promoted,
/// and the event is written once.
#[tokio::test]
async fn a_send_to_a_replica_waits_for_its_promotion_and_is_written_once() {
    let Some(server) = redis_server::start(false).await else {
        return;
    };
    let registry = server.registry(RegistryConfig::default()).await;
    let mut subscription = joined(&registry, "room").await;
    let mut redis = raw(&server).await;
    demote(&mut redis).await;
    let promotion = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        promote(&mut redis).await;
        redis
    });
    let started = tokio::time::Instant::now();
    registry
        .send(&"room".to_owned(), MessageEvent::new("after the promotion"))
        .await
        .expect("the send waits for the promotion");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "it was sent while Redis was a replica"
    );
    assert_eq!(
        next(&mut subscription).await.unwrap().2,
        "after the promotion"
    );
    let mut redis = promotion.await.unwrap();
    assert_eq!(
        stream_length(&mut redis, "sse:room").await,
        1,
        "written once"
    );
}

/// With a short `send_timeout`, a send to a replica fails once it is spent,
/// having written nothing.
#[tokio::test]
async fn a_send_to_a_replica_fails_at_its_timeout_and_writes_nothing() {
    let Some(server) = redis_server::start(false).await else {
        return;
    };
    let config = RegistryConfig::default().send_timeout(Duration::from_millis(300));
    let registry = server.registry(config).await;
    let mut redis = raw(&server).await;
    demote(&mut redis).await;
    let started = tokio::time::Instant::now();
    let sent = registry
        .send(&"room".to_owned(), MessageEvent::new("refused"))
        .await;
    let took = started.elapsed();
    assert!(
        matches!(sent, Err(sse_runtime::BrokerError::Unavailable(_))),
        "{sent:?}"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(4),
        "it retried until its timeout, and no longer: {took:?}"
    );
    promote(&mut redis).await;
    assert_eq!(
        stream_length(&mut redis, "sse:room").await,
        0,
        "nothing written"
    );
}

#[tokio::test]
async fn redis_paused_past_the_timeouts_loses_no_acknowledged_event_and_repeats_none() {
    let Some(server) = redis_server::start(false).await else {
        return;
    };
    let (a, b) = (
        server.registry(RegistryConfig::default()).await,
        server.registry(RegistryConfig::default()).await,
    );
    let mut subscription = joined(&a, "room").await;
    let mut redis = raw(&server).await;
    let mut acknowledged = Vec::new();
    for n in 0..60 {
        if n == 20 {
            // Longer than the command timeout (500 ms) and the reader's block.
            let () = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(1500)
                .arg("ALL")
                .query_async(&mut redis)
                .await
                .unwrap();
        }
        if b.send(&"room".to_owned(), MessageEvent::new(n.to_string()))
            .await
            .is_ok()
        {
            acknowledged.push(n.to_string());
        }
    }
    assert!(
        acknowledged.len() < 60,
        "the pause must make some sends fail"
    );
    let last = acknowledged.last().unwrap().clone();
    let mut received: Vec<(String, String)> = Vec::new();
    while received.last().map(|(_, data)| data) != Some(&last) {
        let (id, _, data) = next(&mut subscription)
            .await
            .expect("the stream stays open");
        received.push((id, data));
    }
    let ids: Vec<&String> = received.iter().map(|(id, _)| id).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "no entry twice");
    let data: Vec<&String> = received.iter().map(|(_, data)| data).collect();
    for sent in &acknowledged {
        assert!(
            data.contains(&sent),
            "acknowledged event {sent} never arrived"
        );
    }
    // A send that timed out may still have been written once Redis resumed;
    // it arrives once, in order, never as a gap.
    let numbers: Vec<u32> = data.iter().map(|d| d.parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
}

/// An instance's PUB/SUB connection lost while the other instance publishes
/// far past the key's history: the messages went to no one, and the stream
/// no longer holds them, so the open stream gets the reset signal (never a
/// silent gap), then live events again.
#[tokio::test]
async fn a_pub_sub_connection_lost_while_the_history_is_trimmed_past_it_gives_the_reset_signal() {
    let Some(server) = redis_server::start(false).await else {
        return;
    };
    let config = RegistryConfig::default().history_len(10).buffer(1024);
    let (a, b) = (
        server.registry(config.clone()).await,
        server.registry(config).await,
    );
    let mut subscription = joined(&a, "room").await;
    b.send(&"room".to_owned(), MessageEvent::new("seen"))
        .await
        .unwrap();
    assert_eq!(next(&mut subscription).await.unwrap().2, "seen");
    // A's PUB/SUB connection is cut, and may not subscribe again for a
    // while, as on a network partition, while B publishes past the history.
    let mut redis = raw(&server).await;
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-ssubscribe")
        .query_async(&mut redis)
        .await
        .unwrap();
    let killed = server.kill_pub_sub_connections().await;
    assert_eq!(killed, 1, "A's one PUB/SUB connection");
    for n in 0..400 {
        b.send(&"room".to_owned(), MessageEvent::new(format!("missed {n}")))
            .await
            .unwrap();
    }
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("+ssubscribe")
        .query_async(&mut redis)
        .await
        .unwrap();
    let (_, event_type, data) = next(&mut subscription).await.expect("open");
    assert_eq!(event_type, "reset", "{data}");
    assert!(data.contains("history_expired"), "{data}");
    b.send(&"room".to_owned(), MessageEvent::new("live"))
        .await
        .unwrap();
    assert_eq!(next(&mut subscription).await.expect("open").2, "live");
}

#[tokio::test]
async fn a_restart_without_persistence_gives_connected_subscribers_the_reset_signal() {
    let Some(mut server) = redis_server::start(false).await else {
        return;
    };
    metrics();
    let reader_errors_before = counter("sse_redis_reader_errors_total");
    let registry = server.registry(RegistryConfig::default()).await;
    let mut subscription = joined(&registry, "room").await;
    for n in 0..3 {
        registry
            .send(&"room".to_owned(), MessageEvent::new(n.to_string()))
            .await
            .unwrap();
        assert_eq!(next(&mut subscription).await.unwrap().2, n.to_string());
    }
    server.restart().await; // killed: the history is gone
    let (_, event_type, data) = next(&mut subscription)
        .await
        .expect("the stream stays open");
    assert_eq!(event_type, "reset", "{data}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while registry
        .send(&"room".to_owned(), MessageEvent::new("after"))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "send did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(next(&mut subscription).await.unwrap().2, "after");
    assert!(
        counter("sse_redis_reader_errors_total") > reader_errors_before,
        "the reader's failure is counted"
    );
}

#[tokio::test]
async fn a_key_nobody_writes_to_expires_with_its_history_and_old_entries_are_trimmed() {
    let Some(server) = redis_server::start(false).await else {
        return;
    };
    let ttl = Duration::from_millis(400);
    let registry = server
        .registry(RegistryConfig::default().history_ttl(ttl))
        .await;
    let mut redis = raw(&server).await;
    registry
        .send(&"busy".to_owned(), MessageEvent::new("old"))
        .await
        .unwrap();
    registry
        .send(&"idle".to_owned(), MessageEvent::new("once"))
        .await
        .unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    registry
        .send(&"busy".to_owned(), MessageEvent::new("new"))
        .await
        .unwrap();
    let idle_exists: bool = redis::cmd("EXISTS")
        .arg("sse:idle")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        !idle_exists,
        "a key nobody wrote to for its history's age is gone"
    );
    assert_eq!(
        stream_length(&mut redis, "sse:busy").await,
        1,
        "only the entry younger than the history's age stays"
    );
}

/// What one subscriber saw: each event's data, and each reset signal.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Event(u32),
    Reset,
}

/// Reads `subscription` until the event "end", the stream's end, or `limit`.
async fn read_until_end(mut subscription: Subscription, limit: Duration) -> Vec<Seen> {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(event) = subscription.next().await {
            if event.is_resume_point() {
                continue;
            }
            let (_, event_type, data) = fields(&event);
            match (event_type.as_str(), data.as_str()) {
                ("reset", _) => seen.push(Seen::Reset),
                (_, "end") => return,
                (_, number) => seen.push(Seen::Event(number.parse().expect("a number"))),
            }
        }
    })
    .await;
    seen
}

/// A master of a three-master Redis Cluster killed while two instances
/// publish and subscribe, and its replica promoted without the last events
/// the master acknowledged (asynchronous replication). Keys on the other
/// masters lose nothing. On the failed master's keys, every subscriber stays
/// open and gets, between any two events with no reset between, every event
/// Redis kept: never a silent gap. Once a replica serves the slots, every
/// acknowledged event arrives.
#[tokio::test]
async fn a_cluster_master_crashing_loses_nothing_elsewhere_and_never_leaves_a_silent_gap() {
    failover(Failure::Crash).await;
}

/// As above, with the master frozen (SIGSTOP) instead: its connections stay
/// open and nothing answers, so sends to it must time out rather than hang.
#[tokio::test]
async fn a_cluster_master_stalling_loses_nothing_elsewhere_and_never_leaves_a_silent_gap() {
    failover(Failure::Stall).await;
}

/// How the master goes.
enum Failure {
    Crash,
    Stall,
}

async fn failover(failure: Failure) {
    let Some(mut cluster) = redis_cluster::start_with_replicas(1).await else {
        return;
    };
    let config = RegistryConfig::default().history_len(10_000);
    let (a, b) = (
        cluster.registry(config.clone()).await,
        cluster.registry(config.clone()).await,
    );
    let keys: Vec<String> = (0..16).map(|n| format!("k{n}")).collect();
    let mut subscriptions = Vec::new();
    for key in &keys {
        subscriptions.push(joined_quietly(&a, key).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let readers: Vec<_> = subscriptions
        .into_iter()
        .map(|subscription| tokio::spawn(read_until_end(subscription, Duration::from_secs(60))))
        .collect();

    let mut acknowledged: Vec<Vec<u32>> = vec![Vec::new(); keys.len()];
    // Sends whose outcome is unknown (`OutcomeUnknown`): they may be seen.
    let mut maybe: Vec<Vec<u32>> = vec![Vec::new(); keys.len()];
    // Sends that failed, the longest one, and when the last send that
    // failed or waited (over 100 ms) returned.
    let (mut failed_sends, mut longest_send) = (Vec::new(), Duration::ZERO);
    let mut troubled_until = None;
    let mut publish_round = async |round: u32, acknowledged: &mut Vec<Vec<u32>>| {
        for (index, key) in keys.iter().enumerate() {
            let started = tokio::time::Instant::now();
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                b.send(key, MessageEvent::new(round.to_string())),
            )
            .await
            .expect("a send answers within 10 s, even during a failover");
            longest_send = longest_send.max(started.elapsed());
            if sent.is_err() || started.elapsed() > Duration::from_millis(100) {
                troubled_until = Some(tokio::time::Instant::now());
            }
            match sent {
                Ok(_) => acknowledged[index].push(round),
                Err(error) => {
                    if matches!(error, sse_runtime::BrokerError::OutcomeUnknown(_)) {
                        maybe[index].push(round);
                    }
                    failed_sends.push(format!("{error} after {:?}", started.elapsed()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut round = 0;
    while round < 30 {
        publish_round(round, &mut acknowledged).await;
        round += 1;
    }
    // The master holding most of the keys goes, at once.
    let mut victim = (0, Vec::new());
    for port in cluster.masters().await {
        let stored = cluster.cli(port, &["KEYS", "sse:{*}:*"]).await;
        let here: Vec<String> = stored
            .lines()
            .filter_map(|name| Some(name.split_once("}:")?.1.to_owned()))
            .collect();
        if here.len() > victim.1.len() {
            victim = (port, here);
        }
    }
    let (victim, keys_lost_with_it) = victim;
    assert!(!keys_lost_with_it.is_empty(), "no master holds a key");
    // As a crash between a write and its replication: the victim's link to
    // its replica is cut and may not come back (ACL), a round goes out,
    // subscribers get it, and the victim dies without its replica having it.
    cluster
        .cli(victim, &["ACL", "SETUSER", "default", "-psync", "-sync"])
        .await;
    let cut = cluster
        .cli(victim, &["CLIENT", "KILL", "TYPE", "replica"])
        .await;
    assert_eq!(cut.trim(), "1", "the victim's replica link");
    publish_round(round, &mut acknowledged).await;
    round += 1;
    tokio::time::sleep(Duration::from_millis(100)).await;
    match failure {
        Failure::Crash => cluster.kill(victim).await,
        Failure::Stall => cluster.freeze(victim).await,
    }
    let killed_at = round;
    // Publish on through the failover: until the others have marked the
    // victim failed and a replica serves its slots.
    let killed = tokio::time::Instant::now();
    let deadline = killed + Duration::from_secs(40);
    loop {
        let masters = cluster.masters().await;
        if masters.len() == 3 && !masters.contains(&victim) && cluster.is_ok().await {
            break;
        }
        publish_round(round, &mut acknowledged).await;
        round += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replica took over"
        );
    }
    let healthy_from = round;
    for _ in 0..30 {
        publish_round(round, &mut acknowledged).await;
        round += 1;
    }
    for key in &keys {
        b.send(key, MessageEvent::new("end")).await.unwrap();
    }

    // What Redis kept of each key, read back from the start by a third instance.
    let c = cluster.registry(config).await;
    let mut lost = 0;
    for (((key, reader), acknowledged), maybe) in
        keys.iter().zip(readers).zip(&acknowledged).zip(&maybe)
    {
        let seen = reader.await.unwrap();
        let kept =
            read_until_end(c.subscribe_from(key, Some("0-0")), Duration::from_secs(10)).await;
        let kept: Vec<u32> = kept
            .into_iter()
            .map(|seen| match seen {
                Seen::Event(n) => n,
                Seen::Reset => panic!("{key}: the history from the start resets"),
            })
            .collect();
        let lost_with_the_master = keys_lost_with_it.contains(key);
        if !lost_with_the_master {
            // Every acknowledged event, in order, and no reset; a send whose
            // outcome was unknown may be there too.
            let expected: Vec<Seen> = acknowledged.iter().map(|n| Seen::Event(*n)).collect();
            let sure: Vec<Seen> = seen
                .iter()
                .filter(|seen| !matches!(seen, Seen::Event(n) if maybe.contains(n)))
                .copied()
                .collect();
            assert_eq!(sure, expected, "{key}, on a master that stayed up");
            continue;
        }
        assert_no_silent_gap(key, &seen, &kept);
        for n in acknowledged.iter().filter(|n| **n >= healthy_from) {
            assert!(
                seen.contains(&Seen::Event(*n)),
                "{key}: event {n}, acknowledged after the failover, never arrived"
            );
        }
        lost += acknowledged.iter().filter(|n| !kept.contains(n)).count();
        eprintln!(
            "{key} (on the failed master): {} acknowledged, {} kept, {} seen, {} resets",
            acknowledged.len(),
            kept.len(),
            seen.len(),
            seen.iter().filter(|s| **s == Seen::Reset).count()
        );
    }
    assert!(lost > 0, "the victim's replica never got the last round");
    // A send to the failed master's slots waits for the replica (the Redis
    // client retries), up to its bound.
    let troubled = troubled_until.map(|until| until.duration_since(killed));
    eprintln!(
        "sends failed or waited until {troubled:?} after the master went (rounds {killed_at}..\
         {healthy_from}); the longest took {longest_send:?}; failed: {failed_sends:?}"
    );
}

/// Between any two events `seen` with no reset between them (and before the
/// first), no event of `kept` is missing, and the events come in order.
fn assert_no_silent_gap(key: &str, seen: &[Seen], kept: &[u32]) {
    let mut previous: Option<u32> = None;
    let mut first_run = true;
    for item in seen {
        match item {
            Seen::Reset => {
                previous = None;
                first_run = false;
            }
            Seen::Event(n) => {
                let from = previous.map_or(if first_run { 0 } else { *n }, |p| p + 1);
                let skipped: Vec<u32> = kept
                    .iter()
                    .copied()
                    .filter(|k| (from..*n).contains(k))
                    .collect();
                assert!(
                    skipped.is_empty(),
                    "{key}: a silent gap, {skipped:?} kept by Redis but never delivered before \
                     {n}; seen {seen:?}"
                );
                assert!(
                    previous.is_none_or(|p| p < *n),
                    "{key}: out of order: {seen:?}"
                );
                previous = Some(*n);
            }
        }
    }
}

/// Subscribes to `key` and drives the join until the instance counts it (its
/// reader picks the key up at its next read).
async fn joined_quietly(registry: &Registry<String>, key: &str) -> Subscription {
    let mut subscription = registry.subscribe(&key.to_owned());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while registry.subscriber_count(&key.to_owned()) == 0 {
        if let Some(item) = subscription.next().now_or_never() {
            assert!(item.is_some_and(|event| event.is_resume_point()));
        }
        assert!(tokio::time::Instant::now() < deadline, "never joined");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    subscription
}

/// With `replicas_to_acknowledge(1)`, a send that its master wrote but no
/// replica confirmed (the replicas are stalled) is not reported written: it
/// fails with `OutcomeUnknown` (the master may lose it, killed or demoted),
/// and its retry with the same idempotency key, once the replicas go on,
/// answers the first write's id: the event is in the history once.
/// Broadcasts likewise. Without the setting the send is acknowledged, and
/// lost if the master then fails.
#[tokio::test]
async fn a_send_no_replica_confirmed_is_unknown_and_its_retry_is_written_once() {
    let Some(mut cluster) = redis_cluster::start_with_replicas(1).await else {
        return;
    };
    let registry = cluster
        .registry(RegistryConfig::default().replicas_to_acknowledge(1))
        .await;
    let key = "replicated".to_owned();
    let idempotency = |key: &str| sse_runtime::IdempotencyKey::new(key).unwrap();
    let first = registry
        .send_idempotent(&key, MessageEvent::new("one"), &idempotency("one"))
        .await
        .expect("a replica confirms it");

    let masters = cluster.masters().await;
    let replicas: Vec<u16> = cluster
        .ports()
        .into_iter()
        .filter(|port| !masters.contains(port))
        .collect();
    for replica in &replicas {
        cluster.freeze(*replica).await;
    }
    let unconfirmed = registry
        .send_idempotent(&key, MessageEvent::new("two"), &idempotency("two"))
        .await;
    let broadcast = registry.broadcast(MessageEvent::new("everyone")).await;
    for replica in &replicas {
        cluster.thaw(*replica).await;
    }
    assert!(
        matches!(
            unconfirmed,
            Err(sse_runtime::BrokerError::OutcomeUnknown(_))
        ),
        "{unconfirmed:?}"
    );
    assert!(
        matches!(broadcast, Err(sse_runtime::BrokerError::OutcomeUnknown(_))),
        "{broadcast:?}"
    );

    cluster.wait_for_replicas(replicas.len()).await;
    let retried = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match registry
                .send_idempotent(&key, MessageEvent::new("two"), &idempotency("two"))
                .await
            {
                Ok(sent) => return sent,
                Err(error) => eprintln!("retrying: {error}"),
            }
        }
    })
    .await
    .expect("the retry is confirmed once the replicas go on");
    assert!(retried.duplicate, "the first write stood: {retried:?}");
    registry
        .send(&key, MessageEvent::new("three"))
        .await
        .expect("a replica confirms it");

    // The unconfirmed broadcast was written too (its master lives): it
    // arrives, once, with the rest.
    let mut resumed = registry.subscribe_from(&key, Some(&first.id));
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut resumed).await.unwrap().2);
    }
    seen.sort();
    assert_eq!(seen, ["everyone", "three", "two"], "each once");
}

/// A cluster node that stalls for less than a failover takes (a long
/// pause of its host) and then goes on: a send that waited for it is
/// written once, never once per attempt the client made meanwhile.
#[tokio::test]
async fn a_send_to_a_briefly_stalled_cluster_node_is_written_at_most_once() {
    let Some(mut cluster) = redis_cluster::start().await else {
        return;
    };
    let registry = cluster.registry(RegistryConfig::default()).await;
    let key = "stalled".to_owned();
    let first = registry
        .send_idempotent(
            &key,
            MessageEvent::new("before"),
            &sse_runtime::IdempotencyKey::new("before").unwrap(),
        )
        .await
        .expect("the cluster is up");
    let masters = cluster.masters().await;
    for master in &masters {
        cluster.freeze(*master).await;
    }
    let sending = tokio::spawn({
        let registry = registry.clone();
        let key = key.clone();
        async move { registry.send(&key, MessageEvent::new("during")).await }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for master in &masters {
        cluster.thaw(*master).await;
    }
    let during = sending.await.unwrap();
    cluster.wait_until_ok().await;
    registry
        .send(&key, MessageEvent::new("after"))
        .await
        .expect("the cluster is back");
    let mut resumed = registry.subscribe_from(&key, Some(&first.id));
    let mut seen = Vec::new();
    loop {
        let data = next(&mut resumed).await.unwrap().2;
        if data == "after" {
            break;
        }
        seen.push(data);
    }
    assert!(seen.len() <= 1, "written {} times: {seen:?}", seen.len());
    if during.is_ok() {
        assert_eq!(seen, ["during"], "acknowledged, so written");
    }
}
