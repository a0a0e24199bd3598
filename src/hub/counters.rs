//! The hub's counters: atomics read by `Hub::stats`, and with the `metrics` feature the
//! facade's handles, given the counts when they are read rather than on each change.
//!
//! # Invariants
//!
//! - `accepted` and `retained` are each the shared count plus the sum of the shards' own
//!   counts ([`ShardCounts`]). A shard's counts are written only by a holder of that shard's
//!   lock (the core's table of sessions), so a load and a store keep them exact; what they add
//!   to `retained` may leave it through the shared atomic, which can then wrap below zero on
//!   its own: only the sum is a count.
//! - A [`Striped`] count is the wrapping sum of its cells; each thread adds to one cell, so
//!   only the sum is a count (a cell may wrap below zero where one thread adds and another
//!   takes away).
//! - Nothing on the path of a status or a delivery touches the `metrics` facade (but for the
//!   sweep of idle sessions a call may set off, which records). With the
//!   feature, [`Counters::record`] hands each metric the difference between the count now and
//!   what it handed it before, under the lock of what it handed (`Facade::recorded`), so two
//!   records at once give every change once, and hubs sharing a recorder add up as they did
//!   when every change was sent on its own.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::sync::thread_cell;

use super::core::SHARDS;
use super::HubStats;

/// What the statuses numbered under one shard's lock added to `accepted` and `retained` (a
/// wrapping difference: what they pushed out of history is taken off here too).
///
/// Written only under that lock (see the module invariants), by a load and a store rather
/// than a read-modify-write, which on x86 is a locked instruction, a full barrier, on the path
/// of every status. A cache line of its own, so that shards written from different threads do
/// not share one.
#[derive(Debug, Default)]
#[repr(align(64))]
struct ShardCounts {
    accepted: AtomicU64,
    retained: AtomicU64,
}

/// A monotonic counter of events that are rare next to statuses (a session opened, a status
/// refused, a gap): one atomic.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    value: AtomicU64,
}

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down, changed by events that are rare next to statuses: one
/// atomic, read cheaply where a limit is checked.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    value: AtomicU64,
}

