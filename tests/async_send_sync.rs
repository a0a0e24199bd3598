//! Compile-time checks: the public futures and streams can move between threads.

use status_messenger::WithSession;
use status_messenger::{Messenger, SessionContext, StatusMessage, StatusMessages, StatusStream};

fn require_send<T: Send>(_: &T) {}
fn require_sync<T: Sync>(_: &T) {}
fn require_unpin<T: Unpin>(_: &T) {}
fn require_static<T: 'static>(_: &T) {}

async fn send_future() {}

#[test]
fn public_types_are_send_sync_and_unpin_where_promised() {
    let messenger = Messenger::new();
    require_send(&messenger);
    require_sync(&messenger);

    let stream: StatusStream = messenger.stream();
    require_send(&stream);
    require_sync(&stream);
    require_unpin(&stream);
    require_static(&stream);

    let messages: StatusMessages = messenger.stream().into_messages();
    require_send(&messages);
    require_sync(&messages);
    require_unpin(&messages);
    require_static(&messages);
    let message = StatusMessage::new("x").progress(1, 2);
    require_send(&message);
    require_sync(&message);

    let ctx = SessionContext::new("s");
    require_send(&ctx);
    require_sync(&ctx);

    let wrapped: WithSession<_> = status_messenger::with_session_id("s", send_future());
    require_send(&wrapped);
    let wrapped: WithSession<_> = ctx.wrap(send_future());
    require_send(&wrapped);
}
