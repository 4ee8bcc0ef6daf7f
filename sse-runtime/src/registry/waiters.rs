//! The subscribers of one key that wait for its next event, by subscriber
//! id: every ring-and-cursor fan-out (the in-memory broker's keys, the Redis
//! broker's local keys) parks and wakes them the same way.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::task::{Context, Waker};

/// Waiting subscribers' wakers, each registered once however often it polls.
#[derive(Default)]
pub(crate) struct Waiters(HashMap<u64, Waker, BuildHasherDefault<SubscriberIdHasher>>);

impl Waiters {
    /// Parks subscriber `id` until [`wake_all`](Self::wake_all), keeping its
    /// waker if it would wake the same task.
    pub(crate) fn register(&mut self, id: u64, cx: &Context<'_>) {
        match self.0.get_mut(&id) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                self.0.insert(id, cx.waker().clone());
            }
        }
    }

    /// Forgets subscriber `id` (it went away).
    pub(crate) fn remove(&mut self, id: u64) {
        self.0.remove(&id);
    }

    /// Wakes every waiting subscriber, once.
    pub(crate) fn wake_all(&mut self) {
        for (_, waker) in self.0.drain() {
            waker.wake();
        }
    }
}

/// Subscriber ids come from a counter, never from a client, so they need no
/// DoS-resistant hash: one multiplication spreads them over the table.
#[derive(Default)]
pub(crate) struct SubscriberIdHasher(u64);

impl Hasher for SubscriberIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
