//! One session's tasks: what it remembers of each, the recent changes, and merging those
//! changes into what a subscriber reads.
//!
//! # Invariants
//!
//! - At most `capacity` ([`HubConfig::task_capacity`](crate::HubConfig::task_capacity)) tasks
//!   are remembered, oldest first. A new one makes room by forgetting the oldest task that has
//!   ended; when none has, it is refused. A forgotten task is never told about again.
//! - Changes are numbered 1, 2, 3, ... per session (`last_change` is the newest) and kept in
//!   `changes`, at most [`CHANGES_PER_TASK`] per remembered task; older ones leave from the
//!   front. Their `last_seq` (the log's head when each was made) never decreases along them.
//! - A subscriber holds a change cursor: every change numbered above it is still owed to it.
//!   It is handed a change only once it has read every status numbered up to that change's
//!   `last_seq`, and before any later one. A subscriber whose cursor fell behind the oldest
//!   change kept is instead handed the current state of every task changed since, at once, as
//!   on a new subscription.

use std::collections::VecDeque;
use std::sync::Arc;

use super::task::{Outcome, TaskState, TaskUpdate};
use super::{Event, SessionId};
use crate::task::TaskRef;

/// Changes kept per remembered task: `running`, `cancelling` and a final state.
pub(crate) const CHANGES_PER_TASK: usize = 3;

#[derive(Debug)]
struct Remembered {
    task: TaskRef,
    state: TaskState,
    message: Option<Arc<str>>,
    last_seq: u64,
    /// The number of its latest change.
    change: u64,
}

impl Remembered {
    fn update(&self) -> TaskUpdate {
        TaskUpdate::new(
            self.task.session.clone(),
            Arc::clone(&self.task.id),
            self.state,
            self.last_seq,
            self.message.clone(),
        )
    }
}

#[derive(Debug)]
struct Change {
    number: u64,
    update: TaskUpdate,
}

/// The table refused a new task: every remembered one is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// What [`Tasks::end`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ended {
    pub(crate) state: TaskState,
    /// The task was remembered and had not ended before.
    pub(crate) changed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Tasks {
    remembered: Vec<Remembered>,
    changes: VecDeque<Change>,
    last_change: u64,
}

impl Tasks {
    /// The number of the newest change (0 before the first).
    pub(crate) fn last_change(&self) -> u64 {
        self.last_change
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.remembered.iter().position(|r| &*r.task.id == id)
    }

    fn record(&mut self, at: usize, capacity: usize) {
        self.last_change += 1;
        let remembered = &mut self.remembered[at];
        remembered.change = self.last_change;
        let update = remembered.update();
        self.changes.push_back(Change {
            number: self.last_change,
            update,
        });
        let keep = capacity.saturating_mul(CHANGES_PER_TASK).max(1);
        while self.changes.len() > keep {
            self.changes.pop_front();
        }
    }

    /// Remembers a new task, `running` as of `head`; returns how many were forgotten to make
    /// room (0 or 1).
    pub(crate) fn add(&mut self, task: TaskRef, head: u64, capacity: usize) -> Result<u64, Full> {
        let mut forgotten = 0;
        if self.remembered.len() >= capacity {
            let oldest_ended = self
                .remembered
                .iter()
                .position(|r| r.state.is_final())
                .ok_or(Full)?;
            self.remembered.remove(oldest_ended);
            forgotten = 1;
        }
        self.remembered.push(Remembered {
            task,
            state: TaskState::Running,
            message: None,
            last_seq: head,
            change: 0,
        });
        self.record(self.remembered.len() - 1, capacity);
        Ok(forgotten)
    }

    /// Asks the task `id` to stop as of `head`: sets its token (the caller wakes it after
    /// releasing the lock) and records `cancelling` if it was running. Returns its state
    /// after, and its token to wake when it was set now; `None` for a task not remembered.
    pub(crate) fn cancel(
        &mut self,
        id: &str,
        head: u64,
        capacity: usize,
    ) -> Option<(TaskState, Option<TaskRef>)> {
        let at = self.find(id)?;
        let remembered = &mut self.remembered[at];
        if remembered.state != TaskState::Running {
            return Some((remembered.state, None));
        }
        remembered.task.token.set();
        remembered.state = TaskState::Cancelling;
        remembered.last_seq = head;
        let token = Arc::clone(&remembered.task);
        self.record(at, capacity);
        Some((TaskState::Cancelling, Some(token)))
    }

