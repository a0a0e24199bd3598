//! Per-session delivery: a hub with history, resume, bounded memory and signalled loss.
//!
//! A [`Hub`] consumes the `(session, text)` updates of a [`Messenger`](crate::Messenger) (or
//! any such stream) and routes each status to its session. Every session numbers its statuses
//! 1, 2, 3, ... in the order they were accepted and keeps the recent ones as history. A
//! [`Subscription`] is a `Stream` of one session's [`Event`]s: first what history holds after
//! the point it starts from, then live statuses, with no duplicate and no gap. Where it cannot
//! have a status (it left history, or the subscriber fell too far behind) it gets one
//! [`Gap`] naming exactly the missing numbers, and goes on.
//!
//! Instead of consuming the messenger's stream in a task, a hub can be
//! [`attach`](Hub::attach)ed to the messenger: each status is then published on the thread that
//! adds it, so none wait in the channel when many producers outpace one consumer.
//!
//! ```
//! use futures_util::StreamExt;
//! use status_messenger::{Event, Hub, HubConfig, Messenger, SessionContext};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::new(HubConfig::default()).unwrap();
//! let messenger = Messenger::new();
//! tokio::spawn({
//!     let hub = hub.clone();
//!     let updates = messenger.stream().into_messages();
//!     async move { hub.consume_messages(updates).await }
//! });
//!
//! // Tool code, anywhere: it never sees the session id.
//! SessionContext::new("user-1").run(|| {
//!     messenger.add_status_message("Searching the web...");
//!     messenger.add_status_message("Reading 3 pages...");
//! });
//!
//! // The page connects late, yet gets both, numbered.
//! let mut page = hub.subscribe("user-1", None);
//! let Some(Event::Status(first)) = page.next().await else { panic!() };
//! let Some(Event::Status(second)) = page.next().await else { panic!() };
//! assert_eq!((first.seq(), first.text()), (1, "Searching the web..."));
//! assert_eq!((second.seq(), second.text()), (2, "Reading 3 pages..."));
//!
//! // After a reload it resumes after what it saw: nothing twice, nothing missing.
//! hub.publish(Some("user-1"), "Done").unwrap();
//! let mut reloaded = hub.subscribe("user-1", Some(second.seq()));
//! let Some(Event::Status(third)) = reloaded.next().await else { panic!() };
//! assert_eq!((third.seq(), third.text()), (3, "Done"));
//! # }
//! ```
//!
//! # How it works
//!
//! Each session holds one history ring of `(seq, time, Arc<str> text)` under a short lock.
//! Subscribers do not own copies: each keeps a cursor (the last number it has seen) and reads
//! the ring from there, a small batch per lock, and parks its waker in the session when it has
//! read everything. Publishing appends to the ring and wakes the parked subscribers. So a
//! subscriber that never reads costs a few words and never blocks anyone; publishing never
//! waits for a subscriber.
//!
//! # Choosing the bounds
//!
//! Every bound is a field of [`HubConfig`]; the defaults suit a web page that shows an agent's
//! progress and may reload or reconnect.
//!
//! - [`history_capacity`](HubConfig::history_capacity) (default 1,000): statuses kept per
//!   session. It is how far back a reconnecting page can resume without a gap, and the main
//!   memory cost. While a session has no subscriber, a retained status costs a 12-byte slot
//!   and one record of its text (a tag, a task's progress and index, then the text) in the
//!   session's byte ring: about 63 bytes for 40 bytes of text, with no allocation of its own,
//!   so `sessions x capacity x (~23 + text length)` bytes. While it has subscribers, its newest
//!   `subscriber_buffer` statuses keep the allocation they were published with (a 32-byte slot
//!   and the shared text, about 100 bytes for 40 of text) so that each subscriber shares
//!   them; they go back to records when the last subscriber leaves. Take the longest run of
//!   statuses a client should be able to miss (a tool that reports 10 steps a second during a
//!   30 s disconnect needs 300). Idle sessions do not pre-allocate: the rings grow with use. A
//!   status with a level, key or data keeps those fields aside, plus their size.
//! - [`history_ttl`](HubConfig::history_ttl) (default 600 s): how long history is kept after a
//!   session's last status ([`history_expiry`](HubConfig::history_expiry) decides whether it
//!   leaves as a whole or status by status), and how long a session with no subscriber and no
//!   status lives before it is evicted. Take the longest time a user may be away and still
//!   expect to resume: a page reload takes seconds, a laptop lid a few minutes.
//! - [`subscriber_buffer`](HubConfig::subscriber_buffer) (default 1,000): how far one subscriber
//!   may fall behind the newest status before the hub moves it forward with a gap. It does not
//!   cost memory (subscribers read the shared history), it bounds how much old news a slow or
//!   stalled client must wade through before it sees the present; a value above
//!   `history_capacity` has no effect beyond it. It also bounds a fresh subscriber's replay, so
//!   keep it at least `history_capacity` if a late page should get the whole history.
//! - [`max_status_bytes`](HubConfig::max_status_bytes) (default 4,096): longer texts are cut at
//!   a char boundary and end with [`TRUNCATION_MARKER`], counted in [`HubStats::truncated`].
//!   It caps what one careless `add_status_message(whole_document)` costs in every session's
//!   history.
//! - [`max_sessions`](HubConfig::max_sessions) (default 100,000): sessions held at once. When
//!   it is reached, a new session makes room: sessions with no subscriber and no task running
//!   here are evicted early, those holding no statuses first (so that a flood of new sessions
//!   takes a page's history only when no empty session is left; on a shared backend, which
//!   keeps history in its store, this step is skipped), then the idle longest (a sixty-fourth
//!   of the limit at a time, at least 1 and at most 4,096, counted in
//!   [`HubStats::evicted_under_pressure`]), so a flood of sessions nobody reads cannot lock new
//!   visitors out. Only when every session held has a subscriber or a running task are statuses
//!   and subscribers for new sessions refused and counted;
//!   [`OpenError::retry_after`](crate::hub::OpenError::retry_after) then says when to try
//!   again, for a 503's `Retry-After`. Take the number of users active within `history_ttl`,
//!   with room to spare. With Redis it bounds the sessions this process serves.
//! - [`no_session`](HubConfig::no_session) (default [`NoSessionPolicy::Drop`]): what happens to
//!   statuses added outside any session.
//! - [`task_capacity`](HubConfig::task_capacity) (default 100): tasks remembered per session, so
//!   that a page that reloads can be told each one's state. A new task makes room by
//!   forgetting the oldest one that has ended; when every remembered task still runs, a new
//!   one is refused. Each remembered task costs about 200 bytes, and its last three changes
//!   about 200 more, in sessions that have tasks only. Take the most tasks a session runs at
//!   once, with room for the ended ones a page should still see.
//! - [`max_running_tasks_per_session`](HubConfig::max_running_tasks_per_session) (default 8)
//!   and [`max_running_tasks`](HubConfig::max_running_tasks) (default 256): tasks running at
//!   once in this process, per session and in all; one more is refused
//!   ([`StartTaskError::SessionBusy`], [`StartTaskError::HubBusy`]), so one visitor cannot take
//!   every thread the tools run on. Take the second under the threads that run the tools
//!   (tokio's blocking pool: 512), the first at what one page may sensibly run at once.
//!
//! # Tasks
//!
//! [`Hub::start_task`] starts a [`Task`] in a session: an id, a cancellation token, and a state
//! ([`TaskState`]) the hub tells every subscriber of the session about, as an
//! [`Event::Task`] with a [`TaskUpdate`], whenever it changes and first thing on every
//! subscription. [`Hub::cancel_task`] asks it to stop: tool code sees it through
//! [`is_cancelled`](crate::is_cancelled) on whatever thread the task's context reached, the
//! task's later statuses are refused, and its subscribers get no status of the task after its
//! `cancelling` update. A running task keeps its session from being evicted; its state is
//! forgotten with the session.
//!
//! Task updates keep their place among the session's statuses, on every backend and in every
//! process that serves the session: a subscriber gets a task's `running` update before any
//! status carrying its id, and its `cancelling` and final updates after every status of the
//! task numbered before them. A subscription that starts (or resumes) gets the state of every
//! task the session remembers first, then the history.
//! # Where sessions live
//!
//! [`Hub::new`] keeps sessions in this process and numbers each status as it is published. A
//! shared backend (with the `redis` feature, `Hub::with_redis`) keeps them in Redis instead,
//! so several processes serve one set of sessions; the API is the same. The core of the hub
//! talks to its backend through one internal seam, so each backend is one module.
//!
//! # Results
//!
//! Every operation says what happened: [`Hub::publish`] returns [`Published`] (numbered now, or
//! queued for a shared backend that numbers it) or a [`PublishError`] naming why it was
//! dropped; each other operation has an error type holding only what it can return
//! ([`OpenError`], [`LookupError`], [`SubscribeError`], [`CloseError`], [`StartTaskError`],
//! [`CancelError`]).
//!
//! # Counting
//!
//! Nothing is lost silently. [`Hub::stats`] returns every counter (atomics, cheap to read at
//! any time; those changed per status or per delivery are spread over a few cells, one per
//! thread, and summed when read); with the cargo feature `metrics` the same counters also go
//! through the [`metrics`](https://docs.rs/metrics/0.24) facade under the names in
//! [`metric_names`], so an application's exporter sees them. The metrics are registered when
//! the hub is created: install the recorder first.
//!
//! A status or a delivery changes only the hub's own counters, never the facade: the facade is
//! handed what changed when the counters are recorded, which happens
//!
//! - at every [`Hub::record_metrics`]: call it just before an exporter renders (a Prometheus
//!   `GET /metrics`, as the demo servers do) or sends, and the metrics are exactly the
//!   counters at that moment;
//! - at every sweep of idle sessions, which the hub makes on its next call (publish,
//!   subscribe, open) once a quarter of [`HubConfig::history_ttl`] (at most a minute) has
//!   passed since the last, and at [`Hub::evict_idle`]: an exporter that never asks is at most
//!   that far behind while the hub is in use;
//! - on the Redis backend, whenever it counts an error, a reconnect or statuses it dropped,
//!   so an outage shows even on a hub nobody calls;
//! - when the hub is dropped, so nothing counted is left out.
//!
//! Between two records the metrics stay as they were. Counters get what they grew by and
//! gauges what they moved by, so several hubs sharing one recorder add up.

