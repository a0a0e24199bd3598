//! The soak: millions of statuses from many producer threads through the library's public API,
//! with subscribers that disconnect and resume at random and a consumer that is dropped and
//! restarted, and every delivery checked.
//!
//! # What runs
//!
//! In one process, on one [`Hub`] in memory:
//!
//! - `producers` `std::thread`s send `statuses` between them, each to a session it picks at
//!   random, through a [`SessionContext`] of that session that carries the soak's
//!   [`Messenger`] as its scoped default: even producers call the free
//!   [`add_status_message`](status_messenger::add_status_message), odd ones the instance's
//!   [`Messenger::add_status_message`], inside [`SessionContext::run`]. Each text is
//!   `p<producer> c<counter> ...`, the counter running from 1 per producer and session, so the
//!   order of each producer's statuses in each session can be checked.
//! - One consumer, `hub.consume(messenger.stream())` in a task, is aborted after a random time
//!   and started again (a dropped [`StatusStream`](status_messenger::StatusStream) hands what it
//!   holds to the next one). From `attach_at` of the statuses on, [`Hub::attach`] takes over:
//!   statuses are published on the producers' threads.
//! - `subscribers` subscribers per session read a random number of events, drop their
//!   subscription, stay away a random time and resume after the last number they saw.
//!
//! # What is checked
//!
//! Every subscriber checks each event as it comes: numbers one by one with no repeat and no
//! jump, and per producer the counters 1, 2, 3, ... At the end it must have seen every status
//! sent to its session once: a counter never seen is *lost*, one seen twice (or a number seen
//! twice) *duplicated*, one that arrived after a later one of the same producer *reordered*.
//! The hub's own counters must agree (every status accepted, none dropped, no gap).
//!
//! Producers keep each session within `window` statuses of its slowest subscriber: a producer
//! that finds a session full picks another, or waits until a subscriber moves on. With
//! `window + producers <= history` no status a resuming subscriber needs has left history and
//! no subscriber falls `history` behind (`subscriber_buffer` is `history` too), so the run must
//! have no gap at all: a gap counts as a violation.
//!
//! # Memory
//!
//! The resident set size is sampled every `sample_every`. Samples taken before `warmup` of the
//! statuses were sent are the warm-up (histories filling up to `history` per session); the
//! rest, until every subscriber has everything, are the steady state, which is *flat* when its
//! highest sample is within `flat_margin` of its median and the median of its last quarter is
//! within `flat_margin` of the median of its first quarter (a slow climb passes the first test
//! and fails the second).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use status_messenger::{Event, Hub, HubConfig, HubStats, Messenger, SessionContext};
use tokio::sync::watch;

/// What a soak run does; [`Config::default`] is the full run, [`Config::short`] the CI one.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Statuses sent in all.
    pub statuses: u64,
    /// Producer threads.
    pub producers: usize,
    /// Sessions the statuses are spread over.
    pub sessions: usize,
    /// Subscribers per session.
    pub subscribers: usize,
    /// The hub's `history_capacity` and `subscriber_buffer`.
    pub history: usize,
    /// Most statuses a session may be ahead of its slowest subscriber (see the module docs).
    pub window: u64,
    /// Worker threads of the runtime that runs the consumer and the subscribers.
    pub workers: usize,
    /// How often the resident set size is sampled.
    pub sample_every: Duration,
    /// The share of the statuses sent during the warm-up.
    pub warmup: f64,
    /// How far above its median the steady state's highest sample may be, and how far the
    /// median of its last quarter may be above that of its first, as a share.
    pub flat_margin: f64,
    /// The share of the statuses after which the hub is attached instead of consuming the
    /// stream (1 or more: never).
    pub attach_at: f64,
    /// Each consumer runs this long, in milliseconds (uniform in the range), before it is
    /// aborted and started again.
    pub consumer_ms: (u64, u64),
    /// Events a subscriber reads before it disconnects (uniform in the range).
    pub resume_after: (u64, u64),
    /// How long a disconnected subscriber stays away, in milliseconds (uniform in the range).
    pub away_ms: (u64, u64),
    /// How long subscribers may take to get everything once the producers are done.
    pub drain_timeout: Duration,
    /// Seed of every random choice (printed, so a run can be repeated).
    pub seed: u64,
}

