//! One session's tasks: what it remembers of each, the recent changes told to its subscribers,
//! and merging those changes into what a subscriber reads.
//!
//! # Invariants
//!
//! - At most `capacity` ([`HubConfig::task_capacity`](crate::HubConfig::task_capacity)) tasks
//!   are remembered, oldest first. A new one makes room by forgetting the oldest task that has
//!   ended (a task known from another process may also make room by forgetting the oldest one
//!   known that way); when none can go, a task started here is refused. A forgotten task is
//!   never told about again.
//! - A task's `state` is what this process knows: for a task started here, what its handle
//!   did; for one started elsewhere, what the shared backend said. Its `told` is the last
//!   update its subscribers were told, which new subscriptions start with. In memory every
//!   change is told at once ([`Tasks::tell`]); a shared backend tells a change when it comes
//!   back from the shared store ([`Tasks::deliver`]), in the order the store has it among the
//!   statuses, so `told` may trail `state` for a round trip. The backend follows a session
//!   until the end of each task started here has come back ([`Tasks::unheard_ends`]), even with
//!   no subscriber and no task running here, for at most a minute (an end that never reached
//!   the store stays untold, as the store has it). Neither
//!   ever goes back: a state moves from `running` to `cancelling` to a final state.
//! - Changes told are numbered 1, 2, 3, ... per session (`last_change` is the newest) and kept
//!   in `changes`, at most [`CHANGES_PER_TASK`] per remembered task; older ones leave from the
//!   front. Each has a place (`after`): the number of the status it follows. Places never
//!   decrease along the changes.
//! - A subscriber holds a change cursor: every change numbered above it is still owed to it.
//!   It is handed a change only once it has read every status numbered up to the change's
//!   place, and before any later one. A subscriber whose cursor fell behind the oldest change
//!   kept is instead handed the last update told of every task changed since, at once, as on a
//!   new subscription.

use std::collections::VecDeque;
use std::sync::Arc;

use super::task::{Outcome, TaskState, TaskUpdate};
use super::{Event, SessionId};
use crate::task::{TaskRef, TaskShared, Token};

/// Changes kept per remembered task: `running`, `cancelling` and a final state.
pub(crate) const CHANGES_PER_TASK: usize = 3;

#[derive(Debug)]
struct Remembered {
    task: TaskRef,
    /// Started here (its handle is in this process), as opposed to known from elsewhere.
    here: bool,
    state: TaskState,
    message: Option<Arc<str>>,
    /// What subscribers were last told; `None` until the first change is told.
    told: Option<TaskUpdate>,
    /// The number of the latest change told.
    change: u64,
}

impl Remembered {
    /// Started here, and what its subscribers were told is behind what it is: with a shared
    /// backend, a change not yet back from the store.
    fn told_behind(&self) -> bool {
        self.here
            && self
                .told
                .as_ref()
                .is_none_or(|told| rank(told.state()) < rank(self.state))
    }
}

#[derive(Debug)]
struct Change {
    number: u64,
    /// The number of the status it follows.
    after: u64,
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

/// What [`Tasks::cancel`] found.
#[derive(Debug)]
pub(crate) enum Cancel {
    /// No such task is remembered.
    Unknown,
    /// The task runs in another process; its state as last heard.
    Elsewhere(TaskState),
    /// It was not running (cancelling already, or ended): nothing changed.
    Was(TaskState),
    /// Its token is set now and it is `cancelling`: wake it once the lock is released.
    Now(TaskRef),
}

/// How many more slots to make when a full table or change list takes one more: half its
/// length, at least one, instead of the standard library's first four. Most sessions run a
/// task or two, and a session's table lives as long as its history does, so unused slots
/// would cost every idle session hundreds of bytes.
fn growth(len: usize) -> usize {
    (len / 2).max(1)
}

/// Where a state stands in a task's life; a state never moves to a lower rank.
fn rank(state: TaskState) -> u8 {
    match state {
        TaskState::Running => 0,
        TaskState::Cancelling => 1,
        _ => 2,
    }
}

#[derive(Debug, Default)]
pub(crate) struct Tasks {
    remembered: Vec<Remembered>,
    changes: VecDeque<Change>,
    last_change: u64,
}

impl Tasks {
    pub(crate) fn len(&self) -> usize {
        self.remembered.len()
    }

    /// The number of the newest change told (0 before the first).
    pub(crate) fn last_change(&self) -> u64 {
        self.last_change
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.remembered.iter().position(|r| &*r.task.id == id)
    }

