//! Tell a user what your server is doing, live.
//!
//! Tool code deep inside a request (often synchronous, on a blocking thread) calls
//! [`add_status_message`]`("Searching the web...")` without knowing who the user is. The crate
//! knows the current client session implicitly, from a task-local set where the request came
//! in, and a [`Hub`] routes the status to that session: numbered, kept as history, and handed
//! to each of the session's subscribers (its WebSocket or Server-Sent Events connections), in
//! order, with resume after a reload and an explicit gap for anything that could not be kept.
//!
//! # How it works
//!
//! - [`messenger::CURRENT_WEBSOCKET_SESSION_ID`] is a tokio task-local holding the session id.
//!   Set it with [`with_session_id`] where a client's work starts; [`spawn_blocking`],
//!   [`spawn`] and [`SessionContext`] carry it into other threads and tasks.
//! - [`add_status_message`] reads the session and sends; it never blocks, awaits or panics, and
//!   works from any thread. It sends to a [`Messenger`]: the current thread's scoped default
//!   ([`with_default`], [`set_default`], [`Messenger::scope`]) where one is set, else the global
//!   one ([`setup_status_messenger_async`], or your own through [`set_global_default`]).
//! - A [`Hub`] attached to that messenger ([`Hub::attach`], [`Hub::attach_global`]) takes each
//!   status on the sender's thread; a WebSocket or SSE handler reads its session with
//!   [`Hub::subscribe`], a `Stream` of [`Event`]s. The [`hub`] module explains history, resume,
//!   gaps and every bound.
//! - [`add_status`] sends a [`StatusMessage`]: a text with optional fields beside it (progress,
//!   level, key, JSON data), carried through the hub, its history and resume.
//! - A [`Task`] is one run of tool work in a session, started with [`Hub::start_task`]. The
//!   context that carries the session carries the task too, so tool code on any thread asks
//!   [`is_cancelled`] (waits with [`sleep_unless_cancelled`], or awaits [`cancelled`]) after
//!   [`Hub::cancel_task`], and the hub tells the session's subscribers each task's state
//!   ([`TaskUpdate`]).
//! - The port of the Python original is there too: [`stream_status_updates`] is the messenger's
//!   receiving end as a `Stream` of `(Option<String>, String)`, for a broadcaster of your own.
//!
//! # Quick start
//!
//! Attach a hub once at start-up; a request handler sets the session and runs synchronous tool
//! code through the session-carrying [`spawn_blocking`]; the page's stream subscribes:
//!
//! ```
//! use futures_util::StreamExt;
//! use status_messenger::{add_status_message, with_session_id, Event, Hub, HubConfig};
//!
//! // Synchronous tool code: it never sees the session id.
//! fn search_tool() -> usize {
//!     add_status_message("Searching the web...");
//!     add_status_message("Reading 3 pages...");
//!     3
//! }
//!
//! # #[tokio::main]
//! # async fn main() {
//! let hub = Hub::new(HubConfig::default()).unwrap();
//! hub.attach_global().unwrap();
//!
//! let pages = with_session_id("user-1", async {
//!     status_messenger::spawn_blocking(search_tool).await.unwrap()
//! })
//! .await;
//! assert_eq!(pages, 3);
//!
//! // The page connects (late, even): history holds what it missed.
//! let mut page = hub.subscribe("user-1", None);
//! for (seq, text) in [(1, "Searching the web..."), (2, "Reading 3 pages...")] {
//!     let Some(Event::Status(status)) = page.next().await else { panic!() };
//!     assert_eq!((status.seq(), status.text()), (seq, text));
//! }
//! # }
//! ```
//!
//! A broadcaster of your own consumes [`stream_status_updates`] instead of attaching a hub:
//!
//! ```
//! use futures_util::StreamExt;
//! use status_messenger::{add_status_message, stream_status_updates, with_session_id};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! status_messenger::setup_status_messenger_async();
//! with_session_id("user-1", async { add_status_message("Thinking...") }).await;
//! let update = stream_status_updates().next().await;
//! assert_eq!(update, Some((Some("user-1".to_owned()), "Thinking...".to_owned())));
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
//! # Many slow tools at once
//!
//! [`spawn_blocking`] runs work on tokio's blocking pool, which has at most 512 threads unless
//! the runtime is built with another `max_blocking_threads`. A tool that sleeps or waits holds
//! its thread the whole time, so the 513th slow tool waits for one of the first 512 to end
//! before it starts, and so does every other user of that pool (`tokio::fs`, DNS lookups).
//! Raise the runtime's limit, or run tools on a [`BlockingPool`] of their own: dedicated
//! threads up to [`BlockingPoolConfig::threads`], a bounded queue past them
//! ([`BlockingPool::try_spawn`] refuses with the job given back, [`BlockingPool::spawn`] waits
//! asynchronously for room), and the session, task and scoped default messenger carried as
//! [`spawn_blocking`] carries them:
//!
//! ```
//! use status_messenger::{current_session_id, with_session_id, BlockingPool, BlockingPoolConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut config = BlockingPoolConfig::default();
//! config.threads = 4096;
//! let tools = BlockingPool::new(config).unwrap();
//! let seen = with_session_id("user-1", async {
//!     let job = tools.try_spawn(|| {
//!         std::thread::sleep(std::time::Duration::from_millis(5));
//!         current_session_id()
//!     });
//!     job.unwrap().await.unwrap()
//! })
//! .await;
//! assert_eq!(seen.as_deref(), Some("user-1"));
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
//! # Serving statuses to a browser
//!
//! With the `axum` or `actix-web` feature, the crate serves the last mile itself:
//! `status_messenger::axum::router(hub)` (an axum `Router`) and
//! `status_messenger::actix::configure(hub)` (for actix-web's `App::configure`) answer
//! `GET /ws` (a WebSocket of a session's statuses), `GET /events` (the same as Server-Sent
//! Events), `POST /cancel` and `GET /status-messenger.js`, the browser client: an ES module that
//! reconnects, resumes where it was and reports what it missed. A page needs nothing more than
//!
//! ```js
//! import { connect } from "/status-messenger.js";
//! connect({ session: id, onStatus(frame) { show(frame.text); }, onGap({ from, to }) {} });
//! ```
//!
//! The session in the query is the capability by default; `web::Endpoints::authorize` ties
//! sessions to your users instead (a login cookie, say), the same hook on both frameworks. The
//! module docs of `axum` and `actix` each hold a complete server of about 30 lines; `web` holds the
//! framework-free pieces (frame encoding, resume points, an SSE body, a WebSocket forwarding
//! loop over any `Sink`/`Stream`) for servers on other frameworks.
//!
//! ```
//! # #[cfg(feature = "axum")]
//! # fn app() {
//! use status_messenger::Hub;
//!
//! let hub = Hub::new(Default::default()).unwrap();
//! let app: axum::Router = axum::Router::new()
//!     .route("/healthz", axum::routing::get(|| async { "ok" }))
//!     .merge(status_messenger::axum::router(hub));
//! # let _ = app;
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature | what it adds |
//! | --- | --- |
//! | (none) | the messenger, the session helpers, the [`BlockingPool`] and the [`Hub`] |
//! | `metrics` | the hub's counters also go through the [`metrics`](https://docs.rs/metrics/0.24) facade ([`hub::metric_names`]), handed to it when recorded ([`Hub::record_metrics`], before each scrape), not per status |
//! | `redis` | [`Hub::with_redis`]: sessions shared by several processes through Redis (`hub::redis`) |
//! | `redis-cluster` | [`Hub::with_redis_cluster`]: the same on a Redis Cluster, with sharded pub/sub (`hub::redis::cluster`; implies `redis`) |
//! | `web` | the framework-free pieces of the WebSocket and SSE endpoints, and the browser client (`web`) |
//! | `axum` | `axum::router`: the endpoints on axum 0.8 (and `web`) |
//! | `actix-web` | `actix::configure`: the endpoints on actix-web 4 (and `web`) |
//! | `serde_json` | [`JsonData`] from and to `serde_json::Value` |
//! | `tracing-layer` | `tracing_layer::StatusLayer`: marked `tracing` events inside a session become its statuses |
//! | `rmcp` | `mcp::ProgressScope`: the statuses of an [rmcp](https://docs.rs/rmcp/3) tool call also go to the MCP client as its progress notifications |
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is 1.85, the oldest that the current releases of the
//! dependencies build with (tokio asks for 1.85). Clippy checks the crate against it. The
//! `actix-web` feature needs what actix-web itself needs: Rust 1.89 for its current releases;
//! the `rmcp` feature Rust 1.88, as rmcp 3 does.
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
#[cfg(feature = "rmcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "rmcp")))]
pub mod mcp;
pub mod messenger;
mod pool;
mod status;
mod sync;
mod task;
#[cfg(feature = "tracing-layer")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing-layer")))]
pub mod tracing_layer;

#[cfg(feature = "web")]
#[cfg_attr(docsrs, doc(cfg(feature = "web")))]
pub mod web;

#[cfg(feature = "actix-web")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
pub mod actix;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

pub use context::{
    current_session_id, spawn, spawn_blocking, try_spawn, try_spawn_blocking, with_session_id,
    SessionContext, SessionFutureExt, SpawnError, WithSession,
};
#[cfg(feature = "redis-cluster")]
pub use hub::redis::cluster::RedisClusterConfig;
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
pub use pool::{
    BlockingPool, BlockingPoolConfig, PoolConfigError, PoolJoinError, PoolJoinHandle,
    PoolSpawnError,
};
pub use status::{InvalidJson, JsonData, Level, Progress, StatusMessage, UnknownLevel};
pub use task::{cancelled, current_task_id, is_cancelled, sleep_unless_cancelled, Cancelled};

/// The README's examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
