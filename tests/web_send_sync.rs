//! Compile-time checks: the web module's endpoints, streams and futures can move between
//! threads, as an axum handler and a multi-threaded runtime need.

use status_messenger::web::ws::{self, Incoming, Outgoing};
use status_messenger::web::{Endpoints, RequestInfo, Settings, SseStream};
use status_messenger::Hub;

fn require_send<T: Send>(_: &T) {}
fn require_sync<T: Sync>(_: &T) {}
fn require_unpin<T: Unpin>(_: &T) {}
fn require_static<T: 'static>(_: &T) {}

#[tokio::test]
async fn web_types_are_send_sync_and_unpin_where_promised() {
    let hub = Hub::new(Default::default()).unwrap();
    let endpoints = Endpoints::new(hub.clone());
    require_send(&endpoints);
    require_sync(&endpoints);
    require_static(&endpoints);

    let body = SseStream::new(hub.subscribe("s", None), &Settings::default());
    require_send(&body);
    require_unpin(&body);
    require_static(&body);

    let authorized = endpoints.authorize_request(RequestInfo::default());
    require_send(&authorized);
    require_send(&endpoints.streams_closed());

    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
    let sink = Box::pin(futures_util::sink::unfold(
        tx,
        |tx, frame: Outgoing| async move { tx.send(frame).map(|()| tx) },
    ));
    let incoming = futures_util::stream::pending::<Incoming>();
    let settings = Settings::default();
    let forwarding = ws::forward(&hub, hub.subscribe("s", None), sink, incoming, &settings);
    require_send(&forwarding);
}
