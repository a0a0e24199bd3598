//! The Redis backend: several processes share sessions through one Redis.
//!
//! [`Hub::with_redis`] makes a [`Hub`] whose sessions live in Redis. Statuses published in any
//! process reach the session's subscribers in every process, in order, with one numbering per
//! session; history lives in Redis, bounded and with a time to live, so a page that reconnects
//! to another process (or to a restarted one) resumes with no gap and no duplicate. The `Hub`
//! API is the same; the differences are listed under [Semantics](#semantics).
//!
//! # How it works
//!
//! For each session Redis holds (keys `{prefix}:{<session>}:*`, one hash tag per session): a
//! hash (`meta`) whose field `seq` is the last number given (present while the session
//! exists) and whose fields `w:<writer>` hold each writer's last batch token; the history as a
//! stream (`log`) with one entry per batch of statuses, under the id `<first seq>-0`, trimmed to
//! the batches holding the last [`HubConfig::history_capacity`] numbers (so it keeps at least
//! that many statuses, and at most one batch more); and a pub/sub channel (`ch`). Each key's
//! time to live is [`HubConfig::history_ttl`], renewed by each status and, while a process has
//! subscribers of the session, by that process.
//!
//! - **Writing.** [`Hub::publish`] puts the status in a bounded buffer and returns at once. One
//!   writer task per hub takes what is buffered and sends it as one pipeline of Lua script calls
//!   (`EVALSHA`, one call per session per batch) over one multiplexed connection. The script
//!   advances the session's counter by the batch, adds the batch to the stream, trims it,
//!   renews the time to live and publishes the batch on the session's channel, all atomically:
//!   that is what gives every process one numbering and one order per session. A batch costs
//!   Redis the same few commands whatever its size, so the busier the writer, the cheaper each
//!   status.
//! - **Reading.** A process subscribes to a session's channel only while it has local
//!   subscribers of that session (one pub/sub connection, channels added and removed as
//!   subscribers come and go), so its traffic grows with the sessions it serves, not with all of
//!   them. It subscribes first and then reads the stream after what it holds, and copies both
//!   into the hub's local per-session history with the numbers Redis gave; subscriptions read
//!   that local history exactly as with the in-memory hub. A jump in the numbers received is
//!   read back from the stream before anything after it is applied; what the stream no longer
//!   holds reaches subscribers as a [`Gap`](crate::Gap).
//! - **Sessions.** [`Hub::open_session`] and [`Hub::session_exists`] use the `seq` field of
//!   the session's hash, so a session created through one process is known to all.
//!   [`Hub::close_session`] deletes the session's history, counter and tasks and tells every
//!   process serving it to end its subscribers' streams.
//! - **Fields.** A status's fields (progress, level, key, data) and its task's id travel in its
//!   record in the stream and on the channel, so every process and every resume has them.
//! - **Tasks.** Each session has a hash of its tasks (`tasks`: each task's state, its
//!   `last_seq` and its order, and the stops asked). The process that runs a task writes each
//!   change of it with a script that records it and publishes it on the session's channel,
//!   after the statuses it queued before the change were appended, so every process's
//!   subscribers get the change after those statuses: none of a task's statuses follows its
//!   `cancelling` or `cancelled` update anywhere. A process follows a session while a task of
//!   it runs there, as while it has subscribers. A process that starts following a session
//!   reads its tasks first, and its subscriptions start with their states, then the history.
//! - **Cancel.** [`Hub::cancel_task`] for a task that runs in this process asks it at once.
//!   Otherwise a script looks the task up in the session's hash, records the stop there and
//!   publishes it on the session's channel, where the process running the task applies it; a
//!   process that was not listening finds the stop when it follows the session again. A stop
//!   for a task Redis does not know yet (its process has started it and not yet written it) is
//!   answered [`CancelError::UnknownTask`], and kept for a time to live: the task is stopped
//!   when its process writes it.
//!
//! # Faults
//!
//! Nothing waits on Redis in [`Hub::publish`] and nothing hangs silently: every connection and
//! command has a timeout ([`RedisConfig::timeout`]), idle connections are pinged every second,
//! every disconnect and reconnect is logged at warn level (target `status_messenger::redis`)
//! and counted in [`HubStats`](crate::HubStats).
//!
//! - **Redis away.** Statuses wait in the buffer, at most [`RedisConfig::buffer_capacity`] of
//!   them, counting the batch in flight. Beyond that they are dropped and counted
//!   ([`HubStats::dropped_backend`](crate::HubStats::dropped_backend)), and their numbers are
//!   still taken when Redis is back, so subscribers get one gap covering exactly the dropped
//!   statuses, in the place they would have had.
//! - **Reconnecting.** Both tasks reconnect with exponential backoff from
//!   [`RedisConfig::reconnect_min`] to [`RedisConfig::reconnect_max`]. The reader resubscribes to
//!   every session that has local subscribers and reads each stream from the last number it
//!   applied, so nothing in history is missed. A batch whose reply was lost is sent again; the
//!   writer's token recorded per session makes the script skip calls that had run, so nothing
//!   is added twice.
//! - **Redis restarted without its data.** A random epoch key tells: the first process back
//!   writes a new one and every process sees the change. History written before is gone
//!   (subscribers that need it get a gap). Each process raises the counter of every session it
//!   knows back to the highest number it has seen, so numbering never goes back and nothing is
//!   delivered twice. A batch that was in flight has unknown fate (some subscribers may have its
//!   statuses): its numbers are skipped instead of sending it again, and counted as dropped.
//!
//! # Semantics
//!
//! Where this differs from the in-memory hub:
//!
//! - [`Hub::publish`] returns [`Published::Queued`] for an
//!   accepted status: Redis numbers it after the call returns.
//! - Subscribers get statuses after a round trip through Redis, also in the process that
//!   published them.
//! - History expires as a whole `history_ttl` after the session's last status (and
//!   [`HistoryExpiry`](crate::hub::HistoryExpiry) applies only to the local copy).
//! - [`HubStats::sessions`](crate::HubStats::sessions) and `retained` count what this process
//!   serves; `accepted` counts what it published; `tasks` the tasks this process knows of.
//! - Task updates reach subscribers after a round trip through Redis, also in the process
//!   that runs the task, and a task started elsewhere is known here from its first update on.
//!   A cancel of a task another process runs is answered from Redis (`cancelling` from the
//!   request on); the task is `cancelled` once its process has stopped it and written so.
//! - A status with fields is written as a record that versions of this crate before fields
//!   existed do not read: upgrade every process before sending any.
//! - Redis Cluster is not supported (one session's keys share a slot, but the epoch key does
//!   not); use one Redis, with a replica for failover if needed.
//!
//! # Choosing the bounds
//!
//! [`RedisConfig::buffer_capacity`] (default 100,000) bounds the statuses held while Redis is
//! away: take the statuses per second of the whole process times the longest outage to ride
//! out, within memory (each costs about its text plus 64 bytes). The backoff bounds decide how
//! soon a returning Redis is noticed ([`RedisConfig::reconnect_max`], default 5 s) and how hard
//! a missing one is hammered ([`RedisConfig::reconnect_min`], default 100 ms).

