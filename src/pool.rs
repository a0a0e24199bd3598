//! A bounded pool of dedicated threads for blocking tool work, carrying the session.
//!
//! The crate's [`spawn_blocking`](crate::spawn_blocking) runs tools on tokio's blocking pool,
//! which has at most 512 threads unless the runtime is built with another
//! `max_blocking_threads`. A tool that sleeps or waits holds its thread the whole time, so with
//! 512 slow tools running the 513th waits for one of them to finish before it even starts, and
//! so does everything else that needs that pool (`tokio::fs`, DNS lookups, other
//! `spawn_blocking` calls). A [`BlockingPool`] is a pool of the server's own for tools: its
//! own threads, as many as [`BlockingPoolConfig::threads`] allows, and a bounded queue beyond
//! them that refuses work with an error instead of letting it wait without limit.
//!
//! # Invariants
//!
//! - `Counts::jobs` is the number of jobs accepted and not finished (running or queued), each
//!   holding one permit of `Inner::room`, so there are never more than `threads + queue`.
//! - A job is accepted only after a thread is sure to take it: when `jobs` would exceed the
//!   live `threads`, a thread is started first (up to the maximum); past the maximum the job
//!   queues behind running ones. Past `eager_threads` (with a `grow_after` above zero) the job
//!   queues behind running ones instead, and the grower thread, running whenever `jobs`
//!   exceeds `threads` below the maximum, starts a thread for it once it has waited
//!   `grow_after` (`Counts::queued_at` holds when each queued job was accepted). A thread
//!   ends after `keep_alive` without work only while fewer jobs than threads remain, so every
//!   queued job keeps a thread to run it.
//! - Neither counter is touched by user code: the lock is held only to adjust them and to
//!   start a thread.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::context::SessionContext;
use crate::sync::lock;

/// What a [`BlockingPool`] is made with.
///
/// # Examples
///
/// ```
/// use status_messenger::{BlockingPool, BlockingPoolConfig};
///
/// let config = BlockingPoolConfig {
///     threads: 4_096,
///     queue: 1_024,
///     ..BlockingPoolConfig::default()
/// };
/// let pool = BlockingPool::new(config).unwrap();
/// assert_eq!(pool.capacity(), 5_120);
///
/// // Short tools that keep the CPU busy share 16 threads; a slow one past them gets a thread
/// // of its own once it has waited 10 ms for one of the 16.
/// let config = BlockingPoolConfig {
///     threads: 256,
///     eager_threads: 16,
///     grow_after: std::time::Duration::from_millis(10),
///     ..BlockingPoolConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockingPoolConfig {
    /// Most threads, so most jobs running at once (at least 1, at most 65,536; default
    /// 1,024). Threads start as jobs need them and end after `keep_alive` without work.
    pub threads: usize,
    /// Most jobs waiting for a thread while every thread runs one (default 1,024; 0: a job is
    /// refused while `threads` jobs are held, though one past `eager_threads` may still wait up
    /// to `grow_after` for its thread).
    pub queue: usize,
    /// How long a thread with no job waits for one before it ends (at least 1 ms; default
    /// 10 s, as tokio's blocking pool).
    pub keep_alive: Duration,
    /// Stack size of each thread in bytes (at least 64 KiB; default 2 MiB, as std's). Only
    /// what a thread touches becomes resident.
    pub stack_size: usize,
    /// The name of the pool's threads (default `status-messenger-tool`).
    pub thread_name: String,
    /// Threads started as soon as a job needs one (default: all of `threads`). Past them a
    /// job first waits up to `grow_after` for a busy thread to free up, and the pool starts
    /// one more thread only for a job that waited that long.
    ///
    /// Short jobs that keep the CPU busy then share a few threads, while slow ones (a tool
    /// that sleeps or waits) still get a thread each, `grow_after` late. Each thread costs
    /// memory besides its stack: an allocator keeps a cache per thread (glibc's holds up to 7
    /// freed blocks of each size up to 1 KiB, about 140 KiB in a thread that ran many tools
    /// that store what they report), which no other thread can use. With hundreds of short
    /// jobs at once on a few cores, starting a thread for each adds only those caches.
    pub eager_threads: usize,
    /// How long a job past `eager_threads` waits for a busy thread before the pool starts
    /// one for it (default 10 ms; zero: at once, as within `eager_threads`). One more thread,
    /// not counted in `threads`, starts them; it ends after `keep_alive` with no job waiting.
    pub grow_after: Duration,
}

