//! The core's table of sessions: sixteen shards of a map from id to session, the lookup that
//! opens a session or finds it, and its end (closed, evicted when idle, or at shutdown), with
//! the sweep that evicts idle sessions and trims expired history.
//!
//! # Invariants
//!
//! - Locks: a shard's map, then a session's state; neither is held while waking a task.
//! - A session is counted in `counters.sessions` exactly while it is in a shard: every
//!   removal subtracts it, then ends the session outside the shard lock.
//! - A session with a subscriber or a running task here is never idle, so never evicted; an
//!   idle one is evicted by the first lookup or sweep after its time to live, or earlier, the
//!   idle longest first, when the table is full and a new session needs its place
//!   (`make_room`, which takes one shard lock at a time).
//! - `shut_down` is checked under the shard lock before a session opens (see the core).

use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashTable;

use super::{first_time, Core};
use crate::hub::log::{Bounds, SessionLog};
use crate::hub::state::{End, Session};
use crate::hub::{OpenError, PublishError, SessionId, StartTaskError, SubscribeError};
use crate::sync::lock;

/// One shard's map.
pub(super) type Shard = Mutex<SessionMap>;

/// A checked session id with its hash, taken once per call: its bits pick the shard
/// ([`Core::shard_of`]) and find the id in that shard's map.
///
/// foldhash rather than SipHash: it takes a few nanoseconds where SipHash takes tens. The seed
/// comes from a random per-process seed (foldhash's `RandomState`, varied per hub), so ids
/// chosen by a client cannot be aimed at one bucket without knowing it; foldhash calls this
/// minimal resistance to flooding, and a session is only made by a publish, a task or an
/// open, never by a client's subscribe alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a> {
    pub(crate) id: &'a str,
    hash: u64,
    /// The id's first [`INLINE_ID`] bytes, zero-padded, to compare with a table entry's.
    prefix: [u8; INLINE_ID],
}

/// Where in a [`Key`]'s hash the shard is: bits the maps do not use to place an id (their
/// buckets take the low bits, their control bytes the top seven), so the ids of one shard
/// still spread over all of its map's buckets.
const SHARD_SHIFT: u32 = 40;

/// How many of an id's bytes a table entry keeps beside its session: finding an id up to this
/// long compares bytes already in the entry's cache line, not the id's own allocation, which is
/// rarely still in cache when one of many sessions gets a status (a 32-byte id, the size of a
/// 128-bit random id in hex, is one such).
const INLINE_ID: usize = 32;

/// The first [`INLINE_ID`] bytes of `id`, zero-padded.
fn prefix_of(id: &str) -> [u8; INLINE_ID] {
    let mut prefix = [0; INLINE_ID];
    for (to, from) in prefix.iter_mut().zip(id.as_bytes()) {
        *to = *from;
    }
    prefix
}

/// One session of a [`SessionMap`], with its id's length and first bytes.
struct Entry {
    session: Arc<Session>,
    len: usize,
    prefix: [u8; INLINE_ID],
}

impl Entry {
    /// Whether this is the session `key` names: the bytes past the prefix, if any, are
    /// compared from the session's id.
    fn is(&self, key: &Key<'_>) -> bool {
        self.len == key.id.len()
            && self.prefix == key.prefix
            && (self.len <= INLINE_ID || self.session.id.as_str() == key.id)
    }
}

/// One shard's sessions by id, found by a [`Key`]'s hash (hashed once per call, not once to
/// pick the shard and again in the map).
#[derive(Default)]
pub(super) struct SessionMap {
    table: HashTable<Entry>,
}

impl SessionMap {
    pub(super) fn get(&self, key: Key<'_>) -> Option<&Arc<Session>> {
        self.table
            .find(key.hash, |entry| entry.is(&key))
            .map(|entry| &entry.session)
    }

    pub(super) fn contains(&self, key: Key<'_>) -> bool {
        self.get(key).is_some()
    }

