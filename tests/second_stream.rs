//! A second live stream ends at once and takes nothing from the first.

use futures_util::StreamExt;
use status_messenger::{
    add_status_message, setup_status_messenger_async, stream_status_updates,
    try_stream_status_updates, StreamError,
};

#[tokio::test]
async fn a_second_live_stream_ends_at_once_and_takes_nothing() {
    let messenger = setup_status_messenger_async();
    let mut live = try_stream_status_updates().unwrap();

    add_status_message("for the live stream");
    assert_eq!(
        try_stream_status_updates().unwrap_err(),
        StreamError::AlreadyConsumed
    );
    let mut second = stream_status_updates();
    assert!(!second.is_live());
    assert_eq!(second.next().await, None);
    assert!(messenger.refused_streams() >= 2);

    assert_eq!(
        live.next().await,
        Some((None, "for the live stream".to_owned()))
    );
}
