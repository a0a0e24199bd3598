//! The statuses of an MCP tool call as `notifications/progress`, through
//! [rmcp](https://docs.rs/rmcp/3), the official Rust SDK of the Model Context Protocol.
//!
//! rmcp hands a tool its request context explicitly: the client's `progressToken` in
//! [`meta`](rmcp::service::RequestContext::meta), the [`peer`](rmcp::service::RequestContext::peer)
//! to notify, and the request's cancellation token [`ct`](rmcp::service::RequestContext::ct).
//! Tool code deep inside the call (synchronous, on a blocking thread) has none of them. A
//! [`ProgressScope`] made from the context runs the tool with the crate's own context instead,
//! so the tool's [`add_status_message`](crate::add_status_message) and
//! [`add_status`](crate::add_status) calls, from async code and from synchronous code on the
//! crate's [`spawn_blocking`](crate::spawn_blocking) or a carried
//! [`SessionContext`], also become progress notifications of that call:
//!
//! - `progress` strictly increases: a status's [`Progress::current`](crate::Progress::current)
//!   where it has one and it is above the last value sent, else the last value plus one;
//!   `total` is the status's [`Progress::total`](crate::Progress::total) where given (and not
//!   below `progress`); `message` is the status's text, cut to
//!   [`MAX_PROGRESS_MESSAGE_BYTES`] at a char boundary and ended with
//!   [`TRUNCATION_MARKER`] when longer.
//! - `progress` stops at 2<sup>53</sup> ([`MAX_PROGRESS`]), the last integer an `f64` (a JSON
//!   number) still tells from the next: a status that cannot go above the last value sent
//!   once it is there is not sent, and is counted in [`ProgressReport::skipped`].
//! - Only when the request carried a `progressToken`, as the specification asks; without one
//!   nothing is sent to the client (the statuses still reach a browser session, below).
//! - Sending never blocks the tool: a status is put in a small queue ([`PENDING_CAPACITY`]
//!   notifications), and one sender, polled with the tool in the handler's own task, takes
//!   them out in order and awaits [`Peer::notify_progress`] for each. Statuses that come
//!   faster than the client takes them are coalesced: when the queue is full, a new status
//!   replaces the newest one waiting, with its (higher) `progress`, and the one replaced is
//!   counted ([`ProgressReport::coalesced`]). Memory stays at [`PENDING_CAPACITY`] pending
//!   notifications however fast the tool goes, and the last status is always sent.
//! - Nothing is sent after the tool returns: [`ProgressScope::run`] sends the last pending
//!   notification and stops its sender before it returns the tool's value, so the handler's
//!   result is the last thing the client gets for the call.
//! - The request's cancellation (`notifications/cancelled` from the client) cancels the task
//!   the tool runs in, so [`is_cancelled`](crate::is_cancelled) and
//!   [`cancelled`](crate::cancelled) see it on whatever thread the tool runs; nothing more is
//!   sent to the client after it.
//!
//! # With and without a browser session
//!
//! An MCP call made on behalf of a web user names the user's session: given with
//! [`ProgressScope::session`], carried by a hub task given with [`ProgressScope::task`], or
//! already current where the scope runs ([`with_session_id`](crate::with_session_id)). Then
//! every status goes to both: to the messenger as before (so to the session's WebSockets and
//! SSE streams through the attached [`Hub`](crate::Hub)), and to the MCP client. Without a
//! session, statuses go to the MCP client only: nothing reaches the messenger, where a status
//! without a session would only be dropped.
//!
//! A call given a hub task ([`ProgressScope::task`]) shows in the session's page as that task:
//! its state frames, the task id on its statuses, and a Stop in the page stops the tool as a
//! cancellation from the MCP client does. Without one, the scope runs the tool in a task of its
//! own that no hub knows (so [`is_cancelled`](crate::is_cancelled) still answers), and where a
//! hub task is already current the scope links the request's cancellation to it.
//!
//! # Examples
//!
//! A tool with no browser session, its statuses to the MCP client only:
//!
//! ```
//! use rmcp::handler::server::wrapper::Parameters;
//! use rmcp::service::RequestContext;
//! use rmcp::{tool, tool_handler, tool_router, RoleServer, ServerHandler};
//! use status_messenger::mcp::ProgressScope;
//! use status_messenger::{add_status_message, is_cancelled};
//!
//! // Synchronous tool code: it knows neither MCP nor the session.
//! fn count(steps: u32) -> u32 {
//!     for step in 1..=steps {
//!         if is_cancelled() {
//!             return step - 1;
//!         }
//!         add_status_message(format!("step {step}/{steps}"));
//!     }
//!     steps
//! }
//!
//! #[derive(serde::Deserialize, rmcp::schemars::JsonSchema)]
//! #[schemars(crate = "rmcp::schemars")]
//! struct Steps {
//!     steps: u32,
//! }
//!
//! #[derive(Clone)]
//! struct Server {
//!     tool_router: rmcp::handler::server::router::tool::ToolRouter<Self>,
//! }
//!
//! #[tool_router]
//! impl Server {
//!     #[tool(description = "counts, telling each step")]
//!     async fn count(
//!         &self,
//!         Parameters(Steps { steps }): Parameters<Steps>,
//!         context: RequestContext<RoleServer>,
//!     ) -> String {
//!         let done = ProgressScope::new(&context)
//!             .run(async move { status_messenger::spawn_blocking(move || count(steps)).await })
//!             .await;
//!         format!("{:?}", done.ok())
//!     }
//! }
//!
//! #[tool_handler]
//! impl ServerHandler for Server {}
//! # let _ = Server { tool_router: Server::tool_router() };
//! ```
//!
//! The same call on behalf of a web user, whose page watches it as a task:
//!
//! ```
//! # include!("mcp/doc_harness.rs");
//! use futures_util::StreamExt;
//! use rmcp::service::RequestContext;
//! use rmcp::RoleServer;
//! use status_messenger::mcp::ProgressScope;
//! use status_messenger::{Event, Hub};
//!
//! async fn on_behalf_of(hub: Hub, session: &str, context: RequestContext<RoleServer>) -> u32 {
//!     let Ok(task) = hub.start_task(session) else { return 0 };
//!     ProgressScope::new(&context)
//!         .task(task)
//!         .run(async {
//!             status_messenger::add_status_message("to the page and to the MCP client");
//!             1
//!         })
//!         .await
//! }
//!
//! # #[tokio::main]
//! # async fn main() {
//! let hub = Hub::new(Default::default()).unwrap();
//! hub.attach_global().unwrap();
//! let server_hub = hub.clone();
//! let (done, progress) = call_tool(move |context| async move {
//!     on_behalf_of(server_hub, "user-1", context).await
//! })
//! .await;
//! assert_eq!(done, 1);
//! assert_eq!(progress[0].message.as_deref(), Some("to the page and to the MCP client"));
//! // The page: the task's state, then the status.
//! let mut page = hub.subscribe("user-1", None);
//! let Some(Event::Task(task)) = page.next().await else { panic!() };
//! assert_eq!(task.state().as_str(), "finished");
//! let Some(Event::Status(status)) = page.next().await else { panic!() };
//! assert_eq!(status.text(), "to the page and to the MCP client");
//! # }
//! ```
//!
//! The whole round trip, with rmcp's own client and server, is in the crate's `tests/mcp.rs`,
//! and the axum demo serves it at `/mcp`.
//!
//! # Supported Rust versions
//!
//! rmcp 3 needs Rust 1.88, above the crate's own minimum: so does this feature.