impl Default for BlockingPoolConfig {
    fn default() -> Self {
        Self {
            threads: 1024,
            queue: 1024,
            keep_alive: Duration::from_secs(10),
            stack_size: 2 * 1024 * 1024,
            thread_name: String::from("status-messenger-tool"),
            eager_threads: Self::MAX_THREADS,
            grow_after: Duration::from_millis(10),
        }
    }
}

impl BlockingPoolConfig {
    /// Most threads the pool may have.
    const MAX_THREADS: usize = 1 << 16;

    /// Checks every field; [`BlockingPool::new`] does the same.
    ///
    /// # Errors
    ///
    /// A [`PoolConfigError`] naming the first field that is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::BlockingPoolConfig;
    ///
    /// let mut config = BlockingPoolConfig::default();
    /// config.threads = 0;
    /// assert_eq!(config.validate().unwrap_err().field(), "threads");
    /// ```
    pub fn validate(&self) -> Result<(), PoolConfigError> {
        let fail = |field, reason| Err(PoolConfigError { field, reason });
        if self.threads == 0 {
            return fail("threads", "must be at least 1");
        }
        if self.threads > Self::MAX_THREADS {
            return fail("threads", "must be at most 65,536");
        }
        if self.queue > Semaphore::MAX_PERMITS - self.threads {
            return fail("queue", "is too long");
        }
        if self.keep_alive < Duration::from_millis(1) {
            return fail("keep_alive", "must be at least 1 ms");
        }
        if self.stack_size < 64 * 1024 {
            return fail("stack_size", "must be at least 64 KiB");
        }
        if self.thread_name.contains('\0') {
            return fail("thread_name", "must not contain a NUL byte");
        }
        if self.eager_threads == 0 {
            return fail("eager_threads", "must be at least 1");
        }
        if self.grow_after > Duration::from_secs(3600) {
            return fail("grow_after", "must be at most an hour");
        }
        Ok(())
    }
}

/// A [`BlockingPoolConfig`] field out of range: which one and why.
///
/// # Examples
///
/// ```
/// use status_messenger::{BlockingPool, BlockingPoolConfig};
///
/// let mut config = BlockingPoolConfig::default();
/// config.keep_alive = std::time::Duration::ZERO;
/// let error = BlockingPool::new(config).unwrap_err();
/// assert_eq!((error.field(), error.reason()), ("keep_alive", "must be at least 1 ms"));
/// assert_eq!(error.to_string(), "invalid blocking pool config: keep_alive must be at least 1 ms");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfigError {
    field: &'static str,
    reason: &'static str,
}

