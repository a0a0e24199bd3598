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
