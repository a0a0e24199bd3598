//! Carrying the current session, the current task and the scoped default messenger across
//! tasks and threads.
//!
//! Tokio's task-locals belong to the future that set them: `tokio::spawn`,
//! `tokio::task::spawn_blocking` and `std::thread::spawn` all start without them, so a plain
//! `spawn_blocking(|| add_status_message(..))` sends with no session. The current task and the
//! scoped default messenger are thread-locals and are lost at the same boundaries. These
//! helpers capture all three where the work is handed off and set them again where the work
//! runs.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};

use tokio::runtime::Handle;
use tokio::task::futures::TaskLocalFuture;
use tokio::task::JoinHandle;

use crate::messenger::{self, Messenger, TaskSlot, WithMessenger, CURRENT_WEBSOCKET_SESSION_ID};
use crate::task::{self, TaskRef};

/// A future running with a session set; returned by [`with_session_id`] and
/// [`SessionFutureExt::with_session`], and around a [`WithMessenger`] by
/// [`SessionContext::wrap`] and [`SessionFutureExt::in_current_session`].
///
/// # Examples
///
/// ```
/// use status_messenger::{current_session_id, with_session_id, WithSession};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let fut: WithSession<_> = with_session_id("s1", async { current_session_id() });
/// assert_eq!(fut.await.as_deref(), Some("s1"));
/// # }
/// ```
pub type WithSession<F> = TaskLocalFuture<Option<String>, F>;

/// The session id of the current task or thread, if one is set.
///
/// # Examples
///
/// ```
/// use status_messenger::{current_session_id, with_session_id};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(current_session_id(), None);
/// let inside = with_session_id("s1", async { current_session_id() }).await;
/// assert_eq!(inside.as_deref(), Some("s1"));
/// # }
/// ```
pub fn current_session_id() -> Option<String> {
    CURRENT_WEBSOCKET_SESSION_ID
        .try_with(Clone::clone)
        .ok()
        .flatten()
}

/// Runs `fut` with the session `id` set, so [`add_status_message`](crate::add_status_message)
/// calls inside it are routed to that session.
///
/// # Examples
///
/// ```
/// use status_messenger::{current_session_id, with_session_id};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let id = with_session_id("abc", async { current_session_id() }).await;
/// assert_eq!(id.as_deref(), Some("abc"));
/// # }
/// ```
pub fn with_session_id<F: Future>(id: impl Into<String>, fut: F) -> WithSession<F> {
    CURRENT_WEBSOCKET_SESSION_ID.scope(Some(id.into()), fut)
}

/// A captured session: `Clone + Send + Sync`, to be set again on another thread or task.
///
/// Capture it with [`SessionContext::current`] where the session is set, move it wherever the
/// work runs (a `std::thread`, a rayon pool, actix's `web::block`), then [`run`] synchronous
/// code or [`wrap`] a future in it.
///
/// It carries the current [`Task`](crate::Task) too, where one is current when it is captured
/// (or when it is made by [`Task::context`](crate::Task::context)): in the work,
/// [`is_cancelled`](crate::is_cancelled) and [`cancelled`](crate::cancelled) answer for that
/// task and every status carries its id. A context without a task makes no task current where
/// it runs.
///
/// It also carries the scoped default messenger ([`with_default`](crate::with_default),
/// [`set_default`](crate::set_default), [`Messenger::scope`]) where one was set when it was
/// captured, so the free [`add_status_message`](crate::add_status_message) in the work reaches
/// the same messenger as it would where the work was handed off. A context without a
/// messenger (captured where only the global one was in use, or made with [`new`] or
/// [`none`]) leaves the default of the thread where it runs as it is.
///
/// [`run`]: SessionContext::run
/// [`wrap`]: SessionContext::wrap
/// [`new`]: SessionContext::new
/// [`none`]: SessionContext::none
///
/// # Examples
///
/// ```
/// use status_messenger::{current_session_id, with_session_id, SessionContext};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ctx = with_session_id("s7", async { SessionContext::current() }).await;
/// let seen = std::thread::spawn(move || ctx.run(current_session_id))
///     .join()
///     .unwrap();
/// assert_eq!(seen.as_deref(), Some("s7"));
/// # }
/// ```
#[derive(Clone, Default)]
pub struct SessionContext {
    session_id: Option<String>,
    /// The scoped default where the context was captured; `None` leaves the running thread's.
    messenger: Option<Messenger>,
    /// The task current where the context was captured; `None` makes none current.
    task: Option<TaskRef>,
}