impl PoolConfigError {
    /// The name of the offending [`BlockingPoolConfig`] field.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut config = status_messenger::BlockingPoolConfig::default();
    /// config.stack_size = 0;
    /// assert_eq!(config.validate().unwrap_err().field(), "stack_size");
    /// ```
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why its value is refused.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut config = status_messenger::BlockingPoolConfig::default();
    /// config.threads = 0;
    /// assert_eq!(config.validate().unwrap_err().reason(), "must be at least 1");
    /// ```
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for PoolConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid blocking pool config: {} {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for PoolConfigError {}

/// A job as the pool's threads run it: the closure in its session, its result sent back, and
/// the permit given back when it is done.
type Job = Box<dyn FnOnce() + Send>;

/// The counters of the module invariants, and what the grower watches.
#[derive(Debug, Default)]
struct Counts {
    jobs: usize,
    threads: usize,
    /// When each job still in the queue was accepted, oldest first; kept only when threads
    /// past `eager_threads` wait `grow_after` (see [`Workers::deferring`]).
    queued_at: VecDeque<Instant>,
    /// Whether the grower thread runs.
    grower: bool,
    /// Whether the last pool handle has dropped.
    closed: bool,
}

struct Inner {
    config: BlockingPoolConfig,
    /// One permit per job accepted and not finished.
    room: Arc<Semaphore>,
    /// Shared with the jobs and threads, which must not keep the pool itself alive.
    counts: Arc<Mutex<Counts>>,
    /// Held by the pool only: when the last pool handle drops, the threads run what is queued
    /// and end.
    jobs: crossbeam_channel::Sender<Job>,
    workers: Arc<Workers>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        lock(&*self.counts).closed = true;
        self.workers.backlog.notify_all();
    }
}

/// What every pool thread is started with; held by the pool, its threads and its grower.
struct Workers {
    queued: crossbeam_channel::Receiver<Job>,
    counts: Arc<Mutex<Counts>>,
    keep_alive: Duration,
    stack_size: usize,
    thread_name: String,
    threads: usize,
    eager_threads: usize,
    grow_after: Duration,
    /// Told when a job is queued without a thread, and when the pool closes.
    backlog: Condvar,
}

/// A bounded pool of dedicated threads for blocking tool code, whose jobs run with the
/// caller's session, task and scoped default messenger, as with the crate's
/// [`spawn_blocking`](crate::spawn_blocking).
///
/// Use it for tools that sleep or wait (on a subprocess, a remote API, a lock) and may run by
/// the hundreds at once: each holds one of the pool's threads while it runs, not one of
/// tokio's 512 blocking threads. Threads start when jobs need them, up to
/// [`BlockingPoolConfig::threads`], and end after [`BlockingPoolConfig::keep_alive`] without
/// work; beyond them up to [`BlockingPoolConfig::queue`] jobs wait in order, and a job past
/// that is refused ([`try_spawn`](BlockingPool::try_spawn)) or waits asynchronously for room
/// ([`spawn`](BlockingPool::spawn)), never blocking a runtime thread. A sleeping thread costs
/// little CPU; its memory is the stack it touched (tens of KiB for a simple tool).
///
/// Clones share the pool. When the last clone is dropped, the threads finish the jobs already
/// accepted and end. A job that panics fails its own handle only ([`PoolJoinError`]).
///
/// # Examples
///
/// ```
/// use status_messenger::{add_status_message, current_session_id, with_session_id};
/// use status_messenger::{BlockingPool, BlockingPoolConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let tools = BlockingPool::new(BlockingPoolConfig::default()).unwrap();
/// let seen = with_session_id("user-7", async {
///     let handle = tools.try_spawn(|| {
///         std::thread::sleep(std::time::Duration::from_millis(10));
///         current_session_id()
///     });
///     handle.unwrap().await.unwrap()
/// })
/// .await;
/// assert_eq!(seen.as_deref(), Some("user-7"));
/// # }
/// ```
#[derive(Clone)]
pub struct BlockingPool {
    inner: Arc<Inner>,
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = lock(&*self.inner.counts);
        f.debug_struct("BlockingPool")
            .field("threads", &counts.threads)
            .field("jobs", &counts.jobs)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl BlockingPool {
    /// Creates a pool; it starts no thread until a job needs one. Needs no runtime.
    ///
    /// # Errors
    ///
    /// A [`PoolConfigError`] when a field of `config` is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{BlockingPool, BlockingPoolConfig};
    ///
    /// let pool = BlockingPool::new(BlockingPoolConfig::default()).unwrap();
    /// assert_eq!((pool.threads(), pool.jobs()), (0, 0));
    /// ```
    pub fn new(config: BlockingPoolConfig) -> Result<Self, PoolConfigError> {
        config.validate()?;
        let (jobs, queued) = crossbeam_channel::unbounded();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let workers = Arc::new(Workers {
            queued,
            counts: Arc::clone(&counts),
            keep_alive: config.keep_alive,
            stack_size: config.stack_size,
            thread_name: config.thread_name.clone(),
            threads: config.threads,
            eager_threads: config.eager_threads,
            grow_after: config.grow_after,
            backlog: Condvar::new(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                room: Arc::new(Semaphore::new(config.threads + config.queue)),
                config,
                counts,
                jobs,
                workers,
            }),
        })
    }

