//! One shared clock for the batches that [`SseBody`](crate::response::body::SseBody)
//! holds back.
//!
//! A connection that wrote a moment ago and has a small batch ready parks its
//! waker here until its batch window ends, instead of writing at once. The
//! clock wakes every parked connection whose deadline has come, once per
//! [`TICK`]; there is no timer per connection.
//!
//! The clock is a plain OS thread, not a task: it belongs to no Tokio runtime,
//! so it keeps ticking whichever runtimes come and go (tests start one per
//! test), and a blocked runtime cannot hold back another runtime's batches.
//! It sleeps on a condition variable while nobody is parked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Waker;
use std::time::Duration;

/// The clock's resolution: a held batch goes out within one tick after its
/// window ends.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Deadlines are kept in a ring of this many one-tick slots, so no window can
/// be longer than `SLOTS - 1` ticks (longer ones are shortened to that).
const SLOTS: usize = 256;

/// The tick number of a clock that has no thread: nothing may park on it.
const NO_TICKS: u64 = u64::MAX;

struct Pacer {
    /// Incremented at every tick (under the lock), before that tick's wakers
    /// are woken; read without the lock.
    tick: AtomicU64,
    state: Mutex<State>,
    someone_parked: Condvar,
}

struct State {
    /// `slots[t % SLOTS]` holds the wakers due at tick `t`.
    slots: Vec<Vec<Waker>>,
    parked: usize,
    /// The last woken slot's list, kept to reuse its allocation.
    spare: Vec<Waker>,
}

static PACER: OnceLock<Pacer> = OnceLock::new();

fn pacer() -> &'static Pacer {
    PACER.get_or_init(|| {
        let started = std::thread::Builder::new()
            .name("sse-batch-clock".into())
            .spawn(run);
        let first_tick = match started {
            Ok(_) => 0,
            Err(error) => {
                // Nothing would wake a held batch: `park` refuses, and every
                // batch goes out at once.
                tracing::warn!(%error, "could not start the SSE batch clock; batches are not held");
                NO_TICKS
            }
        };
        Pacer {
            tick: AtomicU64::new(first_tick),
            state: Mutex::new(State {
                slots: (0..SLOTS).map(|_| Vec::new()).collect(),
                parked: 0,
                spare: Vec::new(),
            }),
            someone_parked: Condvar::new(),
        }
    })
}

fn lock(pacer: &Pacer) -> MutexGuard<'_, State> {
    // The lock guards plain lists that every step leaves consistent.
    crate::sync::lock(&pacer.state)
}

/// Parks `waker` for `wait` (rounded up to whole ticks, at least one, at most
/// `SLOTS - 1` ticks). Returns the tick at which it is due, to compare with
/// [`now`]; `None` when the clock has no thread, so the caller must not wait.
pub(crate) fn park(waker: &Waker, wait: Duration) -> Option<u64> {
    let pacer = pacer();
    let ticks = wait
        .as_micros()
        .div_ceil(TICK.as_micros())
        .clamp(1, SLOTS as u128 - 1) as u64;
    let mut state = lock(pacer);
    let now = pacer.tick.load(Ordering::Acquire);
    if now == NO_TICKS {
        return None;
    }
    let due = now + ticks;
    state.slots[(due % SLOTS as u64) as usize].push(waker.clone());
    state.parked += 1;
    let first = state.parked == 1;
    drop(state);
    if first {
        pacer.someone_parked.notify_one();
    }
    Some(due)
}

/// How much longer than its window a burst's batch is held, in 1/4096
/// ticks. Raised a step by each held batch that goes out two ticks or more
/// after its due tick (the runtime runs behind: it is saturated), lowered a
/// step by each one that goes out on time. Written without a lock by
/// whichever task writes; a lost update only slows it.
static STRETCH: AtomicU64 = AtomicU64::new(0);

/// One step of [`STRETCH`]: at a saturated fan-out's 100,000 held writes a
/// second, it moves by about 25 ticks a second.
const STRETCH_STEP: u64 = 1;

/// [`STRETCH`]'s units per tick.
const STRETCH_UNITS_PER_TICK: u64 = 4096;

/// The longest stretch, in ticks.
const MAX_STRETCH_TICKS: u64 = 10;