// # Layout
//
// One file per concept, each opening with what it holds and its invariants: `config`
// (HubConfig and its policies), `error` (a result type per operation), `session_id`
// (SessionId), `event` (Event, Status, Gap), `stats` and `counters` (what is counted and under
// which names), `core` (this process's sessions: the checks and numbering, with its session
// table and its tasks beside it in `core/`), `backend` (the seam to where sessions live, and
// the in-memory backend), `handle` and `feed` (the Hub handle, and feeding it from
// messengers), `state`, `log` and `subscription` (one session's state, history and readers),
// `task` and `task_table` (tasks and their handle, and one session's tasks), and one folder
// per shared backend.

mod backend;
mod config;
mod core;
mod counters;
mod error;
mod event;
mod feed;
mod handle;
mod log;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod running;
mod session_id;
mod state;
mod stats;
mod subscription;
mod task;
mod task_table;

pub use self::config::{ConfigError, HistoryExpiry, HubConfig, NoSessionPolicy, TRUNCATION_MARKER};
pub use self::error::{
    BackendError, CancelError, CloseError, LookupError, OpenError, PublishError, Published,
    StartTaskError, SubscribeError,
};
pub use self::event::{Event, Gap, Status, MAX_KEY_BYTES};
pub use self::handle::Hub;
pub use self::session_id::{InvalidSessionId, SessionId, MAX_SESSION_ID_BYTES};
pub use self::stats::{metric_names, HubStats};
pub use self::subscription::Subscription;
pub use self::task::{Task, TaskState, TaskUpdate, UnknownTaskState};
