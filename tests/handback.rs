//! A dropped stream gives the receiver back: a broadcaster restarted on a new runtime resumes
//! with nothing lost.

use futures_util::StreamExt;
use status_messenger::{add_status_message, setup_status_messenger_async, stream_status_updates};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn stream_handback_across_a_drop_and_a_new_runtime_loses_nothing() {
    let messenger = setup_status_messenger_async();
    for i in 0..10 {
        add_status_message(i.to_string());
    }

    // The first broadcaster takes 4 messages, then its runtime shuts down with the stream
    // still inside a task that is never finished.
    let first = runtime();
    let taken: Vec<_> = first.block_on(async {
        let mut updates = stream_status_updates();
        let mut taken = Vec::new();
        for _ in 0..4 {
            taken.push(updates.next().await.unwrap().1);
        }
        // Leave a live stream behind in a task that the shutdown drops.
        tokio::spawn(async move {
            let _second_half = updates;
            std::future::pending::<()>().await;
        });
        taken
    });
    first.shutdown_timeout(std::time::Duration::from_secs(10));
    assert!(
        !messenger.stream_live(),
        "the shutdown gave the receiver back"
    );

    // Messages added after the runtime is gone are kept too.
    for i in 10..15 {
        add_status_message(i.to_string());
    }

    let second = runtime();
    let rest: Vec<_> = second.block_on(async {
        let mut updates = stream_status_updates();
        let mut rest = Vec::new();
        for _ in 4..15 {
            rest.push(updates.next().await.unwrap().1);
        }
        rest
    });

    let all: Vec<String> = taken.into_iter().chain(rest).collect();
    let expected: Vec<String> = (0..15).map(|i| i.to_string()).collect();
    assert_eq!(all, expected);
    assert_eq!(messenger.received(), 15);
}