// # Invariants
//
// - The queue (`Slot::next`) holds at most `PENDING_CAPACITY` updates, in the order they were
//   offered; `offer` numbers an update under the slot's lock and either appends it or
//   replaces the newest (which has a lower number), so the queue is always in increasing
//   order, and the sender sends updates in the order it takes them from the front: what
//   reaches the client strictly increases.
// - No lock is held across an await: the sender takes the update out under the lock and
//   sends it after releasing it.
// - The sender is polled in the same future as the tool, never spawned: the scope's end is
//   then the sender's end, so nothing can be sent after the scope returns, and it sends from
//   the handler's own task, where rmcp keeps the request's task-locals.
// - The inner messenger's direct consumer holds the messenger's stream, a reference cycle
//   that only `clear_direct` breaks: the scope clears it when it ends (also when dropped).

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use tokio::sync::Notify;

use crate::context::SessionContext;
use crate::hub::{SessionId, Task, TRUNCATION_MARKER};
use crate::messenger::{self, Messenger, Payload};
use crate::sync::lock;
use crate::task::{TaskRef, TaskShared, Token};

/// Progress notifications a [`ProgressScope`] keeps waiting at most; past it, a new status
/// replaces the newest one waiting (coalescing).
///
/// # Examples
///
/// ```
/// # include!("mcp/doc_harness.rs");
/// # #[tokio::main]
/// # async fn main() {
/// use status_messenger::mcp::{ProgressScope, PENDING_CAPACITY};
///
/// let (report, _) = call_tool(|context| async move {
///     let scope = ProgressScope::new(&context);
///     let report = scope.report();
///     let (seen, report) = scope
///         .run(async move {
///             for i in 0..1_000 {
///                 status_messenger::add_status_message(format!("item {i}"));
///             }
///             (report.pending(), report)
///         })
///         .await;
///     assert_eq!(seen, PENDING_CAPACITY); // the rest coalesced
///     report
/// })
/// .await;
/// assert_eq!(report.coalesced(), 1_000 - PENDING_CAPACITY as u64);
/// # }
/// ```
pub const PENDING_CAPACITY: usize = 8;

/// The most bytes of a status's text one progress notification carries: a longer text is cut
/// at a char boundary and ends with [`TRUNCATION_MARKER`], so
/// the [`PENDING_CAPACITY`] notifications waiting hold at most this many bytes each. The
/// same as the hub's default `max_status_bytes`.
///
/// ```
/// use status_messenger::hub::TRUNCATION_MARKER;
/// use status_messenger::mcp::MAX_PROGRESS_MESSAGE_BYTES;
///
/// assert_eq!(MAX_PROGRESS_MESSAGE_BYTES, 4096);
/// assert!(MAX_PROGRESS_MESSAGE_BYTES > TRUNCATION_MARKER.len());
/// ```
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 4096;

