//! Fan-out benchmark: statuses delivered per second through the hub, against
//! `tokio::sync::broadcast` doing the same fan-out, measured in the same group.
//!
//! Two shapes: 1,000 sessions with 1 subscriber each, and 1 session with 100 subscribers.
//! Each iteration publishes a burst to every session and waits until every subscriber task has
//! received all of it, on a current-thread runtime, so the time is the CPU cost of publishing,
//! waking and receiving. The broadcast baseline sends an item of the same shape as the hub's
//! `Status` (session, seq,
//! text) and routes by session id through a `HashMap`, as a hand-written broadcaster would;
//! `broadcast_indexed` skips that lookup, the cheapest possible fan-out.
//!
//! Run with: cargo bench --bench hub_fanout -- --warm-up-time 1 --measurement-time 3

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::StreamExt;
use status_messenger::{Hub, HubConfig};

/// What the broadcast baseline sends: the fields of the hub's `Status`, with the same types.
#[derive(Clone, Debug)]
#[allow(dead_code)] // read only by being moved and dropped, as a forwarding task would
struct Item {
    session: Arc<str>,
    seq: u64,
    text: Arc<str>,
}
use tokio::runtime::Runtime;
use tokio::sync::{broadcast, Notify};

/// A 40-byte status, the size the memory targets assume.
const TEXT: &str = "step 12/100 t_ns=1700000000000000000000";

/// Counts deliveries down to zero and wakes the producer when the round is complete.
#[derive(Default)]
struct Round {
    remaining: AtomicU64,
    done: Notify,
}

impl Round {
    fn delivered(&self) {
        if self.remaining.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.done.notify_one();
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

struct Shape {
    name: &'static str,
    sessions: usize,
    subscribers: usize,
    /// Statuses published to each session per iteration.
    burst: usize,
}

fn session_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:032x}")).collect()
}

/// Runs `iters` rounds through the hub; returns the time spent.
fn hub_rounds(rt: &Runtime, shape: &Shape, iters: u64) -> Duration {
    rt.block_on(async {
        let hub = Hub::new(HubConfig::default()).expect("hub");
        let ids = session_ids(shape.sessions);
        let round = Arc::new(Round::default());
        let mut tasks = Vec::new();
        for id in &ids {
            for _ in 0..shape.subscribers {
                let mut sub = hub.subscribe(id, None);
                let round = Arc::clone(&round);
                tasks.push(tokio::spawn(async move {
                    while let Some(event) = sub.next().await {
                        drop(event);
                        round.delivered();
                    }
                }));
            }
        }
        tokio::task::yield_now().await;
        let per_round = (shape.sessions * shape.subscribers * shape.burst) as u64;
        let start = Instant::now();
        for _ in 0..iters {
            round.remaining.store(per_round, Ordering::Relaxed);
            for _ in 0..shape.burst {
                for id in &ids {
                    hub.publish(Some(id), TEXT.to_owned()).unwrap();
                }
            }
            round.done.notified().await;
        }
        let elapsed = start.elapsed();
        hub.shutdown().await;
        for task in tasks {
            task.await.expect("subscriber task");
        }
        elapsed
    })
}

/// Runs `iters` rounds through one broadcast channel per session; returns the time spent.
fn broadcast_rounds(rt: &Runtime, shape: &Shape, iters: u64, routed: bool) -> Duration {
    rt.block_on(async {
        let ids = session_ids(shape.sessions);
        let round = Arc::new(Round::default());
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for id in &ids {
            let (tx, _) = broadcast::channel::<Item>(1024);
            for _ in 0..shape.subscribers {
                let mut rx = tx.subscribe();
                let round = Arc::clone(&round);
                tasks.push(tokio::spawn(async move {
                    while let Ok(status) = rx.recv().await {
                        drop(status);
                        round.delivered();
                    }
                }));
            }
            senders.push((Arc::<str>::from(id.as_str()), tx, 0u64));
        }
        let route: HashMap<String, usize> = ids.iter().cloned().zip(0..).collect();
        tokio::task::yield_now().await;
        let per_round = (shape.sessions * shape.subscribers * shape.burst) as u64;
        let start = Instant::now();
        for _ in 0..iters {
            round.remaining.store(per_round, Ordering::Relaxed);
            for _ in 0..shape.burst {
                for (index, id) in ids.iter().enumerate() {
                    let index = if routed { route[id] } else { index };
                    let (session, tx, seq) = &mut senders[index];
                    *seq += 1;
                    let status = Item {
                        session: Arc::clone(session),
                        seq: *seq,
                        text: Arc::from(TEXT.to_owned()),
                    };
                    if tx.send(status).is_err() {
                        panic!("a subscriber left");
                    }
                }
            }
            round.done.notified().await;
        }
        let elapsed = start.elapsed();
        drop(senders);
        for task in tasks {
            task.await.expect("subscriber task");
        }
        elapsed
    })
}

fn fanout(c: &mut Criterion) {
    let shapes = [
        Shape {
            name: "1000_sessions_x_1_subscriber",
            sessions: 1000,
            subscribers: 1,
            burst: 8,
        },
        Shape {
            name: "1_session_x_100_subscribers",
            sessions: 1,
            subscribers: 100,
            burst: 64,
        },
    ];
    let rt = runtime();
    for shape in &shapes {
        let mut group = c.benchmark_group(format!("hub_fanout/{}", shape.name));
        let deliveries = (shape.sessions * shape.subscribers * shape.burst) as u64;
        group.throughput(Throughput::Elements(deliveries));
        group.bench_function(BenchmarkId::from_parameter("hub"), |b| {
            b.iter_custom(|iters| hub_rounds(&rt, shape, iters))
        });
        group.bench_function(BenchmarkId::from_parameter("broadcast"), |b| {
            b.iter_custom(|iters| broadcast_rounds(&rt, shape, iters, true))
        });
        group.bench_function(BenchmarkId::from_parameter("broadcast_indexed"), |b| {
            b.iter_custom(|iters| broadcast_rounds(&rt, shape, iters, false))
        });
        group.finish();
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
