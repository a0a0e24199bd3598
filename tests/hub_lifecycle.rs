//! Hub lifecycle and policies: eviction after the time to live, history expiry, truncation,
//! the no-session policy, session limits, invalid ids, close_session and shutdown.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use status_messenger::hub::{HistoryExpiry, MAX_SESSION_ID_BYTES, TRUNCATION_MARKER};
use status_messenger::hub::{LookupError, OpenError, PublishError, SubscribeError};
use status_messenger::{Event, Hub, HubConfig, Messenger, NoSessionPolicy};

fn config(edit: impl FnOnce(&mut HubConfig)) -> HubConfig {
    let mut config = HubConfig::default();
    edit(&mut config);
    config
}

fn text_of(event: Option<Event>) -> String {
    match event {
        Some(Event::Status(status)) => status.text().to_string(),
        other => panic!("expected a status, got {other:?}"),
    }
}

fn gap_of(event: Option<Event>) -> (u64, u64) {
    match event {
        Some(Event::Gap(gap)) => (gap.from(), gap.to()),
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_are_evicted_after_the_ttl() {
    let hub = Hub::new(config(|c| c.history_ttl = Duration::from_secs(60))).unwrap();
    hub.publish(Some("idle"), "hello").unwrap();
    hub.open_session("opened").await.unwrap();
    let watcher = hub.subscribe("watched", None);

    tokio::time::advance(Duration::from_secs(59)).await;
    // Looking does not keep a session alive; only opening, statuses and subscribers do.
    assert!(hub.session_exists("idle").await.unwrap());
    assert!(hub.session_exists("opened").await.unwrap());
    assert_eq!(hub.stats().evicted_sessions, 0);

    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!hub.session_exists("idle").await.unwrap());
    assert!(!hub.session_exists("opened").await.unwrap());
    // A session with a subscriber is never evicted.
    assert!(hub.session_exists("watched").await.unwrap());
    let stats = hub.stats();
    assert_eq!(
        (stats.sessions, stats.evicted_sessions, stats.retained),
        (1, 2, 0)
    );

    // Its time to live starts again when its last subscriber leaves.
    drop(watcher);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(hub.evict_idle(), 0);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(hub.evict_idle(), 1);
    assert_eq!(hub.stats().sessions, 0);

    // An evicted session starts again from 1.
    assert_eq!(
        hub.publish(Some("idle"), "again").map(|p| p.seq()),
        Ok(Some(1))
    );
}

#[tokio::test(start_paused = true)]
async fn sweeping_happens_as_the_hub_is_used() {
    let hub = Hub::new(config(|c| c.history_ttl = Duration::from_secs(40))).unwrap();
    for i in 0..100 {
        hub.publish(Some(&format!("s{i}")), "x").unwrap();
    }
    assert_eq!(hub.stats().sessions, 100);
    tokio::time::advance(Duration::from_secs(50)).await;
    // Any later use sweeps (at most every ttl/4): here a status for another session.
    hub.publish(Some("busy"), "y").unwrap();
    let stats = hub.stats();
    assert_eq!(
        (stats.sessions, stats.evicted_sessions, stats.retained),
        (1, 100, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn history_expires_after_the_last_status_by_default() {
    let hub = Hub::new(config(|c| c.history_ttl = Duration::from_secs(60))).unwrap();
    let _keep_alive = hub.subscribe("s", None);
    hub.publish(Some("s"), "1").unwrap();
    tokio::time::advance(Duration::from_secs(50)).await;
    hub.publish(Some("s"), "2").unwrap();
    tokio::time::advance(Duration::from_secs(50)).await;
    // 100 s after status 1 but 50 s after the last status: the whole history is still there.
    let mut late = hub.subscribe("s", None);
    assert_eq!(text_of(late.next().await), "1");
    assert_eq!(text_of(late.next().await), "2");

    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(hub.evict_idle(), 0);
    assert_eq!(hub.stats().retained, 0);
    let mut later = hub.subscribe("s", None);
    assert_eq!(gap_of(later.next().await), (1, 2));
    assert!(later.next().now_or_never().is_none());
    // Numbering goes on after the history expired.
    assert_eq!(hub.publish(Some("s"), "3").map(|p| p.seq()), Ok(Some(3)));
    assert_eq!(text_of(later.next().await), "3");
}

#[tokio::test(start_paused = true)]
async fn a_status_after_a_quiet_spell_does_not_revive_old_history() {
    let hub = Hub::new(config(|c| c.history_ttl = Duration::from_secs(60))).unwrap();
    let _keep_alive = hub.subscribe("s", None);
    hub.publish(Some("s"), "before").unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    // No sweep has run in between; the publish itself expires the quiet history first.
    assert_eq!(
        hub.publish(Some("s"), "after").map(|p| p.seq()),
        Ok(Some(2))
    );
    assert_eq!(hub.stats().retained, 1);
    let mut late = hub.subscribe("s", None);
    assert_eq!(gap_of(late.next().await), (1, 1));
    assert_eq!(text_of(late.next().await), "after");
}

#[tokio::test(start_paused = true)]
async fn each_status_expiry_drops_statuses_by_age() {
    let hub = Hub::new(config(|c| {
        c.history_ttl = Duration::from_secs(60);
        c.history_expiry = HistoryExpiry::EachStatus;
    }))
    .unwrap();
    let _keep_alive = hub.subscribe("s", None);
    hub.publish(Some("s"), "old").unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    hub.publish(Some("s"), "new").unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    hub.evict_idle();
    let mut late = hub.subscribe("s", None);
    assert_eq!(gap_of(late.next().await), (1, 1));
    assert_eq!(text_of(late.next().await), "new");
    assert_eq!(hub.stats().lagged, 1);
}

#[tokio::test]
async fn oversized_statuses_are_truncated_at_a_char_boundary() {
    let hub = Hub::new(config(|c| c.max_status_bytes = 32)).unwrap();
    let long = "é".repeat(40); // 80 bytes, two per char
    let exact = "x".repeat(32);
    hub.publish(Some("s"), long.clone()).unwrap();
    hub.publish(Some("s"), exact.clone()).unwrap();
    let mut sub = hub.subscribe("s", None);

    let cut = text_of(sub.next().await);
    assert!(cut.len() <= 32, "{} bytes", cut.len());
    assert!(cut.ends_with(TRUNCATION_MARKER));
    let kept = &cut[..cut.len() - TRUNCATION_MARKER.len()];
    assert!(long.starts_with(kept));
    // The marker takes 14 bytes, leaving 18, and 'é' fits 9 times.
    assert_eq!(kept.chars().count(), 9);
    assert_eq!(text_of(sub.next().await), exact);

    let stats = hub.stats();
    assert_eq!((stats.truncated, stats.accepted), (1, 2));
}

#[tokio::test]
async fn statuses_without_a_session_are_dropped_and_counted_by_default() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let mut sub = hub.subscribe("s", None);
    assert_eq!(hub.publish(None, "lost"), Err(PublishError::NoSession));
    assert_eq!(hub.publish(None, "lost too"), Err(PublishError::NoSession));
    let stats = hub.stats();
    assert_eq!(
        (stats.dropped_no_session, stats.accepted, stats.sessions),
        (2, 0, 1)
    );
    assert!(sub.next().now_or_never().is_none());
}

#[tokio::test]
async fn statuses_without_a_session_can_be_routed_to_one() {
    let hub = Hub::new(config(|c| {
        c.no_session = NoSessionPolicy::Deliver("lobby".into())
    }))
    .unwrap();
    let mut lobby = hub.subscribe("lobby", None);
    let messenger = Messenger::new();
    messenger.add_status_message("added outside any session");
    let (session, text) = messenger.stream().next().await.unwrap();
    assert_eq!(session, None);
    assert_eq!(
        hub.publish(session.as_deref(), text).map(|p| p.seq()),
        Ok(Some(1))
    );
    assert_eq!(text_of(lobby.next().await), "added outside any session");
    assert_eq!(hub.stats().dropped_no_session, 0);
}

#[tokio::test]
async fn invalid_session_ids_are_refused_everywhere() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let too_long = "a".repeat(MAX_SESSION_ID_BYTES + 1);
    for id in ["", "line\nbreak", "nul\0", "c1 \u{85}", too_long.as_str()] {
        assert_eq!(
            hub.publish(Some(id), "x"),
            Err(PublishError::InvalidSessionId)
        );
        assert!(matches!(
            hub.open_session(id).await,
            Err(OpenError::InvalidSessionId(_))
        ));
        assert!(matches!(
            hub.session_exists(id).await,
            Err(LookupError::InvalidSessionId(_))
        ));
        assert!(matches!(
            hub.try_subscribe(id, None),
            Err(SubscribeError::InvalidSessionId(_))
        ));
        let mut refused = hub.subscribe(id, None);
        assert!(!refused.is_live());
        assert_eq!(refused.next().await, None);
    }
    let stats = hub.stats();
    assert_eq!(
        (stats.dropped_invalid, stats.sessions, stats.subscribers),
        (5, 0, 0)
    );
}

#[tokio::test]
async fn the_session_limit_refuses_new_sessions_only() {
    let hub = Hub::new(config(|c| c.max_sessions = 2)).unwrap();
    assert_eq!(hub.publish(Some("a"), "x").map(|p| p.seq()), Ok(Some(1)));
    hub.open_session("b").await.unwrap();
    // Both are read: neither may give way to a new session (idle ones do, see hub_pressure).
    let _a = hub.subscribe("a", None);
    let _b = hub.subscribe("b", None);
    assert_eq!(
        hub.publish(Some("c"), "x"),
        Err(PublishError::TooManySessions)
    );
    assert!(matches!(
        hub.open_session("c").await,
        Err(OpenError::TooManySessions)
    ));
    assert!(matches!(
        hub.try_subscribe("c", None),
        Err(SubscribeError::TooManySessions)
    ));
    // Existing sessions go on.
    assert_eq!(hub.publish(Some("a"), "y").map(|p| p.seq()), Ok(Some(2)));
    assert!(hub.close_session("b").await.unwrap());
    assert_eq!(
        hub.publish(Some("c"), "now there is room").map(|p| p.seq()),
        Ok(Some(1))
    );
    assert_eq!(hub.stats().dropped_session_limit, 1);
}

#[tokio::test]
async fn history_is_bounded_by_count() {
    let hub = Hub::new(config(|c| {
        c.history_capacity = 10;
        c.subscriber_buffer = 10;
    }))
    .unwrap();
    for i in 1..=100 {
        hub.publish(Some("s"), i.to_string()).unwrap();
    }
    assert_eq!(hub.stats().retained, 10);
    let mut resumed = hub.subscribe("s", Some(50));
    assert_eq!(gap_of(resumed.next().await), (51, 90));
    assert_eq!(text_of(resumed.next().await), "91");
    // A resume inside history gets no gap.
    let mut inside = hub.subscribe("s", Some(95));
    assert_eq!(text_of(inside.next().await), "96");
}

#[tokio::test]
async fn close_session_delivers_what_it_held_then_ends_streams() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let mut a = hub.subscribe("s", None);
    let mut b = hub.subscribe("s", None);
    hub.publish(Some("s"), "1").unwrap();
    hub.publish(Some("s"), "2").unwrap();
    assert_eq!(text_of(a.next().await), "1");
    assert!(hub.close_session("s").await.unwrap());
    assert!(!hub.session_exists("s").await.unwrap());
    assert_eq!(hub.stats().sessions, 0);

    assert_eq!(text_of(a.next().await), "2");
    assert_eq!(a.next().await, None);
    assert!(!a.is_live());
    assert_eq!(text_of(b.next().await), "1");
    // Until its last reader leaves, the history stays for it.
    assert_eq!(hub.stats().retained, 2);
    drop(b);
    let stats = hub.stats();
    assert_eq!((stats.retained, stats.subscribers), (0, 0));

    // The id can be used again, as a new session.
    let mut fresh = hub.subscribe("s", None);
    assert_eq!(
        hub.publish(Some("s"), "new life").map(|p| p.seq()),
        Ok(Some(1))
    );
    assert_eq!(text_of(fresh.next().await), "new life");
    assert!(!hub.close_session("never-existed").await.unwrap());
}

#[tokio::test]
async fn closing_a_session_wakes_waiting_subscribers() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let mut sub = hub.subscribe("s", None);
    let waiting = tokio::spawn(async move { sub.next().await });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    hub.close_session("s").await.unwrap();
    assert_eq!(waiting.await.unwrap(), None);
}

