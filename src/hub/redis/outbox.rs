//! The bounded buffer between `publish` and the writer task.
//!
//! # Invariants
//!
//! - At most `capacity` statuses wait at once, counting those taken by the writer until Redis
//!   confirms them ([`Outbox::release`]). A status that finds the buffer full is dropped
//!   and counted against its session in `dropped`; the next status of that session that is
//!   queued carries that count (`skip`), and counts left when the queue runs empty become
//!   [`Item::Skip`] items. So the numbers Redis assigns leave exactly one hole per run of
//!   dropped statuses, in the place they would have had, and subscribers get a gap covering
//!   exactly them.
//! - Items of one session leave in the order they came, and a [`Item::Close`] stays behind the
//!   statuses queued before it.
//! - The lock is held only to move items, never across an await.
//! - `pushed` counts the statuses ever queued and `released` those ever confirmed, dropped
//!   after being taken, or discarded; every queued status is released once. So once
//!   `released` reaches the `pushed` of some moment, every status queued before it has been
//!   numbered by Redis (or given up), which is what a task change waits for
//!   ([`Outbox::released_up_to`]).
//! - A task change queued in the task queue sets a barrier at the `pushed` of that moment
//!   ([`Outbox::barrier`], under this lock): statuses queued after it are not taken until the
//!   change is written ([`Outbox::lift`]). With the wait above, a task's change runs in Redis
//!   after every status queued before it and before every status queued after it, so every
//!   process hears them in that order (one connection per process hears the channel).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};

use super::wire::Body;
use crate::sync::lock;

/// One thing for the writer to send.
#[derive(Debug)]
pub(super) enum Item {
    /// A status, after `skip` numbers for statuses dropped before it.
    Status {
        session: Arc<str>,
        status: Body,
        skip: u64,
    },
    /// `count` numbers for statuses dropped with none of their session queued after them.
    Skip { session: Arc<str>, count: u64 },
    /// End the session; `reply` hears whether it existed (dropped unanswered if the close
    /// could not be applied).
    Close {
        session: Arc<str>,
        reply: Option<oneshot::Sender<bool>>,
    },
}

impl Item {
    pub(super) fn session(&self) -> &Arc<str> {
        match self {
            Item::Status { session, .. }
            | Item::Skip { session, .. }
            | Item::Close { session, .. } => session,
        }
    }
}

/// What became of a pushed status.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    Queued,
    /// Dropped; `first` is true for the first drop since Redis last confirmed a status.
    Full {
        first: bool,
    },
    /// The hub is shutting down.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Item>,
    /// `Item::Status` entries in `queue`.
    queued: usize,
    /// Statuses taken and not yet released.
    unconfirmed: usize,
    dropped: HashMap<Arc<str>, u64>,
    overflowing: bool,
    closed: bool,
    /// Statuses ever queued.
    pushed: u64,
    /// Statuses ever released or discarded.
    released: u64,
    /// Statuses ever taken (or discarded).
    taken: u64,
    /// The `pushed` of each task change not yet written, oldest first: no status queued after
    /// the oldest is taken.
    barriers: VecDeque<u64>,
}

