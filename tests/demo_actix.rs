//! The actix demo server, run as a process, against the HTTP contract.

mod support;

use support::demo::Demo;
use support::Server;

fn start() -> Server {
    Demo::Actix.start(&[])
}

support::demo_cases!(start);