#[tokio::test]
async fn shutdown_delivers_what_was_accepted_then_ends_streams() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = Messenger::new();
    let consumer = tokio::spawn({
        let hub = hub.clone();
        let updates = messenger.stream();
        async move { hub.consume(updates).await }
    });
    let mut reader = hub.subscribe("s", None);
    let mut waiting = hub.subscribe("t", None);
    for i in 1..=5 {
        messenger.send(Some("s".into()), i.to_string());
    }
    // Let the consumer take all five.
    while hub.stats().accepted < 5 {
        tokio::task::yield_now().await;
    }
    assert_eq!(text_of(reader.next().await), "1");
    let parked = tokio::spawn(async move { waiting.next().await });
    tokio::task::yield_now().await;

    hub.shutdown().await;
    consumer.await.unwrap();
    assert!(hub.is_shut_down());

    // Not accepted after shutdown, and counted.
    assert_eq!(hub.publish(Some("s"), "late"), Err(PublishError::ShutDown));
    assert_eq!(hub.stats().dropped_closed, 1);
    // What the messenger still holds stays there for a later consumer.
    messenger.send(Some("s".into()), "kept in the channel");
    assert_eq!(messenger.stream().pending(), 1);

    for i in 2..=5 {
        assert_eq!(text_of(reader.next().await), i.to_string());
    }
    assert_eq!(reader.next().await, None);
    assert_eq!(parked.await.unwrap(), None);
    assert!(matches!(
        hub.open_session("u").await,
        Err(OpenError::ShutDown)
    ));
    assert!(!hub.subscribe("s", None).is_live());
    assert!(!hub.session_exists("s").await.unwrap());
    let stats = hub.stats();
    assert_eq!(
        (stats.sessions, stats.subscribers, stats.accepted),
        (0, 0, 5)
    );
    // A second call returns at once.
    hub.shutdown().await;
}

