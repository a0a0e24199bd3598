//! One session inside the hub: its log, its tasks, its end state and the wakers of its waiting
//! readers.
//!
//! # Invariants
//!
//! - Lock order is shard map, then session state. Nothing takes a shard lock while holding a
//!   session's state lock, and no lock is held across an `.await` or while waking a task.
//! - `subscribers`, `running_tasks` and `last_activity_ms` decide eviction. A subscriber, or a
//!   started task, is counted under the shard lock before the session is handed to it, and a
//!   publisher refreshes `last_activity_ms` under the shard lock before it appends, so a sweep
//!   (which holds that lock) never evicts a session that is about to be used or whose task is
//!   still running. A subscription that leaves, and a task that ends, refresh
//!   `last_activity_ms` before they decrement their count.
//! - Once `end` is set it never changes: an ended session is out of every shard map and takes
//!   no new status, and its tasks are asked to stop. Readers of a `Closed` session still get
//!   what it holds, then end; its log and tasks are freed when the last of them leaves (or at
//!   once when it has none).
//! - A waker slot belongs to one subscription from its creation until it leaves; a `Some` in a
//!   slot means that subscription waits for the next status. Publishing takes every waiting
//!   waker under the state lock and wakes them after releasing it, so a reader that found
//!   nothing and parked under the same lock cannot miss the status.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use super::log::SessionLog;
use super::task_table::Tasks;
use super::SessionId;
use crate::sync::lock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// By `close_session` or `shutdown`: readers drain, then end.
    Closed,
    /// Idle for its time to live with no subscriber: nobody reads it any more.
    Evicted,
}

/// Laid out in the order a status touches it (`repr(C)`: with the `Arc`'s counts, the
/// eviction counts, the lock word, `end` and `waiting` share the first cache line, and the log
/// and the first waker slot follow it), so that publishing to one of many sessions, whose
/// state is rarely still in cache, touches the fewest lines it can.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Session {
    pub(crate) subscribers: AtomicUsize,
    /// Tasks started here whose handle has not recorded an end.
    pub(crate) running_tasks: AtomicUsize,
    pub(crate) last_activity_ms: AtomicU64,
    state: Mutex<State>,
    /// Tasks started here that have ended but whose end a shared backend has not yet told
    /// back (see [`Tasks::unheard_ends`]): the backend keeps following the session until it
    /// has, so that what this process tells of them afterwards is how they ended.
    pub(crate) unheard_ends: AtomicUsize,
    /// Until when (hub milliseconds) `unheard_ends` keeps the session followed: an end that
    /// never reached the store (lost in an outage, refused by it) is not waited for longer.
    pub(crate) unheard_until_ms: AtomicU64,
    /// Last: the hot paths use the map's key or the subscription's own copy.
    pub(crate) id: SessionId,
}

/// Hot fields first (see [`Session`]); what only joining, leaving and tasks use goes last.
///
/// Waker slots are numbered from 0: slot 0 is `first`, kept inline because most sessions
/// have one reader (a page), whose park and wake then touch no cache line beyond the log's;
/// slot `n` above it is `more[n - 1]`.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct State {
    pub(crate) end: Option<End>,
    waiting: usize,
    pub(crate) log: SessionLog,
    first: Option<Waker>,
    /// Slots handed out since the last time none was in use (free ones included).
    slots: usize,
    more: Vec<Option<Waker>>,
    free: Vec<usize>,
    pub(crate) tasks: Tasks,
}

/// Wakers taken under the lock, woken after it is released.
#[derive(Debug)]
pub(crate) enum Wake {
    Nobody,
    One(Waker),
    Many(Vec<Waker>),
}

impl Wake {
    pub(crate) fn wake(self) {
        match self {
            Wake::Nobody => {}
            Wake::One(waker) => waker.wake(),
            Wake::Many(wakers) => wakers.into_iter().for_each(Waker::wake),
        }
    }
}

impl Session {
    pub(crate) fn new(id: SessionId, now_ms: u64) -> Self {
        Self {
            subscribers: AtomicUsize::new(0),
            running_tasks: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(now_ms),
            state: Mutex::new(State::default()),
            unheard_ends: AtomicUsize::new(0),
            unheard_until_ms: AtomicU64::new(0),
            id,
        }
    }

    /// The state lock (see `crate::sync` on poisoning).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Whether the session holds no statuses, if that can be told without waiting: `None`
    /// while another thread holds its state. For callers that hold a shard lock, which must
    /// not wait on a session's lock.
    pub(crate) fn holds_no_statuses_now(&self) -> Option<bool> {
        match self.state.try_lock() {
            Ok(state) => Some(state.log.len() == 0),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                Some(poisoned.into_inner().log.len() == 0)
            }
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

impl State {
    /// The waker slot `slot`, if it was handed out.
    fn slot_mut(&mut self, slot: usize) -> Option<&mut Option<Waker>> {
        if slot >= self.slots {
            return None;
        }
        match slot.checked_sub(1) {
            None => Some(&mut self.first),
            Some(index) => self.more.get_mut(index),
        }
    }

    /// Gives a new subscription its waker slot.
    pub(crate) fn join(&mut self) -> usize {
        match self.free.pop() {
            Some(slot) => slot,
            None => {
                if self.slots > 0 {
                    self.more.push(None);
                }
                self.slots += 1;
                self.slots - 1
            }
        }
    }

    /// Frees a leaving subscription's slot.
    pub(crate) fn leave(&mut self, slot: usize) {
        if let Some(waker) = self.slot_mut(slot) {
            if waker.take().is_some() {
                debug_assert!(self.waiting > 0, "waiting count out of step with the slots");
                self.waiting -= 1;
            }
            self.free.push(slot);
        }
        if self.free.len() == self.slots {
            self.slots = 0;
            self.more = Vec::new();
            self.free = Vec::new();
        }
    }

    pub(crate) fn members(&self) -> usize {
        self.slots - self.free.len()
    }

    /// Records that the subscription in `slot` waits for the next status.
    pub(crate) fn park(&mut self, slot: usize, waker: &Waker) {
        let Some(parked) = self.slot_mut(slot) else {
            return;
        };
        match parked {
            Some(old) if old.will_wake(waker) => {}
            Some(old) => old.clone_from(waker),
            None => {
                *parked = Some(waker.clone());
                self.waiting += 1;
            }
        }
    }

    /// Takes the wakers of every waiting subscription.
    pub(crate) fn take_wakers(&mut self) -> Wake {
        match self.waiting {
            0 => Wake::Nobody,
            1 => {
                self.waiting = 0;
                let waker = match self.first.take() {
                    Some(waker) => Some(waker),
                    None => self.more.iter_mut().find_map(Option::take),
                };
                match waker {
                    Some(waker) => Wake::One(waker),
                    None => Wake::Nobody,
                }
            }
            n => {
                self.waiting = 0;
                let mut wakers = Vec::with_capacity(n);
                wakers.extend(self.first.take());
                wakers.extend(self.more.iter_mut().filter_map(Option::take));
                Wake::Many(wakers)
            }
        }
    }
}
