//! A full session table: when `max_sessions` are held, the session idle longest (no subscriber,
//! no running task) gives way to a new one, so a flood of sessions nobody reads cannot lock new
//! visitors out; a session someone reads is never evicted for room, and when every session is
//! in use the refusal says when to try again. In memory and on Redis (whose local table is what
//! the cap bounds there).

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use status_messenger::hub::{OpenError, PublishError, SubscribeError};
use status_messenger::{Event, Hub, HubConfig};

fn capped(max_sessions: usize) -> HubConfig {
    let mut config = HubConfig::default();
    config.max_sessions = max_sessions;
    config
}

fn text_of(event: Option<Event>) -> String {
    match event {
        Some(Event::Status(status)) => status.text().to_string(),
        other => panic!("expected a status, got {other:?}"),
    }
}

// Paused time: each session is opened a millisecond after the one before, so "idle longest"
// has one answer.
#[tokio::test(start_paused = true)]
async fn a_table_full_of_idle_sessions_still_opens_new_ones() {
    const CAP: usize = 100;
    let hub = Hub::new(capped(CAP)).unwrap();
    let mut read = hub.subscribe("read", None);
    hub.publish(Some("read"), "first").unwrap();
    let running = hub.start_task("running").unwrap();
    for i in 0..CAP - 2 {
        tokio::time::advance(Duration::from_millis(1)).await;
        hub.open_session(&format!("idle-{i}")).await.unwrap();
    }
    assert_eq!(hub.stats().sessions, CAP as u64);
    assert_eq!(hub.stats().evicted_under_pressure, 0);

    // A new visitor gets in: the session idle longest made room.
    tokio::time::advance(Duration::from_millis(1)).await;
    hub.open_session("visitor").await.unwrap();
    assert!(hub.session_exists("visitor").await.unwrap());
    assert!(!hub.session_exists("idle-0").await.unwrap());
    let stats = hub.stats();
    assert!(stats.sessions <= CAP as u64, "{stats:?}");
    assert!(stats.evicted_under_pressure >= 1, "{stats:?}");
    assert_eq!(stats.dropped_session_limit, 0, "{stats:?}");
    // Every way of making a session finds room, over and over (a flood of them).
    for i in 0..10 * CAP {
        tokio::time::advance(Duration::from_millis(1)).await;
        let id = format!("flood-{i}");
        match i % 3 {
            0 => hub.open_session(&id).await.unwrap(),
            1 => assert!(hub.publish(Some(&id), "x").is_ok()),
            _ => drop(hub.try_subscribe(&id, None).unwrap()),
        }
        assert!(hub.stats().sessions <= CAP as u64);
    }
    // The session being read, and the one with a running task, were never evicted.
    assert!(hub.session_exists("read").await.unwrap());
    assert!(hub.session_exists("running").await.unwrap());
    hub.publish(Some("read"), "still here").unwrap();
    assert_eq!(text_of(read.next().await), "first");
    assert_eq!(text_of(read.next().await), "still here");
    running.finish();
    let stats = hub.stats();
    assert_eq!(stats.dropped_session_limit, 0, "{stats:?}");
    // Evictions for room are evictions too.
    assert!(stats.evicted_sessions >= stats.evicted_under_pressure);
    assert!(
        stats.evicted_under_pressure >= 10 * CAP as u64 - 2,
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_table_full_of_sessions_in_use_refuses_with_a_time_to_retry() {
    let hub = Hub::new(capped(3)).unwrap();
    let _a = hub.subscribe("a", None);
    let _b = hub.subscribe("b", None);
    let _task = hub.start_task("c").unwrap();

    let refused = hub.open_session("d").await.unwrap_err();
    assert!(matches!(refused, OpenError::TooManySessions), "{refused}");
    let retry = refused.retry_after().expect("a time to retry");
    assert!(retry >= Duration::from_secs(1), "{retry:?}");
    assert_eq!(
        hub.publish(Some("d"), "x"),
        Err(PublishError::TooManySessions)
    );
    assert!(matches!(
        hub.try_subscribe("d", None),
        Err(SubscribeError::TooManySessions)
    ));
    let stats = hub.stats();
    assert_eq!((stats.sessions, stats.evicted_under_pressure), (3, 0));
    assert_eq!(stats.dropped_session_limit, 1);

    // Once a reader leaves, its session may give way.
    drop(_a);
    hub.open_session("d").await.unwrap();
    assert!(!hub.session_exists("a").await.unwrap());
    assert_eq!(hub.stats().evicted_under_pressure, 1);
}

/// On Redis the local table holds the sessions this process serves (read here, or with a task
/// running here): one no longer read here gives way the same, and comes back when read again,
/// with its history from Redis.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_sessions_no_longer_read_here_give_way_too() {
    use status_messenger::RedisConfig;

    const WAIT: Duration = Duration::from_secs(10);
    let Some(server) = common::RedisServer::start() else {
        return;
    };
    let mut redis = RedisConfig::new(server.url());
    redis.key_prefix = common::prefix("pressure");
    let hub = Hub::with_redis(capped(3), redis).await.unwrap();
    let mut subs: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|s| hub.try_subscribe(s, None).unwrap())
        .collect();
    for s in ["a", "b", "c"] {
        hub.publish(Some(s), "msg 1").unwrap();
    }
    for sub in &mut subs {
        common::read_through(sub, 1, WAIT).await;
    }
    assert!(matches!(
        hub.try_subscribe("d", None),
        Err(SubscribeError::TooManySessions)
    ));
    // "a" is no longer read here: "d" takes its place.
    let mut c = subs.pop().unwrap();
    drop(subs);
    let mut d = hub.try_subscribe("d", None).unwrap();
    hub.publish(Some("d"), "msg 1").unwrap();
    hub.publish(Some("c"), "msg 2").unwrap();
    let events = common::read_through(&mut d, 1, WAIT).await;
    assert!(common::check_exact(&events, 1).is_empty());
    let mut events = Vec::new();
    common::read_more(&mut c, &mut events, 2, WAIT).await;
    assert_eq!(text_of(events.pop()), "msg 2");
    assert!(hub.stats().evicted_under_pressure >= 1);
    assert!(hub.stats().sessions <= 3);
    // Read again, "a" comes back with its history from Redis (room made again).
    drop(d);
    let mut a = hub.try_subscribe("a", None).unwrap();
    let events = common::read_through(&mut a, 1, WAIT).await;
    assert!(common::check_exact(&events, 1).is_empty());
    hub.shutdown().await;
}

