//! Compile-time checks: the hub's public types and futures can cross threads and tasks.

use std::future::Future;

use status_messenger::hub::{
    BackendError, CloseError, LookupError, OpenError, PublishError, Published, SubscribeError,
};
use status_messenger::{Event, Hub, HubConfig, HubStats, SessionId, Subscription};

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
    send_future(&hub.open_session("s"));
    send_future(&hub.session_exists("s"));
    send_future(&hub.close_session("s"));
    send_future(&hub.shutdown());
}