impl fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionContext")
            .field("session_id", &self.session_id)
            .field("messenger", &self.messenger)
            .field("task", &self.task_id())
            .finish()
    }
}

/// Equal when the sessions are equal, both carry no messenger or messengers sharing one
/// channel, and both carry no task or the same task.
impl PartialEq for SessionContext {
    fn eq(&self, other: &Self) -> bool {
        self.session_id == other.session_id
            && match (&self.messenger, &other.messenger) {
                (Some(a), Some(b)) => a.same_channel(b),
                (None, None) => true,
                _ => false,
            }
            && match (&self.task, &other.task) {
                (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for SessionContext {}

impl Hash for SessionContext {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.session_id.hash(state);
        // By identity, as `eq` compares.
        self.messenger
            .as_ref()
            .map(Messenger::channel_id)
            .hash(state);
        self.task
            .as_ref()
            .map(|task| std::sync::Arc::as_ptr(task).cast::<()>())
            .hash(state);
    }
}

impl SessionContext {
    /// Captures the session of the current task or thread (none where none is set), and the
    /// scoped default messenger if one is set (nothing where only the global one is used).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{with_default, Messenger, SessionContext};
    ///
    /// assert_eq!(SessionContext::current().session_id(), None);
    /// let inner = SessionContext::new("x").run(SessionContext::current);
    /// assert_eq!(inner.session_id(), Some("x"));
    /// assert!(inner.messenger().is_none());
    ///
    /// let messenger = Messenger::new();
    /// let scoped = with_default(&messenger, SessionContext::current);
    /// assert!(scoped.messenger().unwrap().same_channel(&messenger));
    /// ```
    pub fn current() -> Self {
        Self {
            session_id: current_session_id(),
            messenger: messenger::scoped_default(),
            task: task::current(),
        }
    }

    /// A context for `task`'s session carrying `task` and `messenger`.
    pub(crate) fn for_task(task: TaskRef, messenger: Option<Messenger>) -> Self {
        Self {
            session_id: Some(task.session.to_string()),
            messenger,
            task: Some(task),
        }
    }

    /// A context of these parts, for scopes in the crate that run work in a context of their
    /// own making (`mcp::ProgressScope`).
    #[cfg_attr(not(feature = "rmcp"), allow(dead_code))]
    pub(crate) fn from_parts(
        session_id: Option<String>,
        messenger: Option<Messenger>,
        task: Option<TaskRef>,
    ) -> Self {
        Self {
            session_id,
            messenger,
            task,
        }
    }

    /// The session, messenger and task this context carries.
    #[cfg_attr(not(feature = "rmcp"), allow(dead_code))]
    pub(crate) fn into_parts(self) -> (Option<String>, Option<Messenger>, Option<TaskRef>) {
        (self.session_id, self.messenger, self.task)
    }

    /// A context for the session `id`, with no messenger.
    ///
    /// # Examples
    ///
    /// ```
    /// let ctx = status_messenger::SessionContext::new("s1");
    /// assert_eq!(ctx.session_id(), Some("s1"));
    /// assert!(ctx.messenger().is_none());
    /// ```
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            session_id: Some(id.into()),
            messenger: None,
            task: None,
        }
    }

    /// A context with no session and no messenger: messages added in it carry `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{current_session_id, SessionContext};
    ///
    /// let seen = SessionContext::new("outer").run(|| SessionContext::none().run(current_session_id));
    /// assert_eq!(seen, None);
    /// ```
    pub fn none() -> Self {
        Self::default()
    }

    /// This context with `messenger` as the scoped default where it runs.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{add_status_message, Messenger, SessionContext};
    ///
    /// let messenger = Messenger::new();
    /// SessionContext::new("s1")
    ///     .with_messenger(&messenger)
    ///     .run(|| add_status_message("to this messenger"));
    /// assert_eq!(messenger.stream().pending(), 1);
    /// ```
    pub fn with_messenger(mut self, messenger: &Messenger) -> Self {
        self.messenger = Some(messenger.clone());
        self
    }

    /// The captured scoped default messenger, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Messenger, SessionContext};
    ///
    /// let messenger = Messenger::new();
    /// let ctx = SessionContext::none().with_messenger(&messenger);
    /// assert!(ctx.messenger().unwrap().same_channel(&messenger));
    /// assert!(SessionContext::none().messenger().is_none());
    /// ```
    pub fn messenger(&self) -> Option<&Messenger> {
        self.messenger.as_ref()
    }

    /// The id of the captured task, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, SessionContext};
    ///
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// assert_eq!(task.context().task_id(), Some(task.id()));
    /// assert_eq!(SessionContext::new("s1").task_id(), None);
    /// ```
    pub fn task_id(&self) -> Option<&str> {
        self.task.as_ref().map(|task| &*task.id)
    }

    /// The captured session id.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::SessionContext::new("a").session_id(), Some("a"));
    /// ```
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Runs synchronous `f` on the current thread with this session set, this context's task
    /// current (or none), and this context's messenger as the scoped default if it has one, on
    /// any thread, with or without a runtime. The previous values come back when `f` returns
    /// or unwinds.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{add_status_message, current_session_id, with_default};
    /// use status_messenger::{Messenger, SessionContext};
    ///
    /// let seen = SessionContext::new("s1").run(current_session_id);
    /// assert_eq!(seen.as_deref(), Some("s1"));
    /// assert_eq!(current_session_id(), None);
    ///
    /// // The scoped default travels to another thread.
    /// let messenger = Messenger::new();
    /// let ctx = with_default(&messenger, SessionContext::current);
    /// std::thread::spawn(move || ctx.run(|| add_status_message("from a thread")))
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(messenger.stream().pending(), 1);
    /// ```
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        CURRENT_WEBSOCKET_SESSION_ID.sync_scope(self.session_id.clone(), || {
            // Puts the previous task back when `f` returns or unwinds.
            let _task = task::Entered::new(self.task.clone());
            match &self.messenger {
                Some(messenger) => messenger::with_default(messenger, f),
                None => f(),
            }
        })
    }