mod outbox;
mod reader;
mod tasks;
mod wire;
mod writer;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

use self::outbox::{Outbox, Pushed};
use self::tasks::{Queued, TaskQueue};
use self::wire::Keys;
use super::backend::{Backend, BackendHandle, BoxFuture, Local, Outgoing, TaskChange};
use super::core::CancelHere;
use super::{
    BackendError, CancelError, CloseError, ConfigError, Hub, HubConfig, LookupError, OpenError,
    PublishError, Published, SessionId, TaskState,
};
use crate::sync::lock;

/// How to reach Redis and how to ride out its absence; for [`Hub::with_redis`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use status_messenger::RedisConfig;
///
/// let mut config = RedisConfig::new("redis://127.0.0.1:6379/");
/// assert_eq!(config.key_prefix, "status-messenger");
/// assert_eq!(config.buffer_capacity, 100_000);
/// config.reconnect_max = Duration::from_secs(2);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The Redis URL, e.g. `redis://host:6379/0` (`rediss://` is not supported by this build).
    pub url: String,
    /// Prefix of every key and channel, so several applications can share one Redis (not
    /// empty; default `status-messenger`).
    pub key_prefix: String,
    /// Statuses held while Redis is slow or away, counting those in flight; beyond it they are
    /// dropped and counted (at least 1; default 100,000).
    pub buffer_capacity: usize,
    /// First delay before reconnecting; it doubles with each failed attempt (at least 1 ms;
    /// default 100 ms).
    pub reconnect_min: Duration,
    /// Longest delay between reconnect attempts (at least `reconnect_min`; default 5 s).
    pub reconnect_max: Duration,
    /// Longest wait for a connection or an answer before the connection counts as lost (at
    /// least 1 ms; default 2 s).
    pub timeout: Duration,
}

