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

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::backend::{Backend, Local, Outgoing};
use super::config::truncate;
use super::counters::Counters;
use super::log::SessionLog;
use super::state::{End, Session};
use super::{
    HubConfig, NoSessionPolicy, OpenError, PublishError, Published, SessionId, SubscribeError,
};
use crate::sync::lock;

type Shard = Mutex<HashMap<SessionId, Arc<Session>>>;

const SHARDS: usize = 16;

/// Why a session could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ShutDown,
    TooMany,
    Missing,
}

impl From<Refusal> for PublishError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::ShutDown => PublishError::ShutDown,
            Refusal::TooMany => PublishError::TooManySessions,
            // Only asked for when creating is allowed, so a shut-down race at worst.
            Refusal::Missing => PublishError::ShutDown,
        }
    }
}

impl From<Refusal> for OpenError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooMany => OpenError::TooManySessions,
            Refusal::ShutDown | Refusal::Missing => OpenError::ShutDown,
        }
    }
}

impl From<Refusal> for SubscribeError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooMany => SubscribeError::TooManySessions,
            Refusal::ShutDown | Refusal::Missing => SubscribeError::ShutDown,
        }
    }
}

/// Milliseconds since the hub was created, on tokio's clock (so paused time applies).
#[derive(Debug)]
pub(crate) struct Clock {
    epoch: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn now_ms(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Warnings logged once per hub, so a flood of drops cannot flood the log.
#[derive(Debug, Default)]
struct Warned {
    no_session: AtomicBool,
    invalid: AtomicBool,
    limit: AtomicBool,
    truncated: AtomicBool,
}

fn first_time(flag: &AtomicBool) -> bool {
    !flag.swap(true, Ordering::Relaxed)
}

pub(crate) struct Core {
    pub(crate) config: HubConfig,
    /// [`NoSessionPolicy::Deliver`]'s id, checked once.
    no_session: Option<SessionId>,
    ttl_ms: u64,
    sweep_every_ms: u64,
    shards: Box<[Shard]>,
    pub(crate) clock: Clock,
    pub(crate) counters: Counters,
    shut_down: AtomicBool,
    /// Wakes consumers when the hub shuts down.
    pub(crate) stop: Notify,
    pub(crate) consumers: AtomicUsize,
    pub(crate) consumer_left: Notify,
    next_sweep_ms: AtomicU64,
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

pub(crate) fn lock_shard(shard: &Shard) -> MutexGuard<'_, HashMap<SessionId, Arc<Session>>> {
    lock(shard)
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
            clock: Clock {
                epoch: tokio::time::Instant::now(),
            },
            counters: Counters::new(),
            shut_down: AtomicBool::new(false),
            stop: Notify::new(),
            consumers: AtomicUsize::new(0),
            consumer_left: Notify::new(),
            next_sweep_ms: AtomicU64::new(sweep_every_ms),
            warned: Warned::default(),
            attached: Mutex::new(None),
            backend,
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Checks a status (hub open, session, id, size) and hands it to the backend.
    pub(crate) fn publish(
        &self,
        session: Option<&str>,
        text: String,
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
        let mut text = text;
        if truncate(&mut text, self.config.max_status_bytes) {
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
            at_ms: now,
        };
        self.backend.publish(Local(self), outgoing)
    }

    /// Numbers a checked status here, as the next of its session (opening it if needed).
    pub(crate) fn append(&self, status: Outgoing<'_>) -> Result<u64, PublishError> {
        let counters = &self.counters;
        let now = status.at_ms;
        // An eviction can only win against this append when the TTL is shorter than the time
        // between looking the session up and locking it; then the next attempt opens it anew.
        for _ in 0..3 {
            let session = match self.session(status.session, now, true, false) {
                Ok(session) => session,
                Err(refusal) => {
                    self.count_refusal(refusal);
                    return Err(refusal.into());
                }
            };
            let mut state = session.lock();
            match state.end {
                Some(End::Evicted) => continue,
                Some(End::Closed) => {
                    drop(state);
                    counters.dropped_closed.add(1);
                    tracing::debug!(
                        target: "status_messenger::hub",
                        session = %session.id,
                        "session closed; status dropped"
                    );
                    return Err(PublishError::SessionClosed);
                }
                None => {}
            }
            // Expire first: a status arriving after a quiet spell must not revive old history.
            let mut removed = self.trim(&mut state.log, now);
            let seq = state.log.append(Arc::clone(&status.text), now);
            removed += self.trim(&mut state.log, now);
            let wake = state.take_wakers();
            drop(state);
            counters.accepted.add(1);
            counters.retained.add(1);
            counters.retained.sub(removed);
            wake.wake();
            return Ok(seq);
        }
        counters.dropped_closed.add(1);
        Err(PublishError::SessionClosed)
    }

    /// Puts statuses numbered elsewhere into `id`'s history, and records that numbers up to
    /// `head` were given (those not held reach subscribers as a gap); wakes its subscribers.
    /// Only sessions this process holds take them.
    pub(crate) fn deliver(&self, id: &str, statuses: Vec<(u64, Arc<str>)>, head: u64) {
        let Some(session) = lock_shard(self.shard(id)).get(id).cloned() else {
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
        for (seq, text) in statuses {
            state.log.insert(seq, text, now, capacity);
        }
        state.log.skip_to(head);
        removed += self.trim(&mut state.log, now);
        let after = state.log.len() as u64;
        let wake = state.take_wakers();
        drop(state);
        session.last_activity_ms.fetch_max(now, Ordering::Relaxed);
        self.counters.retained.add(after + removed - before);
        self.counters.retained.sub(removed);
        wake.wake();
    }

    /// Sessions with local subscribers, with the highest number their history has held.
    pub(crate) fn watched(&self) -> Vec<(SessionId, u64)> {
        let mut watched = Vec::new();
        for shard in self.shards.iter() {
            for (id, session) in lock_shard(shard).iter() {
                if session.subscribers.load(Ordering::Acquire) > 0 {
                    watched.push((id.clone(), session.lock().log.head()));
                }
            }
        }
        watched
    }

    /// The highest number held by `id`'s history, if it has local subscribers.
    pub(crate) fn watched_head(&self, id: &str) -> Option<u64> {
        let session = lock_shard(self.shard(id)).get(id).cloned()?;
        if session.subscribers.load(Ordering::Acquire) == 0 {
            return None;
        }
        let head = session.lock().log.head();
        Some(head)
    }

    /// Opens (or marks active) the checked session `id` here.
    pub(crate) fn open(&self, id: &str) -> Result<(), Refusal> {
        let now = self.clock.now_ms();
        self.maybe_sweep(now);
        self.session(id, now, true, false).map(drop)
    }

    /// Whether the checked session `id` is held here.
    pub(crate) fn exists(&self, id: &str) -> bool {
        let now = self.clock.now_ms();
        self.maybe_sweep(now);
        self.session(id, now, false, false).is_ok()
    }

    /// Opens the checked session `id` if needed and counts a subscriber in it.
    pub(crate) fn join(&self, id: &str) -> Result<Arc<Session>, Refusal> {
        let now = self.clock.now_ms();
        self.maybe_sweep(now);
        let session = self.session(id, now, true, true)?;
        self.counters.subscribers.add(1);
        Ok(session)
    }

    /// Ends the session `id` here: its subscribers get what it holds, then their streams end.
    /// Returns whether this process held it.
    pub(crate) fn close(&self, id: &str) -> bool {
        let removed = lock_shard(self.shard(id)).remove(id);
        match removed {
            Some(session) => {
                self.counters.sessions.sub(1);
                self.end_session(&session, End::Closed);
                true
            }
            None => false,
        }
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

    pub(crate) fn close_sessions(&self) {
        for shard in self.shards.iter() {
            let sessions: Vec<_> = lock_shard(shard).drain().map(|(_, s)| s).collect();
            self.counters.sessions.sub(sessions.len() as u64);
            for session in sessions {
                self.end_session(&session, End::Closed);
            }
        }
        tracing::debug!(target: "status_messenger::hub", "hub shut down");
    }

    fn shard(&self, id: &str) -> &Shard {
        // FNV-1a: cheap, and it only spreads lock contention; each map hashes with SipHash.
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }

    fn idle_expired(&self, session: &Session, now: u64) -> bool {
        session.subscribers.load(Ordering::Acquire) == 0
            && now.saturating_sub(session.last_activity_ms.load(Ordering::Relaxed)) >= self.ttl_ms
    }

    /// Finds (or, with `create`, opens) the session `id` and marks it active; with `subscribe`
    /// also counts a subscriber in it. Evicts it first if it has been idle past its TTL.
    fn session(
        &self,
        id: &str,
        now: u64,
        create: bool,
        subscribe: bool,
    ) -> Result<Arc<Session>, Refusal> {
        let mut map = lock_shard(self.shard(id));
        // Checked under the shard lock: `shutdown` sets the flag before draining the shards,
        // so no session can be opened behind its back.
        if self.is_shut_down() {
            return Err(Refusal::ShutDown);
        }
        let mut expired = None;
        if let Some(session) = map.get(id) {
            if self.idle_expired(session, now) {
                expired = map.remove(id);
            } else {
                if create {
                    // Opening, publishing and subscribing keep a session alive; looking does not.
                    session.last_activity_ms.fetch_max(now, Ordering::Relaxed);
                }
                if subscribe {
                    session.subscribers.fetch_add(1, Ordering::AcqRel);
                }
                return Ok(Arc::clone(session));
            }
        }
        let result = if !create {
            Err(Refusal::Missing)
        } else if self.counters.sessions.get() >= self.config.max_sessions as u64 {
            Err(Refusal::TooMany)
        } else {
            let session = Arc::new(Session::new(SessionId::from_checked(id), now));
            if subscribe {
                session.subscribers.store(1, Ordering::Release);
            }
            map.insert(session.id.clone(), Arc::clone(&session));
            self.counters.sessions.add(1);
            Ok(session)
        };
        drop(map);
        if let Some(session) = expired {
            self.counters.sessions.sub(1);
            self.evict(&session);
        }
        result
    }

    fn count_refusal(&self, refusal: Refusal) {
        match refusal {
            Refusal::ShutDown | Refusal::Missing => self.counters.dropped_closed.add(1),
            Refusal::TooMany => {
                self.counters.dropped_session_limit.add(1);
                if first_time(&self.warned.limit) {
                    tracing::warn!(
                        target: "status_messenger::hub",
                        max_sessions = self.config.max_sessions,
                        "session limit reached; statuses for new sessions are dropped \
                         (counted in HubStats::dropped_session_limit, warned once)"
                    );
                }
            }
        }
    }

    /// Ends a session already removed from its shard.
    fn end_session(&self, session: &Session, end: End) {
        let (freed, wake) = {
            let mut state = session.lock();
            if state.end.is_some() {
                return;
            }
            state.end = Some(end);
            let freed = if state.members() == 0 {
                state.log.clear()
            } else {
                0
            };
            (freed, state.take_wakers())
        };
        self.counters.retained.sub(freed);
        wake.wake();
    }

    fn evict(&self, session: &Session) {
        self.counters.evicted_sessions.add(1);
        tracing::debug!(
            target: "status_messenger::hub",
            session = %session.id,
            "idle session evicted"
        );
        self.end_session(session, End::Evicted);
    }

    fn maybe_sweep(&self, now: u64) {
        let due = self.next_sweep_ms.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_sweep_ms
                .compare_exchange(
                    due,
                    now.saturating_add(self.sweep_every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.sweep(now);
        }
    }

    fn trim(&self, log: &mut SessionLog, now: u64) -> u64 {
        let config = &self.config;
        log.trim(
            config.history_capacity,
            config.history_expiry,
            self.ttl_ms,
            now,
        )
    }

    /// Evicts idle sessions and trims expired history everywhere, now; returns how many were
    /// evicted.
    pub(crate) fn sweep_now(&self) -> usize {
        let now = self.clock.now_ms();
        self.next_sweep_ms
            .store(now.saturating_add(self.sweep_every_ms), Ordering::Relaxed);
        self.sweep(now)
    }

    fn sweep(&self, now: u64) -> usize {
        let mut evicted = Vec::new();
        for shard in self.shards.iter() {
            let mut map = lock_shard(shard);
            map.retain(|_, session| {
                if self.idle_expired(session, now) {
                    evicted.push(Arc::clone(session));
                    return false;
                }
                let removed = self.trim(&mut session.lock().log, now);
                self.counters.retained.sub(removed);
                true
            });
        }
        self.counters.sessions.sub(evicted.len() as u64);
        for session in &evicted {
            self.evict(session);
        }
        evicted.len()
    }
}
