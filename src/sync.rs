//! Synchronization shared by the whole crate: the one place where lock poisoning is recovered,
//! and the one place that swaps in `loom`'s model-checked primitives.
//!
//! # Invariants
//!
//! Every critical section in this crate only moves or swaps data: no user code runs under a
//! lock, nothing awaits under one, and no step can leave the protected data half-changed. A
//! panic while a lock is held (only possible from a bug or an allocation failure) therefore
//! leaves consistent data behind, so a poisoned lock is taken as it is instead of spreading the
//! panic to every later caller. Code that cannot promise this must not use these helpers.
//!
//! # Model checking
//!
//! Built with `--cfg status_messenger_loom`, the primitives below (locks, atomics, fences, the
//! task waker) are `loom`'s and the channel is a small stand-in over a `loom` mutex, so that the
//! model checker (the `loom/` crate) runs the messenger's own code, its wake-up protocol
//! included, and sees every step where threads can interleave. Nothing else in
//! the crate names the cfg, except a hidden hook that lets the models switch direct delivery.

#[cfg(not(status_messenger_loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicU64},
    Arc, Mutex,
};

#[cfg(status_messenger_loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, AtomicU64},
    Arc, Mutex,
};

/// Pads a value to a cache line of its own, so that writes to it do not take the line away
/// from threads reading its neighbours (in model builds too: it changes layout, nothing else).
pub(crate) use crossbeam_utils::CachePadded;

/// A read-write lock for data read on every status while it is in use (the messenger's direct
/// consumer) and written rarely: crossbeam's sharded lock, whose readers each take the shard
/// of their own thread, so producers on different threads do not bounce one lock word between
/// their caches. The model builds use `loom`'s plain `RwLock`: the sharding changes the cost
/// of a read, not what it guarantees.
#[cfg(not(status_messenger_loom))]
pub(crate) use crossbeam_utils::sync::ShardedLock;
#[cfg(status_messenger_loom)]
pub(crate) use loom::sync::RwLock as ShardedLock;

/// The waker of a task waiting for something another thread provides: `atomic-waker`'s, and
/// `loom`'s in model builds, behind the one interface the messenger uses.
#[derive(Debug, Default)]
pub(crate) struct TaskWaker {
    #[cfg(not(status_messenger_loom))]
    inner: atomic_waker::AtomicWaker,
    #[cfg(status_messenger_loom)]
    inner: loom::future::AtomicWaker,
}

impl TaskWaker {
    /// Makes `waker` the one the next [`wake`](TaskWaker::wake) wakes.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        #[cfg(not(status_messenger_loom))]
        self.inner.register(waker);
        #[cfg(status_messenger_loom)]
        self.inner.register_by_ref(waker);
    }

    /// Wakes the registered waker, if any, and forgets it.
    pub(crate) fn wake(&self) {
        self.inner.wake();
    }

    /// Forgets the registered waker without waking it.
    pub(crate) fn forget(&self) {
        #[cfg(not(status_messenger_loom))]
        drop(self.inner.take());
        #[cfg(status_messenger_loom)]
        drop(self.inner.take_waker());
    }
}

use std::sync::{LockResult, PoisonError};

/// This thread's cell among `cells` for a count that every thread changes, spread over cells
/// on their own cache lines and summed when read: threads take the cells in turn as they first
/// ask, so a few busy threads seldom share one. While the thread's locals are destroyed, any
/// cell will do (the first).
pub(crate) fn thread_cell(cells: usize) -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static TAKEN: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    TAKEN.try_with(|taken| *taken % cells.max(1)).unwrap_or(0)
}

/// Locks `mutex`, recovering from poisoning (see the module invariants).
pub(crate) fn lock<M: Lock + ?Sized>(mutex: &M) -> M::Guard<'_> {
    mutex
        .lock_poisoned()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Takes the read side of `lock`, recovering from poisoning (see the module invariants).
pub(crate) fn read<L: ReadWrite + ?Sized>(lock: &L) -> L::Read<'_> {
    lock.read_poisoned().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the write side of `lock`, recovering from poisoning (see the module invariants).
pub(crate) fn write<L: ReadWrite + ?Sized>(lock: &L) -> L::Write<'_> {
    lock.write_poisoned()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A mutex the helpers above can lock: std's, and `loom`'s in model builds, so that code