impl RedisConfig {
    /// The defaults, with `url`.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = status_messenger::RedisConfig::new("redis://localhost/");
    /// assert_eq!(config.url, "redis://localhost/");
    /// assert_eq!(config.timeout, std::time::Duration::from_secs(2));
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "status-messenger".to_owned(),
            buffer_capacity: 100_000,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }

    /// Checks every field; [`Hub::with_redis`] does the same.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut config = status_messenger::RedisConfig::new("not a url");
    /// assert_eq!(config.validate().unwrap_err().field(), "url");
    /// config.url = "redis://localhost/".to_owned();
    /// config.buffer_capacity = 0;
    /// assert_eq!(config.validate().unwrap_err().field(), "buffer_capacity");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client().map(drop)
    }

    fn client(&self) -> Result<redis::Client, ConfigError> {
        let fail = |field, reason| Err(ConfigError { field, reason });
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return fail("url", "is not a valid redis url");
        };
        if self.key_prefix.is_empty() {
            return fail("key_prefix", "must not be empty");
        }
        if self.buffer_capacity == 0 {
            return fail("buffer_capacity", "must be at least 1");
        }
        if self.reconnect_min < Duration::from_millis(1) {
            return fail("reconnect_min", "must be at least 1 ms");
        }
        if self.reconnect_max < self.reconnect_min {
            return fail("reconnect_max", "must be at least reconnect_min");
        }
        if self.timeout < Duration::from_millis(1) {
            return fail("timeout", "must be at least 1 ms");
        }
        Ok(client)
    }
}

/// Validated settings the tasks share.
#[derive(Debug)]
struct Settings {
    keys: Keys,
    history_capacity: usize,
    task_capacity: usize,
    ttl_ms: u64,
    buffer_capacity: usize,
    /// Most items per pipeline.
    batch: usize,
    reconnect_min: Duration,
    reconnect_max: Duration,
    timeout: Duration,
}

/// Tells the writer that the reader saw the connection to Redis fail.
#[derive(Debug, Default)]
struct LinkState {
    generation: AtomicU64,
    down: Notify,
}

impl LinkState {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.down.notify_one();
    }
}

/// State shared by the hub's handle and the two tasks.
struct Shared {
    settings: Settings,
    client: redis::Client,
    outbox: Outbox,
    /// Changes of the tasks started here, waiting to be written.
    tasks: TaskQueue,
    link: LinkState,
    /// Sessions whose local subscriber count went from or to zero since the reader last looked.
    interest: Mutex<HashSet<Arc<str>>>,
    interest_ready: Notify,
    /// The reader's command connection, for `open_session` and `session_exists`; `None` while
    /// Redis is away.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// `conn` was set.
    conn_ready: Notify,
    stop: watch::Sender<bool>,
    /// The reader applied something.
    progress: Notify,
    /// What the writer had numbered when it finished, per session.
    final_heads: Mutex<Option<HashMap<Arc<str>, u64>>>,
}

impl Shared {
    /// The hub is shutting down: the buffer takes no more statuses.
    fn stopping(&self) -> bool {
        *self.stop.borrow() || self.outbox.is_closed()
    }

    fn set_conn(&self, conn: Option<MultiplexedConnection>) {
        let ready = conn.is_some();
        *lock(&self.conn) = conn;
        if ready {
            self.conn_ready.notify_waiters();
        }
    }

    fn take_interest(&self) -> HashSet<Arc<str>> {
        std::mem::take(&mut *lock(&self.interest))
    }

    fn set_final_heads(&self, heads: HashMap<Arc<str>, u64>) {
        *lock(&self.final_heads) = Some(heads);
    }

    /// A command connection; while Redis is away, waits up to the timeout for the reader to
    /// reconnect.
    async fn connection(&self) -> Result<MultiplexedConnection, BackendError> {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        loop {
            let ready = self.conn_ready.notified();
            let mut ready = std::pin::pin!(ready);
            ready.as_mut().enable();
            if let Some(conn) = &*lock(&self.conn) {
                return Ok(conn.clone());
            }
            if tokio::time::timeout_at(deadline, ready).await.is_err() {
                return Err(backend_error(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "not connected (reconnecting)",
                )));
            }
        }
    }
}

