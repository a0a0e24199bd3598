//! The Redis backend with two hubs standing for two processes (separate instances, separate
//! connections) against a real `redis-server` started by the test.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::{check_exact, next_within, prefix, read_through, shape, RedisServer};
use status_messenger::{Event, Hub, HubConfig, RedisConfig};

const WAIT: Duration = Duration::from_secs(10);

async fn hub(server: &RedisServer, prefix: &str, config: HubConfig) -> Hub {
    let mut redis = RedisConfig::new(server.url());
    redis.key_prefix = prefix.to_owned();
    Hub::with_redis(config, redis)
        .await
        .expect("connect to redis")
}

async fn pair(server: &RedisServer, test: &str) -> (Hub, Hub) {
    let prefix = prefix(test);
    (
        hub(server, &prefix, HubConfig::default()).await,
        hub(server, &prefix, HubConfig::default()).await,
    )
}

#[tokio::test]
async fn statuses_published_through_one_hub_reach_subscribers_of_the_other_in_order() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&server, "order").await;
    let mut on_b = b.subscribe("s1", None);
    let mut on_a = a.subscribe("s1", None);
    // Whatever is published before the readers have subscribed comes from history.
    for i in 1..=200 {
        assert_eq!(
            a.publish(Some("s1"), format!("msg {i}")),
            Ok(status_messenger::hub::Published::Queued)
        );
    }
    for sub in [&mut on_b, &mut on_a] {
        let events = read_through(sub, 200, WAIT).await;
        assert!(check_exact(&events, 200).is_empty(), "{:?}", shape(&events));
    }
    assert_eq!(a.stats().accepted, 200);
    assert_eq!(b.stats().accepted, 0);
    assert_eq!(b.stats().delivered, 200);
}

/// The longest history TTL a `HubConfig` takes (`u64::MAX` milliseconds: "keep it for ever")
/// is given to Redis as 100 years, which it accepts: the statuses go through, none is dropped, and the session's keys
/// live about 125 years.
#[tokio::test]
async fn the_longest_history_ttl_is_one_redis_accepts() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("forever");
    let config = || {
        let mut config = HubConfig::default();
        config.history_ttl = Duration::from_millis(u64::MAX);
        config
    };
    let a = hub(&server, &prefix, config()).await;
    let b = hub(&server, &prefix, config()).await;
    let mut on_b = b.subscribe("s1", None);
    for i in 1..=5 {
        a.publish(Some("s1"), format!("msg {i}")).unwrap();
    }
    let events = read_through(&mut on_b, 5, WAIT).await;
    assert!(check_exact(&events, 5).is_empty(), "{:?}", shape(&events));
    assert_eq!(a.stats().dropped_backend, 0);
    assert_eq!(a.stats().backend_errors, 0);
    // The session's history stream, which every write gives the TTL.
    let key = format!("{prefix}:{{s1}}:log");
    let ttl = server.command(&format!("PTTL {key}"));
    let ttl_ms: u64 = ttl.trim().trim_start_matches(':').parse().expect(&ttl);
    let years = ttl_ms / (365 * 24 * 60 * 60 * 1000);
    assert!((124..=125).contains(&years), "{key}: {ttl_ms} ms");
}

#[tokio::test]
async fn two_publishers_share_one_numbering() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("numbering");
    let a = hub(&server, &prefix, HubConfig::default()).await;
    let b = hub(&server, &prefix, HubConfig::default()).await;
    let c = hub(&server, &prefix, HubConfig::default()).await;
    let mut watcher = c.subscribe("shared", None);
    let publish = |hub: Hub, name: &'static str| {
        tokio::spawn(async move {
            for i in 0..300 {
                hub.publish(Some("shared"), format!("{name} {i}")).unwrap();
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let (ra, rb) = tokio::join!(publish(a.clone(), "a"), publish(b.clone(), "b"));
    ra.unwrap();
    rb.unwrap();
    let events = read_through(&mut watcher, 600, WAIT).await;
    let mut next = [0u64; 2];
    for (i, event) in events.iter().enumerate() {
        let Event::Status(status) = event else {
            panic!("unexpected gap: {:?}", shape(&events));
        };
        assert_eq!(status.seq(), i as u64 + 1);
        // Each publisher's statuses keep their own order within the one numbering.
        let (name, n) = status.text().split_once(' ').unwrap();
        let who = usize::from(name == "b");
        assert_eq!(n.parse::<u64>().unwrap(), next[who]);
        next[who] += 1;
    }
    assert_eq!(next, [300, 300]);
}

#[tokio::test]
async fn a_subscriber_resumes_on_the_other_hub() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&server, "resume").await;
    let mut first = a.subscribe("s", None);
    for i in 1..=10 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    let seen = read_through(&mut first, 5, WAIT).await;
    assert_eq!(seen.last().unwrap().last_seq(), 5);
    drop(first);
    // The page reloads and lands on the other process.
    let mut resumed = b.subscribe("s", Some(5));
    for i in 11..=15 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    let events = read_through(&mut resumed, 15, WAIT).await;
    assert_eq!(
        shape(&events),
        (6..=15).map(|n| ('s', n, n)).collect::<Vec<_>>()
    );
    check_exact(&[seen, events].concat(), 15);
}

