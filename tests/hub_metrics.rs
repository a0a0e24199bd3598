//! With the `metrics` feature, the hub's counters also go through the `metrics` facade.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use status_messenger::hub::metric_names as names;
use status_messenger::hub::PublishError;
use status_messenger::{Hub, HubConfig};

/// Keeps every counter and gauge as an atomic, by name and labels.
#[derive(Default)]
struct TestRecorder {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
    described: Mutex<Vec<String>>,
}

fn key_string(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<AtomicU64> {
        let mut values = self.values.lock().unwrap();
        Arc::clone(values.entry(key_string(key)).or_default())
    }

    fn counter(&self, name: &str) -> u64 {
        self.values.lock().unwrap()[name].load(Ordering::Acquire)
    }

    fn gauge(&self, name: &str) -> u64 {
        f64::from_bits(self.values.lock().unwrap()[name].load(Ordering::Acquire)) as u64
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push(key.as_str().to_owned());
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push(key.as_str().to_owned());
    }
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_mirror_the_stats() {
    let recorder = TestRecorder::default();
    let mut config = HubConfig::default();
    config.history_capacity = 3;
    config.max_status_bytes = 32;
    config.max_sessions = 3;
    config.history_ttl = Duration::from_secs(10);
    let hub = metrics::with_local_recorder(&recorder, || Hub::new(config)).unwrap();

    let mut sub = hub.subscribe("a", None);
    for i in 0..5 {
        hub.publish(Some("a"), format!("status {i}")).unwrap();
    }
    // A status changes the hub's counts only; the facade gets them when they are recorded.
    assert_eq!(recorder.counter(names::ACCEPTED), 0);
    assert_eq!(hub.record_metrics().accepted, 5);
    assert_eq!(recorder.counter(names::ACCEPTED), 5);
    assert_eq!(recorder.gauge(names::RETAINED), 3);
    hub.publish(Some("a"), "y".repeat(100)).unwrap();
    assert_eq!(
        hub.publish(None, "no session"),
        Err(PublishError::NoSession)
    );
    assert_eq!(
        hub.publish(Some(""), "invalid"),
        Err(PublishError::InvalidSessionId)
    );
    // b holds no statuses, so it may give way once no longer read; c holds one.
    hub.open_session("b").await.unwrap();
    hub.publish(Some("c"), "c").unwrap();
    // Every session read: none gives way.
    let on_b = hub.subscribe("b", None);
    let on_c = hub.subscribe("c", None);
    assert_eq!(
        hub.publish(Some("d"), "over the session limit"),
        Err(PublishError::TooManySessions)
    );
    // No longer read, b makes room for e.
    drop(on_b);
    hub.publish(Some("e"), "e").unwrap();
    for _ in 0..4 {
        sub.next().await;
    }
    hub.close_session("c").await.unwrap();
    drop(on_c);
    tokio::time::advance(Duration::from_secs(11)).await;
    hub.evict_idle();
    hub.shutdown().await;
    assert_eq!(
        hub.publish(Some("a"), "after shutdown"),
        Err(PublishError::ShutDown)
    );

    let stats = hub.record_metrics();
    assert_eq!(stats, hub.stats());
    assert_eq!(recorder.counter(names::ACCEPTED), stats.accepted);
    assert_eq!(recorder.counter(names::DELIVERED), stats.delivered);
    assert_eq!(recorder.counter(names::TRUNCATED), stats.truncated);
    assert_eq!(recorder.counter(names::GAPS), stats.gaps);
    assert_eq!(recorder.counter(names::LAGGED), stats.lagged);
    assert_eq!(recorder.counter(names::EVICTED), stats.evicted_sessions);
    assert_eq!(
        recorder.counter(names::EVICTED_UNDER_PRESSURE),
        stats.evicted_under_pressure
    );
    let dropped =
        |reason: &str| recorder.counter(&format!("{}{{reason={reason}}}", names::DROPPED));
    assert_eq!(dropped("no_session"), stats.dropped_no_session);
    assert_eq!(dropped("closed"), stats.dropped_closed);
    assert_eq!(dropped("invalid_session"), stats.dropped_invalid);
    assert_eq!(dropped("session_limit"), stats.dropped_session_limit);
    assert_eq!(recorder.gauge(names::SESSIONS), stats.sessions);
    assert_eq!(recorder.gauge(names::SUBSCRIBERS), stats.subscribers);
    assert_eq!(recorder.gauge(names::RETAINED), stats.retained);

    // The scenario touched every counter, so the comparison above means something.
    assert_eq!(stats.accepted, 8);
    assert_eq!((stats.delivered, stats.gaps, stats.lagged), (3, 1, 3));
    // b to make room, e after the TTL.
    assert_eq!((stats.truncated, stats.evicted_sessions), (1, 2));
    assert_eq!(stats.evicted_under_pressure, 1);
    assert_eq!((stats.dropped_no_session, stats.dropped_invalid), (1, 1));
    assert_eq!((stats.dropped_session_limit, stats.dropped_closed), (1, 1));
    // Session a kept its subscriber, but its history expired 10 s after its last status.
    assert_eq!(
        (stats.sessions, stats.subscribers, stats.retained),
        (0, 1, 0)
    );
    drop(sub);
    hub.record_metrics();
    assert_eq!(recorder.gauge(names::SUBSCRIBERS), 0);
    assert_eq!(recorder.gauge(names::RETAINED), 0);
    assert!(recorder
        .described
        .lock()
        .unwrap()
        .contains(&names::ACCEPTED.to_owned()));
}

/// The value of the sample `name` (with its labels, if any) in Prometheus text.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

const SESSIONS: usize = 8;
const STATUSES: usize = 500;

/// Publishes `STATUSES` statuses to each of `SESSIONS` sessions from blocking threads, each
/// session read by a task on the runtime, until every reader has all of its session's.
fn publish_and_read(runtime: &tokio::runtime::Runtime, hub: &Hub) {
    runtime.block_on(async {
        let mut readers = Vec::new();
        for s in 0..SESSIONS {
            let mut sub = hub.subscribe(&format!("s{s}"), None);
            readers.push(tokio::spawn(async move {
                let mut read = 0;
                while read < STATUSES {
                    if let Some(status_messenger::Event::Status(_)) = sub.next().await {
                        read += 1;
                    }
                }
            }));
        }
        let mut producers = Vec::new();
        for s in 0..SESSIONS {
            let hub = hub.clone();
            producers.push(tokio::task::spawn_blocking(move || {
                for i in 0..STATUSES {
                    hub.publish(Some(&format!("s{s}")), format!("status {i}"))
                        .unwrap();
                }
            }));
        }
        for task in producers.into_iter().chain(readers) {
            task.await.unwrap();
        }
    });
}

#[test]
fn a_scrape_sees_every_status_delivered_on_every_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let hub = metrics::with_local_recorder(&recorder, || Hub::new(HubConfig::default())).unwrap();
    let scrape = || {
        hub.record_metrics();
        prometheus.render()
    };
    // Scrapes from two threads all along: records racing each other and the counting must
    // hand every change over once (the final scrape is exact) and never take one back.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let scraping = || {
        let mut last = 0;
        let mut scrapes = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let seen = sample(&scrape(), names::ACCEPTED);
            assert!(seen >= last, "accepted went back from {last} to {seen}");
            last = seen;
            scrapes += 1;
        }
        scrapes
    };
    std::thread::scope(|scope| {
        let scrapers = [scope.spawn(scraping), scope.spawn(scraping)];
        publish_and_read(&runtime, &hub);
        stop.store(true, Ordering::Relaxed);
        for scraper in scrapers {
            assert!(scraper.join().unwrap() > 0, "a scraper ran");
        }
    });
    // Every reader has ended: what each delivered, on whichever worker, is in the scrape.
    let total = (SESSIONS * STATUSES) as u64;
    let text = scrape();
    assert_eq!(sample(&text, names::ACCEPTED), total);
    assert_eq!(sample(&text, names::DELIVERED), total);
    assert_eq!(sample(&text, names::RETAINED), total);
    assert_eq!(sample(&text, names::SESSIONS), SESSIONS as u64);
    assert_eq!(sample(&text, names::SUBSCRIBERS), 0);
    // The next scrape adds what came since, and only that.
    hub.publish(Some("s0"), "one more").unwrap();
    let text = scrape();
    assert_eq!(sample(&text, names::ACCEPTED), total + 1);
    assert_eq!(sample(&text, names::DELIVERED), total);
    assert_eq!(sample(&text, names::RETAINED), total + 1);
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(&scrape()),
        sorted(&text),
        "a scrape with nothing new changes nothing"
    );
}

