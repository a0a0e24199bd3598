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
//! For each session Redis holds (keys `{prefix}:{<session>}:*`, one hash tag per session) its
//! history as a stream (`log`), which is also its counter: one entry per batch of statuses, under
//! the id `0-<first number it takes>`, added with the id `0-*` so that Redis itself gives the next
//! number, trimmed to the batches holding the last [`HubConfig::history_capacity`] numbers (so it
//! keeps at least that many statuses, and at most one batch more); the stream exists while the
//! session does. Beside it, a hash of its tasks (`tasks`) and a hash (`meta`) that only a close
//! writes. Every session's statuses travel on one pub/sub channel, `{prefix}:ch`. Keys live
//! [`HubConfig::history_ttl`] to 1.25 times that after the session's last status, and are
//! renewed while a process has subscribers of the session.
//!
//! - **Writing.** [`Hub::publish`] puts the status in a bounded buffer and returns at once. One
//!   writer task per hub takes what is buffered, at most one batch per
//!   [`RedisConfig::batch_delay`] (unless a full batch is waiting), and sends it as **one** call
//!   of a Lua script (`EVALSHA`) for all the sessions in it, over one multiplexed connection.
//!   For each session the script adds the batch to its stream (one `XADD`, which numbers it),
//!   and publishes what it added for all the sessions as one message on the channel (a
//!   session's frame of 8 KB or more as a message of its own, which saves Redis's Lua copying
//!   and hashing it once more), all atomically: that is what gives every process one numbering
//!   and one order per session. Key
//!   lifetimes are renewed by the first call after a quarter of the TTL, not by every status,
//!   for 1.25 times the TTL, the span every other write of a session's keys gives them too (a
//!   task's change, a cancel, an open, a follower's touch), so none shortens what an earlier
//!   one gave and history lives at least the TTL after its last status.
//!   So a batch costs Redis one call, one publish and one command per session in it, however
//!   the statuses are spread over sessions.
//! - **Reading.** A process subscribes to the channel while it has local subscribers of any
//!   session (one pub/sub connection), and follows the sessions it has subscribers of: before
//!   it follows one it is subscribed, then it reads the session's stream after what it holds,
//!   and copies both into the hub's local per-session history with the numbers Redis gave;
//!   subscriptions read that local history exactly as with the in-memory hub. It hears the
//!   statuses of every session while it listens and keeps those of the sessions it follows: a
//!   session costs Redis no subscription of its own and a batch one message, for traffic to
//!   each listening process that grows with all the sessions' statuses (frames it skips by
//!   their session's id), not only those it serves. A jump in the numbers received is
//!   read back from the stream before anything after it is applied; what the stream no longer
//!   holds reaches subscribers as a [`Gap`](crate::Gap).
//! - **Sessions.** [`Hub::open_session`] makes the session's stream (empty) and
//!   [`Hub::session_exists`] looks for it, so a session created through one process is known to
//!   all.
//!   [`Hub::close_session`] deletes the session's history, counter and tasks and tells every
//!   process serving it to end its subscribers' streams.
//! - **Fields.** A status's fields (progress, level, key, data) and its task's id travel in its
//!   record in the stream and on the channel, so every process and every resume has them.
//! - **Tasks.** Each session has a hash of its tasks (`tasks`: each task's state, its
//!   `last_seq` and its order, and the stops asked). The process that runs a task writes each
//!   change of it in the session's hash and publishes it on the session's channel (its
//!   partition's on a cluster) as a frame of its own (`<first>` is `t`). The change waits in
//!   the writer's buffer among the statuses, and the append call of its batch records it, after
//!   the call's statuses and in its one published message; its session's statuses queued
//!   after it go into a later call of the batch. So every process's subscribers get the change
//!   in its place, and it costs Redis no request or publish of its own unless nothing of
//!   its group came before it in its batch (since a close): a task's `running`
//!   comes before its first step, and none of its statuses follows its `cancelling` or
//!   `cancelled` update anywhere. A process follows a session while a task of it runs there,
//!   as while it has subscribers, and after that task's end until it has heard the end back
//!   (for at most a minute, or the session's time to live), so that what it tells of the task
//!   later (to a page that connects, in [`Hub::tasks`]) is how it ended. A process that
//!   starts following a session reads its tasks right after its history, and its
//!   subscriptions start with their states, then the history.
//! - **Cancel.** [`Hub::cancel_task`] for a task that runs in this process asks it at once.
//!   Otherwise a script looks the task up in the session's hash, records the stop there and
//!   publishes it on the session's channel (a frame whose `<first>` is `c`), where the process
//!   running the task applies it; a process that was not listening finds the stop when it
//!   follows the session again. A stop for a task Redis does not know yet (its process has
//!   started it and not yet written it) is answered [`CancelError::UnknownTask`], and kept for a
//!   time to live: the task is stopped when its process writes it.
//! - **A Redis Cluster** (feature `redis-cluster`, [`Hub::with_redis_cluster`]) groups sessions
//!   into partitions whose keys share one hash tag, one call per partition per batch, published
//!   once per call with sharded pub/sub: see [`cluster`].
//!
//! # Key layout
//!
//! This is the third layout. The first (release 0.1.0) kept each session's counter and writer
//! tokens in its hash, numbered stream entries `<first>-0`, and had one script call per session
//! per batch. The second made the stream the counter (entries `0-<first>`, each call's token in
//! the field `t` of its first entry) and a published message carry one frame per session
//! (`<id length> <records length> <first>\n<id><records>`; `<first>` is `x` for a close, `t`
//! for a task's change and `c` for a stop asked), on a channel per session
//! (`{prefix}:{<session>}:ch`). The third publishes those frames on one channel, `{prefix}:ch`,
//! one message per call. Since then a call's message may also carry task changes' frames after
//! its statuses' (the append call records them); keys, fields and frames are the same, and
//! every reader of the third layout takes frames of any kind in any mix, so processes of this
//! version and of the one before share a Redis.
//! Processes of different layouts must not share a Redis (they would not hear each other): give
//! the new ones another [`RedisConfig::key_prefix`], or let the old sessions expire first (a
//! stream of the first layout that is written to again is replaced).
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
//! - **Calls a request waits on.** [`Hub::open_session`], [`Hub::session_exists`] and
//!   [`Hub::cancel_task`] wait at most [`RedisConfig::request_timeout`] (250 ms by default) for
//!   a connection and their command together. While Redis is known to be away (the reader's
//!   last attempt to reconnect failed) they answer at once, and so does [`Hub::close_session`]
//!   (its close stays queued): the error says Redis is unavailable and, through
//!   [`BackendError::retry_after`](crate::hub::BackendError::retry_after), when to try again
//!   (when the next attempt to reconnect is due, at least a second), which a server answers as
//!   a 503 with `Retry-After`. The reader connecting again wakes the writer from its backoff, so
//!   what was buffered leaves at once.
//! - **Reconnecting.** Both tasks reconnect with exponential backoff from
//!   [`RedisConfig::reconnect_min`] to [`RedisConfig::reconnect_max`]. The reader resubscribes to
//!   every session that has local subscribers and reads each stream from the last number it
//!   applied, so nothing in history is missed. A batch whose reply was lost is sent again; each
//!   call's token, recorded in the first stream entry it added, makes the script skip calls that
//!   had run, so nothing is added twice.
//! - **Redis restarted without its data.** A random epoch key tells: the first process back
//!   writes a new one and every process sees the change. History written before is gone
//!   (subscribers that need it get a gap). Each process raises the counter of every session it
//!   knows back to the highest number it has seen, so numbering never goes back and nothing is
//!   delivered twice. A batch that was in flight has unknown fate (some subscribers may have its
//!   statuses): its numbers are skipped instead of sending it again, and counted as dropped.
//!   Those are the numbers it had if it ran, right after what its writer last had confirmed:
//!   where a process that saw it already raised the counter to their end, nothing more is
//!   skipped, so its subscribers see no gap and later statuses keep their places. Only where
//!   another process numbered statuses of the same session meanwhile are as many fresh numbers
//!   skipped instead, so that nobody misses the batch without a gap. A session that is
//!   written back this way is one that holds statuses or has a stream open on some process; a
//!   session opened and not used yet (no status, no stream) is gone with the data:
//!   [`Hub::session_exists`] answers `false` for it, and a page asking with its id gets 404 and
//!   makes a new one.
//! - **A backlog larger than the history.** Statuses published while Redis is away or stalled
//!   wait in the buffer and go out in batches of up to 1,024 when it is back, so they land
//!   together. A subscriber that is then more than the history
//!   ([`HubConfig::history_capacity`](crate::HubConfig::history_capacity)) or its buffer
//!   ([`HubConfig::subscriber_buffer`](crate::HubConfig::subscriber_buffer)) behind gets a gap
//!   for the oldest of them, counted in [`HubStats::lagged`](crate::HubStats::lagged), as it
//!   would for any burst that size. For example, a tool adding a status every 2 ms while Redis
//!   was stopped for 3 s (1,281 statuses waiting when it came back): a page 1 behind got a gap
//!   of the oldest 24 of the first batch of 1,024, against a history of 1,000.
//! - **Redis restarted from an older snapshot** (an RDB file saved earlier, or a replica that
//!   lagged taking over under the same epoch). A session's counter may then stand below numbers
//!   subscribers already had. Each time a writer reconnects, before it sends anything, it puts
//!   the counter of every session it was given numbers for (within the TTL) back to at least the
//!   highest of them, so a process that never numbered the session does not number statuses
//!   under them; what the snapshot lost reaches subscribers that missed it as a gap. A reader
//!   that finds a counter below what it applied counts it as an error and logs it. Left open:
//!   statuses published to the session by a process that never numbered it, in the moments
//!   between Redis coming back and the first writer that did reconnecting, come under numbers
//!   the processes that had the old statuses skip.
//! - **A session closed while a process was cut off.** Redis counts each session's closes
//!   (field `closes` of its hash `meta`, renewed while the session is served). A process that
//!   reads a session again (after reconnecting, or when it starts serving it again) and finds
//!   more closes than it last read ends the session here, as the close message would have: its
//!   streams end, and no status of the session opened since reaches them under a number they
//!   already had.
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
//! - On one Redis, Redis restarted empty is detected by the epoch key; on a Redis Cluster,
//!   failovers are handled as the [`cluster`] module says.
//!
//! # What a status costs Redis
//!
//! Measured with two axum demo servers on one Redis (and on a cluster of three masters with a
//! replica each), the load generator creating sessions and tasks on one and reading from the
//! other, Redis's counters reset before and read after (`INFO commandstats`, `INFO stats`, the
//! redis-server process's CPU time), divided by the statuses delivered; the method, the command
//! (`tools/redis_cost.py`) and every figure are in `benches/README.md` (section "What a status
//! costs Redis"). Medians on a shared 2-core machine:
//!
//! | shape | one Redis: before (a task's change a call of its own) | one Redis: now | cluster: before (masters; replicas) | cluster: now |
//! | --- | ---: | ---: | ---: | ---: |
//! | bulk: 100 sessions x 1,000 statuses, no delay | 0.80 µs | 0.68 µs | 1.30 µs; 0.47 µs | 1.15 µs; 0.43 µs |
//! | sparse: 1,000 sessions x 20 statuses, 50 ms apart | 22.3 µs, 329 B | 17.3 µs, 321 B | 43.2 µs; 18.0 µs | 34.9 µs; 13.6 µs |
//!
//! (Redis CPU and bytes in per delivered status; the sparse shape is 20,000 statuses/s with
//! about one status per session in each 1 ms batch.) So one Redis core carries about 1,400,000
//! statuses/s in the bulk shape and 58,000/s in the sparse one; on a cluster a master core
//! carries about 29,000/s sparse (a call there serves the few statuses of one partition, and
//! its effects are replicated), and the cluster grows with its masters. A sparse batch holds
//! about one status per session, and each still costs an `XADD` to its session's stream (3 to
//! 4 µs on that machine, with the script's call around it) and its share of the session's own
//! requests (creating, two existence checks, attaching in each process: about 2 µs per status
//! at 20 statuses per session); a task's changes ride the append calls of their batches.
//! [`RedisConfig::batch_delay`] and [`cluster::RedisClusterConfig::partitions`] trade latency
//! and spreading for bigger calls.
//!
//! # Choosing the bounds
//!
//! [`RedisConfig::batch_delay`] (default 1 ms) trades latency for Redis CPU: statuses wait at
//! most that long for the batch they go in. At 0 a batch leaves as soon as the previous one is
//! confirmed, which under a steady trickle means one call per status or two.
//!
//! [`RedisConfig::buffer_capacity`] (default 100,000) bounds the statuses held while Redis is
//! away: take the statuses per second of the whole process times the longest outage to ride
//! out, within memory (each costs about its text plus 64 bytes). The backoff bounds decide how
//! soon a returning Redis is noticed ([`RedisConfig::reconnect_max`], default 1 s, so delivery
//! resumes within about a second of Redis or a promoted replica answering again, whatever the
//! outage lasted) and how hard a missing one is hammered ([`RedisConfig::reconnect_min`],
//! default 100 ms; then one attempt a second per process and task).
//!
//! [`RedisConfig::request_timeout`] (default 250 ms) bounds how long a request waits on a Redis
//! that is slow, or gone without a word (every byte lost, so nothing tells the hub yet): above
//! Redis's slowest answer under load (a few milliseconds on a healthy server), below what a page
//! should wait for a new session. [`RedisConfig::timeout`] (default 2 s) is the background
//! tasks' bound: how long a connection may stay silent before it counts as lost.
//!
//! [`CancelError::UnknownTask`]: crate::hub::CancelError::UnknownTask
//! [`Published::Queued`]: crate::hub::Published::Queued

