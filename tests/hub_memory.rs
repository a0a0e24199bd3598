//! Memory per retained status and per idle session, counted by an instrumented allocator, in
//! the sizing scenario of the demo servers: 10,000 sessions x 100 statuses, kept with nobody
//! subscribed. Two shapes: plain 40-byte statuses, and the demo tool's task statuses (a 36-byte
//! text, its task's id and a progress), each added in its task.

use std::alloc::System;
use std::sync::Mutex;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use status_messenger::{Hub, HubConfig, Messenger, StatusMessage, Task};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The allocator's counts are global: one measurement at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SESSIONS: usize = 10_000;
const PER_SESSION: usize = 100;

/// What a region left allocated: bytes asked for, and live allocations.
fn net(region: &Region<'_, System>) -> (f64, f64) {
    // Growth by realloc is already in bytes_allocated (and shrinking in bytes_deallocated).
    let change = region.change();
    (
        change.bytes_allocated as f64 - change.bytes_deallocated as f64,
        change.allocations as f64 - change.deallocations as f64,
    )
}

/// Resident set size of this process in bytes (Linux), for the record.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn rss_growth(start: Option<u64>) -> String {
    match (start, rss()) {
        (Some(start), Some(end)) => format!("{:.1} MB", end.saturating_sub(start) as f64 / 1e6),
        _ => "unknown".to_owned(),
    }
}

fn session_ids() -> Vec<String> {
    (0..SESSIONS).map(|i| format!("{i:032x}")).collect()
}

fn config() -> HubConfig {
    let mut config = HubConfig::default();
    config.history_capacity = PER_SESSION;
    // One task per session, all running at once.
    config.max_running_tasks = SESSIONS;
    config
}

#[test]
fn a_retained_plain_status_costs_under_70_bytes() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let hub = Hub::new(config()).unwrap();
    let ids = session_ids();
    let rss_start = rss();

    let region = Region::new(GLOBAL);
    for id in &ids {
        hub.publish(Some(id), "").unwrap();
    }
    let (per_session, _) = net(&region);
    let per_session = per_session / SESSIONS as f64;

    let region = Region::new(GLOBAL);
    for i in 1..PER_SESSION {
        for id in &ids {
            // 40 bytes, like "step 12/100 t_ns=1700000000000000000xyz".
            let text = format!("step {i:>3}/100 t_ns={:0>22}", i);
            assert_eq!(text.len(), 40);
            hub.publish(Some(id), text).unwrap();
        }
    }
    let statuses = (SESSIONS * (PER_SESSION - 1)) as f64;
    let (bytes, allocations) = net(&region);
    let (per_status, allocations) = (bytes / statuses, allocations / statuses);
    assert_eq!(hub.stats().retained, (SESSIONS * PER_SESSION) as u64);

    println!(
        "plain: heap per session (with one empty status): {per_session:.0} bytes; \
         heap per retained 40-byte status: {per_status:.1} bytes in {allocations:.3} live \
         allocations; RSS growth for {SESSIONS} sessions x {PER_SESSION} statuses: {}",
        rss_growth(rss_start)
    );
    // A 12-byte ring slot and the text's 40 bytes with a tag byte in the session's text ring,
    // each ring up to a quarter larger than it needs; no allocation of its own.
    assert!(
        per_status < 70.0,
        "{per_status:.1} bytes per retained status"
    );
    assert!(allocations < 0.1, "{allocations:.3} allocations per status");
    assert!(per_session < 700.0, "{per_session:.0} bytes per session");
}

#[test]
fn a_retained_task_status_costs_under_70_bytes() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let hub = Hub::new(config()).unwrap();
    let messenger = Messenger::new();
    hub.attach(&messenger).unwrap();
    let ids = session_ids();
    let rss_start = rss();
    let add = |task: &Task, step: usize| {
        // 36 bytes, the demo tool's "step 12/100 t_ns=1700000000000000000".
        let text = format!("step {step:>2}/100 t_ns={:019}", step);
        assert_eq!(text.len(), 36);
        let message = StatusMessage::new(text).progress(step as u64, PER_SESSION as u64);
        task.context()
            .with_messenger(&messenger)
            .run(|| messenger.add_status(message));
    };

    // Each session with its running task and the task's first status.
    let region = Region::new(GLOBAL);
    let tasks: Vec<Task> = ids.iter().map(|id| hub.start_task(id).unwrap()).collect();
    for task in &tasks {
        add(task, 0);
    }
    let (per_session, _) = net(&region);
    let per_session = per_session / SESSIONS as f64;

    let region = Region::new(GLOBAL);
    for step in 1..PER_SESSION {
        for task in &tasks {
            add(task, step);
        }
    }
    let statuses = (SESSIONS * (PER_SESSION - 1)) as f64;
    let (bytes, allocations) = net(&region);
    let (per_status, allocations) = (bytes / statuses, allocations / statuses);
    assert_eq!(hub.stats().retained, (SESSIONS * PER_SESSION) as u64);
    assert_eq!(hub.stats().accepted, (SESSIONS * PER_SESSION) as u64);

    println!(
        "task: heap per session (its task and first status): {per_session:.0} bytes; \
         heap per retained task status (36-byte text, task id, progress): {per_status:.1} \
         bytes in {allocations:.3} live allocations; RSS growth for {SESSIONS} sessions x \
         {PER_SESSION} statuses: {}",
        rss_growth(rss_start)
    );
    // The same ring slot; in the text ring the tag, progress and the task's index beside the
    // 36 bytes of text. The task's id is held once per session, not once per status.
    assert!(
        per_status < 70.0,
        "{per_status:.1} bytes per retained status"
    );
    assert!(allocations < 0.1, "{allocations:.3} allocations per status");
    assert!(per_session < 1400.0, "{per_session:.0} bytes per session");
}

#[test]
fn history_published_while_watched_costs_no_allocation_each_once_its_subscriber_leaves() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const WATCHED: usize = 1_000;
    let hub = Hub::new(config()).unwrap();
    let ids: Vec<String> = session_ids().into_iter().take(WATCHED).collect();
    let subscriptions: Vec<_> = ids.iter().map(|id| hub.subscribe(id, None)).collect();
    let region = Region::new(GLOBAL);
    for step in 0..PER_SESSION {
        for id in &ids {
            hub.publish(
                Some(id),
                format!("step {step:>3}/100 t_ns=1700000000000000000"),
            )
            .unwrap();
        }
    }
    let statuses = (WATCHED * PER_SESSION) as f64;
    let (_, watched) = net(&region);
    let watched = watched / statuses;
    // While watched, each status keeps the allocation it was published with.
    assert!(watched > 0.9, "{watched:.3} allocations per watched status");
    drop(subscriptions);
    let (bytes, allocations) = net(&region);
    let (per_status, allocations) = (bytes / statuses, allocations / statuses);
    println!(
        "watched then left: {watched:.3} live allocations per status while watched, \
         {allocations:.3} and {per_status:.1} bytes per status once the subscribers left"
    );
    assert_eq!(hub.stats().retained, statuses as u64);
    assert!(allocations < 0.1, "{allocations:.3} allocations per status");
    assert!(per_status < 70.0, "{per_status:.1} bytes per status");
}