#[tokio::test]
async fn history_is_bounded_in_redis_and_a_late_subscriber_gets_a_gap() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("bounded");
    let mut config = HubConfig::default();
    config.history_capacity = 10;
    config.subscriber_buffer = 10;
    let a = hub(&server, &prefix, config.clone()).await;
    let b = hub(&server, &prefix, config).await;
    let mut early = a.subscribe("s", None);
    for i in 1..=25 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    read_through(&mut early, 25, WAIT).await;
    let mut late = b.subscribe("s", None);
    let events = read_through(&mut late, 25, WAIT).await;
    assert_eq!(shape(&events)[0], ('g', 1, 15));
    assert_eq!(check_exact(&events, 25), (1..=15).collect::<Vec<_>>());
    // Redis keeps the batches holding the last 10 numbers, not every status.
    for i in 26..=2000 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    read_through(&mut early, 2000, WAIT).await;
    let history = server.command(&format!("XRANGE {prefix}:{{s}}:log - +"));
    let held = history.matches("msg ").count();
    assert!((10..=10 + 1024).contains(&held), "{held} statuses held");
}

#[tokio::test]
async fn sessions_opened_or_closed_through_one_hub_are_known_to_the_other() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&server, "registry").await;
    assert!(!b.session_exists("fresh").await.unwrap());
    a.open_session("fresh").await.unwrap();
    assert!(b.session_exists("fresh").await.unwrap());

    // A first status opens a session as well.
    let mut on_b = b.subscribe("busy", None);
    a.publish(Some("busy"), "msg 1").unwrap();
    assert_eq!(
        next_within(&mut on_b, WAIT).await.and_then(|e| e.seq()),
        Some(1)
    );
    assert!(a.session_exists("busy").await.unwrap());

    // Closing it through `a` ends the stream on `b` and removes it everywhere.
    assert!(a.close_session("busy").await.unwrap());
    assert_eq!(next_within(&mut on_b, WAIT).await, None);
    assert!(!b.session_exists("busy").await.unwrap());

    // Closing says whether there was anything to close, on any process: not any more, and
    // never for an id nobody used.
    assert!(!b.close_session("busy").await.unwrap());
    assert!(!a.close_session("never-used").await.unwrap());
    // A session that only ever had a status published through `a` (none of its subscribers
    // anywhere) is known to Redis, so closing it through `b` finds it.
    a.publish(Some("quiet"), "msg 1").unwrap();
    tokio::time::timeout(WAIT, async {
        while !b.session_exists("quiet").await.unwrap() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the status reached Redis");
    assert!(b.close_session("quiet").await.unwrap());
}

#[tokio::test]
async fn a_process_follows_only_the_sessions_it_serves_and_listens_only_while_it_serves_one() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("interest");
    let a = hub(&server, &prefix, HubConfig::default()).await;
    let b = hub(&server, &prefix, HubConfig::default()).await;
    let channels = || {
        let reply = server.command(&format!("PUBSUB CHANNELS {prefix}:*"));
        let mut names: Vec<String> = reply
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    };
    let mut served = b.subscribe("served", None);
    for i in 1..=20 {
        a.publish(Some("served"), format!("msg {i}")).unwrap();
        a.publish(Some("other"), format!("msg {i}")).unwrap();
    }
    read_through(&mut served, 20, WAIT).await;
    // One channel for every session, and only `b` (which serves one) listens to it.
    assert_eq!(channels(), vec![format!("{prefix}:ch")]);
    let listeners = server.command(&format!("PUBSUB NUMSUB {prefix}:ch"));
    let count = listeners.lines().find(|line| line.starts_with(':'));
    assert_eq!(count, Some(":1"), "{listeners}");
    // `b` holds only what it serves.
    let stats = b.stats();
    assert_eq!((stats.sessions, stats.retained), (1, 20));

    // When its last subscriber leaves, it stops listening.
    drop(served);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !channels().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "still subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And listens again, catching up from history, when a subscriber comes back.
    a.publish(Some("served"), "msg 21").unwrap();
    let mut back = b.subscribe("served", Some(20));
    let events = read_through(&mut back, 21, WAIT).await;
    assert_eq!(shape(&events), vec![('s', 21, 21)]);
}

#[tokio::test]
async fn shutdown_delivers_what_was_accepted() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&server, "shutdown").await;
    let mut on_a = a.subscribe("s", None);
    let mut on_b = b.subscribe("s", None);
    // Let both readers subscribe before the burst.
    a.publish(Some("s"), "msg 1").unwrap();
    read_through(&mut on_a, 1, WAIT).await;
    read_through(&mut on_b, 1, WAIT).await;
    for i in 2..=100 {
        a.publish(Some("s"), format!("msg {i}")).unwrap();
    }
    a.shutdown().await;
    assert_eq!(
        a.publish(Some("s"), "too late"),
        Err(status_messenger::hub::PublishError::ShutDown)
    );
    let mut rest = Vec::new();
    while let Some(event) = next_within(&mut on_a, WAIT).await {
        rest.push(event);
    }
    assert_eq!(
        shape(&rest),
        (2..=100).map(|n| ('s', n, n)).collect::<Vec<_>>()
    );
    let events = read_through(&mut on_b, 100, WAIT).await;
    assert_eq!(events.len(), 99);
    assert_eq!(a.stats().backend_buffered, 0);
    assert_eq!(a.stats().dropped_backend, 0);
}