    fn find_task(&self, task: &TaskRef) -> Option<usize> {
        self.remembered
            .iter()
            .position(|r| Arc::ptr_eq(&r.task, task))
    }

    /// Tells `update` of the task at `at`, placed after status `after`.
    fn record(&mut self, at: usize, update: TaskUpdate, after: u64, capacity: usize) {
        self.last_change += 1;
        let remembered = &mut self.remembered[at];
        remembered.change = self.last_change;
        remembered.told = Some(update.clone());
        if self.changes.len() == self.changes.capacity() {
            self.changes.reserve_exact(growth(self.changes.len()));
        }
        self.changes.push_back(Change {
            number: self.last_change,
            after,
            update,
        });
        let keep = capacity.saturating_mul(CHANGES_PER_TASK).max(1);
        while self.changes.len() > keep {
            self.changes.pop_front();
        }
    }

    /// Makes room for one more task; `here` says whether it is started here. Returns how
    /// many were forgotten (0 or 1), or `Full`.
    fn make_room(&mut self, here: bool, capacity: usize) -> Result<u64, Full> {
        if self.remembered.len() < capacity {
            return Ok(0);
        }
        let oldest = self
            .remembered
            .iter()
            .position(|r| r.state.is_final())
            .or_else(|| {
                // Room for news from elsewhere: what is least known here goes first.
                (!here)
                    .then(|| self.remembered.iter().position(|r| !r.here))
                    .flatten()
            })
            .ok_or(Full)?;
        self.remembered.remove(oldest);
        Ok(1)
    }

    /// Remembers a new task started here, `running`, told of by [`Tasks::tell`]; returns how
    /// many were forgotten to make room (0 or 1).
    pub(crate) fn add(&mut self, task: TaskRef, capacity: usize) -> Result<u64, Full> {
        let forgotten = self.make_room(true, capacity)?;
        if self.remembered.len() == self.remembered.capacity() {
            self.remembered.reserve_exact(growth(self.remembered.len()));
        }
        self.remembered.push(Remembered {
            task,
            here: true,
            state: TaskState::Running,
            message: None,
            told: None,
            change: 0,
        });
        Ok(forgotten)
    }

    /// Asks the task `id` to stop: sets its token (the caller wakes it after releasing the
    /// lock) and makes it `cancelling` if it was running; see [`Cancel`].
    pub(crate) fn cancel(&mut self, id: &str) -> Cancel {
        let Some(at) = self.find(id) else {
            return Cancel::Unknown;
        };
        let remembered = &mut self.remembered[at];
        if !remembered.here {
            return Cancel::Elsewhere(remembered.state);
        }
        if remembered.state != TaskState::Running {
            return Cancel::Was(remembered.state);
        }
        remembered.task.token.set();
        remembered.state = TaskState::Cancelling;
        Cancel::Now(Arc::clone(&remembered.task))
    }

