//! Order and numbering per session under 8 concurrent producer threads, through a
//! `Messenger`, `Hub::consume` and the hub.

use std::collections::{HashMap, HashSet};
use std::thread;

use futures_util::StreamExt;
use status_messenger::{Event, Hub, HubConfig, Messenger, SessionContext, Subscription};

const THREADS: usize = 8;
const PER_THREAD: usize = 2_000;
const SESSIONS: usize = 4;
const PER_SESSION: usize = THREADS * PER_THREAD / SESSIONS;

async fn collect(mut sub: Subscription, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match sub.next().await {
            Some(Event::Status(status)) => out.push((status.seq, status.text.to_string())),
            other => panic!("expected a status, got {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_producer_threads_keep_order_and_numbering_per_session() {
    let mut config = HubConfig::default();
    config.history_capacity = PER_SESSION;
    config.subscriber_buffer = PER_SESSION;
    let hub = Hub::new(config).unwrap();
    let messenger = Messenger::new();
    let consumer = tokio::spawn({
        let hub = hub.clone();
        let updates = messenger.stream();
        async move { hub.consume(updates).await }
    });

    let live: Vec<_> = (0..SESSIONS)
        .map(|s| tokio::spawn(collect(hub.subscribe(&format!("s{s}"), None), PER_SESSION)))
        .collect();

    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let messenger = messenger.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    // Each thread spreads its statuses over every session.
                    let session = format!("s{}", (i + t) % SESSIONS);
                    SessionContext::new(session)
                        .run(|| messenger.add_status_message(format!("{t}:{i}")));
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }

    let mut seen = HashSet::new();
    for (s, live) in live.into_iter().enumerate() {
        let live = live.await.unwrap();
        // Numbered 1, 2, 3, ... without a gap.
        let seqs: Vec<u64> = live.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=PER_SESSION as u64).collect::<Vec<_>>(),
            "session s{s}"
        );
        // Each thread's statuses keep the order that thread added them in.
        let mut last_of_thread: HashMap<usize, usize> = HashMap::new();
        for (_, text) in &live {
            let (t, i) = text.split_once(':').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!((i + t) % SESSIONS, s, "{text} routed to the wrong session");
            if let Some(previous) = last_of_thread.insert(t, i) {
                assert!(previous < i, "thread {t}: {previous} came before {i}");
            }
            assert!(seen.insert((t, i)), "{text} delivered twice");
        }
        // A subscriber that starts afterwards gets the same sequence from history.
        let late = collect(hub.subscribe(&format!("s{s}"), None), PER_SESSION).await;
        assert_eq!(late, live);
    }
    assert_eq!(seen.len(), THREADS * PER_THREAD);

    let stats = hub.stats();
    assert_eq!(stats.accepted, (THREADS * PER_THREAD) as u64);
    assert_eq!(stats.delivered, 2 * (THREADS * PER_THREAD) as u64);
    assert_eq!((stats.gaps, stats.dropped()), (0, 0));
    hub.shutdown().await;
    consumer.await.unwrap();
}
