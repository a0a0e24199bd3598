//! Memory per retained status and per idle session, counted by an instrumented allocator, in
//! the sizing scenario of the demo servers: 10,000 sessions x 100 statuses of 40 bytes.

use std::alloc::System;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use status_messenger::{Hub, HubConfig};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SESSIONS: usize = 10_000;
const PER_SESSION: usize = 100;

fn net_bytes(region: &Region<'_, System>) -> i64 {
    // Growth by realloc is already in bytes_allocated (and shrinking in bytes_deallocated).
    let change = region.change();
    change.bytes_allocated as i64 - change.bytes_deallocated as i64
}

/// Resident set size of this process in bytes (Linux), for the record.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn a_retained_status_costs_about_100_bytes() {
    let mut config = HubConfig::default();
    config.history_capacity = PER_SESSION;
    let hub = Hub::new(config).unwrap();
    let ids: Vec<String> = (0..SESSIONS).map(|i| format!("{i:032x}")).collect();
    let rss_start = rss();

    let region = Region::new(GLOBAL);
    for id in &ids {
        hub.publish(Some(id), "").unwrap();
    }
    let per_session = net_bytes(&region) as f64 / SESSIONS as f64;

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
    let per_status = net_bytes(&region) as f64 / statuses;
    assert_eq!(hub.stats().retained, (SESSIONS * PER_SESSION) as u64);

    let rss_growth = match (rss_start, rss()) {
        (Some(start), Some(end)) => format!("{:.1} MB", (end - start) as f64 / 1e6),
        _ => "unknown".to_owned(),
    };
    println!(
        "heap per session (with one empty status): {per_session:.0} bytes; \
         heap per retained 40-byte status: {per_status:.1} bytes; \
         RSS growth for {SESSIONS} sessions x {PER_SESSION} statuses: {rss_growth}"
    );
    // 24 bytes of ring slot (the ring grows by a quarter, so up to 30 per status) + the
    // shared text (16 + 40 bytes).
    assert!(
        per_status < 90.0,
        "{per_status:.1} bytes per retained status"
    );
    assert!(per_session < 600.0, "{per_session:.0} bytes per session");
}