/// The highest `progress` sent, 2<sup>53</sup>: above it an `f64` no longer holds every
/// integer, so `+ 1` would no longer increase it. A status's
/// [`Progress::current`](crate::Progress::current) above it counts as this.
///
/// ```
/// use status_messenger::mcp::MAX_PROGRESS;
///
/// assert_eq!(MAX_PROGRESS, (1u64 << 53) as f64);
/// assert_eq!(MAX_PROGRESS + 1.0, MAX_PROGRESS); // why it stops there
/// ```
pub const MAX_PROGRESS: f64 = 9_007_199_254_740_992.0;

/// Runs an rmcp tool call so that the statuses added inside it also reach the MCP client as
/// `notifications/progress` (see the [module docs](self)).
///
/// # Examples
///
/// ```
/// # include!("mcp/doc_harness.rs");
/// # #[tokio::main]
/// # async fn main() {
/// use status_messenger::mcp::ProgressScope;
///
/// let (answer, progress) = call_tool(|context| async move {
///     ProgressScope::new(&context)
///         .run(async {
///             status_messenger::add_status_message("working");
///             "done"
///         })
///         .await
/// })
/// .await;
/// assert_eq!(answer, "done");
/// assert_eq!(progress[0].message.as_deref(), Some("working"));
/// # }
/// ```
pub struct ProgressScope {
    /// A clone of the call's context: its peer, its progress token and its cancellation.
    context: RequestContext<RoleServer>,
    progress_token: Option<ProgressToken>,
    session: Option<String>,
    task: Option<Task>,
    sink: Arc<Sink>,
}

impl fmt::Debug for ProgressScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressScope")
            .field("request", &self.context.id)
            .field("progress_token", &self.progress_token)
            .field("session", &self.session)
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

impl ProgressScope {
    /// A scope for the tool call whose request context is `context`: progress goes to the
    /// client that sent the request (when it sent a `progressToken`), and the request's
    /// cancellation reaches the tool.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// use status_messenger::mcp::ProgressScope;
    ///
    /// // rmcp's client sends a progress token with every request.
    /// let (asked, _) = call_tool(|context| async move {
    ///     ProgressScope::new(&context).progress_token().is_some()
    /// })
    /// .await;
    /// assert!(asked);
    /// # }
    /// ```
    pub fn new(context: &RequestContext<RoleServer>) -> Self {
        let progress_token = context.meta.get_progress_token();
        Self {
            context: context.clone(),
            sink: Arc::new(Sink::new(progress_token.is_some())),
            progress_token,
            session: None,
            task: None,
        }
    }

