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
//!
//! The core is one type over three files: here what every status passes (checks, numbering
//! here or delivery from elsewhere); `sessions`, the table of sessions (lookup, opening,
//! closing, eviction and sweeping); `tasks`, the tasks of its sessions.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::backend::{Backend, Local, Outgoing};
use super::config::{cut_at_char_boundary, truncate};
use super::counters::Counters;
use super::event::Extra;
use super::log::hot_window;
use super::state::{End, Session, State};
use super::{HubConfig, NoSessionPolicy, PublishError, Published, SessionId, MAX_KEY_BYTES};
use crate::messenger::Payload;
use crate::status::Fields;
use crate::sync::lock;
use crate::task::TaskRef;

mod sessions;
mod tasks;

pub(crate) use self::sessions::Refusal;
pub(crate) use self::sessions::SHARDS;
use self::sessions::{lock_shard, touch, Count};
use self::sessions::{IdHasher, Shard};
pub(crate) use self::tasks::{CancelHere, TaskRecord};

/// Milliseconds since the hub was created, on tokio's clock (so paused time applies).
#[derive(Debug)]
pub(crate) struct Clock {
    epoch: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn now_ms(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.epoch);
        // Seconds and their milliseconds apart, not `as_millis`: that one is 128-bit
        // arithmetic, on the path of every status.
        elapsed
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(elapsed.subsec_millis()))
    }
}

/// Warnings logged once per hub, so a flood of drops cannot flood the log.
#[derive(Debug, Default)]
struct Warned {
    no_session: AtomicBool,
    invalid: AtomicBool,
    limit: AtomicBool,
    room: AtomicBool,
    truncated: AtomicBool,
    cancelled: AtomicBool,
}

fn first_time(flag: &AtomicBool) -> bool {
    !flag.swap(true, Ordering::Relaxed)
}

/// How long a shared backend follows a session, with no subscriber and no task running here,
/// for the end of a task that ran here to come back from the store. An end comes back within
/// a round trip, or after an outage once the writer has reconnected; one that never reached
/// the store (lost with a full buffer, refused by it) is waited for no longer than this, nor
/// than the session's time to live; the reader lets the session go at its next renewal of
/// the followed sessions' keys (every third of the time to live).
pub(crate) const UNHEARD_END_WAIT_MS: u64 = 60_000;

/// Whether a shared backend should follow `session` for this process (`now` in hub
/// milliseconds): while it has subscribers or running tasks here, and until the end of every
/// task that ran here has come back from the store (otherwise this process would go on
/// telling it as it last heard it), for at most [`UNHEARD_END_WAIT_MS`].
fn is_watched(session: &Session, now: u64) -> bool {
    session.subscribers.load(Ordering::Acquire) > 0
        || session.running_tasks.load(Ordering::Acquire) > 0
        || (session.unheard_ends.load(Ordering::Acquire) > 0
            && now < session.unheard_until_ms.load(Ordering::Acquire))
}

/// A status numbered elsewhere, for [`Core::deliver`].
#[derive(Debug)]
pub(crate) struct Delivered {
    pub(crate) seq: u64,
    pub(crate) text: Arc<str>,
    pub(crate) extra: Option<Arc<Extra>>,
}

pub(crate) struct Core {
    pub(crate) config: HubConfig,
    /// [`NoSessionPolicy::Deliver`]'s id, checked once.
    no_session: Option<SessionId>,
    ttl_ms: u64,
    sweep_every_ms: u64,
    shards: Box<[Shard]>,
    /// Hashes session ids, once per call: the hash picks the shard and finds the id in its
    /// map (see `Key`).
    hasher: IdHasher,
    pub(crate) clock: Clock,
    pub(crate) counters: Counters,
    shut_down: AtomicBool,
    /// Wakes consumers when the hub shuts down.
    pub(crate) stop: Notify,
    pub(crate) consumers: AtomicUsize,
    pub(crate) consumer_left: Notify,
    next_sweep_ms: AtomicU64,
    /// Held by the one caller making room in a full table (see `make_room`), so that a crowd
    /// of new sessions arriving together makes room once, not once each.
    making_room: Mutex<()>,
    /// Until when (hub ms) a full table is known to have no session that may give way: new
    /// sessions are refused at once instead of each scanning the whole table again.
    no_room_until_ms: AtomicU64,
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
            hasher: IdHasher::default(),
            clock: Clock {
                epoch: tokio::time::Instant::now(),
            },
            counters: Counters::new(),
            shut_down: AtomicBool::new(false),
            stop: Notify::new(),
            consumers: AtomicUsize::new(0),
            consumer_left: Notify::new(),
            next_sweep_ms: AtomicU64::new(sweep_every_ms),
            making_room: Mutex::new(()),
            no_room_until_ms: AtomicU64::new(0),
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
    pub(super) fn extra(
        &self,
        fields: Option<Box<Fields>>,
        task: Option<&TaskRef>,
        cut: &mut bool,
    ) -> Option<Arc<Extra>> {
        if fields.is_none() && task.is_none() {
            return None;
        }
        let mut extra = Extra::new(task.map(|task| Arc::clone(&task.id)), None);
        if let Some(fields) = fields {
            let Fields {
                progress,
                level,
                key,
                data,
            } = *fields;
            extra.progress = progress;
            let key = key.map(|mut key| {
                *cut |= cut_at_char_boundary(&mut key, MAX_KEY_BYTES);
                key.into_boxed_str()
            });
            let data = data.filter(|data| {
                let fits = data.len() <= self.config.max_status_bytes;
                *cut |= !fits;
                fits
            });
            extra.set_rare(level, key, data);
        }
        Some(Arc::new(extra))
    }

