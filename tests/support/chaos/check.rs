//! What the checker finds: every subscriber against the acknowledged
//! posts, and a table per fault kind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use super::ChaosSettings;
use super::clients::{Acked, Seen, SubscriberLog};
use super::faults::{FaultKind, Injected};

/// The findings for one kind of fault: what followed its injections, up
/// to the next fault.
#[derive(Debug, Clone, Default)]
pub struct FaultRow {
    pub injected: usize,
    pub longest_recovery: Duration,
    pub resets: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    pub silent_gaps: usize,
    /// Messages seen again after a reset: delivered, lost with their
    /// master, and sent again by their publisher's retry.
    pub resent_after_reset: usize,
    /// Acknowledged posts no subscriber saw: lost by Redis with a master.
    pub lost: usize,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    pub seed: u64,
    pub elapsed: Duration,
    pub subscribers: usize,
    pub connections: usize,
    pub acknowledged: usize,
    /// Posts given up on after 60 s of retries.
    pub unacknowledged: usize,
    pub delivered: usize,
    /// By fault kind; `None`: before the first fault.
    pub faults: BTreeMap<Option<FaultKind>, FaultRow>,
    pub stuck_slots: usize,
    /// How many replicas had to confirm a post before it was acknowledged
    /// ([`ChaosSettings::replicas_to_acknowledge`]): with any, an
    /// acknowledged post that nobody saw is a broken promise too.
    pub replicas_to_acknowledge: usize,
    /// For each silent gap (the first few): what its subscriber saw on the
    /// wire around it.
    pub gap_details: Vec<String>,
}

impl ChaosReport {
    fn total(&self, field: impl Fn(&FaultRow) -> usize) -> usize {
        self.faults.values().map(field).sum()
    }

    pub fn duplicates(&self) -> usize {
        self.total(|row| row.duplicates)
    }

    pub fn out_of_order(&self) -> usize {
        self.total(|row| row.out_of_order)
    }

    pub fn silent_gaps(&self) -> usize {
        self.total(|row| row.silent_gaps)
    }

    /// Acknowledged posts that no subscriber saw.
    pub fn lost(&self) -> usize {
        self.total(|row| row.lost)
    }

    /// Everything that breaks the promise: duplicates, disorder, silent
    /// gaps, stuck slots, posts never acknowledged, and, where replicas
    /// had to confirm every post, acknowledged posts lost.
    pub fn violations(&self) -> usize {
        let lost = if self.replicas_to_acknowledge > 0 {
            self.lost()
        } else {
            0
        };
        self.duplicates()
            + self.out_of_order()
            + self.silent_gaps()
            + self.stuck_slots
            + self.unacknowledged
            + lost
    }

    /// The report as Markdown: a table per fault kind, then the totals.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| fault | injected | longest recovery | resets | seen again after a reset | duplicates | out of order | silent gaps | acknowledged, seen by nobody |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for (kind, row) in &self.faults {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} s | {} | {} | {} | {} | {} | {} |",
                kind.map_or("(before any fault)", FaultKind::name),
                row.injected,
                row.longest_recovery.as_secs_f64(),
                row.resets,
                row.resent_after_reset,
                row.duplicates,
                row.out_of_order,
                row.silent_gaps,
                row.lost,
            );
        }
        let _ = writeln!(
            out,
            "\nseed {}, {:.0} s, replicas to acknowledge a post: {}: {} posts acknowledged ({} \
             given up), {} deliveries to {} subscribers over {} connections; {} duplicates, {} \
             out of order, {} silent gaps, {} stuck slots, {} acknowledged and seen by nobody",
            self.seed,
            self.elapsed.as_secs_f64(),
            self.replicas_to_acknowledge,
            self.acknowledged,
            self.unacknowledged,
            self.delivered,
            self.subscribers,
            self.connections,
            self.duplicates(),
            self.out_of_order(),
            self.silent_gaps(),
            self.stuck_slots,
            self.lost(),
        );
        for detail in &self.gap_details {
            out.push('\n');
            out.push_str(detail);
        }
        out
    }
}

/// The fault in force at `at`: the last one injected at or before it.
fn fault_at(injected: &[Injected], at: Instant) -> Option<FaultKind> {
    injected
        .iter()
        .rev()
        .find(|fault| fault.at <= at)
        .map(|fault| fault.kind)
}

