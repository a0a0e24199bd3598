//! Tasks: one run of tool work in a session, with a lifecycle the hub tracks and tells its
//! subscribers about. [`Task`] is the handle that owns a task's end, [`TaskState`] its states,
//! [`TaskUpdate`] what subscribers get when one changes.
//!
//! # Invariants
//!
//! - A task's state moves only forward: `running`, then optionally `cancelling`, then one of
//!   the final states `finished`, `failed` or `cancelled`; a final state never changes. A task
//!   that was asked to stop ends `cancelled`, however its tool returned.
//! - A [`Task`] records its task's end exactly once: by [`Task::finish`], [`Task::fail`], at
//!   the end of [`Task::run`] or of the future of [`Task::wrap`], or when it is dropped.
//! - Once the hub has recorded that a task is asked to stop (its token is set under the
//!   session's lock), no later status of that task enters the session's history, so no status
//!   of the task is numbered above the `last_seq` of its `cancelling` or `cancelled` update.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use super::core::Core;
use super::running::RunningPermit;
use super::state::Session;
use super::task_table::Cancel;
use super::SessionId;
use crate::messenger::{self, Messenger};
use crate::task::{Cancelled, TaskRef};
use crate::SessionContext;

/// Where a task is in its life; the contract's task frame `"state"`.
///
/// # Examples
///
/// ```
/// use status_messenger::TaskState;
///
/// assert_eq!(TaskState::Cancelling.as_str(), "cancelling");
/// assert!(TaskState::Cancelled.is_final());
/// assert!(!TaskState::Running.is_final());
/// assert_eq!("finished".parse::<TaskState>(), Ok(TaskState::Finished));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskState {
    /// Started (or reserved) and not asked to stop: `"running"`.
    Running,
    /// Asked to stop; its tool has not returned yet: `"cancelling"`.
    Cancelling,
    /// Its tool returned and no stop was asked: `"finished"`.
    Finished,
    /// Its tool failed ([`Task::fail`], a panic, or a handle dropped before the end), with a
    /// message ([`TaskUpdate::message`]): `"failed"`.
    Failed,
    /// Its tool returned after a stop was asked: `"cancelled"`.
    Cancelled,
}

impl TaskState {
    /// The contract's name of the state: `"running"`, `"cancelling"`, `"finished"`,
    /// `"failed"` or `"cancelled"`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::TaskState::Running.as_str(), "running");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Cancelling => "cancelling",
            TaskState::Finished => "finished",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Whether the task has ended (`finished`, `failed` or `cancelled`): the state never
    /// changes again.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::TaskState;
    ///
    /// assert!(TaskState::Failed.is_final());
    /// assert!(!TaskState::Cancelling.is_final());
    /// ```
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskState::Finished | TaskState::Failed | TaskState::Cancelled
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`TaskState`]; from `str::parse`.
///
/// # Examples
///
/// ```
/// let error = "paused".parse::<status_messenger::TaskState>().unwrap_err();
/// assert_eq!(error.to_string(), "unknown task state");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownTaskState;

impl fmt::Display for UnknownTaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown task state")
    }
}

impl std::error::Error for UnknownTaskState {}

impl FromStr for TaskState {
    type Err = UnknownTaskState;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            "running" => TaskState::Running,
            "cancelling" => TaskState::Cancelling,
            "finished" => TaskState::Finished,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            _ => return Err(UnknownTaskState),
        })
    }
}

/// A task's state as a subscriber gets it ([`Event::Task`](crate::Event::Task)): whenever the
/// task changes state, and first thing on every subscription, for every task the session still
/// knows (so a page that reloads shows each task's current state). The update a subscription
/// starts with is the task's latest one as it was made, `last_seq` included: a running task's
/// statuses may already be numbered above it.
///
/// It is the contract's task frame `{"type": "task", "session", "task", "state",
/// "last_seq"}`. Updates carry no number of their own: statuses stay numbered without gaps.
/// Each live update comes after every status numbered up to its `last_seq` and before any
/// later one, and no status of a task is numbered above the `last_seq` of its `cancelling` or
/// `cancelled` update.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Event, Hub, TaskState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.publish(Some("s1"), "before").unwrap();
/// let task = hub.start_task("s1").unwrap();
/// let id = task.id().to_owned();
/// task.finish();
///
/// // A page that connects now gets the task's state first, then the history.
/// let mut page = hub.subscribe("s1", None);
/// let Some(Event::Task(update)) = page.next().await else { panic!() };
/// assert_eq!((update.session().as_str(), update.task()), ("s1", id.as_str()));
/// assert_eq!((update.state(), update.last_seq(), update.message()), (TaskState::Finished, 1, None));
/// assert_eq!(page.next().await.and_then(|e| e.seq()), Some(1));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskUpdate {
    session: SessionId,
    task: Arc<str>,
    state: TaskState,
    last_seq: u64,
    message: Option<Arc<str>>,
}

