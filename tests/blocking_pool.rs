//! `BlockingPool`: more blocking jobs at once than tokio's blocking pool allows, each in its
//! caller's session; the bound on what it holds; waiting for room; idle threads ending.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use status_messenger::{
    add_status_message, current_session_id, with_session_id, BlockingPool, BlockingPoolConfig,
    Messenger,
};

/// A gate jobs wait at until the test opens it, with a bound so a broken pool fails the test
/// instead of hanging it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) -> bool {
        let open = self.open.lock().unwrap();
        let (open, _timeout) = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(20), |open| !*open)
            .unwrap();
        *open
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Waits (at most 20 s) until `count` reaches `target`.
async fn until(count: &AtomicUsize, target: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "only {} of {target} jobs started",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_jobs_than_tokios_blocking_threads_run_at_once_each_in_its_session() {
    // 600 jobs that all wait at one gate: they can only all be running if the pool has a
    // thread for each, past tokio's 512.
    const JOBS: usize = 600;
    let pool = BlockingPool::new(BlockingPoolConfig {
        threads: JOBS,
        queue: 0,
        stack_size: 256 * 1024,
        ..BlockingPoolConfig::default()
    })
    .unwrap();
    let gate = Arc::new(Gate::default());
    let started = Arc::new(AtomicUsize::new(0));
    let messenger = Messenger::new();
    let mut handles = Vec::new();
    for job in 0..JOBS {
        let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
        let session = format!("session-{job}");
        let handle = messenger
            .scope(with_session_id(session, async {
                pool.try_spawn(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    let opened = gate.wait();
                    add_status_message("done");
                    (opened, current_session_id())
                })
            }))
            .await
            .unwrap();
        handles.push(handle);
    }
    until(&started, JOBS).await;
    assert_eq!((pool.threads(), pool.jobs()), (JOBS, JOBS));
    gate.open();
    for (job, handle) in handles.into_iter().enumerate() {
        let (opened, session) = handle.await.unwrap();
        assert!(opened, "job {job} timed out at the gate");
        assert_eq!(session, Some(format!("session-{job}")));
    }
    assert_eq!(pool.jobs(), 0);
    // Every status reached the caller's messenger, in its job's session.
    let mut sessions: Vec<String> = messenger
        .stream()
        .take(JOBS)
        .map(|(session, text)| {
            assert_eq!(text, "done");
            session.unwrap()
        })
        .collect()
        .await;
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions.len(), JOBS);
}

#[tokio::test]
async fn jobs_past_the_threads_queue_in_order_and_past_the_queue_are_refused() {
    let pool = BlockingPool::new(BlockingPoolConfig {
        threads: 1,
        queue: 2,
        ..BlockingPoolConfig::default()
    })
    .unwrap();
    let gate = Arc::new(Gate::default());
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for job in 0..3 {
        let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
        handles.push(
            pool.try_spawn(move || {
                gate.wait();
                order.lock().unwrap().push(job);
            })
            .unwrap(),
        );
    }
    assert_eq!((pool.threads(), pool.jobs(), pool.capacity()), (1, 3, 3));
    let refused = pool.try_spawn(|| 3).unwrap_err();
    assert!(refused.is_full());
    // Refusing changed nothing.
    assert_eq!(pool.jobs(), 3);
    gate.open();
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    // Room again.
    assert_eq!(pool.try_spawn(|| 4).unwrap().await.unwrap(), 4);
}

#[tokio::test]
async fn spawn_waits_for_room_without_blocking_the_runtime() {
    let pool = BlockingPool::new(BlockingPoolConfig {
        threads: 1,
        queue: 0,
        ..BlockingPoolConfig::default()
    })
    .unwrap();
    let gate = Arc::new(Gate::default());
    let busy = {
        let gate = Arc::clone(&gate);
        pool.try_spawn(move || gate.wait()).unwrap()
    };
    let waiting = tokio::spawn(with_session_id("s1", {
        let pool = pool.clone();
        async move { pool.spawn(current_session_id).await.unwrap().await.unwrap() }
    }));
    // The current-thread runtime still runs other tasks while `spawn` waits for room.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished());
    assert_eq!(pool.jobs(), 1);
    gate.open();
    assert!(busy.await.unwrap());
    assert_eq!(waiting.await.unwrap().as_deref(), Some("s1"));
}