impl Default for Config {
    /// The full run: 10,000,000 statuses from 64 producers over 1,000 sessions.
    fn default() -> Self {
        Self {
            statuses: 10_000_000,
            producers: 64,
            sessions: 1000,
            subscribers: 2,
            history: 1000,
            window: 500,
            workers: 2,
            sample_every: Duration::from_secs(1),
            warmup: 0.25,
            flat_margin: 0.10,
            attach_at: 0.8,
            consumer_ms: (20, 200),
            resume_after: (1, 1000),
            away_ms: (0, 20),
            drain_timeout: Duration::from_secs(60),
            seed: 1,
        }
    }
}

impl Config {
    /// The short run CI tests: 200,000 statuses from 16 producers over 100 sessions, with
    /// smaller histories so the warm-up is short, and faster restarts so many happen.
    pub fn short() -> Self {
        Self {
            statuses: 200_000,
            producers: 16,
            sessions: 100,
            history: 200,
            window: 100,
            sample_every: Duration::from_millis(100),
            consumer_ms: (5, 50),
            resume_after: (1, 200),
            away_ms: (0, 5),
            drain_timeout: Duration::from_secs(30),
            ..Self::default()
        }
    }

    /// Checks that the run can be nominal (no gap possible) and is well formed.
    ///
    /// # Errors
    ///
    /// Which field is out of range, and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.statuses == 0 || self.producers == 0 || self.sessions == 0 {
            return Err("statuses, producers and sessions must be at least 1".into());
        }
        if self.subscribers == 0 || self.workers == 0 || self.window == 0 {
            return Err("subscribers, workers and window must be at least 1".into());
        }
        if self.window + self.producers as u64 > self.history as u64 {
            return Err(format!(
                "window + producers ({}) must not exceed history ({}): a resuming subscriber \
                 could find its statuses gone",
                self.window + self.producers as u64,
                self.history
            ));
        }
        if self.consumer_ms.0 == 0 || self.consumer_ms.0 > self.consumer_ms.1 {
            return Err("consumer_ms must be a range of at least 1 ms".into());
        }
        if self.resume_after.0 == 0 || self.resume_after.0 > self.resume_after.1 {
            return Err("resume_after must be a range of at least 1 event".into());
        }
        if self.away_ms.0 > self.away_ms.1 {
            return Err("away_ms must be a range".into());
        }
        if !(0.0..1.0).contains(&self.warmup) || self.flat_margin < 0.0 {
            return Err("warmup must be in [0, 1) and flat_margin at least 0".into());
        }
        Ok(())
    }
}

/// One sample of the resident set size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssSample {
    /// Time since the run started.
    pub at: Duration,
    /// Resident set size in bytes.
    pub rss: u64,
    /// Statuses sent by then.
    pub sent: u64,
}

/// The steady state's resident set size and whether it stayed flat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    /// Warm-up samples.
    pub warmup_samples: usize,
    /// The first sample, in bytes.
    pub warmup_first: u64,
    /// The highest warm-up sample, in bytes.
    pub warmup_max: u64,
    /// Steady-state samples.
    pub steady_samples: usize,
    /// The lowest steady-state sample, in bytes.
    pub steady_min: u64,
    /// The median steady-state sample, in bytes.
    pub steady_median: u64,
    /// The highest steady-state sample, in bytes.
    pub steady_max: u64,
    /// `steady_max / steady_median - 1`.
    pub over_median: f64,
    /// The median of the steady state's last quarter over that of its first quarter, minus 1.
    pub drift: f64,
    /// `over_median` and `drift` both within `flat_margin`, with at least four steady samples.
    pub flat: bool,
}

