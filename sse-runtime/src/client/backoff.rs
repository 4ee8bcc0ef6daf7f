//! How long a client waits before it reconnects.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// After `failures` failed attempts in a row (network errors, `5xx`), the
/// wait before the next: the stream's `retry` doubled per failure, capped
/// at `max`, and then drawn at random from its upper half, so clients cut
/// off together do not all come back in the same instant. After a stream
/// that simply ended (no failure) the wait is `retry`, as a browser's.
pub(super) fn delay(retry: Duration, failures: u32, max: Duration) -> Duration {
    if failures == 0 {
        return retry;
    }
    let doubled = retry.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let capped = doubled.min(max.max(retry));
    let half = capped / 2;
    half + half.mul_f64(unit_random())
}

/// A number in `[0, 1)`, different on every call: good enough to spread
/// reconnects (std's hasher keys are random per `RandomState`).
fn unit_random() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_end_waits_retry_and_failures_double_within_a_jittered_cap() {
        let retry = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        assert_eq!(delay(retry, 0, max), retry);
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (40, 30)] {
            for _ in 0..50 {
                let wait = delay(retry, failures, max);
                let full = Duration::from_secs(full);
                assert!(wait >= full / 2 && wait <= full, "{failures}: {wait:?}");
            }
        }
        // A server's retry above the cap wins over the cap.
        let long = Duration::from_secs(60);
        assert!(delay(long, 3, max) >= long / 2);
        // Jittered: not every wait is the same.
        let waits: std::collections::HashSet<_> = (0..20).map(|_| delay(retry, 3, max)).collect();
        assert!(waits.len() > 1);
    }
}
