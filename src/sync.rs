//! Lock helpers shared by the whole crate: the one place where lock poisoning is recovered.
//!
//! # Invariants
//!
//! Every critical section in this crate only moves or swaps data: no user code runs under a
//! lock, nothing awaits under one, and no step can leave the protected data half-changed. A
//! panic while a lock is held (only possible from a bug or an allocation failure) therefore
//! leaves consistent data behind, so a poisoned lock is taken as it is instead of spreading the
//! panic to every later caller. Code that cannot promise this must not use these helpers.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, recovering from poisoning (see the module invariants).
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the read side of `lock`, recovering from poisoning (see the module invariants).
pub(crate) fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the write side of `lock`, recovering from poisoning (see the module invariants).
pub(crate) fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
