//! Cleanup: subscribe/disconnect churn leaves no key, no task and no memory
//! behind. Its own test binary, because it counts every allocation.

use std::alloc::System;
use std::time::Duration;

use futures_util::StreamExt;
use sse_runtime::{MessageEvent, Registry, RegistryConfig};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const KEYS: usize = 1_000;

/// The allocation counter is process-wide: the tests here take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `cycles` subscribe → poll once → disconnect cycles over `KEYS` keys, with
/// two subscribers overlapping on each key half of the time.
async fn churn(registry: &Registry<String>, cycles: usize) {
    let keys: Vec<String> = (0..KEYS).map(|n| format!("user-{n}")).collect();
    for cycle in 0..cycles {
        let key = &keys[cycle % KEYS];
        let mut first = registry.subscribe(key);
        let overlapping = (cycle % 2 == 0).then(|| registry.subscribe(key));
        // Registers a waker in the key state, as a real response body does.
        // (Past its resume point.)
        assert!(
            futures_util::FutureExt::now_or_never(first.next())
                .is_some_and(|event| event.is_some_and(|event| event.is_resume_point()))
        );
        assert!(futures_util::FutureExt::now_or_never(first.next()).is_none());
        drop(first);
        drop(overlapping);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_subscribe_disconnect_cycles_leave_no_entry_task_or_memory() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let registry: Registry<String> = Registry::new();
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    // Warm up: lets maps and shards reach their working capacity.
    churn(&registry, 1_000).await;
    assert_eq!(registry.key_count(), 0);

    let region = Region::new(GLOBAL);
    churn(&registry, 10_000).await;
    let change = region.change();
    // stats_alloc already counts a reallocation's growth in `bytes_allocated`
    // and its shrinking in `bytes_deallocated`; `bytes_reallocated` repeats it.
    let net = change.bytes_allocated as i64 - change.bytes_deallocated as i64;

    eprintln!("net allocation change over 10,000 cycles: {net} bytes ({change:?})");
    assert_eq!(
        registry.key_count(),
        0,
        "every key is removed with its last subscriber"
    );
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        tasks_before
    );
    // 20,000 subscriptions were made; anything per subscription left behind
    // would show as hundreds of kilobytes.
    assert!(
        net < 16 * 1024,
        "memory grew by {net} bytes over 10,000 cycles ({change:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_history_are_removed_once_it_expires() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let registry: Registry<String> =
        Registry::with_config(RegistryConfig::default().history_ttl(Duration::from_millis(50)));
    for n in 0..KEYS {
        let key = format!("topic-{n}");
        let mut subscriber = registry.subscribe(&key);
        registry.send(&key, MessageEvent::new("x")).await.unwrap();
        assert!(subscriber.next().await.is_some());
    }
    assert_eq!(
        registry.key_count(),
        KEYS,
        "history keeps keys replayable for a while"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while registry.key_count() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} keys left",
            registry.key_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dropping the last handle stops the shared sweeper task too.
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    drop(registry);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
        >= tasks
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweeper task did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