    /// Runs `f` on one of the pool's threads with the caller's session, task and scoped
    /// default messenger, or refuses it at once when `threads + queue` jobs are running or
    /// waiting.
    ///
    /// Synchronous and never blocking: call it from async handlers and from any thread. The
    /// job runs whether or not the handle is kept.
    ///
    /// # Errors
    ///
    /// [`PoolSpawnError`], carrying `f` back: [`is_full`](PoolSpawnError::is_full) when
    /// there is no room, or the OS refused the pool's first thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{BlockingPool, BlockingPoolConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = BlockingPoolConfig { threads: 1, queue: 0, ..Default::default() };
    /// let pool = BlockingPool::new(config).unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let busy = pool.try_spawn(move || wait.recv().is_ok()).unwrap();
    /// // One thread, no queue: the next job is refused, and comes back.
    /// let refused = pool.try_spawn(|| 2).unwrap_err();
    /// assert!(refused.is_full());
    /// assert_eq!((refused.into_inner())(), 2);
    /// release.send(()).unwrap();
    /// assert!(busy.await.unwrap());
    /// # }
    /// ```
    pub fn try_spawn<F, R>(&self, f: F) -> Result<PoolJoinHandle<R>, PoolSpawnError<F>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match Arc::clone(&self.inner.room).try_acquire_owned() {
            Ok(permit) => self.submit(f, permit),
            Err(_no_room) => Err(PoolSpawnError {
                job: f,
                cause: Cause::Full,
            }),
        }
    }

