//! Compile-time checks: the public futures and streams can move between threads.

use status_messenger::{Messenger, SessionContext, StatusStream, WithSession};

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

    let ctx = SessionContext::new("s");
    require_send(&ctx);
    require_sync(&ctx);

    let wrapped: WithSession<_> = status_messenger::with_session_id("s", send_future());
    require_send(&wrapped);
    let wrapped: WithSession<_> = ctx.wrap(send_future());
    require_send(&wrapped);
}
