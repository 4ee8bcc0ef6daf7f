//! The Redis broker on Redis's bad days, against a real `redis-server` started
//! per test on a free loopback port: entries it did not write, a key of
//! another type, Redis paused, a reader that lagged past the history, and a
//! restart without persistence while subscribers stay connected. Never a
//! silent gap, and no spinning.

use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use sse_runtime::{EncodedEvent, MessageEvent, Registry, RegistryConfig, Subscription};
use sse_tests::fields;
use sse_tests::redis_server::{self, RedisServer};

async fn next(
    stream: &mut (impl Stream<Item = EncodedEvent> + Unpin),
) -> Option<(String, String, String)> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("timed out");
        match event {
            Some(event) if event.is_resume_point() => {}
            other => return other.map(|event| fields(&event)),
        }
    }
}

/// A plain connection to the test's Redis, for what another program would do.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Subscribes to `key` and waits until the instance's reader follows it.
async fn joined(registry: &Registry<String>, key: &str) -> Subscription {
    let mut subscription = registry.subscribe(&key.to_owned());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Each poll drives the join; the first item is the resume point.
    while registry.subscriber_count(&key.to_owned()) == 0 {
        if let Some(item) = subscription.next().now_or_never() {
            assert!(item.is_some_and(|event| event.is_resume_point()));
        }
        assert!(tokio::time::Instant::now() < deadline, "never joined");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    subscription
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

#[tokio::test]
async fn a_reader_held_back_while_the_history_is_trimmed_past_it_loses_nothing() {
    let Some(server) = redis_server::start(false).await else {
        return;
    };
    // A history of 10 events, and a buffer wide enough for the burst.
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
    // Hold every reader back: XREAD is refused for a while (as a reader on a
    // stalled host would be), while the other instance publishes far past
    // the key's history.
    let mut redis = raw(&server).await;
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-xread")
        .query_async(&mut redis)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..400 {
        b.send(&"room".to_owned(), MessageEvent::new(format!("missed {n}")))
            .await
            .unwrap();
    }
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("+xread")
        .query_async(&mut redis)
        .await
        .unwrap();
    // The reader follows the bucket's bell, which keeps far more than the
    // key's history: every event reaches the open stream, in order, then live.
    b.send(&"room".to_owned(), MessageEvent::new("live"))
        .await
        .unwrap();
    for n in 0..400 {
        let (_, event_type, data) = next(&mut subscription).await.expect("open");
        assert_eq!((event_type.as_str(), data), ("", format!("missed {n}")));
    }
    assert_eq!(next(&mut subscription).await.expect("open").2, "live");
}

#[tokio::test]
async fn a_restart_without_persistence_gives_connected_subscribers_the_reset_signal() {
    let Some(mut server) = redis_server::start(false).await else {
        return;
    };
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
    let busy_len: u64 = redis::cmd("XLEN")
        .arg("sse:busy")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        busy_len, 1,
        "only the entry younger than the history's age stays"
    );
}