/// What a soak run found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The run's configuration.
    pub config: Config,
    /// Statuses the producers sent.
    pub sent: u64,
    /// From the start until the producers were done.
    pub produced_in: Duration,
    /// From the start until every subscriber had everything (or gave up).
    pub elapsed: Duration,
    /// Statuses received, over all subscribers, each counted once.
    pub received: u64,
    /// Statuses every subscriber should have received, summed.
    pub expected: u64,
    /// Statuses a subscriber never received.
    pub lost: u64,
    /// Statuses (or numbers) a subscriber received twice.
    pub duplicated: u64,
    /// Statuses that reached a subscriber after a later one of the same producer.
    pub reordered: u64,
    /// Gap items received, and the numbers they covered.
    pub gaps: u64,
    /// Numbers covered by those gaps.
    pub gap_numbers: u64,
    /// Numbers that were not the one after the last (duplicates and jumps without a gap).
    pub seq_errors: u64,
    /// Statuses whose text was not one a producer sends, and unexpected kinds of event.
    pub malformed: u64,
    /// Subscribers whose stream ended, or that did not get everything before the drain timeout.
    pub unfinished: u64,
    /// Times the consumer was aborted and started again.
    pub consumer_restarts: u64,
    /// Statuses sent when the hub was attached, if it was.
    pub attached_after: Option<u64>,
    /// Times a subscriber disconnected and resumed.
    pub resumes: u64,
    /// Messages the messenger handed to consumers (streams and the attached hub).
    pub messenger_received: u64,
    /// The hub's counters after the run.
    pub hub: HubStats,
    /// Every resident set size sample.
    pub samples: Vec<RssSample>,
    /// The summary of the samples; `None` where the resident set size cannot be read.
    pub memory: Option<Memory>,
}

impl Report {
    /// Every delivery and counter is as it must be: nothing lost, duplicated or reordered, no
    /// gap, every subscriber finished, the hub and the messenger agree.
    pub fn exact(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.gaps == 0
            && self.seq_errors == 0
            && self.malformed == 0
            && self.unfinished == 0
            && self.received == self.expected
            && self.messenger_received == self.sent
            && self.hub.accepted == self.sent
            && self.hub.dropped() == 0
            && self.hub.gaps == 0
            && self.hub.lagged == 0
    }

    /// Statuses per second, from the start until every subscriber had everything.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "soak: {} statuses, {} producers, {} sessions x {} subscribers, history {}, \
             window {}, {} workers, seed {}",
            c.statuses,
            c.producers,
            c.sessions,
            c.subscribers,
            c.history,
            c.window,
            c.workers,
            c.seed
        )?;
        writeln!(
            f,
            "  sent {} in {:.1} s; every subscriber had them after {:.1} s: {:.0} statuses/s, \
             {:.0} deliveries/s",
            self.sent,
            self.produced_in.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.received as f64 / self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  received {} of {}: lost {}, duplicated {}, reordered {}, gaps {} ({} numbers), \
             seq errors {}, malformed {}, unfinished subscribers {}",
            self.received,
            self.expected,
            self.lost,
            self.duplicated,
            self.reordered,
            self.gaps,
            self.gap_numbers,
            self.seq_errors,
            self.malformed,
            self.unfinished
        )?;
        let attached = match self.attached_after {
            Some(sent) => format!("then attached after {sent} statuses"),
            None => "never attached".to_owned(),
        };
        writeln!(
            f,
            "  consumer restarts {} ({attached}), subscriber resumes {}; hub: accepted {}, \
             dropped {}, gaps {}, delivered {}; messenger handed out {}",
            self.consumer_restarts,
            self.resumes,
            self.hub.accepted,
            self.hub.dropped(),
            self.hub.gaps,
            self.hub.delivered,
            self.messenger_received
        )?;
        match &self.memory {
            None => writeln!(f, "  rss: not available on this system")?,
            Some(m) => {
                let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
                writeln!(
                    f,
                    "  rss warm-up ({} samples, first {:.0}% of statuses): {:.1} -> max {:.1} MiB",
                    m.warmup_samples,
                    c.warmup * 100.0,
                    mib(m.warmup_first),
                    mib(m.warmup_max)
                )?;
                writeln!(
                    f,
                    "  rss steady ({} samples): min {:.1}, median {:.1}, max {:.1} MiB; max \
                     {:.1}% over the median, last quarter {:+.1}% from the first (margin \
                     {:.0}%): {}",
                    m.steady_samples,
                    mib(m.steady_min),
                    mib(m.steady_median),
                    mib(m.steady_max),
                    m.over_median * 100.0,
                    m.drift * 100.0,
                    c.flat_margin * 100.0,
                    if m.flat { "flat" } else { "NOT flat" }
                )?;
            }
        }
        write!(
            f,
            "  result: {}",
            if self.exact() { "exact" } else { "VIOLATIONS" }
        )
    }
}

