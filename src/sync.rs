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
//! Built with `--cfg status_messenger_loom`, the primitives below are `loom`'s and the channel
//! is a small stand-in over a `loom` mutex, so that the model checker (the `loom/` crate) runs
//! the messenger's own code and sees every step where threads can interleave. Nothing else in
//! the crate names the cfg, except a hidden hook that lets the models switch direct delivery.

#[cfg(not(status_messenger_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU64},
    Arc, Mutex, RwLock,
};

#[cfg(status_messenger_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU64},
    Arc, Mutex, RwLock,
};

use std::sync::{LockResult, PoisonError};

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

/// The messenger's channel: `flume`'s unbounded one (see the messenger's invariants for why).
#[cfg(not(status_messenger_loom))]
pub(crate) mod channel {
    pub(crate) use flume::r#async::RecvStream;
    pub(crate) use flume::{unbounded, Receiver, Sender};
}

/// The part of `flume`'s unbounded channel the messenger uses, over one `loom` mutex, with
/// flume's semantics where the messenger relies on them: a send never fails while a receiver
/// lives; `drain` takes everything queued under one lock; a waiting stream is only woken,
/// never handed a message, and a dropped one leaves every message in the queue.
#[cfg(status_messenger_loom)]
pub(crate) mod channel {
    use std::collections::VecDeque;
    use std::fmt;
    use std::marker::PhantomData;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use futures_core::Stream;

    use super::{lock, Arc, Mutex};

    struct Queue<T> {
        items: VecDeque<T>,
        /// The wakers of streams waiting for an item, by stream.
        waiting: Vec<(u64, Waker)>,
        next_stream: u64,
    }

    pub(crate) struct Sender<T> {
        queue: Arc<Mutex<Queue<T>>>,
    }

    pub(crate) struct Receiver<T> {
        queue: Arc<Mutex<Queue<T>>>,
    }

    /// Never returned: the messenger keeps a receiver for as long as its sender lives.
    #[derive(Debug)]
    pub(crate) struct SendError<T>(pub(crate) T);

    /// Returned when the queue is empty.
    #[derive(Debug)]
    pub(crate) struct Empty;

    pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
        let queue = Arc::new(Mutex::new(Queue {
            items: VecDeque::new(),
            waiting: Vec::new(),
            next_stream: 0,
        }));
        (
            Sender {
                queue: Arc::clone(&queue),
            },
            Receiver { queue },
        )
    }

    impl<T> Sender<T> {
        pub(crate) fn send(&self, item: T) -> Result<(), SendError<T>> {
            let woken = {
                let mut queue = lock(&*self.queue);
                queue.items.push_back(item);
                std::mem::take(&mut queue.waiting)
            };
            for (_, waker) in woken {
                waker.wake();
            }
            Ok(())
        }
    }

    impl<T> Receiver<T> {
        pub(crate) fn try_recv(&self) -> Result<T, Empty> {
            lock(&*self.queue).items.pop_front().ok_or(Empty)
        }

        pub(crate) fn drain(&self) -> std::collections::vec_deque::IntoIter<T> {
            std::mem::take(&mut lock(&*self.queue).items).into_iter()
        }

        pub(crate) fn len(&self) -> usize {
            lock(&*self.queue).items.len()
        }

        pub(crate) fn into_stream(self) -> RecvStream<'static, T> {
            let id = {
                let mut queue = lock(&*self.queue);
                queue.next_stream += 1;
                queue.next_stream
            };
            RecvStream {
                receiver: self,
                id,
                _like_flume: PhantomData,
            }
        }
    }

    impl<T> Clone for Receiver<T> {
        fn clone(&self) -> Self {
            Self {
                queue: Arc::clone(&self.queue),
            }
        }
    }

    /// Yields items as they come; never ends, since the messenger keeps a sender.
    pub(crate) struct RecvStream<'a, T> {
        receiver: Receiver<T>,
        id: u64,
        /// flume's stream may borrow its receiver; the messenger only uses `'static` ones.
        _like_flume: PhantomData<&'a ()>,
    }

    impl<T> Stream for RecvStream<'_, T> {
        type Item = T;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            let mut queue = lock(&*self.receiver.queue);
            queue.waiting.retain(|(id, _)| *id != self.id);
            match queue.items.pop_front() {
                Some(item) => Poll::Ready(Some(item)),
                None => {
                    queue.waiting.push((self.id, cx.waker().clone()));
                    Poll::Pending
                }
            }
        }
    }

    impl<T> Drop for RecvStream<'_, T> {
        fn drop(&mut self) {
            lock(&*self.receiver.queue)
                .waiting
                .retain(|(id, _)| *id != self.id);
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
