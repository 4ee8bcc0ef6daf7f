//! The one lock helper of the crate.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking it over if a thread panicked while holding it: every
/// structure guarded here stays consistent between statements, so a panic
/// elsewhere must not take every later stream down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