/// Runs the soak on a runtime of its own; returns once every subscriber has everything or the
/// drain timeout passed. Call it from outside any runtime.
///
/// # Errors
///
/// An invalid config, or a runtime or hub that cannot be built.
pub fn run(config: &Config) -> Result<Report, String> {
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let mut hub_config = HubConfig::default();
    hub_config.history_capacity = config.history;
    hub_config.subscriber_buffer = config.history;
    hub_config.max_sessions = config.sessions.max(1);
    let hub = Hub::new(hub_config).map_err(|e| format!("hub: {e}"))?;
    let messenger = Messenger::new();
    let shared = Arc::new(Shared::new(config));
    let ids: Arc<Vec<String>> = Arc::new((0..config.sessions).map(session_id).collect());
    let mut seeds = Rng::new(config.seed);
    let start = Instant::now();

    let (stop_sampling, sampling) = mpsc::channel::<()>();
    let sampler = {
        let shared = Arc::clone(&shared);
        let every = config.sample_every;
        std::thread::spawn(move || sample_rss(every, &shared, &sampling, start))
    };

    let (phase, phase_rx) = watch::channel(Phase::Running);
    let subscribers: Vec<_> = (0..config.sessions)
        .flat_map(|s| (0..config.subscribers).map(move |k| (s, k)))
        .map(|(s, k)| {
            let reader = Subscriber {
                hub: hub.clone(),
                shared: Arc::clone(&shared),
                id: ids[s].clone(),
                session: s,
                index: k,
                rng: Rng::new(seeds.next()),
                resume_after: config.resume_after,
                away_ms: config.away_ms,
                checker: Checker::new(config.producers),
            };
            runtime.spawn(reader.run(phase_rx.clone()))
        })
        .collect();

    let (stop_consumer, consumer_stop) = watch::channel(false);
    let controller = runtime.spawn(
        Controller {
            hub: hub.clone(),
            messenger: messenger.clone(),
            shared: Arc::clone(&shared),
            attach_after: attach_threshold(config),
            consumer_ms: config.consumer_ms,
            rng: Rng::new(seeds.next()),
        }
        .run(consumer_stop),
    );

    let producers: Vec<_> = (0..config.producers)
        .map(|p| {
            let producer = Producer {
                index: p,
                quota: config.statuses / config.producers as u64
                    + u64::from((p as u64) < config.statuses % config.producers as u64),
                contexts: ids
                    .iter()
                    .map(|id| SessionContext::new(id.clone()).with_messenger(&messenger))
                    .collect(),
                messenger: messenger.clone(),
                shared: Arc::clone(&shared),
                rng: Rng::new(seeds.next()),
            };
            std::thread::Builder::new()
                .name(format!("producer-{p}"))
                .spawn(move || producer.run())
                .map_err(|e| format!("producer thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    // Per producer, the statuses it sent to each session.
    let sent_by: Vec<Vec<u64>> = producers
        .into_iter()
        .map(|p| p.join().map_err(|_| "a producer panicked".to_owned()))
        .collect::<Result<_, _>>()?;
    let produced_in = start.elapsed();
    for (s, state) in shared.sessions.iter().enumerate() {
        let total: u64 = sent_by.iter().map(|by| by[s]).sum();
        state.target.store(total, Ordering::SeqCst);
    }
    phase.send_replace(Phase::Draining);

    let checkers = runtime.block_on(async {
        let mut all = futures_util::future::join_all(subscribers);
        let joined = tokio::time::timeout(config.drain_timeout, &mut all).await;
        let joined = match joined {
            Ok(joined) => joined,
            Err(_elapsed) => {
                phase.send_replace(Phase::GiveUp);
                all.await
            }
        };
        joined
            .into_iter()
            .map(|j| j.map_err(|e| format!("a subscriber failed: {e}")))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let elapsed = start.elapsed();
    stop_consumer.send_replace(true);
    let consumer = runtime
        .block_on(controller)
        .map_err(|e| format!("the consumer's controller failed: {e}"))?;
    // A closed channel stops the sampler as well as a message does.
    drop(stop_sampling);
    let samples = sampler
        .join()
        .map_err(|_| "the sampler panicked".to_owned())?;
    let hub_stats = hub.stats();
    runtime.block_on(hub.shutdown());

    let mut report = Report {
        config: config.clone(),
        sent: shared.total_sent.load(Ordering::SeqCst),
        produced_in,
        elapsed,
        received: 0,
        expected: 0,
        lost: 0,
        duplicated: 0,
        reordered: 0,
        gaps: 0,
        gap_numbers: 0,
        seq_errors: 0,
        malformed: 0,
        unfinished: 0,
        consumer_restarts: consumer.restarts,
        attached_after: consumer.attached_after,
        resumes: 0,
        messenger_received: messenger.received(),
        hub: hub_stats,
        memory: summarize(&samples, config, elapsed),
        samples,
    };
    for (i, checker) in checkers.iter().enumerate() {
        let s = i / config.subscribers;
        let sent: Vec<u64> = sent_by.iter().map(|by| by[s]).collect();
        report.expected += sent.iter().sum::<u64>();
        report.lost += checker.lost(&sent);
        report.received += checker.received;
        report.duplicated += checker.duplicated;
        report.reordered += checker.reordered;
        report.gaps += checker.gaps;
        report.gap_numbers += checker.gap_numbers;
        report.seq_errors += checker.seq_errors;
        report.malformed += checker.malformed;
        report.unfinished += u64::from(!checker.finished);
        report.resumes += checker.resumes;
    }
    Ok(report)
}

fn session_id(s: usize) -> String {
    format!("soak-{s}")
}

fn attach_threshold(config: &Config) -> u64 {
    if config.attach_at >= 1.0 {
        u64::MAX
    } else {
        (config.statuses as f64 * config.attach_at.max(0.0)) as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// The producers are done; every session's target is set.
    Draining,
    /// The drain timeout passed: report what you have.
    GiveUp,
}

/// State shared by producers, subscribers and the sampler.
struct Shared {
    sessions: Vec<SessionState>,
    window: u64,
    total_sent: AtomicU64,
    gate: Gate,
}

struct SessionState {
    /// Statuses sent (counted just before each send).
    sent: AtomicU64,
    /// Per subscriber, the last number it has seen.
    progress: Vec<AtomicU64>,
    /// Statuses sent in all, once the producers are done (`u64::MAX` before).
    target: AtomicU64,
}

impl Shared {
    fn new(config: &Config) -> Self {
        Self {
            sessions: (0..config.sessions)
                .map(|_| SessionState {
                    sent: AtomicU64::new(0),
                    progress: (0..config.subscribers).map(|_| AtomicU64::new(0)).collect(),
                    target: AtomicU64::new(u64::MAX),
                })
                .collect(),
            window: config.window,
            total_sent: AtomicU64::new(0),
            gate: Gate::default(),
        }
    }

    /// Whether session `s` may take one more status: it is less than the window ahead of its
    /// slowest subscriber. Producers check and then count, so together they may overshoot by
    /// one each; `validate` leaves room for that.
    fn has_room(&self, s: usize) -> bool {
        let state = &self.sessions[s];
        let slowest = state
            .progress
            .iter()
            .map(|p| p.load(Ordering::SeqCst))
            .min()
            .unwrap_or(0);
        state.sent.load(Ordering::SeqCst) < slowest + self.window
    }

    fn any_room(&self, from: usize) -> Option<usize> {
        let n = self.sessions.len();
        (0..n).map(|i| (from + i) % n).find(|&s| self.has_room(s))
    }
}

/// Where producers wait for subscribers to move on, with a wake-up from the subscribers.
#[derive(Default)]
struct Gate {
    waiting: AtomicUsize,
    lock: Mutex<()>,
    moved: Condvar,
}

impl Gate {
    /// Waits until `ready` holds, or `within` passed (then the caller looks again).
    fn wait(&self, within: Duration, ready: impl Fn() -> bool) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock, and subscribers notify under it: no wake-up is missed.
        if !ready() {
            let _woken = self.moved.wait_timeout(guard, within);
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Called after a subscriber moved on: wakes the producers waiting, if any.
    fn moved(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.moved.notify_all();
        }
    }
}

/// SplitMix64: small, fast, good enough to pick sessions and delays.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

struct Producer {
    index: usize,
    quota: u64,
    contexts: Vec<SessionContext>,
    messenger: Messenger,
    shared: Arc<Shared>,
    rng: Rng,
}

impl Producer {
    /// Sends its quota; returns how many statuses it sent to each session.
    fn run(mut self) -> Vec<u64> {
        let n = self.contexts.len();
        let mut counters = vec![0u64; n];
        for _ in 0..self.quota {
            let s = self.pick(n);
            counters[s] += 1;
            self.shared.sessions[s].sent.fetch_add(1, Ordering::SeqCst);
            let text = format!(
                "p{} c{} step of a long-running tool",
                self.index, counters[s]
            );
            let context = &self.contexts[s];
            if self.index % 2 == 0 {
                // The free function, reaching the soak's messenger as the scoped default the
                // context carries.
                context.run(|| status_messenger::add_status_message(text));
            } else {
                context.run(|| self.messenger.add_status_message(text));
            }
            self.shared.total_sent.fetch_add(1, Ordering::Relaxed);
        }
        counters
    }

    /// A random session with room, else any session with room, else waits for one.
    fn pick(&mut self, n: usize) -> usize {
        loop {
            for _ in 0..8 {
                let s = self.rng.below(n);
                if self.shared.has_room(s) {
                    return s;
                }
            }
            let from = self.rng.below(n);
            if let Some(s) = self.shared.any_room(from) {
                return s;
            }
            let shared = &self.shared;
            shared.gate.wait(Duration::from_millis(10), || {
                shared.any_room(from).is_some()
            });
        }
    }
}

/// One subscriber's view of its session, kept across its reconnects.
#[derive(Debug)]
struct Checker {
    /// Per producer, the next counter expected.
    next: Vec<u64>,
    /// `(producer, counter)` skipped over by a later one: reordered if it comes, else lost.
    late: HashSet<(usize, u64)>,
    last_seq: u64,
    received: u64,
    duplicated: u64,
    reordered: u64,
    gaps: u64,
    gap_numbers: u64,
    seq_errors: u64,
    malformed: u64,
    resumes: u64,
    finished: bool,
}

impl Checker {
    fn new(producers: usize) -> Self {
        Self {
            next: vec![1; producers],
            late: HashSet::new(),
            last_seq: 0,
            received: 0,
            duplicated: 0,
            reordered: 0,
            gaps: 0,
            gap_numbers: 0,
            seq_errors: 0,
            malformed: 0,
            resumes: 0,
            finished: false,
        }
    }

    fn status(&mut self, seq: u64, text: &str) {
        if seq <= self.last_seq {
            self.seq_errors += 1;
            self.duplicated += 1;
            return;
        }
        if seq != self.last_seq + 1 {
            // A jump without a gap: the statuses under the skipped numbers show up as lost.
            self.seq_errors += 1;
        }
        self.last_seq = seq;
        let Some((p, c)) = parse_text(text).filter(|(p, _)| *p < self.next.len()) else {
            self.malformed += 1;
            return;
        };
        let next = &mut self.next[p];
        if c == *next {
            *next += 1;
            self.received += 1;
        } else if c > *next {
            self.late.extend((*next..c).map(|m| (p, m)));
            *next = c + 1;
            self.received += 1;
        } else if self.late.remove(&(p, c)) {
            self.reordered += 1;
            self.received += 1;
        } else {
            self.duplicated += 1;
        }
    }

    fn gap(&mut self, from: u64, to: u64) {
        self.gaps += 1;
        self.gap_numbers += to - from + 1;
        if from != self.last_seq + 1 {
            self.seq_errors += 1;
        }
        self.last_seq = self.last_seq.max(to);
    }

    /// Statuses never received, given what each producer sent to the session.
    fn lost(&self, sent: &[u64]) -> u64 {
        let tail: u64 = sent
            .iter()
            .zip(&self.next)
            .map(|(sent, next)| sent.saturating_sub(next - 1))
            .sum();
        tail + self.late.len() as u64
    }
}

/// `p<producer> c<counter> ...` back into its numbers.
fn parse_text(text: &str) -> Option<(usize, u64)> {
    let mut words = text.split(' ');
    let p = words.next()?.strip_prefix('p')?.parse().ok()?;
    let c = words.next()?.strip_prefix('c')?.parse().ok()?;
    Some((p, c))
}

struct Subscriber {
    hub: Hub,
    shared: Arc<Shared>,
    id: String,
    session: usize,
    index: usize,
    rng: Rng,
    resume_after: (u64, u64),
    away_ms: (u64, u64),
    checker: Checker,
}

impl Subscriber {
    async fn run(mut self, mut phase: watch::Receiver<Phase>) -> Checker {
        let state = &self.shared.sessions[self.session];
        loop {
            let mut subscription = self.hub.subscribe(&self.id, Some(self.checker.last_seq));
            let mut budget = self.rng.range(self.resume_after);
            while budget > 0 {
                if self.checker.last_seq >= state.target.load(Ordering::SeqCst) {
                    self.checker.finished = true;
                    return self.checker;
                }
                let event = tokio::select! {
                    event = subscription.next() => event,
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow() == Phase::GiveUp {
                            return self.checker;
                        }
                        continue;
                    }
                };
                match event {
                    Some(Event::Status(status)) => self.checker.status(status.seq(), status.text()),
                    Some(Event::Gap(gap)) => self.checker.gap(gap.from(), gap.to()),
                    Some(_) => self.checker.malformed += 1,
                    // Only a shut-down hub ends a stream, and that comes after the subscribers.
                    None => return self.checker,
                }
                state.progress[self.index].store(self.checker.last_seq, Ordering::SeqCst);
                self.shared.gate.moved();
                budget -= 1;
            }
            drop(subscription);
            self.checker.resumes += 1;
            let away = self.rng.range(self.away_ms);
            if away > 0 {
                // The time a reloading page is away, not a wait for anything.
                tokio::time::sleep(Duration::from_millis(away)).await;
            }
        }
    }
}

struct Controller {
    hub: Hub,
    messenger: Messenger,
    shared: Arc<Shared>,
    attach_after: u64,
    consumer_ms: (u64, u64),
    rng: Rng,
}

struct ConsumerReport {
    restarts: u64,
    attached_after: Option<u64>,
}

impl Controller {
    /// Runs a consumer, aborts it after a while and starts another, until told to stop or until
    /// it is time to attach the hub instead.
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> ConsumerReport {
        let mut report = ConsumerReport {
            restarts: 0,
            attached_after: None,
        };
        loop {
            let sent = self.shared.total_sent.load(Ordering::Relaxed);
            if sent >= self.attach_after {
                // No consumer runs now (the last one was aborted and awaited), so this holds.
                match self.hub.attach(&self.messenger) {
                    Ok(()) => report.attached_after = Some(sent),
                    Err(error) => panic!("attach refused with no consumer running: {error}"),
                }
                return report;
            }
            let updates = match self.messenger.try_stream() {
                Ok(updates) => updates,
                Err(error) => panic!("stream refused after the last consumer ended: {error}"),
            };
            let hub = self.hub.clone();
            let consumer = tokio::spawn(async move { hub.consume(updates).await });
            let run_for = Duration::from_millis(self.rng.range(self.consumer_ms));
            let stopping = tokio::select! {
                () = tokio::time::sleep(run_for) => false,
                _ = stop.changed() => true,
            };
            consumer.abort();
            match consumer.await {
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Cancelled, or it had returned: the stream is dropped either way.
                _ => {}
            }
            if stopping {
                return report;
            }
            report.restarts += 1;
        }
    }
}

/// Samples the resident set size every `every` until `stop` says so (or is dropped).
fn sample_rss(
    every: Duration,
    shared: &Shared,
    stop: &mpsc::Receiver<()>,
    start: Instant,
) -> Vec<RssSample> {
    let mut samples = Vec::new();
    loop {
        if let Some(rss) = rss_bytes() {
            samples.push(RssSample {
                at: start.elapsed(),
                rss,
                sent: shared.total_sent.load(Ordering::Relaxed),
            });
        }
        match stop.recv_timeout(every) {
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            _ => return samples,
        }
    }
}

/// This process's resident set size (`VmRSS` of `/proc/self/status`), where Linux says it.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn summarize(samples: &[RssSample], config: &Config, end: Duration) -> Option<Memory> {
    let first = samples.first()?;
    let warm_until = (config.statuses as f64 * config.warmup) as u64;
    let (warmup, steady): (Vec<&RssSample>, Vec<&RssSample>) = samples
        .iter()
        .filter(|s| s.at <= end)
        .partition(|s| s.sent < warm_until);
    let in_order: Vec<u64> = steady.iter().map(|s| s.rss).collect();
    let quarter = in_order.len() / 4;
    let drift = match (
        median_of(&in_order[..quarter]),
        median_of(&in_order[in_order.len() - quarter..]),
    ) {
        (Some(first), Some(last)) if first > 0 => last as f64 / first as f64 - 1.0,
        _ => 0.0,
    };
    let mut steady = in_order;
    steady.sort_unstable();
    let median = median_of(&steady).unwrap_or(0);
    let max = steady.last().copied().unwrap_or(0);
    let over_median = if median == 0 {
        0.0
    } else {
        max as f64 / median as f64 - 1.0
    };
    Some(Memory {
        warmup_samples: warmup.len(),
        warmup_first: first.rss,
        warmup_max: warmup.iter().map(|s| s.rss).max().unwrap_or(first.rss),
        steady_samples: steady.len(),
        steady_min: steady.first().copied().unwrap_or(0),
        steady_median: median,
        steady_max: max,
        over_median,
        drift,
        flat: quarter >= 1 && over_median <= config.flat_margin && drift <= config.flat_margin,
    })
}

fn median_of(samples: &[u64]) -> Option<u64> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_tells_lost_duplicated_and_reordered_apart() {
        let mut checker = Checker::new(2);
        checker.status(1, "p0 c1 x");
        checker.status(2, "p1 c1 x");
        // p0's counter 2 is overtaken by 3, and arrives later.
        checker.status(3, "p0 c3 x");
        checker.status(4, "p0 c2 x");
        // Seen twice: as a counter, and as a number.
        checker.status(5, "p0 c3 x");
        checker.status(5, "p1 c2 x");
        // A jump without a gap.
        checker.status(7, "p1 c2 x");
        checker.gap(8, 9);
        assert_eq!(checker.received, 5);
        assert_eq!((checker.duplicated, checker.reordered), (2, 1));
        assert_eq!(
            (checker.gaps, checker.gap_numbers, checker.seq_errors),
            (1, 2, 2)
        );
        // p0 sent 4 (the 4th never came), p1 sent 3 (the 3rd never came).
        assert_eq!(checker.lost(&[4, 3]), 2);
    }

    #[test]
    fn a_slow_climb_is_not_flat() {
        let config = Config::default();
        let sample = |i: u64, rss: u64| RssSample {
            at: Duration::from_secs(i),
            rss,
            sent: config.statuses,
        };
        let end = Duration::from_secs(100);
        // Within 10% of its median, but 15% higher at the end than at the start.
        let climbing: Vec<_> = (0..40).map(|i| sample(i, 300 + i * 3 / 2)).collect();
        let memory = summarize(&climbing, &config, end).unwrap();
        assert!(memory.over_median < config.flat_margin, "{memory:?}");
        assert!(
            memory.drift > config.flat_margin && !memory.flat,
            "{memory:?}"
        );
        let level: Vec<_> = (0..40).map(|i| sample(i, 300 + i % 3)).collect();
        assert!(summarize(&level, &config, end).unwrap().flat);
    }

    #[test]
    fn a_run_that_could_gap_is_refused() {
        let mut config = Config::short();
        config.window = config.history as u64;
        assert!(config.validate().unwrap_err().contains("history"));
        assert!(Config::default().validate().is_ok());
        assert!(Config::short().validate().is_ok());
    }
}
