//! The core's side of tasks: starting one in a session, recording its changes and its end,
//! asking it to stop, and taking the changes a shared backend brings back from its store.
//!
//! # Invariants
//!
//! - A task's change is recorded under its session's lock and handed to the backend there
//!   (`changed`), so its place among the session's statuses is the place it was made.
//! - A session's running-task count goes up when a task starts (under the shard lock, by the
//!   lookup) and down exactly once when its handle ends it; while it is above zero the session
//!   is not evicted and a shared backend follows it.
//! - A cancel sets the task's token under its session's lock (see the core's invariants).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Core, Count};
use crate::hub::backend::{Local, TaskChange};
use crate::hub::state::{End, Session, State, Wake};
use crate::hub::task::{Outcome, TaskState, TaskUpdate};
use crate::hub::task_table::{Cancel, Full};
use crate::hub::StartTaskError;
use crate::task::{TaskRef, TaskShared, Token};

/// What [`Core::cancel_task`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelHere {
    /// The task was started here; its state after.
    Done(TaskState),
    /// The session knows the task, started in another process.
    Elsewhere,
    /// The session has no such task here.
    UnknownTask,
    /// The session is not held here.
    UnknownSession,
}

/// A task change as a shared store has it, for [`Core::deliver_task`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRecord {
    pub(crate) task: Arc<str>,
    pub(crate) state: TaskState,
    pub(crate) last_seq: u64,
    pub(crate) message: Option<Arc<str>>,
}

/// A new task id: 128 bits as hex, unique in this process and unpredictable enough that a
/// client cannot guess another's (the standard library's per-process random hash keys,
/// mixed with the time and a counter).
fn new_task_id() -> String {
    use std::hash::{BuildHasher, RandomState};

    static NEXT: AtomicU64 = AtomicU64::new(0);
    let count = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let high = RandomState::new().hash_one((nanos, count, std::process::id()));
    let low = RandomState::new().hash_one((count, nanos));
    format!("{high:016x}{low:016x}")
}

impl Core {
    /// Starts a task in the checked session `id` (opening it if needed): remembered as
    /// `running`, counted as running until its handle ends it.
    pub(crate) fn start_task(&self, id: &str) -> Result<(Arc<Session>, TaskRef), StartTaskError> {
        if self.is_shut_down() {
            return Err(StartTaskError::ShutDown);
        }
        let now = self.clock.now_ms();
        self.maybe_sweep(now);
        // As in `append`: an eviction can win only against a TTL shorter than this step.
        for _ in 0..3 {
            let session = self.session(id, now, true, Count::RunningTask)?;
            let mut state = session.lock();
            let refused = match state.end {
                Some(End::Evicted) => None,
                Some(End::Closed) => Some(StartTaskError::SessionClosed),
                None => {
                    let task = Arc::new(TaskShared {
                        id: Arc::from(new_task_id()),
                        session: session.id.clone(),
                        token: Token::default(),
                    });
                    match state
                        .tasks
                        .add(Arc::clone(&task), self.config.task_capacity)
                    {
                        Ok(forgotten) => {
                            self.changed(&mut state, &task);
                            let wake = state.take_wakers();
                            drop(state);
                            self.counters.tasks.add(1);
                            self.counters.tasks.sub(forgotten);
                            wake.wake();
                            self.running_changed(&session, true);
                            return Ok((session, task));
                        }
                        Err(Full) => {
                            tracing::debug!(
                                target: "status_messenger::hub",
                                session = id,
                                task_capacity = self.config.task_capacity,
                                "task refused: every task the session remembers is still running"
                            );
                            Some(StartTaskError::TooManyTasks)
                        }
                    }
                }
            };
            drop(state);
            session.running_tasks.fetch_sub(1, Ordering::AcqRel);
            if let Some(refused) = refused {
                return Err(refused);
            }
        }
        Err(StartTaskError::SessionClosed)
    }

    /// Hands the current state of `task` (just changed, under `state`'s lock) to the backend,
    /// and tells the session's subscribers at once when the backend says so; a shared backend
    /// tells them when the change comes back from its store ([`Core::deliver_task`]).
    fn changed(&self, state: &mut State, task: &TaskRef) {
        let Some((task_state, message)) = state.tasks.state_of(task) else {
            return;
        };
        let change = TaskChange {
            session: &task.session,
            task,
            state: task_state,
            message: message.as_deref(),
        };
        if self.backend.task_changed(Local(self), &change) {
            let head = state.log.head();
            state.tasks.tell(task, head, self.config.task_capacity);
        }
    }

    /// A task of `session` started (`true`) or ended: a shared backend follows a session
    /// while a task runs in it here, as while it has subscribers here (and until it has heard
    /// back the end of each task that ran here, see `Session::unheard_ends`).
    fn running_changed(&self, session: &Session, started: bool) {
        let running = session.running_tasks.load(Ordering::Acquire);
        if (started && running == 1) || (!started && running == 0) {
            self.backend.interest(&session.id);
        }
    }