    /// Runs `f` on one of the pool's threads with the caller's session, task and scoped
    /// default messenger, waiting (asynchronously, in order of arrival) for room when
    /// `threads + queue` jobs are running or waiting.
    ///
    /// The context is captured when `spawn` is called. Dropping the returned future before
    /// it is ready gives up the job.
    ///
    /// # Errors
    ///
    /// [`PoolSpawnError`], carrying `f` back, when the OS refused the pool's first thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{add_status_message, with_session_id, BlockingPool, Messenger};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = BlockingPool::new(Default::default()).unwrap();
    /// let messenger = Messenger::new();
    /// let job = messenger.scope(with_session_id("s1", async {
    ///     pool.spawn(|| add_status_message("from the pool")).await
    /// }));
    /// job.await.unwrap().await.unwrap();
    /// // The status reached the caller's messenger, in the caller's session.
    /// let mut stream = messenger.stream();
    /// assert_eq!(stream.pending(), 1);
    /// # use futures_util::StreamExt;
    /// assert_eq!(stream.next().await.unwrap().0.as_deref(), Some("s1"));
    /// # }
    /// ```
    pub fn spawn<F, R>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<PoolJoinHandle<R>, PoolSpawnError<F>>> + Send + 'static
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let context = SessionContext::current();
        let pool = self.clone();
        async move {
            match Arc::clone(&pool.inner.room).acquire_owned().await {
                Ok(permit) => pool.submit_in(context, f, permit),
                // The pool never closes its semaphore; kept so a broken invariant is loud.
                Err(_closed) => Err(PoolSpawnError {
                    job: f,
                    cause: Cause::Full,
                }),
            }
        }
    }

    /// Threads the pool has now (running a job or waiting for one).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = status_messenger::BlockingPool::new(Default::default()).unwrap();
    /// assert_eq!(pool.threads(), 0);
    /// ```
    pub fn threads(&self) -> usize {
        lock(&*self.inner.counts).threads
    }

    /// Jobs accepted and not finished: running, or waiting for a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = status_messenger::BlockingPool::new(Default::default()).unwrap();
    /// assert_eq!(pool.jobs(), 0);
    /// ```
    pub fn jobs(&self) -> usize {
        lock(&*self.inner.counts).jobs
    }

    /// Most jobs the pool holds at once: `threads + queue` of its config.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{BlockingPool, BlockingPoolConfig};
    ///
    /// let config = BlockingPoolConfig { threads: 8, queue: 2, ..Default::default() };
    /// assert_eq!(BlockingPool::new(config).unwrap().capacity(), 10);
    /// ```
    pub fn capacity(&self) -> usize {
        self.inner.config.threads + self.inner.config.queue
    }

    fn submit<F, R>(
        &self,
        f: F,
        permit: OwnedSemaphorePermit,
    ) -> Result<PoolJoinHandle<R>, PoolSpawnError<F>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit_in(SessionContext::current(), f, permit)
    }

    /// Accepts `f` under `permit`, starting a thread for it if every live one is taken.
    fn submit_in<F, R>(
        &self,
        context: SessionContext,
        f: F,
        permit: OwnedSemaphorePermit,
    ) -> Result<PoolJoinHandle<R>, PoolSpawnError<F>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let workers = &self.inner.workers;
        let mut deferred = false;
        let queued;
        {
            let mut counts = lock(&*self.inner.counts);
            if counts.jobs >= counts.threads
                && counts.threads >= workers.eager_threads
                && counts.threads < workers.threads
                && workers.deferring()
            {
                // The grower starts a thread for it if no busy one frees up in time.
                deferred = counts.grower || workers.start_grower(&mut counts);
            }
            if !deferred && counts.jobs >= counts.threads && counts.threads < workers.threads {
                match Workers::start(workers) {
                    Ok(()) => counts.threads += 1,
                    // With no thread at all the job would never run: give it back.
                    Err(error) if counts.threads == 0 => {
                        return Err(PoolSpawnError {
                            job: f,
                            cause: Cause::NoThread(error),
                        });
                    }
                    // The live threads will take it, later.
                    Err(error) => tracing::warn!(
                        target: "status_messenger",
                        %error,
                        threads = counts.threads,
                        "cannot start another blocking pool thread; the job waits for one"
                    ),
                }
            }
            // With no thread free (or started) for it, the job waits for a busy one, or for
            // the grower's.
            queued = counts.jobs >= counts.threads;
            counts.jobs += 1;
            if workers.deferring() {
                counts.queued_at.push_back(Instant::now());
            }
        }
        if deferred {
            workers.backlog.notify_one();
        }
        let (done, result) = oneshot::channel();
        let counts = Arc::clone(&self.inner.counts);
        let job: Job = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| context.run(f)));
            // Counted before the result is out, so a caller that saw its result sees the job
            // gone from `jobs()`.
            lock(&*counts).jobs -= 1;
            drop(permit);
            // The caller may have dropped the handle: the job ran anyway, nothing is lost.
            let _unwanted = done.send(outcome);
        });
        // The pool holds a receiver, so this cannot fail; the job would then be dropped with
        // its result sender, which its handle reports.
        if self.inner.jobs.send(job).is_err() {
            tracing::error!(target: "status_messenger", "blocking pool queue closed");
        }
        Ok(PoolJoinHandle { result, queued })
    }
}

impl Workers {
    /// Starts a pool thread; the caller counts it in `Counts::threads`.
    fn start(workers: &Arc<Self>) -> std::io::Result<()> {
        let own = Arc::clone(workers);
        std::thread::Builder::new()
            .name(workers.thread_name.clone())
            .stack_size(workers.stack_size)
            .spawn(move || own.run())
            .map(drop)
    }

