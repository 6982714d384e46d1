//! Locking a mutex that a panicking thread may have poisoned.
//!
//! The state behind our mutexes (counters, ledgers, views) stays consistent
//! at every point a panic could leave it, so a poisoned lock is used as it
//! is: one failed task must not take the status lines, the audit or the
//! console down with it.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
