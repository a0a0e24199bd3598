//! The seam between the hub's core and where sessions live: the [`Backend`] trait, the narrow
//! [`Local`] view and [`BackendHandle`] a backend uses to talk back, and the in-memory backend.
//!
//! # Invariants
//!
//! - The core calls its backend only through [`Backend`]; a backend reaches the core only
//!   through [`Local`] (borrowed for one call) or [`BackendHandle`] (held by its background
//!   tasks, weak, so a backend never keeps a dropped hub alive). Both offer the same few
//!   things: number a status here, deliver statuses numbered elsewhere (which reports what is
//!   missing as a gap), open, look up and close sessions held here, cancel a task held here,
//!   list the sessions with local subscribers, and count.
//! - A backend is chosen when the hub is made and never changes, so the core has no branch
//!   for any backend, and a new one (a Redis Cluster, say) needs no change to the core.
//! - Nothing here blocks: `publish` and `interest` run on the caller's thread, possibly a
//!   runtime worker, and must return at once; the async methods hold no lock across an await.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use super::core::{CancelHere, Core, Delivered, Refusal, TaskRecord};
use super::counters::Counters;
use super::event::Extra;
use super::{
    CancelError, CloseError, LookupError, OpenError, PublishError, Published, SessionId, TaskState,
};
use crate::task::TaskRef;

/// A boxed future, for the backend's async methods (the trait must stay object-safe).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A status that passed the core's checks, on its way to the backend.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    /// A checked session id.
    pub(crate) session: &'a str,
    /// Already cut to `max_status_bytes`.
    pub(crate) text: Arc<str>,
    /// Its fields and task id, already bounded; `None` for a plain status.
    pub(crate) extra: Option<Arc<Extra>>,
    /// The task that added it (of this session), not cancelled when it was checked.
    pub(crate) task: Option<&'a TaskRef>,
    /// When it was added, on the hub's clock.
    pub(crate) at_ms: u64,
}

/// A task's new state, on its way to the backend.
#[derive(Debug)]
#[cfg_attr(
    not(feature = "redis"),
    allow(dead_code, reason = "what a backend that tells elsewhere reads")
)]
pub(crate) struct TaskChange<'a> {
    pub(crate) session: &'a SessionId,
    pub(crate) task: &'a TaskRef,
    pub(crate) state: TaskState,
    pub(crate) message: Option<&'a str>,
}

/// Where a hub's sessions live and who numbers their statuses.
pub(crate) trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Starts background work, once, right after the hub was made.
    fn start(&self, hub: BackendHandle);

    /// Whether this process numbers every status of its sessions, so the local log's head is
    /// the session's newest seq (a shared backend's may trail what the store holds).
    fn numbers_here(&self) -> bool {
        false
    }

    /// Takes a checked status. Never blocks.
    fn publish(&self, hub: Local<'_>, status: Outgoing<'_>) -> Result<Published, PublishError>;

    /// A task of this process changed state (called under its session's lock, so never
    /// blocks and takes no lock of the core). `true` tells the session's subscribers here at
    /// once (a backend that numbers here); `false` leaves that to the backend, which hands the
    /// change back through [`Local::deliver_task`] once its store has it.
    fn task_changed(&self, hub: Local<'_>, change: &TaskChange<'_>) -> bool;

    /// The local subscriber count of `session` may have gone from or to zero.
    fn interest(&self, session: &SessionId);

    /// Opens the checked session `id` (or marks it active).
    fn open<'a>(&'a self, hub: Local<'a>, id: &'a str) -> BoxFuture<'a, Result<(), OpenError>>;

    /// Whether the checked session `id` exists.
    fn exists<'a>(
        &'a self,
        hub: Local<'a>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>>;

    /// Ends the checked session `id` everywhere; whether it existed.
    fn close<'a>(&'a self, hub: Local<'a>, id: &'a str) -> BoxFuture<'a, Result<bool, CloseError>>;

    /// Asks the task `task` of the checked session `id` to stop, wherever it runs; its state
    /// after.
    fn cancel<'a>(
        &'a self,
        hub: Local<'a>,
        id: &'a str,
        task: &'a str,
    ) -> BoxFuture<'a, Result<TaskState, CancelError>>;

    /// The hub is going away: stop background work without waiting.
    fn stop(&self);

    /// The hub shuts down: hand on what was accepted, then stop background work.
    fn shutdown<'a>(&'a self, hub: Local<'a>) -> BoxFuture<'a, ()>;
}

/// The core as a backend may see it during one call.
#[derive(Clone, Copy)]
pub(crate) struct Local<'a>(pub(super) &'a Core);

impl fmt::Debug for Local<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Local").finish()
    }
}

#[cfg_attr(
    not(feature = "redis"),
    allow(dead_code, reason = "what a backend that numbers elsewhere uses")
)]
impl<'a> Local<'a> {
    /// Numbers `status` here as the next of its session.
    pub(crate) fn append(self, status: Outgoing<'_>) -> Result<u64, PublishError> {
        self.0.append(status)
    }

