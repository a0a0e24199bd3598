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
            Some(Event::Status(status)) => out.push((status.seq(), status.text().to_string())),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_readers_lose_no_wakeup() {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 5_000;
    const TOTAL: usize = PUBLISHERS * EACH;
    let mut config = HubConfig::default();
    config.history_capacity = TOTAL;
    config.subscriber_buffer = TOTAL;
    let hub = Hub::new(config).unwrap();

    let readers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(collect(hub.subscribe("s", None), TOTAL)))
        .collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let hub = hub.clone();
            thread::spawn(move || {
                (0..EACH)
                    .map(|i| {
                        let text = format!("{p}:{i}");
                        (
                            hub.publish(Some("s"), text.clone()).unwrap().seq().unwrap(),
                            text,
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // A reader that resumes while statuses flow (whether 1,000 was already given or not).
    tokio::task::yield_now().await;
    let resume_after: u64 = 1_000;
    let midway = tokio::spawn(collect(
        hub.subscribe("s", Some(resume_after)),
        TOTAL - resume_after as usize,
    ));

    let mut by_seq: HashMap<u64, String> = HashMap::new();
    for publisher in publishers {
        for (seq, text) in publisher.join().unwrap() {
            assert!(by_seq.insert(seq, text).is_none(), "seq {seq} given twice");
        }
    }
    assert_eq!(by_seq.len(), TOTAL);
    for reader in readers {
        let got = reader.await.unwrap();
        for (i, (seq, text)) in got.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(&by_seq[seq], text);
        }
    }
    let got = midway.await.unwrap();
    assert_eq!(got.first().map(|(seq, _)| *seq), Some(resume_after + 1));
    assert_eq!(got.last().map(|(seq, _)| *seq), Some(TOTAL as u64));
    assert_eq!(hub.stats().gaps, 0);
}