    pub(super) fn remove(&mut self, key: Key<'_>) -> Option<Arc<Session>> {
        let entry = self
            .table
            .find_entry(key.hash, |entry| entry.is(&key))
            .ok()?;
        Some(entry.remove().0.session)
    }

    /// Adds `session`, whose id `key` names and which this map does not hold; `hasher` is the
    /// one the keys come from (the table rehashes with it when it grows).
    fn insert(&mut self, key: Key<'_>, session: Arc<Session>, hasher: &IdHasher) {
        let entry = Entry {
            session,
            len: key.id.len(),
            prefix: key.prefix,
        };
        self.table.insert_unique(key.hash, entry, |entry| {
            hasher.hash_one(entry.session.id.as_str())
        });
    }

    pub(super) fn sessions(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.table.iter().map(|entry| &entry.session)
    }

    fn drain(&mut self) -> impl Iterator<Item = Arc<Session>> + '_ {
        self.table.drain().map(|entry| entry.session)
    }

    fn retain(&mut self, mut keep: impl FnMut(&Arc<Session>) -> bool) {
        self.table.retain(|entry| keep(&entry.session));
    }
}

/// What hashes session ids (see [`Key`]).
pub(super) type IdHasher = foldhash::fast::RandomState;

/// A power of two (see [`Core::shard`]).
pub(crate) const SHARDS: usize = 16;
const _: () = assert!(SHARDS.is_power_of_two());

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

impl From<Refusal> for StartTaskError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooMany => StartTaskError::TooManySessions,
            Refusal::ShutDown | Refusal::Missing => StartTaskError::ShutDown,
        }
    }
}

/// What a session lookup counts in the session, under the shard lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Nothing,
    Subscriber,
    RunningTask,
}

impl From<Refusal> for SubscribeError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooMany => SubscribeError::TooManySessions,
            Refusal::ShutDown | Refusal::Missing => SubscribeError::ShutDown,
        }
    }
}

/// Whether `session` may give way to a new one when the table is full: no subscriber and no
/// task running here. Both are counted under the shard lock, so a check made under it holds
/// until the lock is released.
fn may_give_way(session: &Session) -> bool {
    session.subscribers.load(Ordering::Acquire) == 0
        && session.running_tasks.load(Ordering::Acquire) == 0
}

/// Which of the sessions that may give way go first, smallest first: where this process holds
/// the history (`history_here`: the in-memory hub; a shared backend keeps it in its store),
/// sessions holding no statuses go before any that hold some, so that a flood of new sessions
/// takes a page's history only once no empty session is left; then the idle longest. A
/// session whose state is busy right now counts as holding statuses.
fn give_way_order(session: &Session, history_here: bool) -> (bool, u64) {
    let holds_history = history_here && session.holds_no_statuses_now() != Some(true);
    (
        holds_history,
        session.last_activity_ms.load(Ordering::Relaxed),
    )
}

/// How long a full table with nothing that may give way is taken as such before it is scanned
/// again: sessions expire or lose their subscribers on a scale of seconds, and a scan costs a
/// pass over the whole table.
const NO_ROOM_RECHECK_MS: u64 = 250;