    /// Wraps `fut` so that it runs with this session set, this context's task current (or
    /// none), and this context's messenger as the scoped default if it has one, wherever it is
    /// polled.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{add_status_message, current_session_id, Messenger, SessionContext};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ctx = SessionContext::new("s2");
    /// let seen = tokio::spawn(ctx.wrap(async { current_session_id() })).await.unwrap();
    /// assert_eq!(seen.as_deref(), Some("s2"));
    ///
    /// let messenger = Messenger::new();
    /// let ctx = ctx.with_messenger(&messenger);
    /// tokio::spawn(ctx.wrap(async { add_status_message("scoped") })).await.unwrap();
    /// assert_eq!(messenger.stream().pending(), 1);
    /// # }
    /// ```
    pub fn wrap<F: Future>(&self, fut: F) -> WithSession<WithMessenger<F>> {
        CURRENT_WEBSOCKET_SESSION_ID.scope(
            self.session_id.clone(),
            WithMessenger::new(
                self.messenger.clone(),
                TaskSlot::Set(self.task.clone()),
                fut,
            ),
        )
    }
}

/// Why a task could not be spawned.
///
/// # Examples
///
/// ```
/// use status_messenger::{try_spawn, SpawnError};
///
/// let error = try_spawn(async {}).unwrap_err();
/// assert_eq!(error, SpawnError::NoRuntime);
/// assert_eq!(error.to_string(), "no tokio runtime is running on this thread");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpawnError {
    /// The call was made outside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpawnError::NoRuntime => "no tokio runtime is running on this thread",
        })
    }
}

impl std::error::Error for SpawnError {}

/// Equivalent to [`tokio::task::spawn_blocking`], but the closure runs with the caller's
/// session set, the caller's task current if one is, and the caller's scoped default
/// messenger if one is set, so `add_status_message` inside it reaches the caller's session
/// through the caller's messenger, and [`is_cancelled`](crate::is_cancelled) answers for the
/// caller's task.
///
/// It runs on tokio's blocking pool, at most 512 threads by default: with that many slow tools
/// running, the next one waits for a thread before it starts. For many tools that sleep or
/// wait, raise the runtime's `max_blocking_threads` or use a [`BlockingPool`](crate::BlockingPool).
///
/// # Panics
///
/// Outside a tokio runtime, as tokio's does; [`try_spawn_blocking`] returns an error instead.
///
/// # Examples
///
/// ```
/// use status_messenger::{current_session_id, with_session_id};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let seen = with_session_id("s3", async {
///     status_messenger::spawn_blocking(current_session_id).await.unwrap()
/// })
/// .await;
/// assert_eq!(seen.as_deref(), Some("s3"));
///
/// // The caller's scoped default messenger is carried too.
/// let messenger = status_messenger::Messenger::new();
/// let send = || status_messenger::add_status_message("from the blocking pool");
/// let task = status_messenger::with_default(&messenger, || status_messenger::spawn_blocking(send));
/// task.await.unwrap();
/// assert_eq!(messenger.stream().pending(), 1);
/// # }
/// ```
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let ctx = SessionContext::current();
    tokio::task::spawn_blocking(move || ctx.run(f))
}