    /// Also sends the statuses to the browser session `id` (through the messenger, so to its
    /// streams through the attached hub), as [`with_session_id`](crate::with_session_id)
    /// would. A task given with [`task`](ProgressScope::task) brings its own session instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// use futures_util::StreamExt;
    /// use status_messenger::mcp::ProgressScope;
    /// use status_messenger::{Event, Hub, Messenger};
    ///
    /// let (messenger, hub) = (Messenger::new(), Hub::new(Default::default()).unwrap());
    /// hub.attach(&messenger).unwrap();
    /// let scoped = messenger.clone();
    /// let (seen, progress) = call_tool(move |context| {
    ///     scoped.scope(ProgressScope::new(&context).session("user-1").run(async {
    ///         status_messenger::add_status_message("to both");
    ///         status_messenger::current_session_id()
    ///     }))
    /// })
    /// .await;
    /// assert_eq!(seen.as_deref(), Some("user-1"));
    /// assert_eq!(progress[0].message.as_deref(), Some("to both"));
    /// let Some(Event::Status(status)) = hub.subscribe("user-1", None).next().await else { panic!() };
    /// assert_eq!(status.text(), "to both");
    /// # }
    /// ```
    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session = Some(id.into());
        self
    }

    /// Runs the tool in the hub task `task` (from [`Hub::start_task`](crate::Hub::start_task)):
    /// its session gets the statuses too, its page sees it as that task, a cancellation from
    /// either side stops it, and the scope records its end when the tool returns.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// use status_messenger::mcp::ProgressScope;
    /// use status_messenger::{Hub, TaskState};
    ///
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("user-1").unwrap();
    /// let id = task.id().to_owned();
    /// let (seen, _) = call_tool(move |context| {
    ///     ProgressScope::new(&context)
    ///         .task(task)
    ///         .run(async { status_messenger::current_task_id() })
    /// })
    /// .await;
    /// assert_eq!(seen.as_deref(), Some(id.as_str()));
    /// // The scope recorded the task's end.
    /// assert_eq!(hub.cancel_task("user-1", &id).await.unwrap(), TaskState::Finished);
    /// # }
    /// ```
    pub fn task(mut self, task: Task) -> Self {
        self.task = Some(task);
        self
    }

    /// The request's `progressToken`, if the client sent one: without it no notification is
    /// sent.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// let (same, _) = call_tool(|context| async move {
    ///     let scope = status_messenger::mcp::ProgressScope::new(&context);
    ///     scope.progress_token() == context.meta.get_progress_token().as_ref()
    /// })
    /// .await;
    /// assert!(same);
    /// # }
    /// ```
    pub fn progress_token(&self) -> Option<&ProgressToken> {
        self.progress_token.as_ref()
    }

    /// A handle on this scope's counters, readable while it runs and after.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// let (report, progress) = call_tool(|context| async move {
    ///     let scope = status_messenger::mcp::ProgressScope::new(&context);
    ///     let report = scope.report();
    ///     scope.run(async {}).await;
    ///     report
    /// })
    /// .await;
    /// assert_eq!((report.offered(), report.sent()), (0, 0));
    /// assert!(progress.is_empty());
    /// # }
    /// ```
    pub fn report(&self) -> ProgressReport {
        ProgressReport {
            sink: Arc::clone(&self.sink),
        }
    }

    /// Runs `tool` in this scope and returns its output, after the last progress notification
    /// was sent (or given up): nothing of this call is sent to the client after it returns.
    ///
    /// The tool runs with the session set (if any), in its task (the one given, the one
    /// current, or one of the scope's own), with a messenger of the scope's as the scoped
    /// default, so the crate's [`spawn_blocking`](crate::spawn_blocking),
    /// [`spawn`](crate::spawn) and [`SessionContext`] carry all of it
    /// into the tool's threads and tasks. They capture the context where they are called, so
    /// call them inside `tool`: `run(spawn_blocking(f))` would spawn before the scope begins
    /// ([`run_blocking`](ProgressScope::run_blocking) does it right). Work that outlives the scope (a thread not joined
    /// before `tool` completes) has its later statuses dropped: await what you spawn.
    ///
    /// If this future is dropped before the tool completes, the task the scope runs the tool
    /// in (the one given, or its own) is cancelled, so a tool on a blocking thread stops at its
    /// next check; a task that was current where the scope runs is the caller's, and is left
    /// alone then.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// use status_messenger::mcp::ProgressScope;
    /// use status_messenger::{add_status, is_cancelled, StatusMessage};
    ///
    /// let (done, progress) = call_tool(|context| async move {
    ///     ProgressScope::new(&context)
    ///         .run(async {
    ///             // Spawned inside the scope, so the blocking thread gets the scope's context.
    ///             let tool = status_messenger::spawn_blocking(|| {
    ///                 let mut done = 0;
    ///                 for step in 1..=3 {
    ///                     if is_cancelled() {
    ///                         break;
    ///                     }
    ///                     add_status(StatusMessage::new(format!("step {step}/3")).progress(step, 3));
    ///                     done = step;
    ///                 }
    ///                 done
    ///             });
    ///             tool.await.unwrap_or(0)
    ///         })
    ///         .await
    /// })
    /// .await;
    /// assert_eq!(done, 3);
    /// let last = progress.last().unwrap();
    /// assert_eq!((last.progress, last.total, last.message.as_deref()), (3.0, Some(3.0), Some("step 3/3")));
    /// # }
    /// ```
    pub async fn run<F: Future>(self, tool: F) -> F::Output {
        let Self {
            context,
            progress_token,
            session,
            task,
            sink,
        } = self;
        let (session, outer, current_task) = match &task {
            Some(task) => task.context().into_parts(),
            None => {
                let (current, messenger, current_task) = SessionContext::current().into_parts();
                (session.or(current), messenger, current_task)
            }
        };
        // A current task of another session than the call's is not the call's to cancel.
        let current_task =
            current_task.filter(|task| session.as_deref() == Some(task.session.as_str()));
        // Only a task the scope runs (given, or its own) is cancelled if the scope is dropped:
        // a current one belongs to the caller, who may go on after dropping the scope.
        let owns_task = task.is_some() || current_task.is_none();
        let tool_task = current_task.unwrap_or_else(detached_task);
        let inner = Messenger::new();
        let ctx = match inner.set_direct(deliver(Arc::clone(&sink), outer.clone())) {
            Ok(()) => SessionContext::from_parts(
                session,
                Some(inner.clone()),
                Some(Arc::clone(&tool_task)),
            ),
            Err(error) => {
                // A new messenger has no stream yet, so this cannot happen; if it did, the
                // tool still runs, its statuses going where they would without the scope.
                tracing::error!(
                    target: "status_messenger::mcp",
                    %error,
                    "progress scope could not take its messenger; statuses are not sent as progress"
                );
                SessionContext::from_parts(session, outer, Some(Arc::clone(&tool_task)))
            }
        };
        let end = EndGuard {
            sink: &sink,
            inner: &inner,
            token: owns_task.then_some(&tool_task.token),
            completed: false,
        };
        let output = {
            let mut tool = pin!(ctx.wrap(tool));
            let mut sender = pin!(send_progress(&sink, &context.peer, progress_token));
            let mut link = pin!(async {
                context.ct.cancelled().await;
                sink.stop();
                match &task {
                    Some(task) => {
                        let _state = task.cancel();
                    }
                    None => cancel_token(&tool_task.token),
                }
            });
            let (mut sender_done, mut link_done) = (false, false);
            let output = poll_fn(|cx| {
                // The link first: a cancellation that came with this wake-up is seen by the
                // tool in the same poll.
                if !link_done {
                    link_done = link.as_mut().poll(cx).is_ready();
                }
                if !sender_done {
                    sender_done = sender.as_mut().poll(cx).is_ready();
                }
                tool.as_mut().poll(cx)
            })
            .await;
            sink.close();
            if !sender_done {
                sender.as_mut().await;
            }
            output
        };
        end.complete();
        if let Some(task) = task {
            let _state = task.finish();
        }
        output
    }
}