mod backend;
#[cfg(feature = "redis-cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
pub mod cluster;
mod config;
mod follow;
mod outbox;
mod reader;
mod wire;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use self::backend::RedisBackend;
use self::config::Settings;
pub use self::config::{ConnectError, RedisConfig};
use self::outbox::Outbox;
use self::wire::{Conn, Layout, Scripts};
use super::{BackendError, Hub, HubConfig};
use crate::sync::lock;

/// How to make connections: to one Redis, or to a cluster.
enum Backing {
    Single(redis::Client),
    #[cfg(feature = "redis-cluster")]
    Cluster(cluster::Nodes),
}

impl Backing {
    /// A command connection within `timeout`.
    async fn command_conn(&self, timeout: Duration) -> redis::RedisResult<Conn> {
        match self {
            Backing::Single(client) => wire::connect(client, timeout).await.map(Conn::Single),
            #[cfg(feature = "redis-cluster")]
            Backing::Cluster(nodes) => nodes.connect(timeout, None).await.map(Conn::Cluster),
        }
    }
}

/// Tells the writer that the reader saw the connection to Redis fail, and (on a cluster) the
/// reader that the writer did.
#[derive(Debug, Default)]
struct LinkState {
    generation: AtomicU64,
    down: Notify,
    /// Write failures seen by the writer: on a cluster a node may have failed without the
    /// reader's connection to it noticing yet.
    writer_failures: AtomicU64,
}

