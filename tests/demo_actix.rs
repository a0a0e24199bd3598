//! The actix demo server against the HTTP contract, in-process on a `127.0.0.1:0` listener.

#[path = "../examples/actix_demo.rs"]
#[allow(dead_code)]
mod actix_demo;
mod support;

use status_messenger::Hub;
use support::{Server, Shutdown};

fn start(hub: Hub) -> Server {
    Server::start(move |listener, shutdown: Shutdown| {
        actix_web::rt::System::new().block_on(actix_demo::serve(listener, hub, shutdown))
    })
}

support::demo_cases!(start, actix_demo::common::hub_config);
