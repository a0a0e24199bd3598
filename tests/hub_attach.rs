//! A hub attached to a messenger: statuses go straight in on the sender's thread, in order,
//! after what waited in the channel; detaching on shutdown or drop hands the channel back.

use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use status_messenger::{Event, Hub, HubConfig, Messenger, SessionContext, StreamError};

fn texts(hub: &Hub, session: &str) -> Vec<String> {
    let mut sub = hub.subscribe(session, None);
    let mut out = Vec::new();
    while let Some(Some(event)) = sub.next().now_or_never() {
        match event {
            Event::Status(status) => out.push(status.text().to_string()),
            Event::Gap(gap) => panic!("unexpected gap {gap:?}"),
            other => panic!("unexpected event {other:?}"),
        }
    }
    out
}

#[test]
fn what_waited_in_the_channel_comes_first_then_the_rest_in_order() {
    let messenger = Messenger::new();
    messenger.send(Some("s".into()), "1");
    messenger.send(Some("s".into()), "2");
    let hub = Hub::new(HubConfig::default()).unwrap();
    hub.attach(&messenger).unwrap();
    assert!(messenger.is_direct());
    SessionContext::new("s").run(|| messenger.add_status_message("3"));
    messenger.send(Some("s".into()), "4");
    assert_eq!(texts(&hub, "s"), ["1", "2", "3", "4"]);
    assert_eq!(messenger.received(), 4);
}

#[tokio::test]
async fn what_a_dropped_stream_had_drained_comes_first_too() {
    let messenger = Messenger::new();
    for text in ["1", "2", "3"] {
        messenger.send(Some("s".into()), text);
    }
    // A stream takes "1" and drains "2" and "3" into its buffer, then goes away.
    let mut stream = messenger.stream();
    assert_eq!(stream.next().await, Some((Some("s".into()), "1".into())));
    drop(stream);
    messenger.send(Some("s".into()), "4");

    let hub = Hub::new(HubConfig::default()).unwrap();
    hub.attach(&messenger).unwrap();
    messenger.send(Some("s".into()), "5");
    assert_eq!(texts(&hub, "s"), ["2", "3", "4", "5"]);
    assert_eq!(messenger.received(), 5);
}

#[test]
fn statuses_from_many_threads_keep_each_threads_order() {
    let messenger = Messenger::new();
    let hub = Hub::new(HubConfig::default()).unwrap();
    hub.attach(&messenger).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let messenger = messenger.clone();
            std::thread::spawn(move || {
                SessionContext::new(format!("s{t}")).run(|| {
                    for i in 0..200 {
                        messenger.add_status_message(i.to_string());
                    }
                });
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for t in 0..8 {
        let expected: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        assert_eq!(texts(&hub, &format!("s{t}")), expected);
    }
    assert_eq!(hub.stats().accepted, 1600);
}

#[test]
fn attaching_is_refused_while_a_stream_consumes() {
    let messenger = Messenger::new();
    let stream = messenger.stream();
    let hub = Hub::new(HubConfig::default()).unwrap();
    assert_eq!(hub.attach(&messenger), Err(StreamError::AlreadyConsumed));
    assert!(!messenger.is_direct());
    drop(stream);
    hub.attach(&messenger).unwrap();
    // Attached, the hub holds the stream: nobody else may consume.
    assert_eq!(
        messenger.try_stream().unwrap_err(),
        StreamError::AlreadyConsumed
    );
    let other = Hub::new(HubConfig::default()).unwrap();
    assert_eq!(other.attach(&messenger), Err(StreamError::AlreadyConsumed));
}

#[tokio::test]
async fn after_shutdown_messages_wait_in_the_channel_for_the_next_consumer() {
    let messenger = Messenger::new();
    let hub = Hub::new(HubConfig::default()).unwrap();
    hub.attach(&messenger).unwrap();
    messenger.send(Some("s".into()), "accepted");
    hub.shutdown().await;
    assert!(!messenger.is_direct());
    messenger.send(Some("s".into()), "kept");
    let mut stream = messenger.try_stream().unwrap();
    assert_eq!(stream.next().await, Some((Some("s".into()), "kept".into())));
    assert_eq!(hub.stats().accepted, 1);
    assert_eq!(hub.stats().dropped_closed, 0);
}

#[test]
fn dropping_the_last_hub_clone_detaches_it() {
    let messenger = Messenger::new();
    let hub = Hub::new(HubConfig::default()).unwrap();
    let clone = hub.clone();
    hub.attach(&messenger).unwrap();
    drop(hub);
    assert!(messenger.is_direct(), "a clone is still alive");
    drop(clone);
    assert!(!messenger.is_direct());
    messenger.send(None, "kept");
    assert_eq!(messenger.stream().pending(), 1);
}

#[tokio::test]
async fn subscribers_are_woken_by_a_status_sent_from_another_thread() {
    let messenger = Messenger::new();
    let hub = Hub::new(HubConfig::default()).unwrap();
    hub.attach(&messenger).unwrap();
    let mut sub = hub.subscribe("s", None);
    let producer = Arc::new(messenger.clone());
    std::thread::spawn(move || {
        SessionContext::new("s").run(|| producer.add_status_message("hello"));
    });
    let event = sub.next().await.unwrap();
    assert_eq!(event.seq(), Some(1));
}
