//! The global messenger beside scoped defaults: scoped code sends nothing to the global one,
//! whatever thread or task it runs on, and code outside every scope still reaches it. One test
//! function, since it owns the process-wide global.

use futures_util::{FutureExt, StreamExt};
use status_messenger::{
    add_status_message, global_messenger, set_default, set_global_default,
    setup_status_messenger_async, stream_status_updates, try_stream_status_updates, with_default,
    with_session_id, Messenger, SessionContext,
};

/// Everything `messenger`'s channel holds now, as texts.
fn texts(messenger: &Messenger) -> Vec<String> {
    let mut stream = messenger.stream();
    std::iter::from_fn(|| stream.next().now_or_never().flatten().map(|(_, text)| text)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_code_sends_nothing_to_the_global_messenger() {
    let global = Messenger::new();
    set_global_default(global.clone()).unwrap();
    // Setup finds the installed messenger instead of creating one; a second install fails.
    assert!(setup_status_messenger_async().same_channel(&global));
    let refused = set_global_default(Messenger::new()).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "a global status messenger is already set"
    );

    let scoped = Messenger::new();
    // (a) a blocking thread, (b) a plain thread with a carried context, (c) a spawned task.
    scoped
        .scope(with_session_id("s", async {
            status_messenger::spawn_blocking(|| add_status_message("a"))
                .await
                .unwrap();
            let ctx = SessionContext::current();
            std::thread::spawn(move || ctx.run(|| add_status_message("b")))
                .join()
                .unwrap();
            status_messenger::spawn(async { add_status_message("c") })
                .await
                .unwrap();
        }))
        .await;
    with_default(&scoped, || add_status_message("d"));

    // The stream functions follow the scoped default too.
    let from_scope = with_default(&scoped, || {
        let live = try_stream_status_updates().unwrap();
        assert!(try_stream_status_updates().is_err());
        live
    });
    drop(from_scope);
    assert_eq!(scoped.refused_streams(), 1);
    assert_eq!(global.refused_streams(), 0);

    assert_eq!(texts(&scoped), ["a", "b", "c", "d"]);
    assert!(texts(&global).is_empty());
    assert_eq!(global.received(), 0);

    // Outside every scope, and once the last guard is gone, the global one is used again.
    add_status_message("outside");
    let guard = set_default(&scoped);
    add_status_message("scoped again");
    drop(guard);
    add_status_message("after the guard");
    let mut updates = stream_status_updates();
    assert_eq!(
        updates.next().await.map(|(_, text)| text).as_deref(),
        Some("outside")
    );
    assert_eq!(
        updates.next().await.map(|(_, text)| text).as_deref(),
        Some("after the guard")
    );
    drop(updates);
    assert_eq!(texts(&scoped), ["scoped again"]);
    assert!(global_messenger().unwrap().same_channel(&global));
    assert_eq!(status_messenger::dropped_before_setup(), 0);
}