impl ProgressScope {
    /// Runs synchronous `tool` on tokio's blocking pool in this scope: the crate's
    /// [`spawn_blocking`](crate::spawn_blocking) called inside [`run`](ProgressScope::run).
    ///
    /// # Errors
    ///
    /// The [`JoinError`](tokio::task::JoinError) of the blocking task, if `tool` panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// use status_messenger::mcp::ProgressScope;
    /// use status_messenger::{add_status_message, is_cancelled};
    ///
    /// fn search() -> usize {
    ///     if is_cancelled() {
    ///         return 0;
    ///     }
    ///     add_status_message("Searching the web...");
    ///     3
    /// }
    ///
    /// let (pages, progress) = call_tool(|context| async move {
    ///     ProgressScope::new(&context).run_blocking(search).await
    /// })
    /// .await;
    /// assert_eq!(pages.unwrap(), 3);
    /// assert_eq!(progress[0].message.as_deref(), Some("Searching the web..."));
    /// # }
    /// ```
    pub async fn run_blocking<R, F>(self, tool: F) -> Result<R, tokio::task::JoinError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.run(async { crate::spawn_blocking(tool).await }).await
    }
}

/// What a [`ProgressScope`] did with the statuses added in it: how many it was offered, sent,
/// coalesced, failed to send and skipped. Once the scope has returned,
/// `offered == sent + coalesced + failed + skipped`.
///
/// # Examples
///
/// ```
/// # include!("mcp/doc_harness.rs");
/// # #[tokio::main]
/// # async fn main() {
/// use status_messenger::mcp::ProgressScope;
///
/// let (report, progress) = call_tool(|context| async move {
///     let scope = ProgressScope::new(&context);
///     let report = scope.report();
///     scope
///         .run(async {
///             for i in 1..=1_000 {
///                 status_messenger::add_status_message(format!("item {i}"));
///             }
///         })
///         .await;
///     report
/// })
/// .await;
/// let accounted = report.sent() + report.coalesced() + report.failed() + report.skipped();
/// assert_eq!(report.offered(), 1_000);
/// assert_eq!(accounted, 1_000);
/// assert_eq!(progress.len() as u64, report.sent());
/// assert_eq!(progress.last().unwrap().message.as_deref(), Some("item 1000"));
/// # }
/// ```
#[derive(Clone)]
pub struct ProgressReport {
    sink: Arc<Sink>,
}

impl fmt::Debug for ProgressReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressReport")
            .field("offered", &self.offered())
            .field("sent", &self.sent())
            .field("coalesced", &self.coalesced())
            .field("failed", &self.failed())
            .field("skipped", &self.skipped())
            .field("pending", &self.pending())
            .field("not_forwarded", &self.not_forwarded())
            .finish()
    }
}

impl ProgressReport {
    /// Statuses added in the scope.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// let (report, _) = call_tool(|context| async move {
    ///     let scope = status_messenger::mcp::ProgressScope::new(&context);
    ///     let report = scope.report();
    ///     scope.run(async { status_messenger::add_status_message("one") }).await;
    ///     report
    /// })
    /// .await;
    /// assert_eq!(report.offered(), 1);
    /// # }
    /// ```
    pub fn offered(&self) -> u64 {
        self.sink.offered.load(Ordering::Relaxed)
    }

    /// Progress notifications the client's transport took.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// let (report, _) = call_tool(|context| async move {
    ///     let scope = status_messenger::mcp::ProgressScope::new(&context);
    ///     let report = scope.report();
    ///     scope.run(async { status_messenger::add_status_message("one") }).await;
    ///     report
    /// })
    /// .await;
    /// assert_eq!(report.sent(), 1);
    /// # }
    /// ```
    pub fn sent(&self) -> u64 {
        self.sink.sent.load(Ordering::Relaxed)
    }

    /// Statuses replaced by a newer one before they could be sent (the newer one carries a
    /// higher `progress`).
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// let (report, _) = call_tool(|context| async move {
    ///     let scope = status_messenger::mcp::ProgressScope::new(&context);
    ///     let report = scope.report();
    ///     scope.run(async { status_messenger::add_status_message("one") }).await;
    ///     report
    /// })
    /// .await;
    /// assert_eq!(report.coalesced(), 0); // one status, nothing to coalesce
    /// # }
    /// ```
    pub fn coalesced(&self) -> u64 {
        self.sink.coalesced.load(Ordering::Relaxed)
    }