    /// Statuses numbered elsewhere, for the subscribers of `session` here; numbers up to `head`
    /// that are not among them reach those subscribers as a gap.
    pub(crate) fn deliver(self, session: &str, statuses: Vec<Delivered>, head: u64) {
        self.0.deliver(session, statuses, head);
    }

    /// Asks the task `task` of the session `id` to stop, if it was started here.
    pub(crate) fn cancel_here(self, id: &str, task: &str) -> CancelHere {
        self.0.cancel_task(id, task)
    }

    /// Whether the task `task` of the session `id` was started here and has not ended.
    pub(crate) fn runs_here(self, id: &str, task: &str) -> bool {
        self.0.runs_here(id, task)
    }

    /// A task change from the store, for the subscribers of `session` here, placed after
    /// status `after` (`None`: after what the session holds now).
    pub(crate) fn deliver_task(self, session: &str, change: TaskRecord, after: Option<u64>) {
        self.0.deliver_task(session, change, after);
    }

    /// Ends `session` here; whether this process held it.
    pub(crate) fn close(self, session: &str) -> bool {
        self.0.close(session)
    }

    /// Sessions with subscribers here, with the highest number each has held.
    pub(crate) fn watched(self) -> Vec<(SessionId, u64)> {
        self.0.watched()
    }

    /// The highest number `session` has held here, if it has subscribers here.
    pub(crate) fn watched_head(self, session: &str) -> Option<u64> {
        self.0.watched_head(session)
    }

    /// Whether this process holds `session` (not closed, evicted or never opened here).
    pub(crate) fn holds(self, session: &str) -> bool {
        self.0.holds(session)
    }

    /// The hub's counters.
    pub(crate) fn counters(self) -> &'a Counters {
        &self.0.counters
    }

    fn open_here(self, id: &str) -> Result<(), Refusal> {
        self.0.open(id)
    }

    fn exists_here(self, id: &str) -> bool {
        self.0.exists(id)
    }
}

/// What a backend's background tasks hold: a weak way back to the core.
#[derive(Clone)]
pub(crate) struct BackendHandle {
    core: Weak<Core>,
}

impl fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendHandle")
            .field("hub_alive", &(self.core.strong_count() > 0))
            .finish()
    }
}

#[cfg_attr(
    not(feature = "redis"),
    allow(dead_code, reason = "what a backend with background tasks uses")
)]
impl BackendHandle {
    pub(super) fn new(core: &Arc<Core>) -> Self {
        Self {
            core: Arc::downgrade(core),
        }
    }

    /// Runs `f` on the core, or returns `None` once the hub is gone.
    pub(crate) fn with<R>(&self, f: impl FnOnce(Local<'_>) -> R) -> Option<R> {
        let core = self.core.upgrade()?;
        Some(f(Local(&core)))
    }
}

/// Sessions in this process only: statuses are numbered here, at once.
#[derive(Debug, Default)]
pub(crate) struct Memory;

impl Backend for Memory {
    fn start(&self, _hub: BackendHandle) {}

    fn numbers_here(&self) -> bool {
        true
    }

    fn publish(&self, hub: Local<'_>, status: Outgoing<'_>) -> Result<Published, PublishError> {
        hub.append(status).map(Published::Numbered)
    }

    fn task_changed(&self, _hub: Local<'_>, _change: &TaskChange<'_>) -> bool {
        true
    }

    fn interest(&self, _session: &SessionId) {}

    fn open<'a>(&'a self, hub: Local<'a>, id: &'a str) -> BoxFuture<'a, Result<(), OpenError>> {
        let opened = hub.open_here(id).map_err(OpenError::from);
        Box::pin(std::future::ready(opened))
    }

    fn exists<'a>(
        &'a self,
        hub: Local<'a>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>> {
        Box::pin(std::future::ready(Ok(hub.exists_here(id))))
    }

    fn close<'a>(&'a self, hub: Local<'a>, id: &'a str) -> BoxFuture<'a, Result<bool, CloseError>> {
        Box::pin(std::future::ready(Ok(hub.close(id))))
    }

    fn cancel<'a>(
        &'a self,
        hub: Local<'a>,
        id: &'a str,
        task: &'a str,
    ) -> BoxFuture<'a, Result<TaskState, CancelError>> {
        let answer = match hub.cancel_here(id, task) {
            CancelHere::Done(state) => Ok(state),
            CancelHere::UnknownSession => Err(CancelError::UnknownSession),
            // Every task of a hub in memory is started here.
            CancelHere::Elsewhere | CancelHere::UnknownTask => Err(CancelError::UnknownTask),
        };
        Box::pin(std::future::ready(answer))
    }

    fn stop(&self) {}

    fn shutdown<'a>(&'a self, _hub: Local<'a>) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}