/// A Redis failure as the hub reports it.
fn backend_error(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BackendError {
    BackendError::new("redis", source)
}

/// Why [`Hub::with_redis`] could not make a hub.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::redis::ConnectError;
/// use status_messenger::{Hub, HubConfig, RedisConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Nothing listens on port 1.
/// let mut redis = RedisConfig::new("redis://127.0.0.1:1/");
/// redis.timeout = std::time::Duration::from_millis(200);
/// let Err(ConnectError::Backend(error)) = Hub::with_redis(HubConfig::default(), redis).await else {
///     panic!("connected to nothing?");
/// };
/// assert!(error.to_string().starts_with("redis: "));
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// A field of the [`HubConfig`] or the [`RedisConfig`] is out of range.
    Config(ConfigError),
    /// Redis did not answer within [`RedisConfig::timeout`].
    Backend(BackendError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Config(error) => error.fmt(f),
            ConnectError::Backend(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Config(error) => Some(error),
            ConnectError::Backend(error) => Some(error),
        }
    }
}

/// The Redis backend of one hub.
struct RedisBackend {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
    task_writer: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("key_prefix", &self.shared.settings.keys)
            .field("link_generation", &self.shared.link.generation())
            .finish()
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        for task in [&self.writer, &self.reader, &self.task_writer] {
            if let Some(task) = lock(task).take() {
                task.abort();
            }
        }
    }
}

impl Backend for RedisBackend {
    fn start(&self, hub: BackendHandle) {
        let shared = &self.shared;
        let writer = tokio::spawn(writer::Writer::new(Arc::clone(shared), hub.clone()).run());
        let reader = tokio::spawn(reader::Reader::new(Arc::clone(shared), hub.clone()).run());
        let task_writer = tokio::spawn(tasks::run(Arc::clone(shared), hub));
        *lock(&self.writer) = Some(writer);
        *lock(&self.reader) = Some(reader);
        *lock(&self.task_writer) = Some(task_writer);
    }

    /// Queues the change for Redis behind the statuses queued before it; the subscribers here
    /// hear of it when it comes back, as every process's do.
    fn task_changed(&self, hub: Local<'_>, change: &TaskChange<'_>) -> bool {
        let shared = &self.shared;
        let queued = Queued {
            session: change.session.clone().into_shared(),
            task: Arc::clone(&change.task.id),
            state: change.state,
            message: change.message.map(Arc::from),
            after_pushed: shared.outbox.pushed(),
        };
        if !shared.tasks.push(queued, shared.settings.buffer_capacity) {
            hub.counters().backend_errors.add(1);
        }
        false
    }

    /// Takes a checked status for Redis. Never blocks: a full buffer drops it (counted).
    fn publish(&self, hub: Local<'_>, status: Outgoing<'_>) -> Result<Published, PublishError> {
        let counters = hub.counters();
        let body = wire::Body {
            text: status.text,
            extra: status.extra,
        };
        match self.shared.outbox.push(status.session, body) {
            Pushed::Queued => {
                counters.accepted.add(1);
                counters.backend_buffered.add(1);
                Ok(Published::Queued)
            }
            Pushed::Full { first } => {
                counters.dropped_backend.add(1);
                if first {
                    tracing::warn!(
                        target: "status_messenger::redis",
                        buffer_capacity = self.shared.settings.buffer_capacity,
                        "redis buffer full; statuses are dropped until it drains (counted in \
                         HubStats::dropped_backend, subscribers get a gap)"
                    );
                }
                Err(PublishError::BufferFull)
            }
            Pushed::Closed => {
                counters.dropped_closed.add(1);
                Err(PublishError::ShutDown)
            }
        }
    }

    fn interest(&self, session: &SessionId) {
        lock(&self.shared.interest).insert(session.clone().into_shared());
        self.shared.interest_ready.notify_one();
    }

