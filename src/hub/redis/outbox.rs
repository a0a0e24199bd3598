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
//! - A task change is an item of the queue too ([`Item::Task`], queued with
//!   [`Outbox::push_task`]), so it keeps its place among the statuses: the writer sends it
//!   after the calls holding its session's statuses queued before it and before those holding
//!   the ones queued after it, and every process hears them in that order (one connection per
//!   process hears the channel). At most `capacity` changes wait; beyond that one is refused.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};

use super::wire::Body;
use crate::hub::TaskState;
use crate::sync::lock;

/// One thing for the writer to send.
/// What [`Outbox::discard`] threw away.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Discarded {
    pub(super) statuses: usize,
    /// Task changes still queued (not those in a call under way).
    pub(super) queued_task_changes: usize,
}

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
    /// A change of a task started here, to record in its session's tasks hash.
    Task { session: Arc<str>, change: TaskItem },
}

/// A task's change as the task script records it.
#[derive(Debug, Clone)]
pub(super) struct TaskItem {
    pub(super) task: Arc<str>,
    pub(super) state: TaskState,
    pub(super) message: Option<Arc<str>>,
}

impl Item {
    pub(super) fn session(&self) -> &Arc<str> {
        match self {
            Item::Status { session, .. }
            | Item::Skip { session, .. }
            | Item::Close { session, .. }
            | Item::Task { session, .. } => session,
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
    /// `Item::Task` entries in `queue`.
    tasks: usize,
    /// A task change was refused (the log says so once).
    tasks_warned: bool,
    /// Nothing more is written: the writer found the outbox shut and empty, or discarded it.
    ended: bool,
}

#[derive(Debug)]
pub(super) struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    shut: Notify,
    capacity: usize,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            shut: Notify::new(),
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

    /// Queues a change of a task of `session` behind the statuses queued (or dropped) before
    /// it; `false` when `capacity` changes wait already (the change is dropped; the first
    /// refusal is logged) or once nothing more is written (see [`Outbox::is_shut`]). Taken
    /// also while shutting down, so the changes of tasks that end meanwhile are written with
    /// what is drained.
    pub(super) fn push_task(&self, session: &str, change: TaskItem) -> bool {
        let mut state = self.lock();
        if state.ended {
            return false;
        }
        if state.tasks >= self.capacity {
            if !std::mem::replace(&mut state.tasks_warned, true) {
                tracing::warn!(
                    target: "status_messenger::redis",
                    buffer_capacity = self.capacity,
                    "too many task changes wait for redis; the newest are dropped (counted in \
                     HubStats::backend_errors, warned once)"
                );
            }
            return false;
        }
        // The statuses of the session dropped before the change keep their numbers before it,
        // as a later status of it would carry them.
        let session = match state.dropped.remove_entry(session) {
            Some((session, count)) => {
                state.queue.push_back(Item::Skip {
                    session: Arc::clone(&session),
                    count,
                });
                session
            }
            None => Arc::from(session),
        };
        state.queue.push_back(Item::Task { session, change });
        state.tasks += 1;
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

    /// Whether [`shut`](Outbox::shut) was called and nothing is left to take; from then on
    /// task changes are refused too, as the writer ends.
    pub(super) fn is_shut(&self) -> bool {
        let mut state = self.lock();
        let shut = state.closed && state.queue.is_empty() && state.dropped.is_empty();
        state.ended |= shut;
        shut
    }

    /// Moves up to `max` items into `out`; returns the statuses among them, or `None` when
    /// there is nothing to take. They keep their place in the bound until released.
    pub(super) fn try_take(&self, max: usize, out: &mut Vec<Item>) -> Option<usize> {
        let mut state = self.lock();
        if state.queue.is_empty() && state.dropped.is_empty() {
            return None;
        }
        let n = max.min(state.queue.len());
        let mut statuses = 0;
        let mut tasks = 0;
        for item in state.queue.drain(..n) {
            statuses += usize::from(matches!(item, Item::Status { .. }));
            tasks += usize::from(matches!(item, Item::Task { .. }));
            out.push(item);
        }
        state.queued -= statuses;
        state.unconfirmed += statuses;
        state.tasks -= tasks;
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
        if statuses > 0 {
            state.overflowing = false;
        }
    }

    /// Empties the outbox for good; returns what it held: statuses queued or unconfirmed, and
    /// task changes queued.
    pub(super) fn discard(&self) -> Discarded {
        let mut state = self.lock();
        state.closed = true;
        state.ended = true;
        state.queue.clear();
        state.dropped.clear();
        Discarded {
            statuses: std::mem::take(&mut state.queued) + std::mem::take(&mut state.unconfirmed),
            queued_task_changes: std::mem::take(&mut state.tasks),
        }
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
                Item::Task { session, change } => {
                    format!("{session}:{}={}", change.task, change.state.as_str())
                }
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
        let running = TaskItem {
            task: Arc::from("t"),
            state: TaskState::Running,
            message: None,
        };
        assert!(outbox.push_task("a", running));
        outbox.shut();
        assert!(!outbox.is_shut());
        assert_eq!(outbox.push("a", text("3")), Pushed::Closed);
        assert_eq!(
            outbox.discard(),
            Discarded {
                statuses: 2,
                queued_task_changes: 1
            }
        );
        assert!(outbox.is_shut());
    }

    #[test]
    fn task_changes_keep_their_place_and_are_bounded() {
        let outbox = Outbox::new(2);
        let change = |state| TaskItem {
            task: Arc::from("t"),
            state,
            message: None,
        };
        outbox.push("a", text("1"));
        assert!(outbox.push_task("a", change(TaskState::Running)));
        outbox.push("a", text("2"));
        assert!(outbox.push_task("a", change(TaskState::Finished)));
        assert!(
            !outbox.push_task("a", change(TaskState::Failed)),
            "beyond capacity a change is refused"
        );
        let mut out = Vec::new();
        assert_eq!(outbox.try_take(3, &mut out), Some(2));
        assert_eq!(shape(&out), vec!["a:1+0", "a:t=running", "a:2+0"]);
        // Taken changes free their place.
        assert!(outbox.push_task("b", change(TaskState::Running)));
        assert_eq!(outbox.try_take(10, &mut out), Some(0));
        assert_eq!(shape(&out)[3..], ["a:t=finished", "b:t=running"]);
        outbox.shut();
        assert!(
            outbox.push_task("b", change(TaskState::Finished)),
            "taken while draining"
        );
        assert_eq!(outbox.try_take(10, &mut out), Some(0));
        assert!(outbox.is_shut());
        assert!(
            !outbox.push_task("b", change(TaskState::Failed)),
            "refused once the writer found nothing left"
        );
    }

    #[test]
    fn statuses_dropped_before_a_task_change_take_their_numbers_before_it() {
        let outbox = Outbox::new(1);
        let finished = TaskItem {
            task: Arc::from("t"),
            state: TaskState::Finished,
            message: None,
        };
        assert_eq!(outbox.push("a", text("1")), Pushed::Queued);
        assert_eq!(outbox.push("a", text("2")), Pushed::Full { first: true });
        assert!(outbox.push_task("a", finished));
        let mut out = Vec::new();
        assert_eq!(outbox.try_take(10, &mut out), Some(1));
        // The task ended after its second status: the gap for it comes before the change.
        assert_eq!(shape(&out), vec!["a:1+0", "a:skip1", "a:t=finished"]);
    }
}
