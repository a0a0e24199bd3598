//! Compile-time checks: the hub's public types and futures can cross threads and tasks.

use std::future::Future;

use status_messenger::hub::{
    BackendError, CancelError, CloseError, LookupError, OpenError, PublishError, Published,
    StartTaskError, SubscribeError,
};
use status_messenger::{
    Cancelled, Event, Hub, HubConfig, HubStats, SessionId, Subscription, Task, TaskState,
    TaskUpdate,
};

fn send<T: Send>(_: &T) {}
fn sync<T: Sync>(_: &T) {}
fn unpin<T: Unpin>(_: &T) {}
fn static_<T: 'static>(_: &T) {}
fn stream<T: futures_core::Stream<Item = Event>>(_: &T) {}
fn send_future<F: Future + Send>(_: &F) {}

#[test]
fn hub_types_are_send_sync() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    send(&hub);
    sync(&hub);
    static_(&hub);
    let stats: HubStats = hub.stats();
    send(&stats);
    let id = SessionId::new("s").unwrap();
    send(&id);
    sync(&id);
    let published: Published = hub.publish(Some("s"), "x").unwrap();
    send(&published);
    fn error<E: std::error::Error + Send + Sync + 'static>() {}
    error::<PublishError>();
    error::<OpenError>();
    error::<LookupError>();
    error::<SubscribeError>();
    error::<CloseError>();
    error::<BackendError>();
    error::<StartTaskError>();
    error::<CancelError>();
}

#[test]
fn task_types_are_send_sync_and_their_futures_send() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let task: Task = hub.start_task("s").unwrap();
    send(&task);
    sync(&task);
    static_(&task);
    let state = TaskState::Running;
    send(&state);
    let updates: Vec<TaskUpdate> = hub.tasks("s").unwrap();
    send(&updates);
    sync(&updates);
    let stop: Cancelled = task.cancelled();
    send(&stop);
    sync(&stop);
    unpin(&stop);
    static_(&stop);
    send_future(&stop);
    send_future(&hub.cancel_task("s", "t"));
    send_future(&status_messenger::cancelled());
    let wrapped = task.wrap(async { 1 });
    send_future(&wrapped);
    static_(&wrapped);
}

#[test]
fn subscription_is_a_send_unpin_static_stream() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let sub: Subscription = hub.subscribe("s", None);
    send(&sub);
    sync(&sub);
    unpin(&sub);
    static_(&sub);
    stream(&sub);
}

#[test]
fn hub_futures_are_send() {
    let hub = Hub::new(HubConfig::default()).unwrap();
    let messenger = status_messenger::Messenger::new();
    send_future(&hub.consume(messenger.stream()));
    send_future(&hub.consume(futures_util::stream::empty()));
    send_future(&hub.consume_messages(messenger.stream().into_messages()));
    send_future(&hub.open_session("s"));
    send_future(&hub.session_exists("s"));
    send_future(&hub.close_session("s"));
    send_future(&hub.shutdown());
}
