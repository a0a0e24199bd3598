//! The hub's counters: plain atomics read by `Hub::stats`, mirrored to the `metrics` facade
//! when that feature is on.
//!
//! # Invariants
//!
//! - `accepted` and `retained` are each the shared atomic plus the sum of the shards' own
//!   counts ([`ShardCounts`]). A shard's counts are written only by a holder of that shard's
//!   lock (the core's table of sessions), so a load and a store keep them exact; what they add
//!   to `retained` may leave it through the shared atomic, which can then wrap below zero on
//!   its own: only the sum is a count.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// A monotonic counter.
#[derive(Debug)]
pub(crate) struct Counter {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    handle: metrics::Counter,
}

impl Counter {
    #[cfg(feature = "metrics")]
    fn new(handle: metrics::Counter) -> Self {
        Self {
            value: AtomicU64::new(0),
            handle,
        }
    }

    pub(crate) fn add(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.value.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.handle.increment(n);
    }

    fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Mirrors `n` counted elsewhere (in [`ShardCounts`]) to the `metrics` facade.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn mirror(&self, n: u64) {
        #[cfg(feature = "metrics")]
        self.handle.increment(n);
    }
}

/// A value that goes up and down.
#[derive(Debug)]
pub(crate) struct Gauge {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    handle: metrics::Gauge,
}

impl Gauge {
    #[cfg(feature = "metrics")]
    fn new(handle: metrics::Gauge) -> Self {
        Self {
            value: AtomicU64::new(0),
            handle,
        }
    }

    pub(crate) fn add(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.value.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.handle.increment(n as f64);
    }

    pub(crate) fn sub(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.value.fetch_sub(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.handle.decrement(n as f64);
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

    /// Mirrors a shift counted elsewhere (in [`ShardCounts`]) to the `metrics` facade.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn mirror_shift(&self, added: u64, removed: u64) {
        #[cfg(feature = "metrics")]
        if added > removed {
            self.handle.increment((added - removed) as f64);
        } else if removed > added {
            self.handle.decrement((removed - added) as f64);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) sessions: Gauge,
    pub(crate) subscribers: Gauge,
    pub(crate) retained: Gauge,
    pub(crate) accepted: Counter,
    pub(crate) delivered: Counter,
    pub(crate) dropped_no_session: Counter,
    pub(crate) dropped_closed: Counter,
    pub(crate) dropped_invalid: Counter,
    pub(crate) dropped_session_limit: Counter,
    pub(crate) truncated: Counter,
    pub(crate) gaps: Counter,
    pub(crate) lagged: Counter,
    pub(crate) evicted_sessions: Counter,
    pub(crate) dropped_backend: Counter,
    pub(crate) backend_buffered: Gauge,
    pub(crate) backend_errors: Counter,
    pub(crate) backend_reconnects: Counter,
    pub(crate) dropped_cancelled: Counter,
    pub(crate) tasks: Gauge,
    pub(crate) evicted_under_pressure: Counter,
    /// One per shard of the core's table (see the module invariants).
    shards: Box<[ShardCounts]>,
}

fn shard_counts() -> Box<[ShardCounts]> {
    (0..SHARDS).map(|_| ShardCounts::default()).collect()
}

#[cfg(not(feature = "metrics"))]
impl Counters {
    pub(crate) fn new() -> Self {
        fn c() -> Counter {
            Counter {
                value: AtomicU64::new(0),
            }
        }
        fn g() -> Gauge {
            Gauge {
                value: AtomicU64::new(0),
            }
        }
        Self {
            sessions: g(),
            subscribers: g(),
            retained: g(),
            accepted: c(),
            delivered: c(),
            dropped_no_session: c(),
            dropped_closed: c(),
            dropped_invalid: c(),
            dropped_session_limit: c(),
            truncated: c(),
            gaps: c(),
            lagged: c(),
            evicted_sessions: c(),
            dropped_backend: c(),
            backend_buffered: g(),
            backend_errors: c(),
            backend_reconnects: c(),
            dropped_cancelled: c(),
            tasks: g(),
            evicted_under_pressure: c(),
            shards: shard_counts(),
        }
    }
}

#[cfg(feature = "metrics")]
impl Counters {
    /// Registers every metric with the recorder installed now (global, or local to this thread).
    pub(crate) fn new() -> Self {
        use metrics::Unit;

        use super::metric_names as n;

        fn c(name: &'static str, unit: Unit, help: &'static str) -> Counter {
            metrics::describe_counter!(name, unit, help);
            Counter::new(metrics::counter!(name))
        }
        fn dropped(reason: &'static str) -> Counter {
            Counter::new(metrics::counter!(n::DROPPED, "reason" => reason))
        }
        fn g(name: &'static str, help: &'static str) -> Gauge {
            metrics::describe_gauge!(name, Unit::Count, help);
            Gauge::new(metrics::gauge!(name))
        }
        metrics::describe_counter!(n::DROPPED, Unit::Count, "statuses not accepted, by reason");
        Self {
            sessions: g(n::SESSIONS, "sessions held now"),
            subscribers: g(n::SUBSCRIBERS, "live subscriptions now"),
            retained: g(n::RETAINED, "statuses held in history now"),
            accepted: c(n::ACCEPTED, Unit::Count, "statuses accepted"),
            delivered: c(n::DELIVERED, Unit::Count, "statuses handed to subscribers"),
            dropped_no_session: dropped("no_session"),
            dropped_closed: dropped("closed"),
            dropped_invalid: dropped("invalid_session"),
            dropped_session_limit: dropped("session_limit"),
            truncated: c(
                n::TRUNCATED,
                Unit::Count,
                "statuses cut to max_status_bytes",
            ),
            gaps: c(n::GAPS, Unit::Count, "gap items handed to subscribers"),
            lagged: c(n::LAGGED, Unit::Count, "statuses covered by gap items"),
            evicted_sessions: c(n::EVICTED, Unit::Count, "idle sessions evicted"),
            dropped_backend: dropped("backend"),
            backend_buffered: g(n::BACKEND_BUFFERED, "statuses waiting for redis now"),
            backend_errors: c(
                n::BACKEND_ERRORS,
                Unit::Count,
                "failed redis connections and commands",
            ),
            backend_reconnects: c(n::BACKEND_RECONNECTS, Unit::Count, "reconnections to redis"),
            dropped_cancelled: dropped("task_cancelled"),
            tasks: g(n::TASKS, "tasks remembered now"),
            evicted_under_pressure: c(
                n::EVICTED_UNDER_PRESSURE,
                Unit::Count,
                "sessions evicted early to make room for new ones",
            ),
            shards: shard_counts(),
        }
    }
}

impl Counters {
    /// Counts a status numbered here, and the `removed` it pushed out of history, in the
    /// counts of the shard `shard`, whose lock the caller holds (see the module invariants).
    pub(crate) fn appended_in(&self, shard: usize, removed: u64) {
        self.accepted.mirror(1);
        self.retained.mirror_shift(1, removed);
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
        // Should a racing reader still see a removal before its addition, none is shown
        // rather than a wrapped count.
        let retained = if retained > i64::MAX as u64 {
            0
        } else {
            retained
        };
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
            retained,
            dropped_backend: self.dropped_backend.get(),
            backend_buffered: self.backend_buffered.get(),
            backend_errors: self.backend_errors.get(),
            backend_reconnects: self.backend_reconnects.get(),
            dropped_cancelled: self.dropped_cancelled.get(),
            tasks: self.tasks.get(),
            evicted_under_pressure: self.evicted_under_pressure.get(),
        }
    }
}