/// Like [`spawn_blocking`], but returns an error instead of panicking outside a runtime.
///
/// # Errors
///
/// [`SpawnError::NoRuntime`] when no tokio runtime is running on this thread.
///
/// # Examples
///
/// ```
/// use status_messenger::{try_spawn_blocking, SpawnError};
///
/// // No runtime on this thread:
/// assert_eq!(try_spawn_blocking(|| 1).unwrap_err(), SpawnError::NoRuntime);
/// ```
pub fn try_spawn_blocking<F, R>(f: F) -> Result<JoinHandle<R>, SpawnError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let handle = Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
    let ctx = SessionContext::current();
    Ok(handle.spawn_blocking(move || ctx.run(f)))
}

/// Equivalent to [`tokio::spawn`], but the task runs with the caller's session set, the
/// caller's task current if one is, and the caller's scoped default messenger if one is set
/// (see [`SessionContext::wrap`]).
///
/// # Panics
///
/// Outside a tokio runtime, as tokio's does; [`try_spawn`] returns an error instead.
///
/// # Examples
///
/// ```
/// use status_messenger::{current_session_id, with_session_id};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let seen = with_session_id("s4", async {
///     status_messenger::spawn(async { current_session_id() }).await.unwrap()
/// })
/// .await;
/// assert_eq!(seen.as_deref(), Some("s4"));
///
/// // The caller's scoped default messenger is carried too.
/// let messenger = status_messenger::Messenger::new();
/// messenger
///     .scope(async {
///         let send = async { status_messenger::add_status_message("from a task") };
///         status_messenger::spawn(send).await.unwrap()
///     })
///     .await;
/// assert_eq!(messenger.stream().pending(), 1);
/// # }
/// ```
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(SessionContext::current().wrap(fut))
}

/// Like [`spawn`], but returns an error instead of panicking outside a runtime.
///
/// # Errors
///
/// [`SpawnError::NoRuntime`] when no tokio runtime is running on this thread.
///
/// # Examples
///
/// ```
/// use status_messenger::{try_spawn, SpawnError};
///
/// assert_eq!(try_spawn(async { 1 }).unwrap_err(), SpawnError::NoRuntime);
/// ```
pub fn try_spawn<F>(fut: F) -> Result<JoinHandle<F::Output>, SpawnError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
    Ok(handle.spawn(SessionContext::current().wrap(fut)))
}

/// Session methods on every future, in the style of `tracing::Instrument`.
///
/// # Examples
///
/// ```
/// use status_messenger::{current_session_id, SessionFutureExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let seen = async {
///     // Carry the session into a spawned task.
///     tokio::spawn(async { current_session_id() }.in_current_session())
///         .await
///         .unwrap()
/// }
/// .with_session("s5")
/// .await;
/// assert_eq!(seen.as_deref(), Some("s5"));
/// # }
/// ```
pub trait SessionFutureExt: Future + Sized {
    /// Runs this future with the session `id` set.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{current_session_id, SessionFutureExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let id = async { current_session_id() }.with_session("a").await;
    /// assert_eq!(id.as_deref(), Some("a"));
    /// # }
    /// ```
    fn with_session(self, id: impl Into<String>) -> WithSession<Self> {
        with_session_id(id, self)
    }

    /// Runs this future with the session of the caller, the caller's task if one is current,
    /// and the caller's scoped default messenger if one is set, all captured now (see
    /// [`SessionContext::wrap`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{current_session_id, SessionContext, SessionFutureExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fut = SessionContext::new("b").run(|| async { current_session_id() }.in_current_session());
    /// assert_eq!(fut.await.as_deref(), Some("b"));
    /// # }
    /// ```
    fn in_current_session(self) -> WithSession<WithMessenger<Self>> {
        SessionContext::current().wrap(self)
    }
}

impl<F: Future> SessionFutureExt for F {}
