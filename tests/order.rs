//! Per-producer order holds with 8 threads x 100,000 messages.

use futures_util::StreamExt;
use status_messenger::{
    add_status_message, setup_status_messenger_async, stream_status_updates, SessionContext,
};

const THREADS: usize = 8;
const PER_THREAD: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_producer_order_holds_under_eight_threads() {
    setup_status_messenger_async();
    let consumer = tokio::spawn(async {
        let mut updates = stream_status_updates();
        let mut next_expected = vec![0u64; THREADS];
        let total = THREADS as u64 * PER_THREAD;
        for _ in 0..total {
            let (session, text) = updates.next().await.expect("stream stays open");
            let thread: usize = session
                .as_deref()
                .and_then(|s| s.strip_prefix("thread-"))
                .expect("every message carries its thread's session")
                .parse()
                .unwrap();
            let index: u64 = text.parse().unwrap();
            assert_eq!(index, next_expected[thread], "order of thread {thread}");
            next_expected[thread] += 1;
        }
        next_expected
    });

    let producers: Vec<_> = (0..THREADS)
        .map(|thread| {
            std::thread::spawn(move || {
                SessionContext::new(format!("thread-{thread}")).run(|| {
                    for i in 0..PER_THREAD {
                        add_status_message(i.to_string());
                    }
                });
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }

    let counts = consumer.await.unwrap();
    assert_eq!(counts, vec![PER_THREAD; THREADS]);
}