impl LinkState {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.down.notify_one();
    }

    fn writer_failed(&self) {
        self.writer_failures.fetch_add(1, Ordering::AcqRel);
    }

    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code))]
    fn writer_failures(&self) -> u64 {
        self.writer_failures.load(Ordering::Acquire)
    }
}

/// State shared by the hub's handle and the two tasks.
struct Shared {
    settings: Settings,
    backing: Backing,
    scripts: Scripts,
    outbox: Outbox,
    link: LinkState,
    /// Sessions whose local subscriber count went from or to zero since the reader last looked.
    interest: Mutex<HashSet<Arc<str>>>,
    interest_ready: Notify,
    /// The reader's command connection, for `open_session` and `session_exists`; `None` while
    /// Redis is away.
    conn: Mutex<Option<Conn>>,
    /// Set while Redis is known to be away (the reader's last attempt to connect failed), so
    /// that calls on a request's path answer at once; cleared when a connection is made.
    down: Mutex<Option<Down>>,
    /// `down` was set: calls waiting for a connection or a confirmation answer now.
    went_down: Notify,
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

    fn set_conn(&self, conn: Option<Conn>) {
        let ready = conn.is_some();
        *lock(&self.conn) = conn;
        if ready {
            *lock(&self.down) = None;
            self.conn_ready.notify_waiters();
        }
    }