/// Counts in a session being handed out what the lookup is for (under the shard lock).
fn counted(session: &Session, count: Count) {
    match count {
        Count::Nothing => {}
        Count::Subscriber => {
            session.subscribers.fetch_add(1, Ordering::AcqRel);
        }
        Count::RunningTask => {
            session.running_tasks.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Marks `session` active at `now`. Statuses come many to a millisecond, so the clock has
/// usually not moved since the last one: a load then spares the read-modify-write.
pub(super) fn touch(session: &Session, now: u64) {
    if session.last_activity_ms.load(Ordering::Relaxed) < now {
        session.last_activity_ms.fetch_max(now, Ordering::Relaxed);
    }
}

pub(crate) fn lock_shard(shard: &Shard) -> MutexGuard<'_, SessionMap> {
    lock(shard)
}

impl Core {
    /// Ends the session `id` here: its subscribers get what it holds, then their streams end.
    /// Returns whether this process held it.
    pub(crate) fn close(&self, id: &str) -> bool {
        let key = self.key(id);
        let removed = lock_shard(self.shard_of(key)).remove(key);
        match removed {
            Some(session) => {
                self.counters.sessions.sub(1);
                self.end_session(&session, End::Closed);
                true
            }
            None => false,
        }
    }

    /// Asks every task running here to stop, each told `cancelling` as a cancel would tell
    /// it: at shutdown, before the backend stops and the sessions close, so that the change
    /// reaches the streams (and a shared store) ahead of their end. Takes one shard lock at a
    /// time, and no session lock under it.
    pub(crate) fn cancel_running_tasks(&self) {
        for shard in self.shards.iter() {
            let running: Vec<Arc<Session>> = lock_shard(shard)
                .sessions()
                .filter(|session| session.running_tasks.load(Ordering::Acquire) > 0)
                .cloned()
                .collect();
            for session in running {
                let ids = session.lock().tasks.running_here();
                for id in ids {
                    let _state = self.cancel_in(&session, &id);
                }
            }
        }
    }

    pub(crate) fn close_sessions(&self) {
        for shard in self.shards.iter() {
            let sessions: Vec<_> = lock_shard(shard).drain().collect();
            self.counters.sessions.sub(sessions.len() as u64);
            for session in sessions {
                self.end_session(&session, End::Closed);
            }
        }
        tracing::debug!(target: "status_messenger::hub", "hub shut down");
    }

    /// `id` with its hash, for finding it (see [`Key`]).
    pub(super) fn key<'a>(&self, id: &'a str) -> Key<'a> {
        Key {
            id,
            hash: self.hasher.hash_one(id),
            prefix: prefix_of(id),
        }
    }

    /// The shard that holds `key`'s session.
    pub(super) fn shard_of(&self, key: Key<'_>) -> &Shard {
        &self.shards[self.shard_index(key)]
    }

    /// Which shard holds `key`'s session. A mask, not a division: the count is a power of two.
    pub(super) fn shard_index(&self, key: Key<'_>) -> usize {
        ((key.hash >> SHARD_SHIFT) as usize) & (SHARDS - 1)
    }

    /// The session `id` if it is held here, as it stands (no eviction, no activity).
    pub(super) fn held(&self, id: &str) -> Option<Arc<Session>> {
        let key = self.key(id);
        lock_shard(self.shard_of(key)).get(key).cloned()
    }

    pub(super) fn idle_expired(&self, session: &Session, now: u64) -> bool {
        session.subscribers.load(Ordering::Acquire) == 0
            && session.running_tasks.load(Ordering::Acquire) == 0
            && now.saturating_sub(session.last_activity_ms.load(Ordering::Relaxed)) >= self.ttl_ms
    }

    /// Finds (or, with `create`, opens) the session `id` and marks it active; counts in it what
    /// `count` says. Evicts it first if it has been idle past its TTL. When
    /// [`HubConfig::max_sessions`](crate::HubConfig::max_sessions) are held, the sessions idle
    /// longest make room for a new one (see `make_room`); only when none can is it refused.
    pub(super) fn session(
        &self,
        id: &str,
        now: u64,
        create: bool,
        count: Count,
    ) -> Result<Arc<Session>, Refusal> {
        // Once more after making room: others may have taken it meanwhile, then it is refused.
        for _ in 0..2 {
            match self.find_or_open(id, now, create, count) {
                Err(Refusal::TooMany) if self.make_room(now) > 0 => continue,
                result => return result,
            }
        }
        Err(Refusal::TooMany)
    }

    /// One attempt of [`Core::session`].
    fn find_or_open(
        &self,
        id: &str,
        now: u64,
        create: bool,
        count: Count,
    ) -> Result<Arc<Session>, Refusal> {
        let key = self.key(id);
        let mut map = lock_shard(self.shard_of(key));
        // Checked under the shard lock: `shutdown` sets the flag before draining the shards,
        // so no session can be opened behind its back.
        if self.is_shut_down() {
            return Err(Refusal::ShutDown);
        }
        let mut expired = None;
        if let Some(session) = map.get(key) {
            if self.idle_expired(session, now) {
                expired = map.remove(key);
            } else {
                if create {
                    // Opening, publishing and subscribing keep a session alive; looking does not.
                    touch(session, now);
                }
                counted(session, count);
                return Ok(Arc::clone(session));
            }
        }
        let result = if !create {
            Err(Refusal::Missing)
        } else if self.counters.sessions.get() >= self.config.max_sessions as u64 {
            Err(Refusal::TooMany)
        } else {
            let session = Arc::new(Session::new(SessionId::from_checked(id), now));
            counted(&session, count);
            map.insert(key, Arc::clone(&session), &self.hasher);
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

    pub(super) fn count_refusal(&self, refusal: Refusal) {
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

    /// Ends a session already removed from its shard, asking its tasks to stop.
    fn end_session(&self, session: &Session, end: End) {
        let (freed, forgotten, stopped, wake) = {
            let mut state = session.lock();
            if state.end.is_some() {
                return;
            }
            if end == End::Closed && self.is_shut_down() {
                // The backend has stopped: what it had not told back of this process's tasks
                // (their `cancelling`, say) it will not tell now, so the streams get it here.
                let head = state.log.head();
                state.tasks.tell_unheard(head, self.config.task_capacity);
            }
            state.end = Some(end);
            let stopped = state.tasks.cancel_all();
            let (freed, forgotten) = if state.members() == 0 {
                (state.log.clear(), state.tasks.clear())
            } else {
                (0, 0)
            };
            (freed, forgotten, stopped, state.take_wakers())
        };
        self.counters.retained.sub(freed);
        self.counters.tasks.sub(forgotten);
        wake.wake();
        for task in stopped {
            task.token.wake();
        }
    }

    /// The table is full: evicts sessions that may give way (no subscriber, no running task),
    /// those holding no statuses first, then the idle longest (see [`give_way_order`]), a
    /// sixty-fourth of the table at a time so that a flood of new sessions
    /// scans the table once per many of them; returns how many (0: none could give way, the new
    /// session is refused). Takes one shard lock at a time, never two.
    fn make_room(&self, now: u64) -> usize {
        let max = self.config.max_sessions;
        if now < self.no_room_until_ms.load(Ordering::Relaxed) {
            return 0;
        }
        let _one_at_a_time = lock(&self.making_room);
        if self.counters.sessions.get() < max as u64 {
            // Another caller made room meanwhile.
            return 1;
        }
        if now < self.no_room_until_ms.load(Ordering::Relaxed) {
            // Another caller just found nothing to evict.
            return 0;
        }
        let batch = (max / 64).clamp(1, 4096);
        let history_here = self.backend.numbers_here();
        let mut idle: Vec<((bool, u64), usize, Arc<Session>)> = Vec::new();
        for (index, shard) in self.shards.iter().enumerate() {
            for session in lock_shard(shard).sessions() {
                if self.may_give_way_at(session, now) {
                    let order = give_way_order(session, history_here);
                    idle.push((order, index, Arc::clone(session)));
                }
            }
        }
        if idle.len() > batch {
            idle.select_nth_unstable_by_key(batch - 1, |(order, ..)| *order);
            idle.truncate(batch);
        }
        // While any session without statuses can go, no session's history goes with it.
        if idle.iter().any(|((holds_history, _), ..)| !holds_history) {
            idle.retain(|((holds_history, _), ..)| !holds_history);
        }
        let mut evicted = 0;
        for (_, index, session) in idle {
            let key = self.key(&session.id);
            let mut map = lock_shard(&self.shards[index]);
            // A subscriber or a task may have come since it was looked at.
            let still = map
                .get(key)
                .is_some_and(|held| Arc::ptr_eq(held, &session) && self.may_give_way_at(held, now));
            if !still {
                continue;
            }
            map.remove(key);
            drop(map);
            self.counters.sessions.sub(1);
            self.counters.evicted_under_pressure.add(1);
            self.evict(&session);
            evicted += 1;
        }
        if evicted == 0 {
            self.no_room_until_ms
                .store(now.saturating_add(NO_ROOM_RECHECK_MS), Ordering::Relaxed);
        }
        if evicted > 0 && first_time(&self.warned.room) {
            tracing::warn!(
                target: "status_messenger::hub",
                max_sessions = max,
                "session limit reached; sessions nobody reads are evicted to make room \
                 (counted in HubStats::evicted_under_pressure, warned once)"
            );
        }
        evicted
    }

    /// A session lost its last subscriber or its last running task here: a full table may
    /// have room again, so the next new session looks instead of being refused at once.
    pub(crate) fn room_may_have_freed(&self) {
        self.no_room_until_ms.store(0, Ordering::Relaxed);
    }

    /// [`may_give_way`], or idle past its TTL (its history is due to go anyway).
    fn may_give_way_at(&self, session: &Session, now: u64) -> bool {
        may_give_way(session) || self.idle_expired(session, now)
    }

    fn evict(&self, session: &Session) {
        self.counters.evicted_sessions.add(1);
        tracing::debug!(
            target: "status_messenger::hub",
            session = %session.id,
            "idle session evicted"
        );
        self.end_session(session, End::Evicted);
        // A shared backend may still follow it, waiting for a task's end to come back.
        self.backend.interest(&session.id);
    }

    pub(super) fn maybe_sweep(&self, now: u64) {
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

    pub(super) fn trim(&self, log: &mut SessionLog, now: u64) -> u64 {
        let config = &self.config;
        log.trim(
            config.history_capacity,
            config.history_expiry,
            self.ttl_ms,
            now,
        )
    }

    /// What a session's log may hold.
    pub(super) fn bounds(&self) -> Bounds {
        Bounds {
            capacity: self.config.history_capacity,
            expiry: self.config.history_expiry,
            ttl_ms: self.ttl_ms,
        }
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
            map.retain(|session| {
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
        #[cfg(feature = "metrics")]
        self.counters.record();
        evicted.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::hub::{Published, MAX_SESSION_ID_BYTES};
    use crate::{Hub, HubConfig};

    /// Ids that share the bytes a table entry keeps, or differ only in length, are still told
    /// apart: each is its own session, numbered, found and closed on its own.
    #[tokio::test]
    async fn ids_alike_in_their_first_bytes_are_told_apart() {
        let hub = Hub::new(HubConfig::default()).unwrap();
        let long = "a".repeat(MAX_SESSION_ID_BYTES);
        let ids = [
            "a".repeat(31),
            "a".repeat(32),
            "a".repeat(33),
            format!("{}b", "a".repeat(32)),
            format!("{}b", "a".repeat(MAX_SESSION_ID_BYTES - 1)),
            long,
        ];
        for (n, id) in ids.iter().enumerate() {
            for seq in 1..=n as u64 + 1 {
                assert_eq!(
                    hub.publish(Some(id), "x"),
                    Ok(Published::Numbered(seq)),
                    "{id}"
                );
            }
        }
        assert_eq!(hub.stats().sessions, ids.len() as u64);
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(
                hub.publish(Some(id), "y"),
                Ok(Published::Numbered(n as u64 + 2))
            );
        }
        assert!(hub.close_session(&ids[2]).await.unwrap());
        assert!(!hub.close_session(&ids[2]).await.unwrap());
        assert_eq!(hub.stats().sessions, ids.len() as u64 - 1);
        assert_eq!(hub.publish(Some(&ids[3]), "z"), Ok(Published::Numbered(6)));
        assert_eq!(hub.publish(Some(&ids[2]), "z"), Ok(Published::Numbered(1)));
    }
}