    /// Records the end of `task`: `cancelled` if its token is set, else `outcome`. A task
    /// ended before keeps its state; one forgotten is not told about.
    pub(crate) fn end(&mut self, task: &TaskRef, outcome: Outcome) -> Ended {
        let (state, message) = match outcome {
            _ if task.token.is_cancelled() => (TaskState::Cancelled, None),
            Outcome::Finished => (TaskState::Finished, None),
            Outcome::Failed(message) => (TaskState::Failed, Some(message)),
        };
        let Some(at) = self.find_task(task) else {
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
        Ended {
            state,
            changed: true,
        }
    }

    /// The state and message of `task` as this process knows it, if remembered.
    pub(crate) fn state_of(&self, task: &TaskRef) -> Option<(TaskState, Option<Arc<str>>)> {
        let remembered = &self.remembered[self.find_task(task)?];
        Some((remembered.state, remembered.message.clone()))
    }

    /// Tells subscribers the current state of `task`, as of status `head` (in memory, at
    /// once after each change).
    pub(crate) fn tell(&mut self, task: &TaskRef, head: u64, capacity: usize) {
        let Some(at) = self.find_task(task) else {
            return;
        };
        self.tell_at(at, head, capacity);
    }

    /// Tells subscribers the current state of the task at `at`, as of status `head`.
    fn tell_at(&mut self, at: usize, head: u64, capacity: usize) {
        let remembered = &self.remembered[at];
        let update = TaskUpdate::new(
            remembered.task.session.clone(),
            Arc::clone(&remembered.task.id),
            remembered.state,
            head,
            remembered.message.clone(),
        );
        self.record(at, update, head, capacity);
    }

    /// Tells subscribers `update`, which came from the shared store, placed after status
    /// `after`: of a task started here (its state is already known) or elsewhere (remembered
    /// from now on). Whether it was told: an update told before, or one that would go back
    /// in the task's life, is not.
    pub(crate) fn deliver(&mut self, update: TaskUpdate, after: u64, capacity: usize) -> bool {
        let at = match self.find(update.task()) {
            Some(at) => {
                let remembered = &mut self.remembered[at];
                if let Some(told) = &remembered.told {
                    let same =
                        told.state() == update.state() && told.last_seq() == update.last_seq();
                    if same || rank(update.state()) < rank(told.state()) {
                        return false;
                    }
                }
                if !remembered.here && rank(update.state()) >= rank(remembered.state) {
                    remembered.state = update.state();
                    remembered.message = update.message().map(Arc::from);
                }
                at
            }
            None => {
                if self.make_room(false, capacity).is_err() {
                    return false;
                }
                let task = Arc::new(TaskShared {
                    id: Arc::from(update.task()),
                    session: update.session().clone(),
                    token: Token::default(),
                });
                if self.remembered.len() == self.remembered.capacity() {
                    self.remembered.reserve_exact(growth(self.remembered.len()));
                }
                self.remembered.push(Remembered {
                    task,
                    here: false,
                    state: update.state(),
                    message: update.message().map(Arc::from),
                    told: None,
                    change: 0,
                });
                self.remembered.len() - 1
            }
        };
        self.record(at, update, after, capacity);
        true
    }

    /// Tells subscribers, as of status `head`, the state of each task started here whose
    /// change has not come back from the shared store (what was told is behind it): for when
    /// the store will tell nothing more, as the hub shuts down. In memory every change is told
    /// at once, so this tells nothing.
    pub(crate) fn tell_unheard(&mut self, head: u64, capacity: usize) {
        for at in 0..self.remembered.len() {
            if self.remembered[at].told_behind() {
                self.tell_at(at, head, capacity);
            }
        }
    }

    /// The ids of the tasks started here that run and were not asked to stop.
    pub(crate) fn running_here(&self) -> Vec<Arc<str>> {
        self.remembered
            .iter()
            .filter(|r| r.here && r.state == TaskState::Running)
            .map(|r| Arc::clone(&r.task.id))
            .collect()
    }

    /// Whether the task `id` is remembered, started here and not ended.
    pub(crate) fn runs_here(&self, id: &str) -> bool {
        self.find(id)
            .is_some_and(|at| self.remembered[at].here && !self.remembered[at].state.is_final())
    }

    /// Sets the token of every task started here that has not ended (its session ends);
    /// returns them, to be woken after the lock is released.
    pub(crate) fn cancel_all(&mut self) -> Vec<TaskRef> {
        self.remembered
            .iter()
            .filter(|r| r.here && !r.state.is_final() && r.task.token.set())
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

    /// How many tasks started here have ended while what was last told of them is not an
    /// end: with a shared backend, ends whose change has not come back from the store yet
    /// (in memory an end is told at once, so none).
    pub(crate) fn unheard_ends(&self) -> usize {
        self.remembered
            .iter()
            .filter(|r| r.state.is_final() && r.told_behind())
            .count()
    }

    /// The last update told of every remembered task, oldest first.
    pub(crate) fn snapshot(&self) -> impl Iterator<Item = TaskUpdate> + '_ {
        self.remembered.iter().filter_map(|r| r.told.clone())
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
            // Changes it was owed left before it read them: the last told of each instead.
            let mut missed: Vec<&Remembered> = self
                .remembered
                .iter()
                .filter(|r| r.change > *cursor)
                .collect();
            missed.sort_by_key(|r| r.change);
            let missed = missed.into_iter().filter_map(|r| r.told.clone());
            for (at, update) in missed.enumerate() {
                debug_assert_eq!(update.session(), session);
                out.insert(at, Event::Task(update));
            }
            *cursor = self.last_change;
            return;
        }
        let skip = usize::try_from(*cursor + 1 - oldest).unwrap_or(usize::MAX);
        let mut at = 0;
        for change in self.changes.iter().skip(skip) {
            if change.after > read_to {
                break;
            }
            // After every item that starts at or below its place.
            while out
                .get(at)
                .is_some_and(|item| first_number(item) <= change.after)
            {
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
