//! The fault checker's short schedule, in CI: one fault of each kind (a
//! master killed, one frozen, one cut off from its replica and killed, an
//! app instance killed) against a real Redis Cluster and two instances of
//! the chat, with publishers retrying by idempotency key and subscribers
//! dropping and resuming at random. Zero duplicates, zero out of order,
//! zero silent gaps, zero stuck slots. Long runs: `loadgen chaos`, and
//! `RELIABILITY.md`.

use sse_tests::chaos::{self, ChaosSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_random_schedule_of_faults_leaves_no_duplicate_disorder_silent_gap_or_stuck_slot() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(2026);
    let Some(report) = chaos::run(ChaosSettings::short(seed)).await else {
        return;
    };
    eprintln!("{}", report.table());
    assert_eq!(report.violations(), 0, "\n{}", report.table());
    assert!(report.acknowledged > 0 && report.delivered > 0);
}
