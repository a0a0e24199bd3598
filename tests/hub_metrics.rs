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

    let stats = hub.stats();
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
    assert_eq!(recorder.gauge(names::SUBSCRIBERS), 0);
    assert_eq!(recorder.gauge(names::RETAINED), 0);
    assert!(recorder
        .described
        .lock()
        .unwrap()
        .contains(&names::ACCEPTED.to_owned()));
}
