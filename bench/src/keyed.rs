//! One subscriber per key, the warm-up that waits for them, and the paced
//! publisher that sends to the keys in turn: what `loadgen keys` and
//! `loadgen interest` share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::client::Publisher;
use crate::scenario::open_retrying;

/// One subscriber per key (`/events/keys/<k>`), key `k`'s on
/// `servers[k % servers.len()]`, each counting the events it gets (the
/// warm-up's `w` aside) up to `per_key`.
pub struct KeyedSubscribers {
    connected: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
    finished: Arc<AtomicU64>,
    release: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KeyedSubscribers {
    /// Opens them. With `hold`, each stays connected after its last event
    /// until [`close`](Self::close), so that leaving (and the server
    /// unsubscribing) happens after the figures are taken.
    pub fn open(servers: &[SocketAddr], keys: usize, per_key: u64, hold: bool) -> Self {
        let connected = Arc::new(AtomicU64::new(0));
        let delivered = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicU64::new(0));
        let (release, released) = watch::channel(!hold);
        let tasks = (0..keys)
            .map(|key| {
                let server = servers[key % servers.len()];
                let (connected, delivered, finished) = (
                    Arc::clone(&connected),
                    Arc::clone(&delivered),
                    Arc::clone(&finished),
                );
                let mut released = released.clone();
                tokio::spawn(async move {
                    let path = format!("/events/keys/{key}");
                    let Ok(mut stream) = open_retrying(server, key, &path, None).await else {
                        finished.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    connected.fetch_add(1, Ordering::Relaxed);
                    let mut received = 0;
                    let _ = stream
                        .for_each_data(|data| {
                            if data != b"w" {
                                received += 1;
                            }
                            received < per_key
                        })
                        .await;
                    delivered.fetch_add(received, Ordering::Relaxed);
                    finished.fetch_add(1, Ordering::Relaxed);
                    let _ = released.wait_for(|released| *released).await;
                })
            })
            .collect();
        KeyedSubscribers {
            connected,
            delivered,
            finished,
            release,
            tasks,
        }
    }

    pub fn connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Waits until every subscriber has had its last event (or gave up),
    /// for at most `within`.
    pub async fn until_finished(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.finished.load(Ordering::Relaxed) < self.tasks.len() as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets the held subscribers go, and waits for every one to end, for
    /// at most `within`.
    pub async fn close(self, within: Duration) {
        let _ = self.release.send(true);
        let collect = async {
            for task in self.tasks {
                let _ = task.await;
            }
        };
        let _ = tokio::time::timeout(within, collect).await;
    }
}

/// Posts `body` to `path` through every publisher, again every 100 ms,
/// until the answers (how many streams each server's broadcast reached)
/// add up to `expected`, or 180 s have passed.
pub async fn warm_up(publishers: &mut [Publisher], path: &str, body: &str, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut reached = 0;
        for publisher in publishers.iter_mut() {
            reached += publisher
                .post(path, body)
                .await
                .ok()
                .and_then(|answer| answer.trim().parse::<usize>().ok())
                .unwrap_or(0);
        }
        if reached >= expected || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `events` events to the `keys` keys in turn (`/events/keys/<k>`),
/// `rate` a second, one after another, key `k`'s through
/// `publishers[k % publishers.len()]`, with `body(seq)`; stops at the first
/// failed post.
pub async fn send_paced(
    publishers: &mut [Publisher],
    keys: usize,
    events: u64,
    rate: u64,
    body: impl Fn(u64) -> String,
) {
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut next_send = Instant::now();
    for seq in 0..events {
        tokio::time::sleep_until(next_send.into()).await;
        next_send += period;
        let key = (seq % keys as u64) as usize;
        let path = format!("/events/keys/{key}");
        let publisher = key % publishers.len();
        if publishers[publisher].post(&path, &body(seq)).await.is_err() {
            return;
        }
    }
}