    fn open<'a>(&'a self, _hub: Local<'a>, id: &'a str) -> BoxFuture<'a, Result<(), OpenError>> {
        Box::pin(async move {
            let mut conn = self.shared.connection().await.map_err(OpenError::Backend)?;
            let settings = &self.shared.settings;
            let mut pipe = redis::pipe();
            wire::touch(&mut pipe, &settings.keys, id, settings.ttl_ms);
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|error| OpenError::Backend(backend_error(error)))
        })
    }

    fn exists<'a>(
        &'a self,
        _hub: Local<'a>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>> {
        Box::pin(async move {
            let mut conn = self
                .shared
                .connection()
                .await
                .map_err(LookupError::Backend)?;
            redis::cmd("HEXISTS")
                .arg(self.shared.settings.keys.meta(id))
                .arg("seq")
                .query_async(&mut conn)
                .await
                .map_err(|error| LookupError::Backend(backend_error(error)))
        })
    }

    /// Queues the close behind the statuses already buffered for the session (so they are
    /// applied first), ends the session's streams here at once, and waits up to twice the
    /// timeout for Redis to say whether the session existed.
    fn close<'a>(&'a self, hub: Local<'a>, id: &'a str) -> BoxFuture<'a, Result<bool, CloseError>> {
        let (reply, answer) = oneshot::channel();
        let queued = self.shared.outbox.close(id, reply);
        let here = hub.close(id);
        let wait = self.shared.settings.timeout * 2;
        Box::pin(async move {
            if !queued {
                // Shutting down: the hub closes every session itself.
                return Ok(here);
            }
            match tokio::time::timeout(wait, answer).await {
                Ok(Ok(existed)) => {
                    // Its tasks go with it; they would expire with its other keys otherwise.
                    if let Ok(mut conn) = self.shared.connection().await {
                        let forgotten: redis::RedisResult<()> = redis::cmd("DEL")
                            .arg(self.shared.settings.keys.tasks(id))
                            .query_async(&mut conn)
                            .await;
                        if let Err(error) = forgotten {
                            tracing::debug!(
                                target: "status_messenger::redis",
                                %error,
                                "the closed session's tasks stay until they expire"
                            );
                        }
                    }
                    Ok(existed || here)
                }
                Ok(Err(_unanswered)) => Err(CloseError::Backend(backend_error(
                    "the close could not be applied",
                ))),
                Err(_elapsed) => Err(CloseError::Backend(backend_error(
                    "redis did not confirm the close in time; it stays queued",
                ))),
            }
        })
    }

    /// A task started here is asked at once; any other goes through Redis, which records the
    /// stop (for a task not registered yet too) and tells every process serving the session.
    fn cancel<'a>(
        &'a self,
        hub: Local<'a>,
        id: &'a str,
        task: &'a str,
    ) -> BoxFuture<'a, Result<TaskState, CancelError>> {
        if let CancelHere::Done(state) = hub.cancel_here(id, task) {
            return Box::pin(std::future::ready(Ok(state)));
        }
        Box::pin(async move {
            let shared = &self.shared;
            let settings = &shared.settings;
            let mut conn = shared.connection().await.map_err(CancelError::Backend)?;
            let reply: redis::Value = wire::within(
                settings.timeout,
                wire::cancel_cmd(
                    &settings.keys,
                    settings.ttl_ms,
                    settings.task_capacity,
                    id,
                    task,
                )
                .query_async(&mut conn),
            )
            .await
            .map_err(|error| CancelError::Backend(backend_error(error)))?;
            match wire::parse_cancel_reply(&reply) {
                Some(wire::Cancelled::State(state)) => Ok(state),
                Some(wire::Cancelled::UnknownTask) => Err(CancelError::UnknownTask),
                Some(wire::Cancelled::UnknownSession) => Err(CancelError::UnknownSession),
                None => Err(CancelError::Backend(backend_error(
                    "unexpected reply from the cancel script",
                ))),
            }
        })
    }

    /// Stops both tasks without waiting: the writer still sends what is buffered if Redis is
    /// there, the reader stops at once.
    fn stop(&self) {
        self.shared.outbox.shut();
        self.shared.stop.send_replace(true);
    }

    /// Sends what is buffered, waits (within twice the timeout) until local subscribers have it
    /// in their history, then stops both tasks. What could not be sent is counted as dropped.
    fn shutdown<'a>(&'a self, hub: Local<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let shared = &self.shared;
            shared.outbox.shut();
            let deadline = tokio::time::Instant::now() + shared.settings.timeout * 2;
            // The writer ends once the buffer is empty, or gives up after a failed reconnect.
            let writer = lock(&self.writer).take();
            if let Some(mut writer) = writer {
                if tokio::time::timeout_at(deadline, &mut writer)
                    .await
                    .is_err()
                {
                    writer.abort();
                    let lost = shared.outbox.discard() as u64;
                    hub.counters().backend_buffered.sub(lost);
                    hub.counters().dropped_backend.add(lost);
                    tracing::warn!(
                        target: "status_messenger::redis",
                        statuses = lost,
                        "redis too slow to take the buffered statuses at shutdown; dropped \
                         (counted in HubStats::dropped_backend)"
                    );
                }
            }
            // Task changes wait for the statuses before them, so they are written after.
            if tokio::time::timeout_at(deadline, shared.tasks.drained())
                .await
                .is_err()
            {
                tracing::warn!(
                    target: "status_messenger::redis",
                    "redis too slow to take the task changes at shutdown; the newest are lost"
                );
            }
            let heads = lock(&shared.final_heads).take().unwrap_or_default();
            loop {
                let progress = shared.progress.notified();
                let mut progress = std::pin::pin!(progress);
                progress.as_mut().enable();
                let behind = heads
                    .iter()
                    .any(|(session, head)| hub.watched_head(session).is_some_and(|h| h < *head));
                if !behind || tokio::time::timeout_at(deadline, progress).await.is_err() {
                    break;
                }
            }
            shared.stop.send_replace(true);
            let reader = lock(&self.reader).take();
            if let Some(reader) = reader {
                reader.abort();
                // Aborted, or ended by the stop signal: nothing to report either way.
                let _ = reader.await;
            }
            shared.set_conn(None);
        })
    }
}

