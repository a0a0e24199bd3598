//! The axum demo server against the HTTP contract, in-process on a `127.0.0.1:0` listener.

#[path = "../examples/axum_demo.rs"]
#[allow(dead_code)]
mod axum_demo;
mod support;

use status_messenger::Hub;
use support::{Server, Shutdown};

fn start(hub: Hub) -> Server {
    Server::start(move |listener, shutdown: Shutdown| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum_demo::serve(listener, hub, shutdown).await
        })
    })
}

support::demo_cases!(start, axum_demo::common::hub_config);
