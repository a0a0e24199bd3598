//! A subscriber that never reads while 100,000 statuses are sent stays within its bound, and
//! the other subscribers still get everything, promptly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use status_messenger::{Event, Hub, HubConfig};

const TOTAL: u64 = 100_000;
const READERS: usize = 3;
/// The producer lets the readers run after this many statuses.
const BURST: u64 = 100;

#[tokio::test(flavor = "current_thread")]
async fn a_stalled_subscriber_costs_nothing_and_blocks_nobody() {
    let mut config = HubConfig::default();
    config.history_capacity = 1000;
    config.subscriber_buffer = 500;
    let hub = Hub::new(config).unwrap();

    let mut stalled = hub.subscribe("s", None);
    let progress: Vec<Arc<AtomicU64>> = (0..READERS).map(|_| Arc::default()).collect();
    let readers: Vec<_> = progress
        .iter()
        .map(|seen| {
            let mut sub = hub.subscribe("s", None);
            let seen = Arc::clone(seen);
            tokio::spawn(async move {
                while let Some(event) = sub.next().await {
                    match event {
                        Event::Status(status) => {
                            let expected = seen.load(Ordering::Relaxed) + 1;
                            assert_eq!(status.seq(), expected, "out of order or missing");
                            seen.store(status.seq(), Ordering::Relaxed);
                            if status.seq() == TOTAL {
                                return;
                            }
                        }
                        Event::Gap(gap) => panic!("a reader that keeps up got {gap:?}"),
                        other => panic!("unexpected event {other:?}"),
                    }
                }
                panic!("stream ended early");
            })
        })
        .collect();

    let mut worst_lag = 0;
    for seq in 1..=TOTAL {
        assert_eq!(
            hub.publish(Some("s"), format!("status {seq}"))
                .map(|p| p.seq()),
            Ok(Some(seq))
        );
        if seq % BURST == 0 {
            tokio::task::yield_now().await;
            // After one turn of the scheduler every reader has caught up with the burst.
            for seen in &progress {
                worst_lag = worst_lag.max(seq - seen.load(Ordering::Relaxed));
            }
            // The stalled subscriber's memory: nothing of its own, whatever it missed.
            assert_eq!(stalled.queued(), 0);
            assert!(hub.stats().retained <= 1000);
        }
    }
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(worst_lag, 0, "a reader fell behind the producer");

    let stats = hub.stats();
    assert_eq!(stats.retained, 1000);
    assert_eq!(stats.delivered, READERS as u64 * TOTAL);
    assert_eq!(stats.gaps, 0);

    // When it finally reads, it learns what it missed, gets the last `subscriber_buffer`
    // statuses, and waits for more.
    match stalled.next().await {
        Some(Event::Gap(gap)) => assert_eq!((gap.from(), gap.to()), (1, TOTAL - 500)),
        other => panic!("expected a gap, got {other:?}"),
    }
    for seq in TOTAL - 499..=TOTAL {
        assert_eq!(stalled.next().await.and_then(|e| e.seq()), Some(seq));
    }
    assert!(stalled.next().now_or_never().is_none());
    let stats = hub.stats();
    assert_eq!((stats.gaps, stats.lagged), (1, TOTAL - 500));
}