    /// Whether jobs past `eager_threads` wait for a busy thread before one is started.
    fn deferring(&self) -> bool {
        self.eager_threads < self.threads && !self.grow_after.is_zero()
    }

    /// Starts the grower thread; whether it runs.
    fn start_grower(self: &Arc<Self>, counts: &mut Counts) -> bool {
        let own = Arc::clone(self);
        let started = std::thread::Builder::new()
            .name(self.thread_name.clone())
            .stack_size(self.stack_size)
            .spawn(move || own.grow())
            .map(drop);
        match started {
            Ok(()) => counts.grower = true,
            Err(error) => tracing::warn!(
                target: "status_messenger",
                %error,
                "cannot start the blocking pool's grower; threads start at once"
            ),
        }
        counts.grower
    }

    /// The grower: while jobs wait without a thread, starts one for each that has waited
    /// `grow_after`, up to `threads`. Ends after `keep_alive` without such a job, or once the
    /// pool is gone and no job waits.
    fn grow(self: Arc<Self>) {
        let mut counts = lock(&*self.counts);
        loop {
            let waiting = counts.jobs.saturating_sub(counts.threads);
            let room = self.threads.saturating_sub(counts.threads);
            if waiting == 0 || room == 0 {
                if counts.closed {
                    break;
                }
                let (guard, waited) = self
                    .backlog
                    .wait_timeout(counts, self.keep_alive)
                    .unwrap_or_else(PoisonError::into_inner);
                counts = guard;
                if waited.timed_out() && counts.jobs <= counts.threads {
                    break;
                }
                continue;
            }
            let now = Instant::now();
            // The jobs with no thread are the newest `waiting` of the queue; the older ones
            // are being taken by threads that are free.
            let skip = counts.queued_at.len().saturating_sub(waiting);
            let oldest = counts.queued_at.get(skip).copied();
            if oldest.is_some_and(|at| now.duration_since(at) >= self.grow_after) {
                // Counted before it starts, and started without the lock, so that callers
                // handing in jobs meanwhile are not held up by the thread starts.
                counts.threads += 1;
                drop(counts);
                let started = Workers::start(&self);
                counts = lock(&*self.counts);
                if let Err(error) = started {
                    counts.threads -= 1;
                    tracing::warn!(
                        target: "status_messenger",
                        %error,
                        threads = counts.threads,
                        "cannot start another blocking pool thread; the job waits for one"
                    );
                    // Tried again when the next job is due, or handed in.
                    let (guard, _) = self
                        .backlog
                        .wait_timeout(counts, self.grow_after)
                        .unwrap_or_else(PoisonError::into_inner);
                    counts = guard;
                }
                // One thread at a time, the counts looked at afresh each time.
                continue;
            }
            let next = oldest.map_or(self.grow_after, |at| {
                (at + self.grow_after).saturating_duration_since(now)
            });
            let (guard, _) = self
                .backlog
                .wait_timeout(counts, next.max(Duration::from_millis(1)))
                .unwrap_or_else(PoisonError::into_inner);
            counts = guard;
        }
        counts.grower = false;
    }

    /// A pool thread: runs jobs until it has been idle for `keep_alive` while others can take
    /// what remains, or until the pool is gone and the queue is empty.
    fn run(self: Arc<Self>) {
        let deferring = self.deferring();
        loop {
            match self.queued.recv_timeout(self.keep_alive) {
                Ok(job) => {
                    if deferring {
                        lock(&*self.counts).queued_at.pop_front();
                    }
                    job();
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    lock(&*self.counts).threads -= 1;
                    return;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    let mut counts = lock(&*self.counts);
                    // Every job still held has a thread besides this one.
                    if counts.jobs < counts.threads {
                        counts.threads -= 1;
                        return;
                    }
                }
            }
        }
    }
}