    /// Records the end of `task` in `session`, and that it no longer runs; its state after.
    pub(crate) fn end_task(
        &self,
        session: &Session,
        task: &TaskRef,
        outcome: Outcome,
    ) -> TaskState {
        let (ended, wake) = {
            let mut state = session.lock();
            let ended = state.tasks.end(task, outcome);
            let wake = if ended.changed {
                self.changed(&mut state, task);
                state.take_wakers()
            } else {
                Wake::Nobody
            };
            // Before the running count drops, so that a shared backend keeps following the
            // session until it hears this end.
            let unheard = state.tasks.unheard_ends();
            if unheard > 0 {
                // Never longer than the session's time to live.
                let wait = super::UNHEARD_END_WAIT_MS.min(self.ttl_ms);
                let until = self.clock.now_ms().saturating_add(wait);
                session.unheard_until_ms.store(until, Ordering::Release);
            }
            session.unheard_ends.store(unheard, Ordering::Release);
            (ended, wake)
        };
        wake.wake();
        // A session stays for its time to live after its last task ended, for a page that
        // reloads to see how it ended.
        session
            .last_activity_ms
            .fetch_max(self.clock.now_ms(), Ordering::Relaxed);
        let before = session.running_tasks.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "running task count went below zero");
        if before == 1 {
            self.room_may_have_freed();
        }
        self.running_changed(session, false);
        ended.state
    }

    /// Asks the task `task` of `session` to stop, if it was started here; see [`Cancel`].
    /// Its state after, as the contract answers it, when it was.
    pub(crate) fn cancel_in(&self, session: &Session, task: &str) -> Cancel {
        let (found, wake) = {
            let mut state = session.lock();
            let found = state.tasks.cancel(task);
            let wake = match &found {
                Cancel::Now(task) => {
                    self.changed(&mut state, task);
                    state.take_wakers()
                }
                _ => Wake::Nobody,
            };
            (found, wake)
        };
        wake.wake();
        if let Cancel::Now(task) = &found {
            task.token.wake();
        }
        found
    }

    /// Asks the task `task` of the checked session `id` to stop, if it was started here.
    pub(crate) fn cancel_task(&self, id: &str, task: &str) -> CancelHere {
        let now = self.clock.now_ms();
        let Ok(session) = self.session(id, now, false, Count::Nothing) else {
            return CancelHere::UnknownSession;
        };
        match self.cancel_in(&session, task) {
            Cancel::Unknown => CancelHere::UnknownTask,
            Cancel::Elsewhere(_) => CancelHere::Elsewhere,
            Cancel::Was(state) => CancelHere::Done(state),
            Cancel::Now(_) => CancelHere::Done(TaskState::Cancelling),
        }
    }

    /// Whether the task `task` of the checked session `id` runs here (started here, not
    /// ended).
    pub(crate) fn runs_here(&self, id: &str, task: &str) -> bool {
        let Some(session) = self.held(id) else {
            return false;
        };
        let runs = session.lock().tasks.runs_here(task);
        runs
    }

    /// A change of a task of `id` that came back from a shared store, for the subscribers
    /// here, placed after status `after` (`None`: after what the session holds now, as for
    /// what a subscription starts with). Only sessions this process holds take them.
    pub(crate) fn deliver_task(&self, id: &str, change: TaskRecord, after: Option<u64>) {
        let Some(session) = self.held(id) else {
            return;
        };
        let delivered = {
            let mut state = session.lock();
            if state.end.is_some() {
                return;
            }
            let before = state.tasks.len();
            let after = after.unwrap_or_else(|| state.log.head());
            let update = TaskUpdate::new(
                session.id.clone(),
                change.task,
                change.state,
                change.last_seq,
                change.message,
            );
            let told = state
                .tasks
                .deliver(update, after, self.config.task_capacity);
            let remembered = state.tasks.len() as i64 - before as i64;
            let wake = if told {
                state.take_wakers()
            } else {
                Wake::Nobody
            };
            let unheard = state.tasks.unheard_ends();
            let heard_last_end =
                unheard == 0 && session.unheard_ends.swap(unheard, Ordering::AcqRel) > 0;
            (told, remembered, wake, heard_last_end)
        };
        let (told, remembered, wake, heard_last_end) = delivered;
        if told && remembered > 0 {
            self.counters.tasks.add(1);
        }
        wake.wake();
        if heard_last_end {
            // It may no longer need following.
            self.backend.interest(&session.id);
        }
    }

    /// The tasks the checked session `id` remembers here, oldest first, with their states.
    pub(crate) fn tasks(&self, id: &str) -> Option<Vec<TaskUpdate>> {
        let now = self.clock.now_ms();
        let session = self.session(id, now, false, Count::Nothing).ok()?;
        let state = session.lock();
        Some(state.tasks.snapshot().collect())
    }
}