/// Notes that a held batch due at tick `due` goes out now.
pub(crate) fn record_lateness(due: u64) {
    let stretch = STRETCH.load(Ordering::Relaxed);
    let next = next_stretch(stretch, now().saturating_sub(due));
    if next != stretch {
        STRETCH.store(next, Ordering::Relaxed);
    }
}

/// The stretch after a held batch went out `late` ticks after its due tick.
/// One tick late says nothing: a batch woken at the end of a tick runs in
/// the next.
fn next_stretch(stretch: u64, late: u64) -> u64 {
    match late {
        0 => stretch.saturating_sub(STRETCH_STEP),
        1 => stretch,
        _ => (stretch + STRETCH_STEP).min(MAX_STRETCH_TICKS * STRETCH_UNITS_PER_TICK),
    }
}

/// How much longer than its window a burst's batch is held now, at most
/// `window`. A runtime that runs behind (a process fanning out as fast as it
/// can) writes less often until it keeps up again; one that keeps up holds
/// for the window alone.
pub(crate) fn stretch(window: Duration) -> Duration {
    let units = STRETCH.load(Ordering::Relaxed);
    let stretch = Duration::from_nanos(units * TICK.as_nanos() as u64 / STRETCH_UNITS_PER_TICK);
    stretch.min(window)
}

/// The current tick number.
pub(crate) fn now() -> u64 {
    pacer().tick.load(Ordering::Acquire)
}

fn run() {
    // `run` starts inside `get_or_init`; wait for the cell to be filled.
    let pacer = loop {
        if let Some(pacer) = PACER.get() {
            break pacer;
        }
        std::thread::yield_now();
    };
    loop {
        let mut state = lock(pacer);
        while state.parked == 0 {
            state = pacer
                .someone_parked
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(state);
        std::thread::sleep(TICK);
        let mut state = lock(pacer);
        let tick = pacer.tick.fetch_add(1, Ordering::AcqRel) + 1;
        let spare = std::mem::take(&mut state.spare);
        let mut due = std::mem::replace(&mut state.slots[(tick % SLOTS as u64) as usize], spare);
        state.parked -= due.len();
        drop(state);
        for waker in due.drain(..) {
            waker.wake();
        }
        lock(pacer).spare = due;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;
    use std::time::Instant;

    /// A waker's target that counts how often it is woken.
    pub(in crate::response) struct CountWakes(pub(in crate::response) AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_parked_waker_is_woken_once_its_window_has_passed() {
        let count = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let started = Instant::now();
        let before = now();
        let due = park(&waker, Duration::from_millis(5)).expect("the clock runs");
        assert!(due >= before + 5, "due five ticks on");
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "never woken");
            std::thread::sleep(Duration::from_micros(200));
        }
        // The window is counted in the clock's ticks: a clock thread that
        // was descheduled catches up several ticks at once, so wall time
        // says nothing here; the tick does.
        assert!(now() >= due, "woken at its tick, not before");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken exactly once");
    }

    #[test]
    fn the_stretch_grows_while_batches_go_out_late_and_shrinks_while_on_time() {
        let cap = MAX_STRETCH_TICKS * STRETCH_UNITS_PER_TICK;
        assert_eq!(next_stretch(0, 0), 0, "never below none");
        assert_eq!(next_stretch(0, 1), 0, "one tick late says nothing");
        assert_eq!(next_stretch(0, 2), STRETCH_STEP);
        assert_eq!(next_stretch(5, 7), 5 + STRETCH_STEP);
        assert_eq!(next_stretch(5, 0), 5 - STRETCH_STEP);
        assert_eq!(next_stretch(cap, 9), cap, "never past the cap");
        let saturated = (0..cap + 10).fold(0, |stretch, _| next_stretch(stretch, 3));
        assert_eq!(saturated, cap);
        let calm = (0..cap).fold(saturated, |stretch, _| next_stretch(stretch, 0));
        assert_eq!(calm, 0, "back to the window alone");
    }

    #[test]
    fn windows_longer_than_the_ring_are_shortened_not_wrapped() {
        let count = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let before = now();
        let due = park(&waker, Duration::from_secs(3600)).expect("the clock runs");
        assert!(
            due - before <= SLOTS as u64,
            "due within one turn of the ring"
        );
        let started = Instant::now();
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "never woken");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