impl TaskUpdate {
    pub(crate) fn new(
        session: SessionId,
        task: Arc<str>,
        state: TaskState,
        last_seq: u64,
        message: Option<Arc<str>>,
    ) -> Self {
        Self {
            session,
            task,
            state,
            last_seq,
            message,
        }
    }

    /// The session (the frame's `"session"`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// let _task = hub.start_task("s1").unwrap();
    /// let Some(Event::Task(update)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(update.session(), "s1");
    /// # }
    /// ```
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// The task's id (the frame's `"task"`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// let Some(Event::Task(update)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(update.task(), task.id());
    /// # }
    /// ```
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The state (the frame's `"state"`, [`TaskState::as_str`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub, TaskState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// let _task = hub.start_task("s1").unwrap();
    /// let Some(Event::Task(update)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(update.state(), TaskState::Running);
    /// # }
    /// ```
    pub fn state(&self) -> TaskState {
        self.state
    }

    /// The session's newest status number when the task took this state (the frame's
    /// `"last_seq"`; 0 before the session's first status).
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s1"), "one").unwrap();
    /// hub.publish(Some("s1"), "two").unwrap();
    /// let _task = hub.start_task("s1").unwrap();
    /// let Some(Event::Task(update)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(update.last_seq(), 2);
    /// # }
    /// ```
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Why the task failed, for a `failed` task (a field a frame may add as `"message"`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// hub.start_task("s1").unwrap().fail("the search service is down");
    /// let Some(Event::Task(update)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(update.message(), Some("the search service is down"));
    /// # }
    /// ```
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

/// How a task's tool ended, as its handle reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Finished,
    Failed(Arc<str>),
}

/// One task of a session, started with [`Hub::start_task`](crate::Hub::start_task): its id,
/// its cancellation token, and the end of its life, which this handle records.
///
/// Run its tool in it: [`run`](Task::run) synchronous code here (inside
/// `tokio::task::spawn_blocking`, actix's `web::block`, a `std::thread`), or
/// [`wrap`](Task::wrap) a future for `tokio::spawn`. Either makes the task current (with its
/// session, and the scoped default messenger of the code that started it, if one was set),
/// then records the end when the work returns. Inside, tool code that never sees the task asks [`is_cancelled`](crate::is_cancelled)
/// or awaits [`cancelled`](crate::cancelled), and every status it adds carries the task's id.
/// To reach more threads, hand them [`context`](Task::context) and end the task yourself with
/// [`finish`](Task::finish) or [`fail`](Task::fail).
///
/// The end recorded is `cancelled` if a stop was asked by then, else `finished`, or `failed`
/// (with [`fail`](Task::fail)'s message, "the task's tool panicked" when dropped while
/// unwinding, or "the task was dropped before it ended" otherwise). Closing its session or
/// shutting its hub down asks the task to stop; closing a subscription never does.
///
/// `Send` and `Sync`; not `Clone`, since it owns the end.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{add_status_message, is_cancelled, Event, Hub, TaskState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.attach_global().unwrap();
/// let task = hub.start_task("user-1").unwrap();
/// let id = task.id().to_owned();
///
/// // A synchronous tool on the blocking pool; it knows neither session nor task.
/// fn tool() {
///     for step in 1..=3 {
///         if is_cancelled() {
///             return;
///         }
///         add_status_message(format!("step {step}/3"));
///     }
/// }
/// tokio::task::spawn_blocking(move || task.run(tool)).await.unwrap();
///
/// let mut page = hub.subscribe("user-1", None);
/// let Some(Event::Task(update)) = page.next().await else { panic!() };
/// assert_eq!((update.task(), update.state()), (id.as_str(), TaskState::Finished));
/// let Some(Event::Status(step)) = page.next().await else { panic!() };
/// assert_eq!((step.text(), step.task()), ("step 1/3", Some(id.as_str())));
/// # }
/// ```
pub struct Task {
    core: Arc<Core>,
    session: Arc<Session>,
    shared: TaskRef,
    /// The scoped default messenger where the task was started, if one was set.
    messenger: Option<Messenger>,
    /// Set once the end is recorded.
    ended: bool,
    /// Its place under the hub's running-task caps, given back when the end is recorded.
    running: Option<RunningPermit>,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("session", &self.shared.session)
            .field("id", &self.shared.id)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Task {
    pub(crate) fn new(
        core: Arc<Core>,
        session: Arc<Session>,
        shared: TaskRef,
        running: RunningPermit,
    ) -> Self {
        Self {
            core,
            session,
            shared,
            messenger: messenger::scoped_default(),
            ended: false,
            running: Some(running),
        }
    }

    /// The task's id: what a client cancels it by, and the `task` of its statuses.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let (a, b) = (hub.start_task("s1").unwrap(), hub.start_task("s1").unwrap());
    /// assert_ne!(a.id(), b.id());
    /// assert_eq!(a.id().len(), 32);
    /// ```
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The session it belongs to.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert_eq!(hub.start_task("s1").unwrap().session(), "s1");
    /// ```
    pub fn session(&self) -> &SessionId {
        &self.shared.session
    }

    /// Whether the task was asked to stop; what [`is_cancelled`](crate::is_cancelled) answers
    /// inside it.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// assert!(!task.is_cancelled());
    /// task.cancel();
    /// assert!(task.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.shared.token.is_cancelled()
    }

    /// Completes when the task is asked to stop (at once if it was already).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// let stop = task.cancelled();
    /// hub.cancel_task("s1", task.id()).await.unwrap();
    /// stop.await;
    /// # }
    /// ```
    pub fn cancelled(&self) -> Cancelled {
        Cancelled::new(Some(Arc::clone(&self.shared)))
    }

    /// Asks the task to stop, as [`Hub::cancel_task`](crate::Hub::cancel_task) does; returns
    /// its state after the request (`cancelling`, or the final state it already had).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::TaskState;
    ///
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// assert_eq!(task.cancel(), TaskState::Cancelling);
    /// assert_eq!(task.cancel(), TaskState::Cancelling);
    /// assert_eq!(task.finish(), TaskState::Cancelled);
    /// ```
    pub fn cancel(&self) -> TaskState {
        match self.core.cancel_in(&self.session, &self.shared.id) {
            Cancel::Now(_) => TaskState::Cancelling,
            Cancel::Was(state) | Cancel::Elsewhere(state) => state,
            Cancel::Unknown => {
                // Its session ended and forgot it; the token is what the tool reads.
                if self.shared.token.set() {
                    self.shared.token.wake();
                }
                TaskState::Cancelling
            }
        }
    }

    /// A context carrying this task, its session, and the scoped default messenger that was
    /// set where the task was started (else the caller's, if one is set):
    /// [`SessionContext::run`] or [`wrap`](SessionContext::wrap) work in it on any thread. The
    /// task stays this handle's to end.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// let ctx = task.context();
    /// let seen = std::thread::spawn(move || ctx.run(status_messenger::current_task_id))
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(seen.as_deref(), Some(task.id()));
    /// ```
    pub fn context(&self) -> SessionContext {
        let messenger = self.messenger.clone().or_else(messenger::scoped_default);
        SessionContext::for_task(Arc::clone(&self.shared), messenger)
    }

    /// Runs synchronous `f` here in the task's [`context`](Task::context), then records the
    /// end: `cancelled` if a stop was asked by then, else `finished` (`failed` if `f`
    /// panics, and the panic goes on).
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// let pages = task.run(|| 3);
    /// assert_eq!(pages, 3);
    /// ```
    pub fn run<R>(mut self, f: impl FnOnce() -> R) -> R {
        let output = self.context().run(f);
        self.end(Outcome::Finished);
        output
    }

    /// Wraps `fut` so that it runs in the task's [`context`](Task::context) wherever it is
    /// polled, and records the end when it completes (as [`run`](Task::run) does), or `failed`
    /// (`cancelled` after a stop was asked) if it is dropped before.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// let id = task.id().to_owned();
    /// let seen = tokio::spawn(task.wrap(async { status_messenger::current_task_id() }));
    /// assert_eq!(seen.await.unwrap(), Some(id));
    /// # }
    /// ```
    pub fn wrap<F: Future>(mut self, fut: F) -> impl Future<Output = F::Output> {
        let run = self.context().wrap(fut);
        async move {
            let output = run.await;
            self.end(Outcome::Finished);
            output
        }
    }

    /// Records that the task's tool returned: `finished`, or `cancelled` if a stop was asked;
    /// returns the state recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::TaskState;
    ///
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert_eq!(hub.start_task("s1").unwrap().finish(), TaskState::Finished);
    /// ```
    pub fn finish(mut self) -> TaskState {
        self.end(Outcome::Finished)
    }

    /// Records that the task's tool failed, with `message`: `failed`, or `cancelled` if a stop
    /// was asked; returns the state recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::TaskState;
    ///
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// assert_eq!(task.fail("no results"), TaskState::Failed);
    /// ```
    pub fn fail(mut self, message: impl Into<String>) -> TaskState {
        let message: String = message.into();
        self.end(Outcome::Failed(Arc::from(message)))
    }

    fn end(&mut self, outcome: Outcome) -> TaskState {
        if self.ended {
            return TaskState::Finished;
        }
        self.ended = true;
        let state = self.core.end_task(&self.session, &self.shared, outcome);
        // After the end is recorded, so a task started in its place never sees it running.
        self.running = None;
        state
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if !self.ended {
            let message = if std::thread::panicking() {
                "the task's tool panicked"
            } else {
                "the task was dropped before it ended"
            };
            self.end(Outcome::Failed(Arc::from(message)));
        }
    }
}
