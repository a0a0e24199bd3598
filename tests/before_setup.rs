//! Before setup nothing panics, every dropped message is counted, and the warning comes once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use status_messenger::{
    add_status_message, dropped_before_setup, global_messenger, setup_status_messenger_async,
    stream_status_updates, try_stream_status_updates, StreamError,
};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Counts warnings about use before setup.
struct WarnCounter(Arc<AtomicUsize>);

impl<S: Subscriber> Layer<S> for WarnCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() == Level::WARN
            && event.metadata().target() == "status_messenger"
        {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test]
async fn calls_before_setup_are_counted_warned_once_and_never_panic() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(WarnCounter(Arc::clone(&warnings)));
    let _guard = tracing::subscriber::set_default(subscriber);

    assert!(global_messenger().is_none());
    for i in 0..100 {
        add_status_message(format!("early {i}"));
    }
    // From other threads too, with and without a runtime.
    std::thread::spawn(|| add_status_message("early from a thread"))
        .join()
        .unwrap();
    tokio::task::spawn_blocking(|| add_status_message("early from spawn_blocking"))
        .await
        .unwrap();
    assert_eq!(dropped_before_setup(), 102);
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        1,
        "one warning, not one per message"
    );

    assert_eq!(
        try_stream_status_updates().unwrap_err(),
        StreamError::NotSetUp
    );
    let mut early = stream_status_updates();
    assert!(!early.is_live());
    assert_eq!(early.next().await, None);

    // After setup, messages flow and nothing from before reappears.
    setup_status_messenger_async();
    add_status_message("after setup");
    let mut updates = stream_status_updates();
    assert_eq!(updates.next().await, Some((None, "after setup".to_owned())));
    assert_eq!(dropped_before_setup(), 102);
}
