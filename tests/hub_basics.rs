//! Hub basics: numbering, history replay, resume, several subscribers, stats.

use futures_util::StreamExt;
use status_messenger::{Event, Hub, HubConfig, Subscription};

fn status(event: Option<Event>) -> (u64, String) {
    match event {
        Some(Event::Status(s)) => (s.seq(), s.text().to_string()),
        other => panic!("expected a status, got {other:?}"),
    }
}

async fn next_n(sub: &mut Subscription, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(sub.next().await.expect("stream ended early"));
    }
    out
}

#[tokio::test]
async fn numbers_each_session_from_one() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    assert_eq!(hub.publish(Some("a"), "a1").map(|p| p.seq()), Ok(Some(1)));
    assert_eq!(hub.publish(Some("b"), "b1").map(|p| p.seq()), Ok(Some(1)));
    assert_eq!(hub.publish(Some("a"), "a2").map(|p| p.seq()), Ok(Some(2)));
    let mut a = hub.subscribe("a", None);
    assert_eq!(status(a.next().await), (1, "a1".into()));
    assert_eq!(status(a.next().await), (2, "a2".into()));
    let mut b = hub.subscribe("b", None);
    assert_eq!(status(b.next().await), (1, "b1".into()));
}

#[tokio::test]
async fn replay_then_live_then_resume() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    for i in 1..=3 {
        hub.publish(Some("s"), format!("early {i}")).unwrap();
    }
    let mut sub = hub.subscribe("s", None);
    let replay = next_n(&mut sub, 3).await;
    assert_eq!(
        replay.iter().map(|e| e.seq().unwrap()).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    hub.publish(Some("s"), "live").unwrap();
    assert_eq!(status(sub.next().await), (4, "live".into()));
    drop(sub);
    hub.publish(Some("s"), "while away").unwrap();
    let mut resumed = hub.subscribe("s", Some(4));
    assert_eq!(status(resumed.next().await), (5, "while away".into()));
}

#[tokio::test]
async fn every_subscriber_gets_every_status() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let mut subs: Vec<_> = (0..5).map(|_| hub.subscribe("s", None)).collect();
    for i in 1..=100 {
        hub.publish(Some("s"), i.to_string()).unwrap();
    }
    for sub in &mut subs {
        let events = next_n(sub, 100).await;
        for (i, event) in events.into_iter().enumerate() {
            assert_eq!(status(Some(event)), (i as u64 + 1, (i + 1).to_string()));
        }
    }
    let stats = hub.stats();
    assert_eq!(stats.accepted, 100);
    assert_eq!(stats.delivered, 500);
    assert_eq!(stats.subscribers, 5);
    drop(subs);
    assert_eq!(hub.stats().subscribers, 0);
}
