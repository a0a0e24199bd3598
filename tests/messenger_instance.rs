//! Instances are independent of each other and of the global messenger.

use futures_util::{FutureExt, StreamExt};
use status_messenger::{Messenger, SessionContext};

#[tokio::test]
async fn instances_are_isolated() {
    let a = Messenger::new();
    let b = Messenger::new();
    SessionContext::new("s").run(|| {
        a.add_status_message("to a");
        b.add_status_message("to b");
    });
    let mut sa = a.stream();
    let mut sb = b.stream();
    assert_eq!(sa.next().await, Some((Some("s".into()), "to a".into())));
    assert_eq!(sb.next().await, Some((Some("s".into()), "to b".into())));
    assert_eq!(sa.pending(), 0);
    assert!(status_messenger::global_messenger().is_none());
}

#[tokio::test]
async fn a_stream_outlives_every_messenger_handle_and_stays_open() {
    let messenger = Messenger::new();
    let mut stream = messenger.stream();
    messenger.send(Some("s".into()), "last");
    drop(messenger);
    // The stream keeps the channel alive: it still yields what was sent, then waits instead
    // of ending, as a broadcaster's stream should.
    assert_eq!(stream.next().await, Some((Some("s".into()), "last".into())));
    assert_eq!(stream.next().now_or_never(), None);
}

#[tokio::test]
async fn clones_share_one_channel() {
    let messenger = Messenger::new();
    let clone = messenger.clone();
    clone.send(None, "via clone");
    assert_eq!(
        messenger.stream().next().await,
        Some((None, "via clone".into()))
    );
    assert_eq!(clone.received(), 1);
}

#[tokio::test]
async fn what_a_dropped_stream_drained_comes_first_in_the_next() {
    let messenger = Messenger::new();
    for i in 1..=3 {
        messenger.send(None, i.to_string());
    }
    let mut first = messenger.stream();
    // Taking one message drains all three into the stream's buffer.
    assert_eq!(first.next().await, Some((None, "1".into())));
    assert_eq!(first.pending(), 2);
    for i in 4..=5 {
        messenger.send(None, i.to_string());
    }
    drop(first);

    let second = messenger.stream();
    assert_eq!(second.pending(), 4);
    let rest: Vec<String> = second.take(4).map(|(_, text)| text).collect().await;
    assert_eq!(rest, ["2", "3", "4", "5"]);
    assert_eq!(messenger.received(), 5);
}