#[test]
fn hubs_sharing_a_recorder_add_up_and_a_dropped_hub_hands_over_its_counts() {
    let recorder = TestRecorder::default();
    let first = metrics::with_local_recorder(&recorder, || Hub::new(HubConfig::default())).unwrap();
    let second =
        metrics::with_local_recorder(&recorder, || Hub::new(HubConfig::default())).unwrap();
    for hub in [&first, &second] {
        hub.publish(Some("s"), "a").unwrap();
        hub.publish(Some("s"), "b").unwrap();
    }
    first.record_metrics();
    second.record_metrics();
    assert_eq!(recorder.counter(names::ACCEPTED), 4);
    assert_eq!(recorder.gauge(names::SESSIONS), 2);
    // Counted and never recorded before the hub went away: the drop records it.
    second.publish(Some("t"), "c").unwrap();
    drop(second);
    assert_eq!(recorder.counter(names::ACCEPTED), 5);
    // What the dropped hub held it no longer holds: only the first hub's session is left.
    assert_eq!(recorder.gauge(names::SESSIONS), 1);
    assert_eq!(recorder.gauge(names::RETAINED), 2);
    assert_eq!(first.stats().accepted, 2);
}

#[tokio::test(start_paused = true)]
async fn the_sweep_of_idle_sessions_records_too() {
    let recorder = TestRecorder::default();
    let mut config = HubConfig::default();
    config.history_ttl = Duration::from_secs(8);
    let hub = metrics::with_local_recorder(&recorder, || Hub::new(config)).unwrap();
    hub.publish(Some("s"), "a").unwrap();
    assert_eq!(recorder.counter(names::ACCEPTED), 0);
    // Sweeps come a quarter of the TTL apart, on the hub's next call after that.
    tokio::time::advance(Duration::from_secs(2)).await;
    hub.publish(Some("s"), "b").unwrap();
    assert_eq!(recorder.counter(names::ACCEPTED), 1);
    hub.publish(Some("s"), "c").unwrap();
    hub.evict_idle();
    assert_eq!(recorder.counter(names::ACCEPTED), 3);
    assert_eq!(recorder.gauge(names::RETAINED), 3);
}