/// Why a job was not accepted by a [`BlockingPool`]; it carries the job back.
///
/// # Examples
///
/// ```
/// use status_messenger::{BlockingPool, BlockingPoolConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = BlockingPool::new(BlockingPoolConfig { threads: 1, queue: 0, ..Default::default() })
///     .unwrap();
/// let (release, wait) = std::sync::mpsc::channel::<()>();
/// let busy = pool.try_spawn(move || drop(wait.recv())).unwrap();
/// let error = pool.try_spawn(|| ()).unwrap_err();
/// assert_eq!(error.to_string(), "the blocking pool is full");
/// release.send(()).unwrap();
/// busy.await.unwrap();
/// # }
/// ```
pub struct PoolSpawnError<F> {
    job: F,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    Full,
    NoThread(std::io::Error),
}

impl<F> PoolSpawnError<F> {
    /// Whether every thread runs a job and the queue is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{BlockingPool, BlockingPoolConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = BlockingPool::new(BlockingPoolConfig { threads: 1, queue: 0, ..Default::default() })
    ///     .unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let busy = pool.try_spawn(move || drop(wait.recv())).unwrap();
    /// assert!(pool.try_spawn(|| ()).unwrap_err().is_full());
    /// release.send(()).unwrap();
    /// busy.await.unwrap();
    /// # }
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self.cause, Cause::Full)
    }

    /// The job that was not accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{BlockingPool, BlockingPoolConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = BlockingPool::new(BlockingPoolConfig { threads: 1, queue: 0, ..Default::default() })
    ///     .unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let busy = pool.try_spawn(move || drop(wait.recv())).unwrap();
    /// let job = pool.try_spawn(|| 40 + 2).unwrap_err().into_inner();
    /// assert_eq!(job(), 42);
    /// release.send(()).unwrap();
    /// busy.await.unwrap();
    /// # }
    /// ```
    pub fn into_inner(self) -> F {
        self.job
    }
}

impl<F> fmt::Debug for PoolSpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolSpawnError")
            .field("cause", &self.cause)
            .finish_non_exhaustive()
    }
}

impl<F> fmt::Display for PoolSpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Full => f.write_str("the blocking pool is full"),
            Cause::NoThread(_) => f.write_str("the blocking pool cannot start a thread"),
        }
    }
}

impl<F> std::error::Error for PoolSpawnError<F> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Full => None,
            Cause::NoThread(error) => Some(error),
        }
    }
}

/// The result of a job on a [`BlockingPool`]: a future of its return value, or of a
/// [`PoolJoinError`] when it panicked. Dropping it leaves the job running.
///
/// # Examples
///
/// ```
/// use status_messenger::{BlockingPool, PoolJoinHandle};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = BlockingPool::new(Default::default()).unwrap();
/// let handle: PoolJoinHandle<u32> = pool.try_spawn(|| 7).unwrap();
/// assert_eq!(handle.await.unwrap(), 7);
/// # }
/// ```
#[must_use = "dropping the handle leaves the job running; await it for its result"]
#[derive(Debug)]
pub struct PoolJoinHandle<R> {
    result: oneshot::Receiver<std::thread::Result<R>>,
    queued: bool,
}

impl<R> PoolJoinHandle<R> {
    /// Whether the job had to wait for a thread when it was accepted: every live thread was
    /// busy and none could be started for it at once (past
    /// [`eager_threads`](BlockingPoolConfig::eager_threads) it waits up to
    /// [`grow_after`](BlockingPoolConfig::grow_after); at the pool's most threads, for a job to
    /// end). `false`: a thread was free for it, or was started for it, so it starts at once.
    ///
    /// A caller that answers only once its job runs (to pace a burst of work by the pool's) can
    /// skip that wait when this is `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{BlockingPool, BlockingPoolConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = BlockingPoolConfig { threads: 1, queue: 1, ..Default::default() };
    /// let pool = BlockingPool::new(config).unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let busy = pool.try_spawn(move || wait.recv().is_ok()).unwrap();
    /// // A thread was started for the first job; the second waits for it.
    /// assert!(!busy.queued());
    /// let next = pool.try_spawn(|| 2).unwrap();
    /// assert!(next.queued());
    /// release.send(()).unwrap();
    /// assert!(busy.await.unwrap());
    /// assert_eq!(next.await.unwrap(), 2);
    /// # }
    /// ```
    pub fn queued(&self) -> bool {
        self.queued
    }
}

