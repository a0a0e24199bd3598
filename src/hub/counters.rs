//! The hub's counters: plain atomics read by `Hub::stats`, mirrored to the `metrics` facade
//! when that feature is on.

use std::sync::atomic::{AtomicU64, Ordering};

use super::HubStats;

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
        }
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> HubStats {
        HubStats {
            sessions: self.sessions.get(),
            subscribers: self.subscribers.get(),
            accepted: self.accepted.get(),
            delivered: self.delivered.get(),
            dropped_no_session: self.dropped_no_session.get(),
            dropped_closed: self.dropped_closed.get(),
            dropped_invalid: self.dropped_invalid.get(),
            dropped_session_limit: self.dropped_session_limit.get(),
            truncated: self.truncated.get(),
            gaps: self.gaps.get(),
            lagged: self.lagged.get(),
            evicted_sessions: self.evicted_sessions.get(),
            retained: self.retained.get(),
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