    /// The reader failed to connect and tries again after `retry_in`: until a connection is
    /// made, calls on a request's path fail at once.
    fn set_down(&self, error: &redis::RedisError, retry_in: Duration) {
        *lock(&self.down) = Some(Down {
            reason: error.to_string(),
            retry_at: tokio::time::Instant::now() + retry_in,
        });
        self.went_down.notify_waiters();
    }

    /// The error to answer at once while Redis is known to be away.
    fn unavailable(&self) -> Option<BackendError> {
        let down = lock(&self.down);
        let down = down.as_ref()?;
        let wait = down
            .retry_at
            .saturating_duration_since(tokio::time::Instant::now());
        Some(
            backend_error(format!(
                "unavailable ({}); reconnecting in the background",
                down.reason
            ))
            .with_retry_after(retry_after(wait)),
        )
    }

    fn take_interest(&self) -> HashSet<Arc<str>> {
        std::mem::take(&mut *lock(&self.interest))
    }

    /// Has the reader look again at whether each of `sessions` is still to be followed: one
    /// can stop being so without a change of its own (evicted, or past the wait for a task's
    /// end, `UNHEARD_END_WAIT_MS`).
    fn recheck_interest(&self, sessions: Vec<Arc<str>>) {
        lock(&self.interest).extend(sessions);
        self.interest_ready.notify_one();
    }

    fn set_final_heads(&self, heads: HashMap<Arc<str>, u64>) {
        *lock(&self.final_heads) = Some(heads);
    }