pub fn report(
    settings: &ChaosSettings,
    started: Instant,
    injected: &[Injected],
    acknowledged: &[Acked],
    unacknowledged: usize,
    logs: &[SubscriberLog],
    stuck_slots: usize,
) -> ChaosReport {
    let mut faults: BTreeMap<Option<FaultKind>, FaultRow> = BTreeMap::new();
    for fault in injected {
        let row = faults.entry(Some(fault.kind)).or_default();
        row.injected += 1;
        row.longest_recovery = row.longest_recovery.max(fault.recovered_after);
    }
    let mut seen_by_anyone: HashSet<(usize, u64)> = HashSet::new();
    let mut delivered = 0;
    let mut gap_details = Vec::new();
    for (subscriber, log) in logs.iter().enumerate() {
        let mut once: HashSet<(usize, u64)> = HashSet::new();
        // Messages seen before the latest reset.
        let mut reset_since: HashSet<(usize, u64)> = HashSet::new();
        let mut last_seq: HashMap<usize, u64> = HashMap::new();
        for (seen, at) in &log.seen {
            let row = faults.entry(fault_at(injected, *at)).or_default();
            match *seen {
                Seen::Reset => {
                    row.resets += 1;
                    reset_since.extend(once.iter().copied());
                }
                Seen::Message { publisher, seq } => {
                    delivered += 1;
                    seen_by_anyone.insert((publisher, seq));
                    if !once.insert((publisher, seq)) {
                        // Seen before: a duplicate, unless a reset came
                        // between (delivered, then lost with its master,
                        // then sent again by its publisher's retry).
                        if reset_since.contains(&(publisher, seq)) {
                            row.resent_after_reset += 1;
                        } else {
                            row.duplicates += 1;
                        }
                        continue;
                    }
                    reset_since.remove(&(publisher, seq));
                    let last = last_seq.entry(publisher).or_insert(seq);
                    if seq < *last {
                        row.out_of_order += 1;
                    }
                    *last = (*last).max(seq);
                }
            }
        }
        for acked in acknowledged.iter().filter(|acked| acked.room == log.room) {
            let (publisher, seq) = (acked.publisher, acked.seq);
            if once.contains(&(publisher, seq)) {
                continue;
            }
            if !gap_is_signalled(&log.seen, publisher, seq) {
                faults
                    .entry(fault_at(injected, acked.at))
                    .or_default()
                    .silent_gaps += 1;
                if gap_details.len() < 4 {
                    gap_details.push(describe_gap(started, injected, subscriber, log, acked));
                }
            }
        }
    }
    for acked in acknowledged {
        if !seen_by_anyone.contains(&(acked.publisher, acked.seq)) {
            faults.entry(fault_at(injected, acked.at)).or_default().lost += 1;
        }
    }
    ChaosReport {
        seed: settings.seed,
        elapsed: started.elapsed(),
        subscribers: logs.len(),
        connections: logs.iter().map(|log| log.connections).sum(),
        acknowledged: acknowledged.len(),
        unacknowledged,
        delivered,
        faults,
        stuck_slots,
        replicas_to_acknowledge: settings.replicas_to_acknowledge,
        gap_details,
    }
}

/// A silent gap, told: the post, the faults, and the subscriber's wire
/// trace (connections, ends, and the post's publisher's messages) from
/// two seconds before the post to a few seconds after it.
fn describe_gap(
    started: Instant,
    injected: &[Injected],
    subscriber: usize,
    log: &SubscriberLog,
    acked: &Acked,
) -> String {
    let offset = |at: Instant| at.saturating_duration_since(started).as_secs_f64();
    let mut out = format!(
        "silent gap: subscriber {subscriber} ({}) never saw p{}/{} (acknowledged at {:.3} s); faults at {:?}\n",
        log.room,
        acked.publisher,
        acked.seq,
        offset(acked.at),
        injected
            .iter()
            .map(|fault| format!("{} {:.3} s", fault.kind.name(), offset(fault.at)))
            .collect::<Vec<_>>(),
    );
    let from = acked
        .at
        .checked_sub(Duration::from_secs(2))
        .unwrap_or(acked.at);
    let to = acked.at + Duration::from_secs(4);
    let publisher = format!("publisher: {}, ", acked.publisher);
    let lines = log.trace.iter().filter(|(at, line)| {
        *at >= from && *at <= to && (!line.contains("Message") || line.contains(&publisher))
    });
    for (at, line) in lines.take(80) {
        let _ = writeln!(out, "  {:.3} s  {line}", offset(*at));
    }
    out
}

/// Whether a subscriber that missed `publisher`'s post `seq` was told: a
/// reset between the last post of that publisher it saw before `seq` and
/// the first it saw after (or the end).
fn gap_is_signalled(seen: &[(Seen, Instant)], publisher: usize, seq: u64) -> bool {
    let of_publisher = |index: &usize| matches!(seen[*index].0, Seen::Message { publisher: p, .. } if p == publisher);
    let seq_at = |index: usize| match seen[index].0 {
        Seen::Message { seq, .. } => seq,
        Seen::Reset => unreachable!("filtered to messages"),
    };
    let before = (0..seen.len())
        .filter(of_publisher)
        .filter(|index| seq_at(*index) < seq)
        .max();
    let after = (0..seen.len())
        .filter(of_publisher)
        .filter(|index| seq_at(*index) > seq)
        .min()
        .unwrap_or(seen.len());
    let from = before.map_or(0, |index| index + 1);
    seen[from..after.max(from)]
        .iter()
        .any(|(seen, _)| *seen == Seen::Reset)
}
