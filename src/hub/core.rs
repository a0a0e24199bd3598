//! The hub's core: this process's table of sessions, their histories and subscribers, and the
//! checks every status passes before its backend sees it.
//!
//! # Invariants
//!
//! - Sequence numbers are per session and per life of a session: a closed or evicted session's
//!   id starts again from 1. Within a life they only grow, and every number up to the session's
//!   head is, for each subscriber, either delivered once or covered by exactly one gap (`log`).
//! - Locks: shard map, then session state; neither is held across an await or while waking a
//!   task (`state`).
//! - The core never asks which backend it has. A status that passed the checks goes to the
//!   backend, which either numbers it here at once ([`Core::append`], the in-memory backend) or
//!   numbers it elsewhere and hands it back through [`Core::deliver`] (a shared backend). One
//!   hub's sessions are numbered by one of the two only, chosen when the hub is made.
//! - `shut_down` is set once, before the shards are drained, and checked under the shard lock
//!   when a session is opened, so no session opens behind a shutdown.
//! - A status of a task is checked against the task's token under its session's lock, where a
//!   cancel sets the token and records the `cancelling` change: so every status of the task
//!   numbered here is numbered before that change, and every later one is refused.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::backend::{Backend, Local, Outgoing, TaskChange};
use super::config::{cut_at_char_boundary, truncate};
use super::counters::Counters;
use super::event::Extra;
use super::log::SessionLog;
use super::state::{End, Session, State, Wake};
use super::task::{Outcome, TaskState, TaskUpdate};
use super::task_table::{Cancel, Full};
use super::{
    HubConfig, NoSessionPolicy, OpenError, PublishError, Published, SessionId, StartTaskError,
    SubscribeError, MAX_KEY_BYTES,
};
use crate::messenger::Payload;
use crate::status::Fields;
use crate::sync::lock;
use crate::task::{TaskRef, TaskShared, Token};

type Shard = Mutex<HashMap<SessionId, Arc<Session>>>;

const SHARDS: usize = 16;

/// Why a session could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ShutDown,
    TooMany,
    Missing,
}

impl From<Refusal> for PublishError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::ShutDown => PublishError::ShutDown,
            Refusal::TooMany => PublishError::TooManySessions,
            // Only asked for when creating is allowed, so a shut-down race at worst.
            Refusal::Missing => PublishError::ShutDown,
        }
    }
}

impl From<Refusal> for OpenError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooMany => OpenError::TooManySessions,
            Refusal::ShutDown | Refusal::Missing => OpenError::ShutDown,
        }
    }
}

impl From<Refusal> for StartTaskError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooMany => StartTaskError::TooManySessions,
            Refusal::ShutDown | Refusal::Missing => StartTaskError::ShutDown,
        }
    }
}

/// What a session lookup counts in the session, under the shard lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Nothing,
    Subscriber,
    RunningTask,
}

impl From<Refusal> for SubscribeError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooMany => SubscribeError::TooManySessions,
            Refusal::ShutDown | Refusal::Missing => SubscribeError::ShutDown,
        }
    }
}