impl<R> Future for PoolJoinHandle<R> {
    type Output = Result<R, PoolJoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.result)
            .poll(cx)
            .map(|outcome| match outcome {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(panic)) => Err(PoolJoinError { panic: Some(panic) }),
                // The job was dropped without running: only if the pool's queue broke.
                Err(_dropped) => Err(PoolJoinError { panic: None }),
            })
    }
}

/// A job on a [`BlockingPool`] that did not return: it panicked (the pool's thread goes on).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = status_messenger::BlockingPool::new(Default::default()).unwrap();
/// let error = pool.try_spawn(|| panic!("tool bug")).unwrap().await.unwrap_err();
/// assert!(error.is_panic());
/// assert_eq!(error.to_string(), "a blocking pool job panicked");
/// assert_eq!(error.into_panic().unwrap().downcast_ref::<&str>(), Some(&"tool bug"));
/// // The pool still runs jobs.
/// assert_eq!(pool.try_spawn(|| 1).unwrap().await.unwrap(), 1);
/// # }
/// ```
pub struct PoolJoinError {
    panic: Option<Box<dyn Any + Send + 'static>>,
}

impl PoolJoinError {
    /// Whether the job panicked (otherwise it was dropped without running).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = status_messenger::BlockingPool::new(Default::default()).unwrap();
    /// let error = pool.try_spawn(|| panic!("bug")).unwrap().await.unwrap_err();
    /// assert!(error.is_panic());
    /// # }
    /// ```
    pub fn is_panic(&self) -> bool {
        self.panic.is_some()
    }

    /// The panic's payload, to resume it with `std::panic::resume_unwind` or to log it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = status_messenger::BlockingPool::new(Default::default()).unwrap();
    /// let error = pool.try_spawn(|| panic!("bug")).unwrap().await.unwrap_err();
    /// assert_eq!(error.into_panic().unwrap().downcast_ref::<&str>(), Some(&"bug"));
    /// # }
    /// ```
    pub fn into_panic(self) -> Option<Box<dyn Any + Send + 'static>> {
        self.panic
    }
}

impl fmt::Debug for PoolJoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolJoinError")
            .field("panic", &self.is_panic())
            .finish()
    }
}

impl fmt::Display for PoolJoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_panic() {
            "a blocking pool job panicked"
        } else {
            "a blocking pool job was dropped without running"
        })
    }
}

impl std::error::Error for PoolJoinError {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{BlockingPool, BlockingPoolConfig};

    /// Past `eager_threads` a job waits for a busy thread (here longer than the test runs), and
    /// its handle says so; a job that finds a thread free does not wait.
    #[tokio::test(flavor = "current_thread")]
    async fn a_job_past_the_eager_threads_is_queued_and_one_with_a_free_thread_is_not() {
        let pool = BlockingPool::new(BlockingPoolConfig {
            threads: 4,
            queue: 0,
            eager_threads: 1,
            grow_after: Duration::from_secs(3600),
            ..BlockingPoolConfig::default()
        })
        .unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = pool.try_spawn(move || wait.recv().is_ok()).unwrap();
        assert!(!busy.queued(), "the first job has a thread started for it");
        let behind = pool.try_spawn(|| 2).unwrap();
        assert!(
            behind.queued(),
            "past the eager thread, it waits for the busy one"
        );
        release.send(()).unwrap();
        assert!(busy.await.unwrap());
        assert_eq!(behind.await.unwrap(), 2);
        // The thread is free again: the next job takes it at once.
        let next = pool.try_spawn(|| 3).unwrap();
        assert!(!next.queued());
        assert_eq!(next.await.unwrap(), 3);
        assert_eq!(pool.threads(), 1);
    }
}