    /// Counts a status refused because its task was cancelled.
    pub(super) fn refuse_cancelled(&self, session: &str) {
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
        let mut status = status;
        let now = status.at_ms;
        // An eviction or a close can win against this append between opening the session and
        // appending to it; then the next attempt finds out why, or opens it anew, as if the
        // status had come after.
        for _ in 0..3 {
            status = match self.append_to_held(status) {
                Ok(seq) => return Ok(seq),
                Err(status) => status,
            };
            let session = match self.session(status.session, now, true, Count::Nothing) {
                Ok(session) => session,
                Err(refusal) => {
                    self.count_refusal(refusal);
                    return Err(refusal.into());
                }
            };
            let state = session.lock();
            match state.end {
                Some(End::Evicted) => continue,
                Some(End::Closed) => {
                    drop(state);
                    self.counters.dropped_closed.add(1);
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
            // Open, live, and marked active at `now`: held as the next attempt needs it.
        }
        self.counters.dropped_closed.add(1);
        Err(PublishError::SessionClosed)
    }

    /// Where [`Core::append`] numbers every status: to a session held here, open and not idle
    /// past its TTL, for no cancelled task. It appends while still holding the shard lock
    /// (shard, then session: the lock order), which spares raising and lowering the session's
    /// reference count for every status and lets the shard's counts be kept without a
    /// read-modify-write, and the shard's other sessions wait no longer than the append
    /// itself. Gives the status back in every other case, for [`Core::append`] to find out
    /// why under its own locks, or to open the session and try again.
    fn append_to_held<'a>(&self, status: Outgoing<'a>) -> Result<u64, Outgoing<'a>> {
        let now = status.at_ms;
        let key = self.key(status.session);
        let shard = self.shard_index(key);
        let map = lock_shard(&self.shards[shard]);
        // Under the shard lock, as when a session is opened (see the module invariants).
        if self.is_shut_down() {
            return Err(status);
        }
        let Some(session) = map.get(key) else {
            return Err(status);
        };
        if self.idle_expired(session, now) {
            return Err(status);
        }
        let mut state = session.lock();
        let cancelled = status
            .task
            .as_ref()
            .is_some_and(|task| task.token.is_cancelled());
        if state.end.is_some() || cancelled {
            return Err(status);
        }
        // Under the shard lock before appending, as `find_or_open` does (see `state`).
        touch(session, now);
        let (seq, removed) = self.push(session, &mut state, status.text, status.extra, now);
        let wake = state.take_wakers();
        drop(state);
        // Under the shard lock, which spares the counts a read-modify-write (see `counters`).
        self.counters.appended_in(shard, removed);
        drop(map);
        wake.wake();
        Ok(seq)
    }

    /// Numbers a status in a live session's log, under its lock; returns its number and how
    /// many statuses left history.
    fn push(
        &self,
        session: &Session,
        state: &mut State,
        text: Arc<str>,
        extra: Option<Arc<Extra>>,
        now: u64,
    ) -> (u64, u64) {
        let window = hot_window(
            session.subscribers.load(Ordering::Relaxed),
            self.config.subscriber_buffer,
        );
        state
            .log
            .append_within(self.bounds(), text, extra, now, window)
    }

    /// Puts statuses numbered elsewhere into `id`'s history, and records that numbers up to
    /// `head` were given (those not held reach subscribers as a gap); wakes its subscribers.
    /// Only sessions this process holds take them.
    pub(crate) fn deliver(&self, id: &str, statuses: Vec<Delivered>, head: u64) {
        let Some(session) = self.held(id) else {
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
        let window = hot_window(
            session.subscribers.load(Ordering::Relaxed),
            self.config.subscriber_buffer,
        );
        for Delivered { seq, text, extra } in statuses {
            state.log.insert(seq, text, extra, now, capacity, window);
        }
        state.log.skip_to(head);
        removed += self.trim(&mut state.log, now);
        let after = state.log.len() as u64;
        let wake = state.take_wakers();
        drop(state);
        touch(&session, now);
        self.counters
            .retained
            .shift(after + removed - before, removed);
        wake.wake();
    }

    /// Sessions with local subscribers or tasks running here, with the highest number their
    /// history has held.
    pub(crate) fn watched(&self) -> Vec<(SessionId, u64)> {
        let now = self.clock.now_ms();
        let mut watched = Vec::new();
        for shard in self.shards.iter() {
            for session in lock_shard(shard).sessions() {
                if is_watched(session, now) {
                    watched.push((session.id.clone(), session.lock().log.head()));
                }
            }
        }
        watched
    }

    /// The highest number held by `id`'s history, if it has local subscribers or tasks
    /// running here.
    pub(crate) fn watched_head(&self, id: &str) -> Option<u64> {
        let session = self.held(id)?;
        if !is_watched(&session, self.clock.now_ms()) {
            return None;
        }
        let head = session.lock().log.head();
        Some(head)
    }

    /// Whether the session `id` is held here, as it stands (no eviction, no activity).
    pub(crate) fn holds(&self, id: &str) -> bool {
        let key = self.key(id);
        lock_shard(self.shard_of(key)).contains(key)
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
}