    /// Notifications that could not be sent (the client's connection failed); each logged at
    /// debug level.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// let (report, _) = call_tool(|context| async move {
    ///     let scope = status_messenger::mcp::ProgressScope::new(&context);
    ///     let report = scope.report();
    ///     scope.run(async { status_messenger::add_status_message("one") }).await;
    ///     report
    /// })
    /// .await;
    /// assert_eq!(report.failed(), 0);
    /// # }
    /// ```
    pub fn failed(&self) -> u64 {
        self.sink.failed.load(Ordering::Relaxed)
    }

    /// Statuses not sent as progress by rule: the request had no `progressToken`, it was
    /// cancelled, the scope had ended, or `progress` was already at [`MAX_PROGRESS`].
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// let (report, _) = call_tool(|context| async move {
    ///     let scope = status_messenger::mcp::ProgressScope::new(&context);
    ///     let report = scope.report();
    ///     scope.run(async { status_messenger::add_status_message("one") }).await;
    ///     report
    /// })
    /// .await;
    /// assert_eq!(report.skipped(), 0); // the request carried a progress token
    /// # }
    /// ```
    pub fn skipped(&self) -> u64 {
        self.sink.skipped.load(Ordering::Relaxed)
    }

    /// Notifications waiting to be sent now: never more than [`PENDING_CAPACITY`].
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// let (report, _) = call_tool(|context| async move {
    ///     let scope = status_messenger::mcp::ProgressScope::new(&context);
    ///     let report = scope.report();
    ///     scope.run(async { status_messenger::add_status_message("one") }).await;
    ///     report
    /// })
    /// .await;
    /// assert_eq!(report.pending(), 0); // all sent before the scope returned
    /// # }
    /// ```
    pub fn pending(&self) -> usize {
        lock(&self.sink.slot).next.len()
    }

    /// Statuses of a browser session that found no messenger to go to (no scoped default
    /// and no global one set up): they reached the MCP client only. The first is warned.
    ///
    /// # Examples
    ///
    /// ```
    /// # include!("mcp/doc_harness.rs");
    /// # #[tokio::main]
    /// # async fn main() {
    /// let (report, _) = call_tool(|context| async move {
    ///     let scope = status_messenger::mcp::ProgressScope::new(&context);
    ///     let report = scope.report();
    ///     scope.run(async { status_messenger::add_status_message("one") }).await;
    ///     report
    /// })
    /// .await;
    /// assert_eq!(report.not_forwarded(), 0); // no browser session
    /// # }
    /// ```
    pub fn not_forwarded(&self) -> u64 {
        self.sink.not_forwarded.load(Ordering::Relaxed)
    }
}

/// One progress notification waiting to be sent.
#[derive(Debug)]
struct Update {
    progress: f64,
    total: Option<f64>,
    message: String,
}

/// The queue between the tool's threads and the sender (see the invariants).
#[derive(Debug, Default)]
struct Slot {
    next: VecDeque<Update>,
    /// The `progress` of the last update offered, so the next one is above it.
    last_progress: f64,
    /// The tool returned: nothing more is taken.
    closed: bool,
    /// The request was cancelled: nothing more is sent.
    stopped: bool,
}

#[derive(Debug)]
struct Sink {
    /// Whether the request carried a progress token.
    enabled: bool,
    slot: Mutex<Slot>,
    /// Wakes the sender when the slot is filled or closed.
    wake: Notify,
    offered: AtomicU64,
    sent: AtomicU64,
    coalesced: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    not_forwarded: AtomicU64,
    warned_not_forwarded: AtomicBool,
}