// Paused time, so "idle longest" has one answer.
#[tokio::test(start_paused = true)]
async fn sessions_without_history_give_way_before_a_session_that_holds_some() {
    const CAP: usize = 10;
    let hub = Hub::new(capped(CAP)).unwrap();
    // Idle longest, but it holds a page's history.
    hub.publish(Some("history"), "kept").unwrap();
    for i in 0..CAP - 1 {
        tokio::time::advance(Duration::from_millis(1)).await;
        hub.open_session(&format!("empty-{i}")).await.unwrap();
    }
    for i in 0..CAP - 1 {
        tokio::time::advance(Duration::from_millis(1)).await;
        hub.open_session(&format!("visitor-{i}")).await.unwrap();
        assert!(hub.session_exists("history").await.unwrap(), "after {i}");
    }
    assert!(!hub.session_exists("empty-0").await.unwrap());
    let mut read = hub.subscribe("history", None);
    assert_eq!(text_of(read.next().await), "kept");
    drop(read);
    // With no empty session left but the newest visitor, history gives way rather than a new
    // visitor being locked out.
    for i in 0..CAP - 1 {
        tokio::time::advance(Duration::from_millis(1)).await;
        hub.publish(Some(&format!("visitor-{i}")), "x").unwrap();
    }
    tokio::time::advance(Duration::from_millis(1)).await;
    hub.open_session("late").await.unwrap();
    assert_eq!(hub.stats().dropped_session_limit, 0);
}

// Paused time. A table of 128 gives way 2 at a time: with one empty session left, it goes
// alone, and no session with history goes along with it.
#[tokio::test(start_paused = true)]
async fn a_batch_of_evictions_takes_no_history_while_an_empty_session_is_left() {
    const CAP: usize = 128;
    let hub = Hub::new(capped(CAP)).unwrap();
    for i in 0..CAP - 1 {
        tokio::time::advance(Duration::from_millis(1)).await;
        hub.publish(Some(&format!("history-{i}")), "kept").unwrap();
    }
    tokio::time::advance(Duration::from_millis(1)).await;
    hub.open_session("empty").await.unwrap();
    tokio::time::advance(Duration::from_millis(1)).await;
    hub.open_session("visitor").await.unwrap();
    assert!(!hub.session_exists("empty").await.unwrap());
    for i in 0..CAP - 1 {
        assert!(
            hub.session_exists(&format!("history-{i}")).await.unwrap(),
            "history-{i}"
        );
    }
    assert_eq!(hub.stats().evicted_under_pressure, 1);
}