    /// A command connection for a call on a request's path, by `deadline`: at once while Redis
    /// is known to be away; while the reader is reconnecting (and has not failed yet), waits
    /// for it until then.
    async fn connection(&self, deadline: tokio::time::Instant) -> Result<Conn, BackendError> {
        loop {
            let ready = self.conn_ready.notified();
            let mut ready = std::pin::pin!(ready);
            ready.as_mut().enable();
            let went_down = self.went_down.notified();
            let mut went_down = std::pin::pin!(went_down);
            went_down.as_mut().enable();
            // Known down first: a cluster keeps its last connection while it cannot make a new
            // one.
            if let Some(error) = self.unavailable() {
                return Err(error);
            }
            if let Some(conn) = &*lock(&self.conn) {
                return Ok(conn.clone());
            }
            let either = async {
                tokio::select! {
                    () = ready => {}
                    () = went_down => {}
                }
            };
            if tokio::time::timeout_at(deadline, either).await.is_err() {
                return Err(backend_error(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "not connected (reconnecting)",
                ))
                .with_retry_after(retry_after(Duration::ZERO)));
            }
        }
    }

    /// When a call on a request's path must be answered by.
    fn request_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.settings.request_timeout
    }
}

/// Redis known to be away: why, and when the reader tries again.
#[derive(Debug)]
struct Down {
    reason: String,
    retry_at: tokio::time::Instant,
}

/// `Retry-After` for a wait: whole seconds (HTTP has no finer unit), at least one.
fn retry_after(wait: Duration) -> Duration {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Duration::from_secs(seconds.max(1))
}

/// A failure of a call on a request's path as the hub reports it: one a retry may cure says
/// so. That is the connection or a timeout; and what a Redis answers while it recovers:
/// loading its data, a replica that was a master, or scripts not yet loaded on a newly
/// promoted master; on a cluster also a cluster down or a master gone until a replica takes
/// over, and a slot on its way to another node (moved, ask, try again) once the cluster
/// client's own redirects ran out. On one Redis those are a wrong configuration (a cluster
/// node given as one Redis), which no retry mends.
fn request_error(error: redis::RedisError, layout: Layout) -> BackendError {
    use redis::{ErrorKind, ServerErrorKind};
    let recovering = match error.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading | ServerErrorKind::ReadOnly | ServerErrorKind::NoScript,
        ) => true,
        ErrorKind::Server(
            ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::TryAgain,
        )
        | ErrorKind::ClusterConnectionNotFound => layout != Layout::Single,
        _ => false,
    };
    let transient = recovering
        || error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal();
    let error = backend_error(error);
    if transient {
        error.with_retry_after(retry_after(Duration::ZERO))
    } else {
        error
    }
}

/// A Redis failure as the hub reports it.
fn backend_error(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BackendError {
    BackendError::new("redis", source)
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
        let settings = redis.common().settings(&config, Layout::Single);
        Ok(RedisBackend::hub(
            config,
            settings,
            Backing::Single(client),
            Some(Conn::Single(probe)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    use super::{request_error, Layout};

    /// What a Redis or a cluster answers while it recovers is told as worth a retry (a 503
    /// with `Retry-After` at the endpoints); a refusal that no retry mends is not, nor a
    /// cluster's answer from what was configured as one Redis.
    #[test]
    fn errors_of_a_recovering_redis_say_to_retry() {
        let error = |kind, layout| request_error(RedisError::from((kind, "recovering")), layout);
        let cluster = Layout::Cluster { partitions: 16 };
        for kind in [
            ServerErrorKind::BusyLoading,
            ServerErrorKind::ReadOnly,
            ServerErrorKind::NoScript,
        ] {
            for layout in [Layout::Single, cluster] {
                let error = error(ErrorKind::Server(kind), layout);
                assert!(
                    error.retry_after().is_some(),
                    "{kind:?} {layout:?}: {error}"
                );
            }
        }
        for kind in [
            ServerErrorKind::ClusterDown,
            ServerErrorKind::MasterDown,
            ServerErrorKind::Moved,
            ServerErrorKind::Ask,
            ServerErrorKind::TryAgain,
        ] {
            let on_cluster = error(ErrorKind::Server(kind), cluster);
            assert!(on_cluster.retry_after().is_some(), "{kind:?}: {on_cluster}");
            let on_one = error(ErrorKind::Server(kind), Layout::Single);
            assert_eq!(on_one.retry_after(), None, "{kind:?}: {on_one}");
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(request_error(RedisError::from(io), Layout::Single)
            .retry_after()
            .is_some());
        for kind in [
            ErrorKind::Server(ServerErrorKind::ResponseError),
            ErrorKind::AuthenticationFailed,
        ] {
            let error = request_error(RedisError::from((kind, "refused")), cluster);
            assert_eq!(error.retry_after(), None, "{kind:?}: {error}");
        }
    }
}