impl Sink {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            slot: Mutex::new(Slot::default()),
            wake: Notify::new(),
            offered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            not_forwarded: AtomicU64::new(0),
            warned_not_forwarded: AtomicBool::new(false),
        }
    }

    /// Queues `payload` as the next notification, numbered above every earlier one; when the
    /// queue is full it replaces (and counts) the newest one waiting. Never blocks beyond the
    /// queue's short lock.
    fn offer(&self, payload: &Payload) {
        self.offered.fetch_add(1, Ordering::Relaxed);
        if !self.enabled {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let given = match payload {
            Payload::Message(message) => message.get_progress(),
            Payload::Text(_) => None,
        };
        let mut slot = lock(&self.slot);
        if slot.closed || slot.stopped {
            drop(slot);
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let last = slot.last_progress;
        // `last` is an integer no higher than MAX_PROGRESS, so `last + 1.0` is exact.
        let progress = match given.map(|given| (given.current() as f64).min(MAX_PROGRESS)) {
            Some(current) if current > last => current,
            _ if last < MAX_PROGRESS => last + 1.0,
            _ => {
                // It cannot go up any more: sending it would break "strictly increases".
                drop(slot);
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        slot.last_progress = progress;
        let total = given
            .map(|given| given.total() as f64)
            .filter(|total| *total >= progress);
        let full = slot.next.len() >= PENDING_CAPACITY;
        match slot.next.back_mut() {
            Some(newest) if full => {
                // Coalesced into the newest waiting, reusing its text's buffer: a burst costs
                // a copy per status, not an allocation.
                newest.progress = progress;
                newest.total = total;
                newest.message.clear();
                push_capped(&mut newest.message, payload.text());
                drop(slot);
                self.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                slot.next.push_back(Update {
                    progress,
                    total,
                    message: {
                        let mut message = String::new();
                        push_capped(&mut message, payload.text());
                        message
                    },
                });
                drop(slot);
            }
        }
        self.wake.notify_one();
    }

    /// The next update to send, and whether the slot is closed.
    fn take(&self) -> (Option<Update>, bool) {
        let mut slot = lock(&self.slot);
        (slot.next.pop_front(), slot.closed || slot.stopped)
    }

    /// The request was cancelled: what waits is skipped and nothing more is taken.
    fn stop(&self) {
        let mut slot = lock(&self.slot);
        slot.stopped = true;
        let dropped = std::mem::take(&mut slot.next);
        drop(slot);
        self.skipped
            .fetch_add(dropped.len() as u64, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// The tool returned: what waits is still sent, nothing more is taken.
    fn close(&self) {
        lock(&self.slot).closed = true;
        self.wake.notify_one();
    }
}

/// Appends `text` to `into`, cut to [`MAX_PROGRESS_MESSAGE_BYTES`] at a char boundary and
/// marked when longer: only what is kept is copied.
fn push_capped(into: &mut String, text: &str) {
    if text.len() <= MAX_PROGRESS_MESSAGE_BYTES {
        into.push_str(text);
        return;
    }
    let mut cut = MAX_PROGRESS_MESSAGE_BYTES - TRUNCATION_MARKER.len();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    into.push_str(&text[..cut]);
    into.push_str(TRUNCATION_MARKER);
}

/// Sends what the slot holds as progress notifications until it is closed and empty.
async fn send_progress(sink: &Sink, peer: &Peer<RoleServer>, token: Option<ProgressToken>) {
    let Some(token) = token else {
        return;
    };
    loop {
        let notified = sink.wake.notified();
        let mut notified = pin!(notified);
        // Registered before the slot is read, so an offer in between still wakes it.
        notified.as_mut().enable();
        match sink.take() {
            (Some(update), _) => {
                let mut param = ProgressNotificationParam::new(token.clone(), update.progress)
                    .with_message(update.message);
                if let Some(total) = update.total {
                    param = param.with_total(total);
                }
                match peer.notify_progress(param).await {
                    Ok(()) => {
                        sink.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        sink.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            target: "status_messenger::mcp",
                            %error,
                            "progress notification not sent"
                        );
                    }
                }
            }
            (None, true) => return,
            (None, false) => notified.await,
        }
    }
}

/// The scope's messenger's consumer: each status to the slot, and a session's also to the
/// messenger it would have gone to without the scope.
fn deliver(sink: Arc<Sink>, outer: Option<Messenger>) -> messenger::Deliver {
    Box::new(move |session, task, payload| {
        sink.offer(&payload);
        let Some(session) = session else {
            // No browser session: the MCP client is the only one to tell.
            return Ok(());
        };
        let target = outer.as_ref().or_else(|| messenger::global_messenger());
        match target {
            Some(target) => {
                target.dispatch(Some(session), task, || Some(session.to_owned()), payload)
            }
            None => {
                sink.not_forwarded.fetch_add(1, Ordering::Relaxed);
                if !sink.warned_not_forwarded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "status_messenger::mcp",
                        session,
                        "status of a browser session in an MCP progress scope found no \
                         messenger (none scoped, none set up); sent to the MCP client only \
                         (counted in ProgressReport::not_forwarded, warned once)"
                    );
                }
            }
        }
        Ok(())
    })
}

/// Cancels a task no hub knows: its token is all there is.
fn cancel_token(token: &Token) {
    if token.set() {
        token.wake();
    }
}

/// A task of the scope's own, for a call made in no hub task: it gives the tool
/// [`is_cancelled`](crate::is_cancelled) and [`cancelled`](crate::cancelled). Its session is
/// a name of its own, so that no status carries the task: a status keeps its task only when
/// its session is the task's.
fn detached_task() -> TaskRef {
    use std::hash::{BuildHasher, RandomState};

    let id = format!(
        "{:016x}{:016x}",
        RandomState::new().hash_one(std::process::id()),
        RandomState::new().hash_one(std::time::SystemTime::now())
    );
    Arc::new(TaskShared {
        session: SessionId::from_checked(&format!("mcp-call-{id}")),
        id: Arc::from(id),
        token: Token::default(),
    })
}

/// Ends the scope however its future ends: on drop before the tool completed, the task the
/// scope runs the tool in is cancelled (if it is the scope's to cancel); always, the queue is
/// closed and the scope's messenger let go.
struct EndGuard<'a> {
    sink: &'a Sink,
    inner: &'a Messenger,
    token: Option<&'a Token>,
    completed: bool,
}

impl EndGuard<'_> {
    fn complete(mut self) {
        self.completed = true;
    }
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        if !self.completed {
            if let Some(token) = self.token {
                cancel_token(token);
            }
            self.sink.stop();
        }
        self.sink.close();
        self.inner.clear_direct();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StatusMessage;

    fn offered(sink: &Sink) -> Vec<(f64, Option<f64>, String)> {
        let mut slot = lock(&sink.slot);
        slot.next
            .drain(..)
            .map(|u| (u.progress, u.total, u.message))
            .collect()
    }

    #[test]
    fn progress_takes_a_status_s_current_only_when_it_goes_up() {
        let sink = Sink::new(true);
        let with = |text: &str, current, total| {
            Payload::Message(StatusMessage::new(text).progress(current, total))
        };
        sink.offer(&Payload::Text("plain".into()));
        sink.offer(&with("five of ten", 5, 10));
        sink.offer(&with("back to three", 3, 10));
        sink.offer(&with("total below", 9, 4));
        sink.offer(&Payload::Text("plain again".into()));
        assert_eq!(
            offered(&sink),
            [
                (1.0, None, "plain".to_owned()),
                (5.0, Some(10.0), "five of ten".to_owned()),
                (6.0, Some(10.0), "back to three".to_owned()),
                (9.0, None, "total below".to_owned()),
                (10.0, None, "plain again".to_owned()),
            ]
        );
    }

    #[test]
    fn a_full_queue_coalesces_into_its_newest_and_keeps_increasing() {
        let sink = Sink::new(true);
        for i in 1..=100 {
            sink.offer(&Payload::Text(format!("{i}")));
        }
        let waiting = offered(&sink);
        assert_eq!(waiting.len(), PENDING_CAPACITY);
        assert_eq!(
            sink.coalesced.load(Ordering::Relaxed),
            100 - PENDING_CAPACITY as u64
        );
        assert!(waiting.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(
            waiting.last().map(|u| (u.0, u.2.as_str())),
            Some((100.0, "100"))
        );
    }

    #[test]
    fn a_long_text_is_cut_to_the_limit_at_a_char_boundary_and_marked() {
        let sink = Sink::new(true);
        // Two-byte chars, so the cut point falls inside one and must move back.
        let long = "é".repeat(MAX_PROGRESS_MESSAGE_BYTES);
        let fits = "x".repeat(MAX_PROGRESS_MESSAGE_BYTES);
        sink.offer(&Payload::Text(long.clone()));
        sink.offer(&Payload::Text(fits.clone()));
        let waiting = offered(&sink);
        let cut = &waiting[0].2;
        assert!(cut.len() <= MAX_PROGRESS_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.len() > MAX_PROGRESS_MESSAGE_BYTES - TRUNCATION_MARKER.len() - 2);
        let kept = cut.strip_suffix(TRUNCATION_MARKER).expect("marked");
        assert!(long.starts_with(kept));
        assert_eq!(waiting[1].2, fits, "a text at the limit is kept whole");

        // Coalescing into a full queue cuts too.
        for _ in 0..PENDING_CAPACITY + 1 {
            sink.offer(&Payload::Text(long.clone()));
        }
        let waiting = offered(&sink);
        assert_eq!(waiting.len(), PENDING_CAPACITY);
        assert!(waiting
            .iter()
            .all(|u| u.2.len() <= MAX_PROGRESS_MESSAGE_BYTES));
    }

    #[test]
    fn progress_stops_at_two_to_the_53_and_what_cannot_go_up_is_not_sent() {
        let sink = Sink::new(true);
        let with =
            |current| Payload::Message(StatusMessage::new("big").progress(current, u64::MAX));
        sink.offer(&with((1 << 53) - 2));
        sink.offer(&Payload::Text("plus one".into()));
        sink.offer(&with(u64::MAX));
        sink.offer(&Payload::Text("no room".into()));
        sink.offer(&with(u64::MAX));
        let waiting = offered(&sink);
        let progress: Vec<f64> = waiting.iter().map(|u| u.0).collect();
        assert_eq!(
            progress,
            [MAX_PROGRESS - 2.0, MAX_PROGRESS - 1.0, MAX_PROGRESS]
        );
        assert!(progress.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sink.skipped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn nothing_is_queued_without_a_token_after_a_stop_or_after_the_end() {
        let untokened = Sink::new(false);
        untokened.offer(&Payload::Text("a".into()));
        let stopped = Sink::new(true);
        stopped.offer(&Payload::Text("dropped by the stop".into()));
        stopped.stop();
        stopped.offer(&Payload::Text("b".into()));
        let ended = Sink::new(true);
        ended.close();
        ended.offer(&Payload::Text("c".into()));
        for (sink, skipped) in [(&untokened, 1), (&stopped, 2), (&ended, 1)] {
            assert!(offered(sink).is_empty());
            assert_eq!(sink.skipped.load(Ordering::Relaxed), skipped);
        }
    }
}