/// Milliseconds since the hub was created, on tokio's clock (so paused time applies).
#[derive(Debug)]
pub(crate) struct Clock {
    epoch: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn now_ms(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Warnings logged once per hub, so a flood of drops cannot flood the log.
#[derive(Debug, Default)]
struct Warned {
    no_session: AtomicBool,
    invalid: AtomicBool,
    limit: AtomicBool,
    truncated: AtomicBool,
    cancelled: AtomicBool,
}

fn first_time(flag: &AtomicBool) -> bool {
    !flag.swap(true, Ordering::Relaxed)
}

/// Whether a shared backend should follow `session` for this process.
fn is_watched(session: &Session) -> bool {
    session.subscribers.load(Ordering::Acquire) > 0
        || session.running_tasks.load(Ordering::Acquire) > 0
}

/// Counts in a session being handed out what the lookup is for (under the shard lock).
fn counted(session: &Session, count: Count) {
    match count {
        Count::Nothing => {}
        Count::Subscriber => {
            session.subscribers.fetch_add(1, Ordering::AcqRel);
        }
        Count::RunningTask => {
            session.running_tasks.fetch_add(1, Ordering::AcqRel);
        }
    }
}

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

/// A status numbered elsewhere, for [`Core::deliver`].
#[derive(Debug)]
pub(crate) struct Delivered {
    pub(crate) seq: u64,
    pub(crate) text: Arc<str>,
    pub(crate) extra: Option<Arc<Extra>>,
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

pub(crate) struct Core {
    pub(crate) config: HubConfig,
    /// [`NoSessionPolicy::Deliver`]'s id, checked once.
    no_session: Option<SessionId>,
    ttl_ms: u64,
    sweep_every_ms: u64,
    shards: Box<[Shard]>,
    pub(crate) clock: Clock,
    pub(crate) counters: Counters,
    shut_down: AtomicBool,
    /// Wakes consumers when the hub shuts down.
    pub(crate) stop: Notify,
    pub(crate) consumers: AtomicUsize,
    pub(crate) consumer_left: Notify,
    next_sweep_ms: AtomicU64,
    warned: Warned,
    /// The messenger that hands its messages straight to this hub (`Hub::attach`).
    pub(crate) attached: Mutex<Option<crate::Messenger>>,
    pub(crate) backend: Box<dyn Backend>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .field("backend", &self.backend)
            .field("stats", &self.counters.snapshot())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

pub(crate) fn lock_shard(shard: &Shard) -> MutexGuard<'_, HashMap<SessionId, Arc<Session>>> {
    lock(shard)
}

impl Core {
    /// A core for a validated `config`.
    pub(crate) fn new(config: HubConfig, backend: Box<dyn Backend>) -> Core {
        let ttl_ms = u64::try_from(config.history_ttl.as_millis()).unwrap_or(u64::MAX);
        // Sweeping a quarter of the TTL apart evicts within 1.25 TTL, and a minute apart at
        // most keeps a long TTL from holding dead sessions much longer than it says.
        let sweep_every_ms = (ttl_ms / 4).clamp(1, 60_000);
        let no_session = match &config.no_session {
            NoSessionPolicy::Deliver(id) => SessionId::new(id.as_str()).ok(),
            NoSessionPolicy::Drop => None,
        };
        Core {
            config,
            no_session,
            ttl_ms,
            sweep_every_ms,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            clock: Clock {
                epoch: tokio::time::Instant::now(),
            },
            counters: Counters::new(),
            shut_down: AtomicBool::new(false),
            stop: Notify::new(),
            consumers: AtomicUsize::new(0),
            consumer_left: Notify::new(),
            next_sweep_ms: AtomicU64::new(sweep_every_ms),
            warned: Warned::default(),
            attached: Mutex::new(None),
            backend,
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Checks a status (hub open, session, id, task, size) and hands it to the backend.
    pub(crate) fn publish(
        &self,
        session: Option<&str>,
        task: Option<&TaskRef>,
        payload: Payload,
    ) -> Result<Published, PublishError> {
        let counters = &self.counters;
        if self.is_shut_down() {
            counters.dropped_closed.add(1);
            tracing::debug!(target: "status_messenger::hub", "hub shut down; status dropped");
            return Err(PublishError::ShutDown);
        }
        let id = match (session, &self.no_session) {
            (Some(id), _) => id,
            (None, Some(id)) => id.as_str(),
            (None, None) => {
                counters.dropped_no_session.add(1);
                if first_time(&self.warned.no_session) {
                    tracing::warn!(
                        target: "status_messenger::hub",
                        "status with no session dropped (no_session policy Drop; \
                         every one is counted in HubStats::dropped_no_session, warned once)"
                    );
                }
                return Err(PublishError::NoSession);
            }
        };
        let Ok(id) = SessionId::check_str(id) else {
            counters.dropped_invalid.add(1);
            if first_time(&self.warned.invalid) {
                tracing::warn!(
                    target: "status_messenger::hub",
                    "status for an invalid session id dropped (counted in \
                     HubStats::dropped_invalid, warned once)"
                );
            }
            return Err(PublishError::InvalidSessionId);
        };
        let (mut text, fields) = match payload {
            Payload::Text(text) => (text, None),
            Payload::Message(message) => {
                let (text, fields, _in_origin) = message.into_parts();
                (text, fields)
            }
        };
        // A task belongs to one session; a status sent to another (a session set inside the
        // task) is that session's alone.
        let task = task.filter(|task| task.session == id);
        if task.as_ref().is_some_and(|task| task.token.is_cancelled()) {
            self.refuse_cancelled(id);
            return Err(PublishError::TaskCancelled);
        }
        let mut cut = truncate(&mut text, self.config.max_status_bytes);
        let extra = self.extra(fields, task, &mut cut);
        if cut {
            counters.truncated.add(1);
            if first_time(&self.warned.truncated) {
                tracing::warn!(
                    target: "status_messenger::hub",
                    max_status_bytes = self.config.max_status_bytes,
                    "status longer than max_status_bytes truncated (counted in \
                     HubStats::truncated, warned once)"
                );
            }
        }
        let now = self.clock.now_ms();
        self.maybe_sweep(now);
        let outgoing = Outgoing {
            session: id,
            text: Arc::from(text),
            extra,
            task,
            at_ms: now,
        };
        self.backend.publish(Local(self), outgoing)
    }

    /// The fields a status keeps, bounded: a key is cut to [`MAX_KEY_BYTES`], data longer
    /// than `max_status_bytes` is left out (either sets `cut`).
    fn extra(
        &self,
        fields: Option<Box<Fields>>,
        task: Option<&TaskRef>,
        cut: &mut bool,
    ) -> Option<Arc<Extra>> {
        if fields.is_none() && task.is_none() {
            return None;
        }
        let mut extra = Extra {
            task: task.map(|task| Arc::clone(&task.id)),
            ..Extra::default()
        };
        if let Some(fields) = fields {
            let Fields {
                progress,
                level,
                key,
                data,
            } = *fields;
            extra.progress = progress;
            extra.level = level;
            extra.key = key.map(|mut key| {
                *cut |= cut_at_char_boundary(&mut key, MAX_KEY_BYTES);
                key.into_boxed_str()
            });
            extra.data = data.filter(|data| {
                let fits = data.len() <= self.config.max_status_bytes;
                *cut |= !fits;
                fits
            });
        }
        Some(Arc::new(extra))
    }

    /// Counts a status refused because its task was cancelled.
    fn refuse_cancelled(&self, session: &str) {
        self.counters.dropped_cancelled.add(1);
        if first_time(&self.warned.cancelled) {
            tracing::debug!(
                target: "status_messenger::hub",
                session,
                "status of a cancelled task refused (counted in HubStats::dropped_cancelled, \
                 logged once)"
            );
        }
    }

    /// Numbers a checked status here, as the next of its session (opening it if needed).
    pub(crate) fn append(&self, status: Outgoing<'_>) -> Result<u64, PublishError> {
        let counters = &self.counters;
        let now = status.at_ms;
        // An eviction can only win against this append when the TTL is shorter than the time
        // between looking the session up and locking it; then the next attempt opens it anew.
        for _ in 0..3 {
            let session = match self.session(status.session, now, true, Count::Nothing) {
                Ok(session) => session,
                Err(refusal) => {
                    self.count_refusal(refusal);
                    return Err(refusal.into());
                }
            };
            let mut state = session.lock();
            match state.end {
                Some(End::Evicted) => continue,
                Some(End::Closed) => {
                    drop(state);
                    counters.dropped_closed.add(1);
                    tracing::debug!(
                        target: "status_messenger::hub",
                        session = %session.id,
                        "session closed; status dropped"
                    );
                    return Err(PublishError::SessionClosed);
                }
                None => {}
            }
            // Under the lock that a cancel takes (see the module invariants).
            if status
                .task
                .as_ref()
                .is_some_and(|task| task.token.is_cancelled())
            {
                drop(state);
                self.refuse_cancelled(status.session);
                return Err(PublishError::TaskCancelled);
            }
            // Expire first: a status arriving after a quiet spell must not revive old history.
            let mut removed = self.trim(&mut state.log, now);
            let seq = state
                .log
                .append(Arc::clone(&status.text), status.extra.clone(), now);
            removed += self.trim(&mut state.log, now);
            let wake = state.take_wakers();
            drop(state);
            counters.accepted.add(1);
            counters.retained.add(1);
            counters.retained.sub(removed);
            wake.wake();
            return Ok(seq);
        }
        counters.dropped_closed.add(1);
        Err(PublishError::SessionClosed)
    }

    /// Puts statuses numbered elsewhere into `id`'s history, and records that numbers up to
    /// `head` were given (those not held reach subscribers as a gap); wakes its subscribers.
    /// Only sessions this process holds take them.
    pub(crate) fn deliver(&self, id: &str, statuses: Vec<Delivered>, head: u64) {
        let Some(session) = lock_shard(self.shard(id)).get(id).cloned() else {
            return;
        };
        let now = self.clock.now_ms();
        let capacity = self.config.history_capacity;
        let mut state = session.lock();
        if state.end.is_some() {
            return;
        }
        // Quiet history expires before the new statuses join it, as in `append`.
        let mut removed = self.trim(&mut state.log, now);
        let before = state.log.len() as u64;
        for Delivered { seq, text, extra } in statuses {
            state.log.insert(seq, text, extra, now, capacity);
        }
        state.log.skip_to(head);
        removed += self.trim(&mut state.log, now);
        let after = state.log.len() as u64;
        let wake = state.take_wakers();
        drop(state);
        session.last_activity_ms.fetch_max(now, Ordering::Relaxed);
        self.counters.retained.add(after + removed - before);
        self.counters.retained.sub(removed);
        wake.wake();
    }

    /// Sessions with local subscribers or tasks running here, with the highest number their
    /// history has held.
    pub(crate) fn watched(&self) -> Vec<(SessionId, u64)> {
        let mut watched = Vec::new();
        for shard in self.shards.iter() {
            for (id, session) in lock_shard(shard).iter() {
                if is_watched(session) {
                    watched.push((id.clone(), session.lock().log.head()));
                }
            }
        }
        watched
    }

    /// The highest number held by `id`'s history, if it has local subscribers or tasks
    /// running here.
    pub(crate) fn watched_head(&self, id: &str) -> Option<u64> {
        let session = lock_shard(self.shard(id)).get(id).cloned()?;
        if !is_watched(&session) {
            return None;
        }
        let head = session.lock().log.head();
        Some(head)
    }

    /// Opens (or marks active) the checked session `id` here.
    pub(crate) fn open(&self, id: &str) -> Result<(), Refusal> {
        let now = self.clock.now_ms();
        self.maybe_sweep(now);
        self.session(id, now, true, Count::Nothing).map(drop)
    }

    /// Whether the checked session `id` is held here.
    pub(crate) fn exists(&self, id: &str) -> bool {
        let now = self.clock.now_ms();
        self.maybe_sweep(now);
        self.session(id, now, false, Count::Nothing).is_ok()
    }

    /// Opens the checked session `id` if needed and counts a subscriber in it.
    pub(crate) fn join(&self, id: &str) -> Result<Arc<Session>, Refusal> {
        let now = self.clock.now_ms();
        self.maybe_sweep(now);
        let session = self.session(id, now, true, Count::Subscriber)?;
        self.counters.subscribers.add(1);
        Ok(session)
    }

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
    /// while a task runs in it here, as while it has subscribers here.
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
        let Some(session) = lock_shard(self.shard(id)).get(id).cloned() else {
            return false;
        };
        let runs = session.lock().tasks.runs_here(task);
        runs
    }

    /// A change of a task of `id` that came back from a shared store, for the subscribers
    /// here, placed after status `after` (`None`: after what the session holds now, as for
    /// what a subscription starts with). Only sessions this process holds take them.
    pub(crate) fn deliver_task(&self, id: &str, change: TaskRecord, after: Option<u64>) {
        let Some(session) = lock_shard(self.shard(id)).get(id).cloned() else {
            return;
        };
        let (told, remembered, wake) = {
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
            (told, remembered, wake)
        };
        if told && remembered > 0 {
            self.counters.tasks.add(1);
        }
        wake.wake();
    }

    /// The tasks the checked session `id` remembers here, oldest first, with their states.
    pub(crate) fn tasks(&self, id: &str) -> Option<Vec<TaskUpdate>> {
        let now = self.clock.now_ms();
        let session = self.session(id, now, false, Count::Nothing).ok()?;
        let state = session.lock();
        Some(state.tasks.snapshot().collect())
    }

    /// Ends the session `id` here: its subscribers get what it holds, then their streams end.
    /// Returns whether this process held it.
    pub(crate) fn close(&self, id: &str) -> bool {
        let removed = lock_shard(self.shard(id)).remove(id);
        match removed {
            Some(session) => {
                self.counters.sessions.sub(1);
                self.end_session(&session, End::Closed);
                true
            }
            None => false,
        }
    }

    /// Refuses statuses from now on and stops the consumers; `false` if it was done before.
    pub(crate) fn stop_accepting(&self) -> bool {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.stop.notify_waiters();
        // Messages sent from now on wait in the channel for the next consumer.
        self.detach();
        true
    }

    /// Ends direct delivery from the attached messenger, if any.
    pub(crate) fn detach(&self) {
        let attached = lock(&self.attached).take();
        if let Some(messenger) = attached {
            messenger.clear_direct();
        }
    }

    pub(crate) fn close_sessions(&self) {
        for shard in self.shards.iter() {
            let sessions: Vec<_> = lock_shard(shard).drain().map(|(_, s)| s).collect();
            self.counters.sessions.sub(sessions.len() as u64);
            for session in sessions {
                self.end_session(&session, End::Closed);
            }
        }
        tracing::debug!(target: "status_messenger::hub", "hub shut down");
    }

    fn shard(&self, id: &str) -> &Shard {
        // FNV-1a: cheap, and it only spreads lock contention; each map hashes with SipHash.
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }

    fn idle_expired(&self, session: &Session, now: u64) -> bool {
        session.subscribers.load(Ordering::Acquire) == 0
            && session.running_tasks.load(Ordering::Acquire) == 0
            && now.saturating_sub(session.last_activity_ms.load(Ordering::Relaxed)) >= self.ttl_ms
    }

    /// Finds (or, with `create`, opens) the session `id` and marks it active; counts in it what
    /// `count` says. Evicts it first if it has been idle past its TTL.
    fn session(
        &self,
        id: &str,
        now: u64,
        create: bool,
        count: Count,
    ) -> Result<Arc<Session>, Refusal> {
        let mut map = lock_shard(self.shard(id));
        // Checked under the shard lock: `shutdown` sets the flag before draining the shards,
        // so no session can be opened behind its back.
        if self.is_shut_down() {
            return Err(Refusal::ShutDown);
        }
        let mut expired = None;
        if let Some(session) = map.get(id) {
            if self.idle_expired(session, now) {
                expired = map.remove(id);
            } else {
                if create {
                    // Opening, publishing and subscribing keep a session alive; looking does not.
                    session.last_activity_ms.fetch_max(now, Ordering::Relaxed);
                }
                counted(session, count);
                return Ok(Arc::clone(session));
            }
        }
        let result = if !create {
            Err(Refusal::Missing)
        } else if self.counters.sessions.get() >= self.config.max_sessions as u64 {
            Err(Refusal::TooMany)
        } else {
            let session = Arc::new(Session::new(SessionId::from_checked(id), now));
            counted(&session, count);
            map.insert(session.id.clone(), Arc::clone(&session));
            self.counters.sessions.add(1);
            Ok(session)
        };
        drop(map);
        if let Some(session) = expired {
            self.counters.sessions.sub(1);
            self.evict(&session);
        }
        result
    }

    fn count_refusal(&self, refusal: Refusal) {
        match refusal {
            Refusal::ShutDown | Refusal::Missing => self.counters.dropped_closed.add(1),
            Refusal::TooMany => {
                self.counters.dropped_session_limit.add(1);
                if first_time(&self.warned.limit) {
                    tracing::warn!(
                        target: "status_messenger::hub",
                        max_sessions = self.config.max_sessions,
                        "session limit reached; statuses for new sessions are dropped \
                         (counted in HubStats::dropped_session_limit, warned once)"
                    );
                }
            }
        }
    }

    /// Ends a session already removed from its shard, asking its tasks to stop.
    fn end_session(&self, session: &Session, end: End) {
        let (freed, forgotten, stopped, wake) = {
            let mut state = session.lock();
            if state.end.is_some() {
                return;
            }
            state.end = Some(end);
            let stopped = state.tasks.cancel_all();
            let (freed, forgotten) = if state.members() == 0 {
                (state.log.clear(), state.tasks.clear())
            } else {
                (0, 0)
            };
            (freed, forgotten, stopped, state.take_wakers())
        };
        self.counters.retained.sub(freed);
        self.counters.tasks.sub(forgotten);
        wake.wake();
        for task in stopped {
            task.token.wake();
        }
    }

    fn evict(&self, session: &Session) {
        self.counters.evicted_sessions.add(1);
        tracing::debug!(
            target: "status_messenger::hub",
            session = %session.id,
            "idle session evicted"
        );
        self.end_session(session, End::Evicted);
    }

    fn maybe_sweep(&self, now: u64) {
        let due = self.next_sweep_ms.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_sweep_ms
                .compare_exchange(
                    due,
                    now.saturating_add(self.sweep_every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.sweep(now);
        }
    }

    fn trim(&self, log: &mut SessionLog, now: u64) -> u64 {
        let config = &self.config;
        log.trim(
            config.history_capacity,
            config.history_expiry,
            self.ttl_ms,
            now,
        )
    }

    /// Evicts idle sessions and trims expired history everywhere, now; returns how many were
    /// evicted.
    pub(crate) fn sweep_now(&self) -> usize {
        let now = self.clock.now_ms();
        self.next_sweep_ms
            .store(now.saturating_add(self.sweep_every_ms), Ordering::Relaxed);
        self.sweep(now)
    }

    fn sweep(&self, now: u64) -> usize {
        let mut evicted = Vec::new();
        for shard in self.shards.iter() {
            let mut map = lock_shard(shard);
            map.retain(|_, session| {
                if self.idle_expired(session, now) {
                    evicted.push(Arc::clone(session));
                    return false;
                }
                let removed = self.trim(&mut session.lock().log, now);
                self.counters.retained.sub(removed);
                true
            });
        }
        self.counters.sessions.sub(evicted.len() as u64);
        for session in &evicted {
            self.evict(session);
        }
        evicted.len()
    }
}
