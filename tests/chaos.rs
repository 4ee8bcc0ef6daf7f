//! The fault checker's short schedule, in CI: one fault of each kind (a
//! master killed, one frozen, one cut off from its replica and killed, an
//! app instance killed) against a real Redis Cluster and two instances of
//! the chat, with publishers retrying by idempotency key and subscribers
//! dropping and resuming at random. Long runs: `loadgen chaos`, and
//! `RELIABILITY.md`.
//!
//! A second schedule runs on a single Redis node without persistence: its
//! restart (every stream and idempotency record gone) and an instance's
//! death. There an acknowledged post can be lost with the node, but never
//! silently: every subscriber that missed one is sent `reset`.
//!
//! On the cluster, every post waits for its master's replica (`replicas_to_acknowledge(1)`,
//! Redis's `WAIT`) before it is acknowledged. Asserted: no duplicate,
//! nothing out of order, no silent gap, no stuck slot, no post left
//! unacknowledged, and no acknowledged post lost, after every kind of
//! fault, frozen masters included.

use sse_tests::chaos::{self, ChaosSettings};

/// The schedule's seed: `CHAOS_SEED`, or 2026.
fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(2026)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_random_schedule_of_faults_leaves_no_duplicate_disorder_silent_gap_or_stuck_slot() {
    let seed = seed();
    let Some(report) = chaos::run(ChaosSettings::short(seed)).await else {
        return;
    };
    eprintln!("{}", report.table());
    let table = report.table();
    assert!(report.acknowledged > 0 && report.delivered > 0, "{table}");
    assert_eq!(report.out_of_order(), 0, "{table}");
    assert_eq!(report.stuck_slots, 0, "{table}");
    assert_eq!(report.unacknowledged, 0, "{table}");
    for (kind, row) in &report.faults {
        assert_eq!(row.duplicates, 0, "after {kind:?}:\n{table}");
        assert_eq!(row.silent_gaps, 0, "after {kind:?}:\n{table}");
        assert_eq!(row.lost, 0, "after {kind:?}:\n{table}");
    }
    assert_eq!(report.violations(), 0, "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_restarted_without_persistence_leaves_no_duplicate_disorder_or_silent_gap() {
    let seed = seed();
    let Some(report) = chaos::run(ChaosSettings::single_node(seed)).await else {
        return;
    };
    let table = report.table();
    eprintln!("{table}");
    assert!(report.acknowledged > 0 && report.delivered > 0, "{table}");
    let restart = &report.faults[&Some(sse_tests::chaos::FaultKind::RestartNode)];
    assert!(restart.resets > 0, "the restart lost the history: {table}");
    assert_eq!(report.violations(), 0, "{table}");
}