#[derive(Debug)]
pub(super) struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    shut: Notify,
    /// Statuses were released.
    progress: Notify,
    capacity: usize,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            shut: Notify::new(),
            progress: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(super) fn push(&self, session: &str, status: Body) -> Pushed {
        let mut state = self.lock();
        if state.closed {
            return Pushed::Closed;
        }
        if state.queued + state.unconfirmed >= self.capacity {
            *state.dropped.entry(Arc::from(session)).or_insert(0) += 1;
            let first = !state.overflowing;
            state.overflowing = true;
            return Pushed::Full { first };
        }
        let (session, skip) = match state.dropped.remove_entry(session) {
            Some((session, skip)) => (session, skip),
            None => (Arc::from(session), 0),
        };
        state.queue.push_back(Item::Status {
            session,
            status,
            skip,
        });
        state.queued += 1;
        state.pushed += 1;
        drop(state);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Queues the end of `session` behind its statuses; whatever of it was dropped needs no gap
    /// any more. `false` when the outbox takes nothing any more (shutting down).
    pub(super) fn close(&self, session: &str, reply: oneshot::Sender<bool>) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        let session = match state.dropped.remove_entry(session) {
            Some((session, _)) => session,
            None => Arc::from(session),
        };
        state.queue.push_back(Item::Close {
            session,
            reply: Some(reply),
        });
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Resolves when something was queued since the last call (or never waited for).
    pub(super) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Resolves once [`shut`](Outbox::shut) was called.
    pub(super) async fn wait_shut(&self) {
        loop {
            let shut = self.shut.notified();
            let mut shut = std::pin::pin!(shut);
            shut.as_mut().enable();
            if self.lock().closed {
                return;
            }
            shut.await;
        }
    }

    /// Items waiting to be taken.
    pub(super) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether [`shut`](Outbox::shut) was called.
    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether [`shut`](Outbox::shut) was called and nothing is left to take.
    pub(super) fn is_shut(&self) -> bool {
        let state = self.lock();
        state.closed && state.queue.is_empty() && state.dropped.is_empty()
    }

    /// Moves up to `max` items into `out`, stopping at the first status queued after a task
    /// change not yet written; returns the statuses among them, or `None` when there is nothing
    /// to take (or only what waits for a task change). They keep their place in the bound until released.
    pub(super) fn try_take(&self, max: usize, out: &mut Vec<Item>) -> Option<usize> {
        let mut state = self.lock();
        if state.queue.is_empty() && state.dropped.is_empty() {
            return None;
        }
        // Statuses that may be taken before the oldest task change not yet written.
        let allowed = state
            .barriers
            .front()
            .map_or(u64::MAX, |&barrier| barrier.saturating_sub(state.taken));
        let mut n = 0;
        let mut statuses = 0;
        for item in &state.queue {
            if n == max {
                break;
            }
            let status = matches!(item, Item::Status { .. });
            if status && statuses as u64 >= allowed {
                break;
            }
            statuses += usize::from(status);
            n += 1;
        }
        if n == 0 && !state.queue.is_empty() {
            return None;
        }
        out.extend(state.queue.drain(..n));
        state.queued -= statuses;
        state.unconfirmed += statuses;
        state.taken += statuses as u64;
        if state.queue.is_empty() {
            out.extend(
                state
                    .dropped
                    .drain()
                    .map(|(session, count)| Item::Skip { session, count }),
            );
        }
        Some(statuses)
    }

    /// Stops taking statuses; the writer still drains what is queued.
    pub(super) fn shut(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.shut.notify_waiters();
    }

    /// Frees the places of `statuses` taken statuses that Redis confirmed (or that were counted
    /// as dropped).
    pub(super) fn release(&self, statuses: usize) {
        let mut state = self.lock();
        state.unconfirmed = state.unconfirmed.saturating_sub(statuses);
        state.released += statuses as u64;
        if statuses > 0 {
            state.overflowing = false;
        }
        drop(state);
        self.progress.notify_waiters();
    }

    /// Runs `queue` with the number of statuses queued so far (for
    /// [`released_up_to`](Outbox::released_up_to)), under the lock so no status is queued
    /// meanwhile; when it returns `true` (the task change was queued), statuses queued from now
    /// on wait for the matching [`lift`](Outbox::lift).
    pub(super) fn barrier(&self, queue: impl FnOnce(u64) -> bool) -> bool {
        let mut state = self.lock();
        let pushed = state.pushed;
        let queued = queue(pushed);
        if queued {
            state.barriers.push_back(pushed);
        }
        queued
    }

    /// The oldest task change was written (or given up): statuses queued after it may go.
    pub(super) fn lift(&self) {
        self.lock().barriers.pop_front();
        self.ready.notify_one();
    }

    /// No task change will be written any more (the task writer stopped): nothing waits for one.
    pub(super) fn lift_all(&self) {
        self.lock().barriers.clear();
        self.ready.notify_one();
    }

    /// Resolves once `pushed` statuses have been released: every status queued before
    /// [`pushed`](Outbox::pushed) returned that number has been numbered (or given up).
    pub(super) async fn released_up_to(&self, pushed: u64) {
        loop {
            let progress = self.progress.notified();
            let mut progress = std::pin::pin!(progress);
            progress.as_mut().enable();
            if self.lock().released >= pushed {
                return;
            }
            progress.await;
        }
    }

    /// Empties the outbox for good; returns the statuses it held (queued or unconfirmed).
    pub(super) fn discard(&self) -> usize {
        let mut state = self.lock();
        state.closed = true;
        state.queue.clear();
        state.dropped.clear();
        state.released = state.pushed;
        state.taken = state.pushed;
        let discarded = std::mem::take(&mut state.queued) + std::mem::take(&mut state.unconfirmed);
        drop(state);
        self.progress.notify_waiters();
        discarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str) -> Body {
        Body {
            text: Arc::from(text),
            extra: None,
        }
    }

    fn shape(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Item::Status {
                    session,
                    status,
                    skip,
                } => format!("{session}:{}+{skip}", status.text),
                Item::Skip { session, count } => format!("{session}:skip{count}"),
                Item::Close { session, .. } => format!("{session}:close"),
            })
            .collect()
    }

    #[test]
    fn drops_beyond_capacity_become_skips_in_place() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push("a", text("1")), Pushed::Queued);
        assert_eq!(outbox.push("b", text("1")), Pushed::Queued);
        assert_eq!(outbox.push("a", text("2")), Pushed::Full { first: true });
        assert_eq!(outbox.push("a", text("3")), Pushed::Full { first: false });
        assert_eq!(outbox.push("b", text("2")), Pushed::Full { first: false });
        let mut out = Vec::new();
        assert_eq!(outbox.try_take(1, &mut out), Some(1));
        // Taken is not confirmed: still no room.
        assert_eq!(outbox.push("a", text("x")), Pushed::Full { first: false });
        outbox.release(1);
        // Room for one: it carries the three numbers dropped before it.
        assert_eq!(outbox.push("a", text("4")), Pushed::Queued);
        assert_eq!(outbox.try_take(10, &mut out), Some(2));
        let mut shapes = shape(&out);
        shapes[3..].sort();
        assert_eq!(shapes, vec!["a:1+0", "b:1+0", "a:4+3", "b:skip1"]);
    }

    #[test]
    fn close_follows_queued_statuses_and_forgets_drops() {
        let outbox = Outbox::new(1);
        outbox.push("a", text("1"));
        outbox.push("a", text("2"));
        let (reply, _answer) = oneshot::channel();
        assert!(outbox.close("a", reply));
        let mut out = Vec::new();
        assert_eq!(outbox.try_take(10, &mut out), Some(1));
        assert_eq!(shape(&out), vec!["a:1+0", "a:close"]);
        assert_eq!(outbox.try_take(10, &mut out), None);
    }

    #[test]
    fn shut_refuses_and_discard_counts() {
        let outbox = Outbox::new(4);
        outbox.push("a", text("1"));
        outbox.push("a", text("2"));
        outbox.shut();
        assert!(!outbox.is_shut());
        assert_eq!(outbox.push("a", text("3")), Pushed::Closed);
        assert_eq!(outbox.discard(), 2);
        assert!(outbox.is_shut());
    }

    #[test]
    fn statuses_queued_after_a_task_change_wait_until_it_is_written() {
        let outbox = Outbox::new(8);
        outbox.push("a", text("1"));
        assert!(outbox.barrier(|pushed| pushed == 1));
        outbox.push("a", text("2"));
        assert!(
            !outbox.barrier(|_| false),
            "a change not queued sets no barrier"
        );
        assert!(outbox.barrier(|pushed| pushed == 2));
        outbox.push("b", text("1"));
        let mut out = Vec::new();
        assert_eq!(outbox.try_take(10, &mut out), Some(1));
        assert_eq!(shape(&out), vec!["a:1+0"]);
        assert_eq!(outbox.try_take(10, &mut out), None);
        outbox.lift();
        assert_eq!(outbox.try_take(10, &mut out), Some(1));
        assert_eq!(shape(&out), vec!["a:1+0", "a:2+0"]);
        assert_eq!(outbox.try_take(10, &mut out), None);
        outbox.lift_all();
        assert_eq!(outbox.try_take(10, &mut out), Some(1));
        assert_eq!(shape(&out)[2], "b:1+0");
    }
}