#[tokio::test]
async fn dropping_the_last_hub_handle_ends_streams() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let clone = hub.clone();
    let mut sub = hub.subscribe("s", None);
    hub.publish(Some("s"), "accepted").unwrap();
    drop(hub);
    // A clone still publishes.
    assert_eq!(
        clone.publish(Some("s"), "still open").map(|p| p.seq()),
        Ok(Some(2))
    );
    drop(clone);
    assert_eq!(text_of(sub.next().await), "accepted");
    assert_eq!(text_of(sub.next().await), "still open");
    assert_eq!(sub.next().await, None);
}

#[tokio::test(flavor = "current_thread")]
async fn consume_lets_subscribers_keep_up_with_an_always_ready_stream() {
    let hub = Hub::new(config(|c| c.subscriber_buffer = 300)).unwrap();
    let mut sub = hub.subscribe("s", None);
    let reader = tokio::spawn(async move {
        for seq in 1..=10_000 {
            match sub.next().await {
                Some(Event::Status(status)) => assert_eq!(status.seq(), seq),
                other => panic!("expected status {seq}, got {other:?}"),
            }
        }
    });
    let updates =
        futures_util::stream::iter((0..10_000).map(|i| (Some("s".to_owned()), i.to_string())));
    hub.consume(updates).await;
    reader.await.unwrap();
    assert_eq!(hub.stats().gaps, 0);
}

#[test]
fn config_errors_name_the_field() {
    type Edit = fn(&mut HubConfig);
    let cases: [(Edit, &str); 6] = [
        (|c| c.history_capacity = 0, "history_capacity"),
        (|c| c.history_ttl = Duration::ZERO, "history_ttl"),
        (|c| c.subscriber_buffer = 0, "subscriber_buffer"),
        (
            |c| c.max_status_bytes = TRUNCATION_MARKER.len(),
            "max_status_bytes",
        ),
        (|c| c.max_sessions = 0, "max_sessions"),
        (
            |c| c.no_session = NoSessionPolicy::Deliver(String::new()),
            "no_session",
        ),
    ];
    for (edit, field) in cases {
        let error = Hub::new(config(edit)).unwrap_err();
        assert_eq!(error.field(), field);
        assert!(error
            .to_string()
            .starts_with(&format!("invalid hub config: {field} ")));
    }
    assert!(Hub::new(config(|c| c.max_status_bytes = TRUNCATION_MARKER.len() + 1)).is_ok());
}