#[tokio::test]
async fn idle_threads_end_after_keep_alive_and_start_again_when_needed() {
    let pool = BlockingPool::new(BlockingPoolConfig {
        threads: 4,
        keep_alive: Duration::from_millis(20),
        ..BlockingPoolConfig::default()
    })
    .unwrap();
    let gate = Arc::new(Gate::default());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let gate = Arc::clone(&gate);
            pool.try_spawn(move || gate.wait()).unwrap()
        })
        .collect();
    assert_eq!(pool.threads(), 4);
    gate.open();
    for handle in handles {
        assert!(handle.await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while pool.threads() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} threads stayed",
            pool.threads()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.try_spawn(|| 5).unwrap().await.unwrap(), 5);
}

#[tokio::test]
async fn a_dropped_pool_still_runs_the_jobs_it_accepted() {
    let pool = BlockingPool::new(BlockingPoolConfig {
        threads: 1,
        queue: 4,
        ..BlockingPoolConfig::default()
    })
    .unwrap();
    let handles: Vec<_> = (0..5)
        .map(|job| {
            pool.try_spawn(move || {
                std::thread::sleep(Duration::from_millis(2));
                job
            })
            .unwrap()
        })
        .collect();
    drop(pool);
    for (job, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.await.unwrap(), job);
    }
}

#[tokio::test]
async fn past_eager_threads_a_waiting_job_gets_a_thread_after_grow_after() {
    const GROW_AFTER: Duration = Duration::from_millis(100);
    let pool = BlockingPool::new(BlockingPoolConfig {
        threads: 4,
        queue: 0,
        eager_threads: 1,
        grow_after: GROW_AFTER,
        ..BlockingPoolConfig::default()
    })
    .unwrap();
    let gate = Arc::new(Gate::default());
    let started = Arc::new(AtomicUsize::new(0));
    let submitted = Instant::now();
    let handles = with_session_id("slow", async {
        (0..3)
            .map(|_| {
                let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
                pool.try_spawn(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    gate.wait();
                    current_session_id()
                })
                .unwrap()
            })
            .collect::<Vec<_>>()
    })
    .await;
    // One thread at once; the two jobs past it first wait for the busy one.
    assert_eq!((pool.threads(), pool.jobs()), (1, 3));
    until(&started, 3).await;
    // Each got a thread of its own once it had waited `grow_after`, though none had ended.
    assert!(submitted.elapsed() >= GROW_AFTER);
    assert_eq!((pool.threads(), pool.jobs()), (3, 3));
    gate.open();
    for handle in handles {
        assert_eq!(handle.await.unwrap().as_deref(), Some("slow"));
    }
}

#[tokio::test]
async fn short_jobs_past_eager_threads_share_them() {
    let pool = BlockingPool::new(BlockingPoolConfig {
        threads: 64,
        queue: 1_000,
        eager_threads: 2,
        // Far longer than the jobs take: no job waits that long, so no thread is added.
        grow_after: Duration::from_secs(30),
        ..BlockingPoolConfig::default()
    })
    .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..500)
        .map(|job| {
            let ran = Arc::clone(&ran);
            pool.try_spawn(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                job
            })
            .unwrap()
        })
        .collect();
    assert!(pool.threads() <= 2, "{} threads", pool.threads());
    for (job, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.await.unwrap(), job);
    }
    assert_eq!(ran.load(Ordering::SeqCst), 500);
    assert_eq!(pool.threads(), 2);
}

#[test]
fn eager_threads_must_be_at_least_one() {
    let config = BlockingPoolConfig {
        eager_threads: 0,
        ..BlockingPoolConfig::default()
    };
    let error = BlockingPool::new(config).unwrap_err();
    assert_eq!(
        (error.field(), error.reason()),
        ("eager_threads", "must be at least 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_past_eager_threads_all_run_while_threads_and_the_grower_come_and_go() {
    // Keep-alive and grow_after at their shortest, so threads end and the grower stops and
    // starts again between the bursts: no job may be left without a thread.
    let pool = BlockingPool::new(BlockingPoolConfig {
        threads: 8,
        queue: 10_000,
        eager_threads: 1,
        grow_after: Duration::from_millis(1),
        keep_alive: Duration::from_millis(1),
        ..BlockingPoolConfig::default()
    })
    .unwrap();
    for round in 0..200u64 {
        let handles: Vec<_> = (0..(round % 13))
            .map(|job| {
                pool.try_spawn(move || {
                    if job % 3 == 0 {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                    job
                })
                .unwrap()
            })
            .collect();
        for (job, handle) in handles.into_iter().enumerate() {
            let ran = tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .unwrap_or_else(|_| panic!("round {round}: job {job} never ran"));
            assert_eq!(ran.unwrap(), job as u64);
        }
        assert!(pool.threads() <= 8);
        if round % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
}
