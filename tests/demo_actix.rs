//! The actix demo server, run as a process, against the HTTP contract.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::demo::Demo;
use support::Server;

fn start() -> Server {
    Demo::Actix.start(&[])
}

support::demo_cases!(start);

/// The demo's tool pool starts 8 threads per core at once and one more for a tool that has
/// waited 10 ms for a busy one: slow tools past those each still start at once, not after
/// another tool has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tools_past_the_eager_threads_start_without_waiting_for_each_other() {
    const DELAY_MS: u64 = 3_000;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let tools = 8 * cores + 8;
    let server = start();
    let mut started = Vec::with_capacity(tools);
    for _ in 0..tools {
        let id = support::create_session(&server).await;
        let ws = support::ws_connect(&server, &id, None).await;
        let asked_ns = unix_ns();
        support::start_task(&server, &id, 2, DELAY_MS).await;
        started.push((ws, asked_ns));
    }
    for (mut ws, asked_ns) in started {
        let step = support::ws_take(&mut ws, 1).await.remove(0);
        let text = step["text"].as_str().expect("a status text");
        assert!(text.starts_with("step 1/2 "), "{text}");
        let t_ns: u128 = text
            .rsplit_once("t_ns=")
            .and_then(|(_, t)| t.parse().ok())
            .expect("t_ns");
        // A tool that waited for another to end would start `DELAY_MS` after its request.
        let late =
            Duration::from_nanos(u64::try_from(t_ns.saturating_sub(asked_ns)).unwrap_or(u64::MAX));
        assert!(
            late < Duration::from_secs(1),
            "a tool started {late:?} after its request"
        );
    }
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}
