//! Every kind of producer delivers every message exactly once, with the right session.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use status_messenger::{
    add_status_message, current_session_id, setup_status_messenger_async, stream_status_updates,
    with_session_id, SessionContext, SessionFutureExt, StatusUpdate,
};

const PER_PRODUCER: usize = 50;

fn send_batch(kind: &str) {
    for i in 0..PER_PRODUCER {
        add_status_message(format!("{kind} {i}"));
    }
}

/// Collects exactly `count` updates, failing instead of hanging if fewer arrive.
async fn collect(count: usize) -> Vec<StatusUpdate> {
    let mut updates = stream_status_updates();
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), updates.next())
            .await
            .expect("an update within 10 s")
            .expect("the stream does not end");
        got.push(next);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_producer_kind_delivers_exactly_once_with_its_session() {
    setup_status_messenger_async();

    // An async task with the session set directly.
    with_session_id("async", async { send_batch("async") }).await;

    // tokio's spawn_blocking through the session-carrying helper.
    with_session_id("blocking", async {
        status_messenger::spawn_blocking(|| send_batch("blocking"))
            .await
            .unwrap()
    })
    .await;

    // A spawned task through the session-carrying helper.
    with_session_id("spawned", async {
        status_messenger::spawn(async { send_batch("spawned") })
            .await
            .unwrap()
    })
    .await;

    // The extension trait, carrying the session into a plain tokio::spawn.
    async {
        tokio::spawn(async { send_batch("ext") }.in_current_session())
            .await
            .unwrap()
    }
    .with_session("ext")
    .await;

    // A plain std::thread with a captured context.
    let ctx = with_session_id("thread", async { SessionContext::current() }).await;
    std::thread::spawn(move || ctx.run(|| send_batch("thread")))
        .join()
        .unwrap();

    // A thread that has no runtime at all and never had a session.
    std::thread::spawn(|| {
        assert!(tokio::runtime::Handle::try_current().is_err());
        assert_eq!(current_session_id(), None);
        send_batch("none");
    })
    .join()
    .unwrap();

    // A plain tokio::spawn_blocking loses the session: it must produce `None`, not a stale id.
    with_session_id("lost", async {
        tokio::task::spawn_blocking(|| send_batch("plain-blocking"))
            .await
            .unwrap()
    })
    .await;

    let kinds = [
        ("async", Some("async")),
        ("blocking", Some("blocking")),
        ("spawned", Some("spawned")),
        ("ext", Some("ext")),
        ("thread", Some("thread")),
        ("none", None),
        ("plain-blocking", None),
    ];
    let got = collect(kinds.len() * PER_PRODUCER).await;

    let mut by_kind: HashMap<String, Vec<(Option<String>, usize)>> = HashMap::new();
    for (session, text) in got {
        let (kind, index) = text.rsplit_once(' ').unwrap();
        by_kind
            .entry(kind.to_owned())
            .or_default()
            .push((session, index.parse().unwrap()));
    }
    for (kind, session) in kinds {
        let seen = &by_kind[kind];
        let expected: Vec<_> = (0..PER_PRODUCER)
            .map(|i| (session.map(str::to_owned), i))
            .collect();
        assert_eq!(seen, &expected, "producer kind {kind}");
    }
    assert_eq!(by_kind.len(), kinds.len());
}