impl Hub {
    /// Creates a hub whose sessions live in Redis, shared by every process that uses the same
    /// Redis and key prefix. See the [module docs](self) for how it works and what differs from
    /// [`Hub::new`].
    ///
    /// Connects once to check that Redis answers, then starts two tasks on the current runtime
    /// (a writer and a reader) that reconnect by themselves from then on. Must be called inside
    /// a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Config`] when a field of either config is out of range,
    /// [`ConnectError::Backend`] when Redis does not answer within [`RedisConfig::timeout`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use status_messenger::{Hub, HubConfig, RedisConfig};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), status_messenger::hub::redis::ConnectError> {
    /// let hub = Hub::with_redis(HubConfig::default(), RedisConfig::new("redis://127.0.0.1/")).await?;
    /// hub.publish(Some("s1"), "shared by every process").unwrap();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A config out of range is refused before anything is connected:
    ///
    /// ```
    /// use status_messenger::hub::redis::ConnectError;
    /// use status_messenger::{Hub, HubConfig, RedisConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut redis = RedisConfig::new("redis://127.0.0.1/");
    /// redis.key_prefix.clear();
    /// let result = Hub::with_redis(HubConfig::default(), redis).await;
    /// assert!(matches!(result, Err(ConnectError::Config(e)) if e.field() == "key_prefix"));
    /// # }
    /// ```
    pub async fn with_redis(config: HubConfig, redis: RedisConfig) -> Result<Hub, ConnectError> {
        config.validate().map_err(ConnectError::Config)?;
        let client = redis.client().map_err(ConnectError::Config)?;
        let unreachable = |error| ConnectError::Backend(backend_error(error));
        let mut probe = wire::connect(&client, redis.timeout)
            .await
            .map_err(unreachable)?;
        wire::within(
            redis.timeout,
            redis::cmd("PING").query_async::<()>(&mut probe),
        )
        .await
        .map_err(unreachable)?;
        let ttl_ms = u64::try_from(config.history_ttl.as_millis()).unwrap_or(u64::MAX);
        let settings = Settings {
            keys: Keys::new(&redis.key_prefix),
            history_capacity: config.history_capacity,
            task_capacity: config.task_capacity,
            ttl_ms,
            buffer_capacity: redis.buffer_capacity,
            batch: redis.buffer_capacity.min(1024),
            reconnect_min: redis.reconnect_min,
            reconnect_max: redis.reconnect_max,
            timeout: redis.timeout,
        };
        let shared = Arc::new(Shared {
            settings,
            client,
            outbox: Outbox::new(redis.buffer_capacity),
            tasks: TaskQueue::default(),
            link: LinkState::default(),
            interest: Mutex::new(HashSet::new()),
            interest_ready: Notify::new(),
            conn: Mutex::new(Some(probe)),
            conn_ready: Notify::new(),
            stop: watch::Sender::new(false),
            progress: Notify::new(),
            final_heads: Mutex::new(None),
        });
        let backend = RedisBackend {
            shared,
            writer: Mutex::new(None),
            reader: Mutex::new(None),
            task_writer: Mutex::new(None),
        };
        Ok(Hub::with_backend(config, Box::new(backend)))
    }
}
