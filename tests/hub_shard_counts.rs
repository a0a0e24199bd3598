//! `HubStats::accepted` and `retained` stay exact when statuses are numbered from several
//! threads into sessions of every shard, history is trimmed to its capacity, and sessions are
//! evicted (which frees their history through another path than the append's).

use std::time::Duration;

use futures_util::FutureExt;
use status_messenger::{Event, Hub, HubConfig};

const THREADS: usize = 4;
const SESSIONS_PER_THREAD: usize = 16;
const CAPACITY: usize = 5;

fn history_len(hub: &Hub, session: &str) -> u64 {
    let mut subscription = hub.subscribe(session, None);
    let mut held = 0;
    while let Some(Some(event)) = futures_util::StreamExt::next(&mut subscription).now_or_never() {
        if matches!(event, Event::Status(_)) {
            held += 1;
        }
    }
    held
}

#[tokio::test(start_paused = true)]
async fn counts_from_many_threads_add_up_after_trims_and_evictions() {
    let mut config = HubConfig::default();
    config.history_capacity = CAPACITY;
    config.history_ttl = Duration::from_secs(60);
    let hub = Hub::new(config).unwrap();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let hub = &hub;
            scope.spawn(move || {
                for session in 0..SESSIONS_PER_THREAD {
                    // Session n gets n statuses: some below the capacity, most above it.
                    for i in 0..session {
                        hub.publish(Some(&format!("t{thread}-s{session}")), format!("{i}"))
                            .unwrap();
                    }
                }
            });
        }
    });
    let published: u64 = (THREADS * (0..SESSIONS_PER_THREAD).sum::<usize>()) as u64;
    let expected_held: u64 = THREADS as u64
        * (0..SESSIONS_PER_THREAD)
            .map(|n| n.min(CAPACITY) as u64)
            .sum::<u64>();
    let stats = hub.stats();
    assert_eq!(stats.accepted, published);
    assert_eq!(stats.retained, expected_held);
    let mut held = 0;
    for thread in 0..THREADS {
        for session in 1..SESSIONS_PER_THREAD {
            let len = history_len(&hub, &format!("t{thread}-s{session}"));
            assert!(len <= CAPACITY as u64, "{len} held past the capacity");
            held += len;
        }
    }
    assert_eq!(held, expected_held);
    // Subscribing kept them; once idle past the TTL every session leaves with its history.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(hub.evict_idle() > 0);
    let stats = hub.stats();
    assert_eq!((stats.accepted, stats.retained), (published, 0));
    // A new status is counted on top, in whatever shard it lands.
    hub.publish(Some("t0-s3"), "again").unwrap();
    let stats = hub.stats();
    assert_eq!((stats.accepted, stats.retained), (published + 1, 1));
}