impl Gauge {
    pub(crate) fn add(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.value.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Adds `added` and subtracts `removed` as one change (none when they are equal).
    pub(crate) fn shift(&self, added: u64, removed: u64) {
        if added >= removed {
            self.add(added - removed);
        } else {
            self.sub(removed - added);
        }
    }
}

/// How many cells a [`Striped`] count spreads over: enough that the threads of a busy server
/// (runtime workers, blocking threads) seldom share one, few enough that a read stays a
/// handful of loads.
const STRIPES: usize = 8;

/// A count changed per status or per delivery from many threads at once (subscribers on
/// every runtime worker, producers on every blocking thread): each thread adds to one of a few
/// cells, each on its own cache line, and a read sums them, so threads do not contend for one
/// line on every change. Up and down alike (see the module invariants).
#[derive(Debug)]
pub(crate) struct Striped {
    cells: [CachePadded<AtomicU64>; STRIPES],
}

impl Default for Striped {
    fn default() -> Self {
        Self {
            cells: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
        }
    }
}

impl Striped {
    pub(crate) fn add(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.cells[thread_cell(STRIPES)].fetch_add(n, Ordering::Relaxed);
    }

    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "taken away by the Redis writer")
    )]
    pub(crate) fn sub(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.cells[thread_cell(STRIPES)].fetch_sub(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.cells
            .iter()
            .map(|cell| cell.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// A sum of wrapping parts read one after another; should a racing reader see a removal
/// before its addition, none is shown rather than a wrapped count.
fn not_below_zero(sum: u64) -> u64 {
    if sum > i64::MAX as u64 {
        0
    } else {
        sum
    }
}

#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) sessions: Gauge,
    pub(crate) subscribers: Gauge,
    pub(crate) retained: Gauge,
    pub(crate) accepted: Striped,
    pub(crate) delivered: Striped,
    pub(crate) dropped_no_session: Counter,
    pub(crate) dropped_closed: Counter,
    pub(crate) dropped_invalid: Counter,
    pub(crate) dropped_session_limit: Counter,
    pub(crate) truncated: Counter,
    pub(crate) gaps: Counter,
    pub(crate) lagged: Counter,
    pub(crate) evicted_sessions: Counter,
    pub(crate) dropped_backend: Counter,
    pub(crate) backend_buffered: Striped,
    pub(crate) backend_errors: Counter,
    pub(crate) backend_reconnects: Counter,
    pub(crate) dropped_cancelled: Counter,
    pub(crate) tasks: Gauge,
    pub(crate) evicted_under_pressure: Counter,
    /// One per shard of the core's table (see the module invariants).
    shards: Box<[ShardCounts]>,
    /// The `metrics` handles, and what they were last given.
    #[cfg(feature = "metrics")]
    facade: Facade,
}

impl Counters {
    /// With the `metrics` feature, registers every metric with the recorder installed now
    /// (global, or local to this thread).
    pub(crate) fn new() -> Self {
        Self {
            sessions: Gauge::default(),
            subscribers: Gauge::default(),
            retained: Gauge::default(),
            accepted: Striped::default(),
            delivered: Striped::default(),
            dropped_no_session: Counter::default(),
            dropped_closed: Counter::default(),
            dropped_invalid: Counter::default(),
            dropped_session_limit: Counter::default(),
            truncated: Counter::default(),
            gaps: Counter::default(),
            lagged: Counter::default(),
            evicted_sessions: Counter::default(),
            dropped_backend: Counter::default(),
            backend_buffered: Striped::default(),
            backend_errors: Counter::default(),
            backend_reconnects: Counter::default(),
            dropped_cancelled: Counter::default(),
            tasks: Gauge::default(),
            evicted_under_pressure: Counter::default(),
            shards: (0..SHARDS).map(|_| ShardCounts::default()).collect(),
            #[cfg(feature = "metrics")]
            facade: Facade::register(),
        }
    }

    /// Counts a status numbered here, and the `removed` it pushed out of history, in the
    /// counts of the shard `shard`, whose lock the caller holds (see the module invariants).
    pub(crate) fn appended_in(&self, shard: usize, removed: u64) {
        let Some(counts) = self.shards.get(shard) else {
            self.accepted.add(1);
            self.retained.shift(1, removed);
            return;
        };
        let accepted = counts.accepted.load(Ordering::Relaxed);
        counts.accepted.store(accepted + 1, Ordering::Relaxed);
        // At capacity one status leaves as one comes: the count is then not touched.
        if removed != 1 {
            let retained = counts.retained.load(Ordering::Relaxed);
            counts.retained.store(
                retained.wrapping_add(1).wrapping_sub(removed),
                Ordering::Relaxed,
            );
        }
    }

    pub(crate) fn snapshot(&self) -> HubStats {
        // The shared parts first: a status freed through the shared gauge was added to its
        // shard's count before, so the sum read in this order does not go below zero.
        let (accepted, retained) = (self.accepted.get(), self.retained.get());
        let (accepted, retained) =
            self.shards
                .iter()
                .fold((accepted, retained), |(accepted, retained), counts| {
                    (
                        accepted.wrapping_add(counts.accepted.load(Ordering::Relaxed)),
                        retained.wrapping_add(counts.retained.load(Ordering::Relaxed)),
                    )
                });
        HubStats {
            sessions: self.sessions.get(),
            subscribers: self.subscribers.get(),
            accepted,
            delivered: self.delivered.get(),
            dropped_no_session: self.dropped_no_session.get(),
            dropped_closed: self.dropped_closed.get(),
            dropped_invalid: self.dropped_invalid.get(),
            dropped_session_limit: self.dropped_session_limit.get(),
            truncated: self.truncated.get(),
            gaps: self.gaps.get(),
            lagged: self.lagged.get(),
            evicted_sessions: self.evicted_sessions.get(),
            retained: not_below_zero(retained),
            dropped_backend: self.dropped_backend.get(),
            backend_buffered: not_below_zero(self.backend_buffered.get()),
            backend_errors: self.backend_errors.get(),
            backend_reconnects: self.backend_reconnects.get(),
            dropped_cancelled: self.dropped_cancelled.get(),
            tasks: self.tasks.get(),
            evicted_under_pressure: self.evicted_under_pressure.get(),
        }
    }

    /// Brings every metric of the facade to the counts now, and returns them.
    #[cfg(feature = "metrics")]
    pub(crate) fn record(&self) -> HubStats {
        self.facade.record(|| self.snapshot())
    }
}

#[cfg(feature = "metrics")]
impl Drop for Counters {
    /// What was counted since the last record still reaches the facade.
    fn drop(&mut self) {
        self.record();
    }
}

/// The hub's metrics in the `metrics` facade, and what each was last given.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Facade {
    handles: Handles,
    /// The counts the handles were last brought to (see the module invariants).
    recorded: std::sync::Mutex<HubStats>,
}

/// One handle per field of [`HubStats`].
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Handles {
    sessions: metrics::Gauge,
    subscribers: metrics::Gauge,
    retained: metrics::Gauge,
    tasks: metrics::Gauge,
    backend_buffered: metrics::Gauge,
    accepted: metrics::Counter,
    delivered: metrics::Counter,
    truncated: metrics::Counter,
    gaps: metrics::Counter,
    lagged: metrics::Counter,
    evicted_sessions: metrics::Counter,
    evicted_under_pressure: metrics::Counter,
    backend_errors: metrics::Counter,
    backend_reconnects: metrics::Counter,
    dropped_no_session: metrics::Counter,
    dropped_closed: metrics::Counter,
    dropped_invalid: metrics::Counter,
    dropped_session_limit: metrics::Counter,
    dropped_backend: metrics::Counter,
    dropped_cancelled: metrics::Counter,
}

#[cfg(feature = "metrics")]
impl Facade {
    /// Registers every metric with the recorder installed now (global, or local to this
    /// thread).
    fn register() -> Self {
        use metrics::Unit;

        use super::metric_names as n;

        fn c(name: &'static str, help: &'static str) -> metrics::Counter {
            metrics::describe_counter!(name, Unit::Count, help);
            metrics::counter!(name)
        }
        fn dropped(reason: &'static str) -> metrics::Counter {
            metrics::counter!(n::DROPPED, "reason" => reason)
        }
        fn g(name: &'static str, help: &'static str) -> metrics::Gauge {
            metrics::describe_gauge!(name, Unit::Count, help);
            metrics::gauge!(name)
        }
        metrics::describe_counter!(n::DROPPED, Unit::Count, "statuses not accepted, by reason");
        let handles = Handles {
            sessions: g(n::SESSIONS, "sessions held now"),
            subscribers: g(n::SUBSCRIBERS, "live subscriptions now"),
            retained: g(n::RETAINED, "statuses held in history now"),
            tasks: g(n::TASKS, "tasks remembered now"),
            backend_buffered: g(n::BACKEND_BUFFERED, "statuses waiting for redis now"),
            accepted: c(n::ACCEPTED, "statuses accepted"),
            delivered: c(n::DELIVERED, "statuses handed to subscribers"),
            truncated: c(n::TRUNCATED, "statuses cut to max_status_bytes"),
            gaps: c(n::GAPS, "gap items handed to subscribers"),
            lagged: c(n::LAGGED, "statuses covered by gap items"),
            evicted_sessions: c(n::EVICTED, "idle sessions evicted"),
            evicted_under_pressure: c(
                n::EVICTED_UNDER_PRESSURE,
                "sessions evicted early to make room for new ones",
            ),
            backend_errors: c(n::BACKEND_ERRORS, "failed redis connections and commands"),
            backend_reconnects: c(n::BACKEND_RECONNECTS, "reconnections to redis"),
            dropped_no_session: dropped("no_session"),
            dropped_closed: dropped("closed"),
            dropped_invalid: dropped("invalid_session"),
            dropped_session_limit: dropped("session_limit"),
            dropped_backend: dropped("backend"),
            dropped_cancelled: dropped("task_cancelled"),
        };
        Self {
            handles,
            recorded: std::sync::Mutex::new(HubStats::default()),
        }
    }

    /// Hands each metric what changed since the last record, from counts read under the lock
    /// (so that records one after another read counts one after another).
    fn record(&self, read: impl FnOnce() -> HubStats) -> HubStats {
        fn counter(handle: &metrics::Counter, recorded: &mut u64, now: u64) {
            // Each count only grows; a smaller one can only be a read racing a change, whose
            // rest the next record brings.
            if now > *recorded {
                handle.increment(now - *recorded);
                *recorded = now;
            }
        }
        fn gauge(handle: &metrics::Gauge, recorded: &mut u64, now: u64) {
            if now > *recorded {
                handle.increment((now - *recorded) as f64);
            } else if now < *recorded {
                handle.decrement((*recorded - now) as f64);
            }
            *recorded = now;
        }
        // Nothing panics while it is held; a poisoned lock still holds what was handed.
        let mut recorded = self
            .recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = read();
        let (h, r) = (&self.handles, &mut *recorded);
        gauge(&h.sessions, &mut r.sessions, now.sessions);
        gauge(&h.subscribers, &mut r.subscribers, now.subscribers);
        gauge(&h.retained, &mut r.retained, now.retained);
        gauge(&h.tasks, &mut r.tasks, now.tasks);
        gauge(
            &h.backend_buffered,
            &mut r.backend_buffered,
            now.backend_buffered,
        );
        counter(&h.accepted, &mut r.accepted, now.accepted);
        counter(&h.delivered, &mut r.delivered, now.delivered);
        counter(&h.truncated, &mut r.truncated, now.truncated);
        counter(&h.gaps, &mut r.gaps, now.gaps);
        counter(&h.lagged, &mut r.lagged, now.lagged);
        counter(
            &h.evicted_sessions,
            &mut r.evicted_sessions,
            now.evicted_sessions,
        );
        counter(
            &h.evicted_under_pressure,
            &mut r.evicted_under_pressure,
            now.evicted_under_pressure,
        );
        counter(&h.backend_errors, &mut r.backend_errors, now.backend_errors);
        counter(
            &h.backend_reconnects,
            &mut r.backend_reconnects,
            now.backend_reconnects,
        );
        counter(
            &h.dropped_no_session,
            &mut r.dropped_no_session,
            now.dropped_no_session,
        );
        counter(&h.dropped_closed, &mut r.dropped_closed, now.dropped_closed);
        counter(
            &h.dropped_invalid,
            &mut r.dropped_invalid,
            now.dropped_invalid,
        );
        counter(
            &h.dropped_session_limit,
            &mut r.dropped_session_limit,
            now.dropped_session_limit,
        );
        counter(
            &h.dropped_backend,
            &mut r.dropped_backend,
            now.dropped_backend,
        );
        counter(
            &h.dropped_cancelled,
            &mut r.dropped_cancelled,
            now.dropped_cancelled,
        );
        now
    }
}
