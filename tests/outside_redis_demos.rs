//! The demo servers as an outside client sees them when two of them (the axum one and the actix
//! one, with their default Redis settings) share one Redis that fails under a running task:
//! killed and started again with or without its data, or paused. Whatever the outage lasted,
//! delivery resumes on both within 2 s of Redis answering again, every number reaches each
//! page once (a status, or within exactly one gap), and the session's keys still live at least
//! the 10 minutes of history the contract promises.
#![cfg(all(feature = "redis", feature = "axum", feature = "actix-web"))]

mod common;
mod support;

use std::time::{Duration, Instant};

use common::RedisServer;
use status_messenger::hub::metric_names;
use support::demo::both_demos;
use support::{
    assert_each_number_once, create_session, metric, metrics, start_task, ws_connect,
    ws_timed_until_task,
};

const STEPS: u64 = 300;
const STEP_DELAY_MS: u64 = 20;
/// Long enough that a reconnect backoff doubling from 100 ms waits past 2 s after Redis is
/// back (attempts 3.1 s and 6.3 s after the loss), unless its longest delay is short.
const OUTAGE: Duration = Duration::from_millis(3500);

#[derive(Debug, Clone, Copy)]
enum Fault {
    RestartWithData,
    RestartEmpty,
    Pause,
}

/// The remaining time to live of `key` in milliseconds (negative: no TTL or no key).
fn pttl(redis: &RedisServer, key: &str) -> i64 {
    let reply = redis.command(&format!("PTTL {key}"));
    reply
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("PTTL {key}: {reply:?}"))
}

async fn outage_under_a_task(fault: Fault) {
    let redis = match fault {
        Fault::RestartWithData | Fault::Pause => RedisServer::start_persistent(),
        Fault::RestartEmpty => RedisServer::start(),
    };
    let Some(mut redis) = redis else {
        return;
    };
    let (on_a, on_b) = both_demos(&["--redis", &redis.url()]).await;
    let id = create_session(&on_b).await;
    let ws_a = ws_connect(&on_a, &id, None).await;
    let ws_b = ws_connect(&on_b, &id, None).await;
    // The tool runs in the axum process; both pages watch.
    let task = start_task(&on_a, &id, STEPS as u32, STEP_DELAY_MS).await;
    let readers = [
        (
            "axum",
            tokio::spawn(ws_timed_until_task(ws_a, task.clone(), "finished")),
        ),
        (
            "actix",
            tokio::spawn(ws_timed_until_task(ws_b, task.clone(), "finished")),
        ),
    ];
    tokio::time::sleep(Duration::from_millis(1000)).await;

    match fault {
        Fault::RestartWithData | Fault::RestartEmpty => redis.kill(),
        Fault::Pause => redis.pause(),
    }
    tokio::time::sleep(OUTAGE).await;
    tokio::task::block_in_place(|| match fault {
        Fault::RestartWithData => redis.restart(),
        Fault::RestartEmpty => redis.restart_empty(),
        Fault::Pause => redis.resume(),
    });
    let back = Instant::now();

    let mut gaps_seen = Vec::new();
    for (server, reader) in readers {
        let frames = reader.await.expect("reader");
        let in_gaps = assert_each_number_once(&frames, STEPS, server);
        gaps_seen.push((
            in_gaps,
            frames.iter().filter(|(f, _)| f["type"] == "gap").count(),
        ));
        // The task runs on well past the outage: the first frame after Redis is back shows
        // when delivery resumed.
        let resumed = frames
            .iter()
            .map(|(_, at)| *at)
            .find(|at| *at >= back)
            .expect("frames after the outage");
        let late = resumed.saturating_duration_since(back);
        eprintln!("{fault:?}: {server} resumed {late:?} after Redis was back, {in_gaps} in gaps");
        assert!(
            late <= Duration::from_secs(2),
            "{fault:?}: {server} resumed delivery {late:?} after Redis was back"
        );
    }

    // What was lost is counted: as dropped where it was published, as gaps where delivered.
    let dropped = metric(
        &metrics(&on_a).await,
        &format!("{}{{reason=\"backend\"}}", metric_names::DROPPED),
    );
    assert_eq!(dropped, gaps_seen[0].0, "dropped on the publishing process");
    for ((_, gap_frames), server) in gaps_seen.iter().zip([&on_a, &on_b]) {
        let gaps = metric(&metrics(server).await, metric_names::GAPS);
        assert!(
            gaps >= *gap_frames as u64,
            "{gaps} gaps counted, {gap_frames} delivered"
        );
    }

    // History outlives the last status by at least the contract's 10 minutes.
    for kind in ["log", "tasks"] {
        let ttl = pttl(&redis, &format!("status-messenger:{{{id}}}:{kind}"));
        assert!(
            ttl >= 600_000,
            "{kind}: PTTL {ttl} ms after the last status"
        );
    }
    on_a.stop().await.expect("axum demo stopped cleanly");
    on_b.stop().await.expect("actix demo stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_its_data_under_a_task() {
    outage_under_a_task(Fault::RestartWithData).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty_under_a_task() {
    outage_under_a_task(Fault::RestartEmpty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_under_a_task() {
    outage_under_a_task(Fault::Pause).await;
}