    /// Records the end of `task` as of `head`: `cancelled` if its token is set, else
    /// `outcome`. A task ended before keeps its state; one forgotten is not told about.
    pub(crate) fn end(
        &mut self,
        task: &TaskRef,
        outcome: Outcome,
        head: u64,
        capacity: usize,
    ) -> Ended {
        let (state, message) = match outcome {
            _ if task.token.is_cancelled() => (TaskState::Cancelled, None),
            Outcome::Finished => (TaskState::Finished, None),
            Outcome::Failed(message) => (TaskState::Failed, Some(message)),
        };
        let Some(at) = self
            .remembered
            .iter()
            .position(|r| Arc::ptr_eq(&r.task, task))
        else {
            return Ended {
                state,
                changed: false,
            };
        };
        let remembered = &mut self.remembered[at];
        if remembered.state.is_final() {
            return Ended {
                state: remembered.state,
                changed: false,
            };
        }
        remembered.state = state;
        remembered.message = message;
        remembered.last_seq = head;
        self.record(at, capacity);
        Ended {
            state,
            changed: true,
        }
    }

    /// Sets the token of every task that has not ended (its session ends); returns them, to
    /// be woken after the lock is released.
    pub(crate) fn cancel_all(&mut self) -> Vec<TaskRef> {
        self.remembered
            .iter()
            .filter(|r| !r.state.is_final() && r.task.token.set())
            .map(|r| Arc::clone(&r.task))
            .collect()
    }

    /// Forgets everything; returns how many tasks were remembered.
    pub(crate) fn clear(&mut self) -> u64 {
        let forgotten = self.remembered.len() as u64;
        *self = Tasks {
            last_change: self.last_change,
            ..Tasks::default()
        };
        forgotten
    }

    /// The current state of every remembered task, oldest first.
    pub(crate) fn snapshot(&self) -> impl Iterator<Item = TaskUpdate> + '_ {
        self.remembered.iter().map(Remembered::update)
    }

    /// Merges the changes owed to a subscriber into `out`, the items it has just read (`out`
    /// holds nothing else), up to `read_to`, the last number those items account for. Moves
    /// `cursor` past what it hands over; see the module invariants.
    pub(crate) fn merge(
        &self,
        session: &SessionId,
        cursor: &mut u64,
        read_to: u64,
        out: &mut VecDeque<Event>,
    ) {
        if *cursor >= self.last_change {
            return;
        }
        let oldest = self.last_change + 1 - self.changes.len() as u64;
        if *cursor + 1 < oldest {
            // Changes it was owed left before it read them: the current states instead.
            let mut missed: Vec<&Remembered> = self
                .remembered
                .iter()
                .filter(|r| r.change > *cursor)
                .collect();
            missed.sort_by_key(|r| r.change);
            for (at, remembered) in missed.into_iter().enumerate() {
                debug_assert_eq!(&remembered.task.session, session);
                out.insert(at, Event::Task(remembered.update()));
            }
            *cursor = self.last_change;
            return;
        }
        let skip = usize::try_from(*cursor + 1 - oldest).unwrap_or(usize::MAX);
        let mut at = 0;
        for change in self.changes.iter().skip(skip) {
            let after = change.update.last_seq();
            if after > read_to {
                break;
            }
            // After every item that starts at or below `after`.
            while out.get(at).is_some_and(|item| first_number(item) <= after) {
                at += 1;
            }
            out.insert(at, Event::Task(change.update.clone()));
            at += 1;
            *cursor = change.number;
        }
    }
}

/// The first status number an item accounts for (0 for a task update).
fn first_number(event: &Event) -> u64 {
    match event {
        Event::Status(status) => status.seq(),
        Event::Gap(gap) => gap.from(),
        Event::Task(_) => 0,
    }
}
