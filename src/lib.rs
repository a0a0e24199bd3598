//! Tell a user what your server is doing, live.
//!
//! Tool code deep inside a request (often synchronous, on a blocking thread) calls
//! [`add_status_message`]`("Searching the web...")` without knowing who the user is. The crate
//! knows the current client session implicitly, from a task-local set where the request came
//! in, and hands `(session_id, message)` to one consumer stream, which routes it to that
//! user's WebSocket or Server-Sent Events connection.
//!
//! # How it works
//!
//! - [`messenger::CURRENT_WEBSOCKET_SESSION_ID`] is a tokio task-local holding the session id.
//!   Set it with [`with_session_id`] where a client's work starts.
//! - [`setup_status_messenger_async`] creates one global unbounded channel.
//!   [`add_status_message`] reads the session and sends; it never blocks, awaits or panics, and
//!   works from any thread.
//! - [`stream_status_updates`] is the receiving end as a `Stream` for one broadcaster task.
//!   Dropping the stream gives the receiver back, so a restarted broadcaster loses nothing.
//! - [`Messenger`] is the same machinery as an instance, for tests and embedders; the free
//!   functions are a thin default over one of them: the current thread's scoped default
//!   ([`with_default`], [`set_default`], [`Messenger::scope`]) where one is set, else the global
//!   one ([`setup_status_messenger_async`], or your own through [`set_global_default`]). Two
//!   servers or two tests in one process each keep their own messenger that way.
//! - [`add_status`] sends a [`StatusMessage`]: a text with optional fields beside it (progress,
//!   level, key, JSON data), carried through the hub, its history and resume.
//! - A [`Task`] is one run of tool work in a session, started with [`Hub::start_task`]. The
//!   context that carries the session carries the task too, so tool code on any thread asks
//!   [`is_cancelled`] (or awaits [`cancelled`]) after [`Hub::cancel_task`], and the hub tells
//!   the session's subscribers each task's state ([`TaskUpdate`]).
//!
//! # Quick start
//!
//! A broadcaster task consumes the stream; a request handler sets the session and runs
//! synchronous tool code through the session-carrying [`spawn_blocking`]:
//!
//! ```
//! use futures_util::StreamExt;
//! use status_messenger::{add_status_message, stream_status_updates, with_session_id};
//!
//! # #[tokio::main]
//! # async fn main() {
//! status_messenger::setup_status_messenger_async();
//!
//! // The broadcaster: one task that routes every update to its session's clients.
//! let (to_client, mut client) = tokio::sync::mpsc::unbounded_channel();
//! let broadcaster = tokio::spawn(async move {
//!     let mut updates = stream_status_updates();
//!     while let Some((session, text)) = updates.next().await {
//!         // A real server looks the session up and writes to its socket.
//!         if session.as_deref() == Some("user-1") && to_client.send(text).is_err() {
//!             break;
//!         }
//!     }
//! });
//!
//! // A request handler: the tool never sees the session id.
//! fn search_tool() -> usize {
//!     add_status_message("Searching the web...");
//!     add_status_message("Reading 3 pages...");
//!     3
//! }
//! let pages = with_session_id("user-1", async {
//!     status_messenger::spawn_blocking(search_tool).await.unwrap()
//! })
//! .await;
//!
//! assert_eq!(pages, 3);
//! assert_eq!(client.recv().await.as_deref(), Some("Searching the web..."));
//! assert_eq!(client.recv().await.as_deref(), Some("Reading 3 pages..."));
//! # broadcaster.abort();
//! # }
//! ```
//!
//! # Carrying the session across threads
//!
//! Tokio task-locals belong to one future. They are not inherited by `tokio::spawn`,
//! `tokio::task::spawn_blocking` or `std::thread::spawn`, so this sends with **no** session:
//!
//! ```
//! # use status_messenger::{current_session_id, with_session_id};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let seen = with_session_id("s1", async {
//!     tokio::task::spawn_blocking(current_session_id).await.unwrap()
//! })
//! .await;
//! assert_eq!(seen, None); // lost at the thread boundary
//! # }
//! ```
//!
//! Use the crate's [`spawn_blocking`] and [`spawn`], which capture the caller's session and set
//! it again where the work runs, or capture a [`SessionContext`] yourself for any other thread
//! or pool (`std::thread`, rayon, actix's `web::block`) and [`SessionContext::run`] the work in
//! it. Futures get the same from [`SessionFutureExt`]. The scoped default messenger, where one
//! is set, travels the same way, so tool code reaches the messenger of the code that handed
//! the work off:
//!
//! ```
//! # use futures_util::StreamExt;
//! # use status_messenger::{add_status_message, current_session_id, with_session_id};
//! # use status_messenger::{Messenger, SessionContext};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let seen = with_session_id("s1", async {
//!     let ctx = SessionContext::current();
//!     std::thread::spawn(move || ctx.run(current_session_id)).join().unwrap()
//! })
//! .await;
//! assert_eq!(seen.as_deref(), Some("s1"));
//!
//! // A server with its own messenger: the tool's status reaches it, not the global one.
//! let server = Messenger::new();
//! server
//!     .scope(with_session_id("s2", async {
//!         status_messenger::spawn_blocking(|| add_status_message("working")).await.unwrap()
//!     }))
//!     .await;
//! assert_eq!(
//!     server.stream().next().await,
//!     Some((Some("s2".to_owned()), "working".to_owned()))
//! );
//! # }
//! ```
//!
//! # Tasks and cancel
//!
//! The request handler starts a task, hands its id to the client, and runs the tool in it;
//! the tool asks before each step. A Stop from the client reaches it through
//! [`Hub::cancel_task`], on whatever thread it runs:
//!
//! ```
//! use status_messenger::{add_status, is_cancelled, Hub, StatusMessage, TaskState};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::new(Default::default()).unwrap();
//! hub.attach_global().unwrap();
//!
//! fn tool(steps: u64) -> u64 {
//!     for step in 1..=steps {
//!         if is_cancelled() {
//!             return step - 1;
//!         }
//!         add_status(StatusMessage::new(format!("step {step}/{steps}")).progress(step, steps));
//!         std::thread::sleep(std::time::Duration::from_millis(5));
//!     }
//!     steps
//! }
//!
//! let task = hub.start_task("user-1").unwrap();
//! let id = task.id().to_owned(); // the client's handle on it
//! let running = tokio::task::spawn_blocking(move || task.run(|| tool(1_000)));
//!
//! // The Stop button: `POST /cancel?session=user-1&task=<id>`.
//! assert_eq!(hub.cancel_task("user-1", &id).await.unwrap(), TaskState::Cancelling);
//! assert!(running.await.unwrap() < 1_000);
//! assert_eq!(hub.cancel_task("user-1", &id).await.unwrap(), TaskState::Cancelled);
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature | what it adds |
//! | --- | --- |
//! | (none) | the messenger, the session helpers and the [`Hub`] |
//! | `metrics` | the hub's counters also go through the [`metrics`](https://docs.rs/metrics/0.24) facade ([`hub::metric_names`]) |
//! | `redis` | [`Hub::with_redis`]: sessions shared by several processes through Redis (`hub::redis`) |
//! | `serde_json` | [`JsonData`] from and to `serde_json::Value` |
//! | `tracing-layer` | `tracing_layer::StatusLayer`: marked `tracing` events inside a session become its statuses |
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is 1.85, the oldest that the current releases of the
//! dependencies build with (tokio asks for 1.85). Clippy checks the crate against it.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_debug_implementations)]

mod context;
pub mod hub;
mod json;
pub mod messenger;
mod status;
mod sync;
mod task;
#[cfg(feature = "tracing-layer")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing-layer")))]
pub mod tracing_layer;

pub use context::{
    current_session_id, spawn, spawn_blocking, try_spawn, try_spawn_blocking, with_session_id,
    SessionContext, SessionFutureExt, SpawnError, WithSession,
};
#[cfg(feature = "redis")]
pub use hub::redis::RedisConfig;
pub use hub::{
    ConfigError, Event, Gap, Hub, HubConfig, HubStats, NoSessionPolicy, SessionId, Status,
    Subscription, Task, TaskState, TaskUpdate,
};
pub use messenger::{
    add_status, add_status_message, dropped_before_setup, global_messenger, set_default,
    set_global_default, setup_status_messenger_async, stream_status_updates,
    try_stream_status_updates, with_default, DefaultGuard, Messenger, SetGlobalDefaultError,
    StatusMessages, StatusStream, StatusUpdate, StreamError, WithMessenger,
};
pub use status::{InvalidJson, JsonData, Level, Progress, StatusMessage, UnknownLevel};
pub use task::{cancelled, current_task_id, is_cancelled, Cancelled};

/// The README's examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
