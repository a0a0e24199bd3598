//! `add_status_message` -> `stream_status_updates` throughput against two raw channels, tokio's
//! unbounded mpsc and crossbeam's unbounded channel: the same `(Option<String>, String)` tuple,
//! the same producer threads, one consumer, measured in the same group.
//!
//! The same group measures what the newer entry points cost beside it: `structured_status`
//! sends each status with progress, level, key and JSON data through `add_status`, and
//! `in_task_cancel_check` runs the producers as tasks that ask `is_cancelled()` before each
//! `add_status_message` (each status then also carries its task's id), as the simulated tool
//! does. The `cancel_check` group times `is_cancelled()` alone, inside a task and outside.
//!
//! The `many_producers` group repeats the comparison with 64 producer threads on a machine with
//! far fewer cores: the situation of an agent server running one blocking tool per request.
//!
//! Run with: cargo bench --bench throughput

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::StreamExt;
use status_messenger::{
    add_status, add_status_message, is_cancelled, setup_status_messenger_async,
    stream_status_updates, Hub, HubConfig, JsonData, Level, SessionContext, StatusMessage,
};

const TEXT: &str = "Searching the web...";

/// Runs `produce` on `threads` threads (each sending `messages / threads` messages) while
/// `consume` takes them all on a current-thread runtime; returns the elapsed time.
fn run_once<P, C>(
    runtime: &tokio::runtime::Runtime,
    threads: u64,
    messages: u64,
    produce: P,
    consume: C,
) -> Duration
where
    P: Fn(u64, u64) + Send + Sync + Clone + 'static,
    C: std::future::Future<Output = u64>,
{
    let per_thread = messages / threads;
    let start = Instant::now();
    let producers: Vec<_> = (0..threads)
        .map(|thread| {
            let produce = produce.clone();
            std::thread::spawn(move || produce(thread, per_thread))
        })
        .collect();
    let received = runtime.block_on(consume);
    let elapsed = start.elapsed();
    for producer in producers {
        producer.join().expect("producer thread");
    }
    assert_eq!(received, per_thread * threads);
    elapsed
}

/// Benchmarks the raw channel and the messenger with `threads` producers, side by side.
fn compare(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    threads: u64,
    messages: u64,
) {
    let expected = messages / threads * threads;
    group.throughput(Throughput::Elements(expected));
    group.bench_with_input(
        BenchmarkId::new("raw_unbounded_mpsc", threads),
        &threads,
        |b, &threads| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| {
                        let (tx, mut rx) =
                            tokio::sync::mpsc::unbounded_channel::<(Option<String>, String)>();
                        let produce = move |thread: u64, count: u64| {
                            let session = format!("session-{thread}");
                            for _ in 0..count {
                                let _sent = tx.send((Some(session.clone()), TEXT.to_owned()));
                            }
                        };
                        run_once(runtime, threads, messages, produce, async move {
                            let mut received = 0;
                            while received < expected {
                                if rx.recv().await.is_none() {
                                    break;
                                }
                                received += 1;
                            }
                            received
                        })
                    })
                    .sum()
            });
        },
    );
    group.bench_with_input(
        BenchmarkId::new("raw_crossbeam_unbounded", threads),
        &threads,
        |b, &threads| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| {
                        let (tx, rx) = crossbeam_channel::unbounded::<(Option<String>, String)>();
                        let produce = move |thread: u64, count: u64| {
                            let session = format!("session-{thread}");
                            for _ in 0..count {
                                let _sent = tx.send((Some(session.clone()), TEXT.to_owned()));
                            }
                        };
                        // crossbeam has no async receive: the consumer blocks in `recv`, as a
                        // dedicated consumer thread would (it spins briefly before it sleeps).
                        run_once(runtime, threads, messages, produce, async move {
                            let mut received = 0;
                            while received < expected {
                                if rx.recv().is_err() {
                                    break;
                                }
                                received += 1;
                            }
                            received
                        })
                    })
                    .sum()
            });
        },
    );
    let plain = |thread: u64, count: u64| {
        SessionContext::new(format!("session-{thread}")).run(|| {
            for _ in 0..count {
                add_status_message(TEXT);
            }
        });
    };
    messenger_bench(group, "status_messenger", runtime, threads, messages, plain);
}

/// The cost of the newer entry points, beside the same baseline.
fn compare_structured(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    threads: u64,
    messages: u64,
) {
    // Data is checked once, as an application holding a value would; each status shares it.
    let data = JsonData::new(r#"{"query": "rust async", "hits": [1, 2, 3]}"#).expect("JSON");
    let structured = move |thread: u64, count: u64| {
        SessionContext::new(format!("session-{thread}")).run(|| {
            for step in 0..count {
                add_status(
                    StatusMessage::new(TEXT)
                        .progress(step, count)
                        .level(Level::Info)
                        .key("search")
                        .data(data.clone()),
                );
            }
        });
    };
    messenger_bench(
        group,
        "structured_status",
        runtime,
        threads,
        messages,
        structured,
    );

    // Tasks need a hub to start in; the statuses still go to the global messenger's stream.
    let hub = Hub::new(HubConfig::default()).expect("hub");
    let in_task = move |thread: u64, count: u64| {
        let task = hub.start_task(&format!("session-{thread}")).expect("task");
        task.run(|| {
            for _ in 0..count {
                if !is_cancelled() {
                    add_status_message(TEXT);
                }
            }
        });
    };
    messenger_bench(
        group,
        "in_task_cancel_check",
        runtime,
        threads,
        messages,
        in_task,
    );
}

/// Benchmarks `produce` on `threads` threads into the global messenger's stream.
fn messenger_bench<P>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    runtime: &tokio::runtime::Runtime,
    threads: u64,
    messages: u64,
    produce: P,
) where
    P: Fn(u64, u64) + Send + Sync + Clone + 'static,
{
    let expected = messages / threads * threads;
    group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
        b.iter_custom(|iterations| {
            (0..iterations)
                .map(|_| {
                    run_once(runtime, threads, messages, produce.clone(), async move {
                        let mut updates = stream_status_updates();
                        let mut received = 0;
                        while received < expected {
                            if updates.next().await.is_none() {
                                break;
                            }
                            received += 1;
                        }
                        received
                    })
                })
                .sum()
        });
    });
}

/// `is_cancelled()` alone, in a task and outside any.
fn cancel_check(c: &mut Criterion) {
    let hub = Hub::new(HubConfig::default()).expect("hub");
    let mut group = c.benchmark_group("cancel_check");
    group.bench_function("outside_a_task", |b| {
        b.iter(|| std::hint::black_box(is_cancelled()));
    });
    let task = hub.start_task("session").expect("task");
    task.run(|| {
        group.bench_function("in_a_task", |b| {
            b.iter(|| std::hint::black_box(is_cancelled()));
        });
    });
    group.finish();
}

fn add_to_stream(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    setup_status_messenger_async();

    let mut group = c.benchmark_group("add_to_stream");
    group.sample_size(20);
    for threads in [1, 2, 4] {
        compare(&mut group, &runtime, threads, 200_000);
        compare_structured(&mut group, &runtime, threads, 200_000);
    }
    group.finish();

    let mut group = c.benchmark_group("many_producers");
    group.sample_size(10);
    compare(&mut group, &runtime, 64, 64_000);
    group.finish();
}

criterion_group!(benches, add_to_stream, cancel_check);
criterion_main!(benches);