/// using either goes through the same helpers.
pub(crate) trait Lock {
    type Guard<'a>
    where
        Self: 'a;

    fn lock_poisoned(&self) -> LockResult<Self::Guard<'_>>;
}

/// A read-write lock the helpers above can take: std's, and `loom`'s in model builds.
pub(crate) trait ReadWrite {
    type Read<'a>
    where
        Self: 'a;
    type Write<'a>
    where
        Self: 'a;

    fn read_poisoned(&self) -> LockResult<Self::Read<'_>>;
    fn write_poisoned(&self) -> LockResult<Self::Write<'_>>;
}

macro_rules! impl_locks {
    ($($path:ident)::+) => {
        impl<T: ?Sized> Lock for $($path)::+::Mutex<T> {
            type Guard<'a> = $($path)::+::MutexGuard<'a, T> where Self: 'a;

            fn lock_poisoned(&self) -> LockResult<Self::Guard<'_>> {
                self.lock()
            }
        }

        impl<T: ?Sized> ReadWrite for $($path)::+::RwLock<T> {
            type Read<'a> = $($path)::+::RwLockReadGuard<'a, T> where Self: 'a;
            type Write<'a> = $($path)::+::RwLockWriteGuard<'a, T> where Self: 'a;

            fn read_poisoned(&self) -> LockResult<Self::Read<'_>> {
                self.read()
            }

            fn write_poisoned(&self) -> LockResult<Self::Write<'_>> {
                self.write()
            }
        }
    };
}

impl_locks!(std::sync);
#[cfg(status_messenger_loom)]
impl_locks!(loom::sync);

#[cfg(not(status_messenger_loom))]
impl<T: ?Sized> ReadWrite for crossbeam_utils::sync::ShardedLock<T> {
    type Read<'a>
        = crossbeam_utils::sync::ShardedLockReadGuard<'a, T>
    where
        Self: 'a;
    type Write<'a>
        = crossbeam_utils::sync::ShardedLockWriteGuard<'a, T>
    where
        Self: 'a;

    fn read_poisoned(&self) -> LockResult<Self::Read<'_>> {
        self.read()
    }

    fn write_poisoned(&self) -> LockResult<Self::Write<'_>> {
        self.write()
    }
}

/// The messenger's channel: crossbeam's unbounded one (see the messenger's invariants for why).
#[cfg(not(status_messenger_loom))]
pub(crate) mod channel {
    pub(crate) use crossbeam_channel::{unbounded, Receiver, SendError, Sender};
}

/// The part of crossbeam's unbounded channel the messenger uses, over one `loom` mutex: a send
/// never fails while a receiver lives, `try_recv` takes the oldest item, `len` counts them. The
/// channel wakes no one: the messenger's own wake-up protocol (see its invariants), which the
/// models check, sits on top of it in both builds.
#[cfg(status_messenger_loom)]
pub(crate) mod channel {
    use std::collections::VecDeque;
    use std::fmt;

    use super::{lock, Arc, Mutex};

    pub(crate) struct Sender<T> {
        queue: Arc<Mutex<VecDeque<T>>>,
    }

    pub(crate) struct Receiver<T> {
        queue: Arc<Mutex<VecDeque<T>>>,
    }

    /// Never returned: the messenger keeps a receiver for as long as its sender lives.
    #[derive(Debug)]
    pub(crate) struct SendError<T>(pub(crate) T);

    /// Returned when the queue is empty.
    #[derive(Debug)]
    pub(crate) struct Empty;

    pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        (
            Sender {
                queue: Arc::clone(&queue),
            },
            Receiver { queue },
        )
    }

    impl<T> Sender<T> {
        pub(crate) fn send(&self, item: T) -> Result<(), SendError<T>> {
            lock(&*self.queue).push_back(item);
            Ok(())
        }
    }

    impl<T> Receiver<T> {
        pub(crate) fn try_recv(&self) -> Result<T, Empty> {
            lock(&*self.queue).pop_front().ok_or(Empty)
        }

        pub(crate) fn len(&self) -> usize {
            lock(&*self.queue).len()
        }
    }

    impl<T> fmt::Debug for Sender<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Sender").finish_non_exhaustive()
        }
    }

    impl<T> fmt::Debug for Receiver<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Receiver").finish_non_exhaustive()
        }
    }
}
