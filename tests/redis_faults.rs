//! The Redis backend under faults: Redis killed and restarted mid-stream, connections killed,
//! the buffer bound while Redis is down. Each outcome is checked exactly: which statuses
//! arrived, which numbers were signalled as a gap, and that nothing arrived twice.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::{check_exact, prefix, read_more, read_through, shape, RedisServer};
use status_messenger::{Hub, HubConfig, HubStats, RedisConfig};

const WAIT: Duration = Duration::from_secs(20);

async fn hub(server: &RedisServer, prefix: &str, buffer: usize) -> Hub {
    let mut redis = RedisConfig::new(server.url());
    redis.key_prefix = prefix.to_owned();
    redis.buffer_capacity = buffer;
    redis.reconnect_min = Duration::from_millis(20);
    redis.reconnect_max = Duration::from_millis(200);
    redis.timeout = Duration::from_millis(500);
    Hub::with_redis(HubConfig::default(), redis)
        .await
        .expect("connect to redis")
}

/// Waits until `check` holds for the hub's stats.
async fn until(hub: &Hub, what: &str, check: impl Fn(&HubStats) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check(&hub.stats()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            hub.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_bound_holds_while_redis_is_down_and_the_gap_covers_exactly_the_excess() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("bound");
    let a = hub(&server, &prefix, 50).await;
    let b = hub(&server, &prefix, 50).await;
    let mut on_b = b.subscribe("s", None);
    for i in 1..=10 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    let mut events = read_through(&mut on_b, 10, WAIT).await;

    server.kill();
    until(&a, "a to notice", |s| s.backend_errors > 0).await;
    // Redis is down: 50 fit in the buffer, the other 30 are dropped and counted.
    let accepted = (11..=90)
        .filter(|i| a.publish(Some("s"), format!("msg {i}")).is_ok())
        .count();
    assert_eq!(accepted, 50);
    let stats = a.stats();
    assert_eq!((stats.backend_buffered, stats.dropped_backend), (50, 30));

    server.restart();
    until(&a, "the buffer to drain", |s| s.backend_buffered == 0).await;
    a.publish(Some("s"), "msg 91").unwrap();
    read_more(&mut on_b, &mut events, 91, WAIT).await;
    // Statuses 11..=60 were buffered and arrive; 61..=90 were dropped: one gap, exactly them.
    assert_eq!(check_exact(&events, 91), (61..=90).collect::<Vec<_>>());
    assert_eq!(shape(&events)[60], ('g', 61, 90));
    assert_eq!(a.stats().dropped_backend, 30);
    assert!(a.stats().backend_reconnects >= 1);
    assert_eq!(b.stats().lagged, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_stream() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("restart");
    let a = hub(&server, &prefix, 10_000).await;
    let b = hub(&server, &prefix, 10_000).await;
    let mut on_b = b.subscribe("s", None);
    let mut on_a = a.subscribe("s", None);
    const TOTAL: u64 = 600;
    let publisher = tokio::spawn({
        let a = a.clone();
        async move {
            for i in 1..=TOTAL {
                assert!(a.publish(Some("s"), format!("msg {i}")).is_ok());
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
    });
    // Kill Redis while statuses flow, keep it down a while, bring it back empty.
    let mut on_b_events = read_through(&mut on_b, 100, WAIT).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    publisher.await.unwrap();

    read_more(&mut on_b, &mut on_b_events, TOTAL, WAIT).await;
    let on_a_events = read_through(&mut on_a, TOTAL, WAIT).await;
    // On both hubs every number 1..=TOTAL is accounted for once, in order, each status under
    // its own number: what arrived, and gaps for the rest.
    let missing_a = check_exact(&on_a_events, TOTAL);
    let missing_b = check_exact(&on_b_events, TOTAL);
    // Only statuses whose fate was unknown when Redis lost its data can be missing (the batch
    // in flight at the kill), and each is counted.
    let stats = a.stats();
    assert!(missing_a.len() as u64 <= stats.dropped_backend, "{stats:?}");
    assert!(missing_b.len() as u64 <= stats.dropped_backend, "{stats:?}");
    // Those were one batch of consecutive numbers: at most one gap item on each side.
    for events in [&on_a_events, &on_b_events] {
        let gaps = shape(events)
            .iter()
            .filter(|(kind, ..)| *kind == 'g')
            .count();
        assert!(gaps <= 1, "{:?}", shape(events));
    }
    assert!(
        stats.backend_errors > 0 && stats.backend_reconnects > 0,
        "{stats:?}"
    );
    assert_eq!(stats.backend_buffered, 0);
    eprintln!(
        "restart: gaps cover {:?} on a and {:?} on b; dropped_backend {}",
        missing_a, missing_b, stats.dropped_backend
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_lose_nothing_and_duplicate_nothing() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("blip");
    let a = hub(&server, &prefix, 10_000).await;
    let b = hub(&server, &prefix, 10_000).await;
    let mut on_b = b.subscribe("s", None);
    const TOTAL: u64 = 600;
    let publisher = tokio::spawn({
        let a = a.clone();
        async move {
            for i in 1..=TOTAL {
                a.publish(Some("s"), format!("msg {i}")).unwrap();
                if i % 4 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    });
    let mut events = read_through(&mut on_b, 100, WAIT).await;
    // Redis keeps its data; every client connection is cut, several times.
    for _ in 0..3 {
        assert!(server.command("CLIENT KILL TYPE normal").starts_with(':'));
        assert!(server.command("CLIENT KILL TYPE pubsub").starts_with(':'));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.await.unwrap();
    read_more(&mut on_b, &mut events, TOTAL, WAIT).await;
    // No gap at all: a batch whose reply was lost is sent again and applied once, and the
    // reader catches up from history after resubscribing.
    assert!(
        check_exact(&events, TOTAL).is_empty(),
        "{:?}",
        shape(&events)
    );
    let stats = a.stats();
    assert_eq!(stats.dropped_backend, 0, "{stats:?}");
    assert!(stats.backend_errors > 0, "{stats:?}");
}

/// A Redis that forgets the scripts again and again (`SCRIPT FLUSH`, as a restart, a failover
/// or an operator does) while statuses are written: a call answered `NOSCRIPT` ran nothing, so
/// its statuses are sent again (the scripts loaded first, after a backoff when they were
/// forgotten right after a reload), however often that happens, and none is dropped or left
/// without its number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_flushed_under_writes_lose_nothing() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("flush");
    let a = hub(&server, &prefix, 10_000).await;
    let b = hub(&server, &prefix, 10_000).await;
    let mut on_b = b.subscribe("s", None);
    // Within the subscriber's buffer: the subscriber reads only once all were written.
    const TOTAL: u64 = 900;
    let flushing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flusher = tokio::spawn({
        let client = redis::Client::open(server.url()).expect("a client");
        let flushing = std::sync::Arc::clone(&flushing);
        async move {
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("a connection");
            let mut flushes = 0u64;
            while flushing.load(std::sync::atomic::Ordering::Relaxed) {
                let _: () = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut conn)
                    .await
                    .expect("SCRIPT FLUSH");
                flushes += 1;
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
            flushes
        }
    });
    for i in 1..=TOTAL {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    until(&a, "every status confirmed", |s| s.backend_buffered == 0).await;
    flushing.store(false, std::sync::atomic::Ordering::Relaxed);
    let flushes = flusher.await.unwrap();
    let events = read_through(&mut on_b, TOTAL, WAIT).await;
    let stats = a.stats();
    assert_eq!(stats.dropped_backend, 0, "{stats:?}");
    // The flushes did land between a reload and the call sent after it (each such call is
    // counted as a backend error): the case this test is for happened.
    assert!(stats.backend_errors > 0, "{stats:?}");
    assert_eq!(
        check_exact(&events, TOTAL),
        Vec::<u64>::new(),
        "{:?}",
        shape(&events)
    );
    eprintln!(
        "scripts flushed {flushes} times; batches answered NOSCRIPT right after a reload: {}",
        stats.backend_errors
    );
}
