//! The short soak: 200,000 statuses from 16 producer threads over 100 sessions, two
//! subscribers per session that disconnect and resume at random, a consumer aborted and
//! restarted every few milliseconds and then the hub attached. Every status must reach every
//! subscriber of its session exactly once, in order, with no gap.
//!
//! The full run is the `soak` binary (see `benches/README.md`, "Soak").

use status_messenger_tools::soak::{self, Config};

#[test]
fn short_soak_delivers_every_status_exactly_once_in_order() {
    let config = Config::short();
    let report = soak::run(&config).expect("the soak starts");
    println!("{report}");
    assert_eq!(report.sent, config.statuses);
    assert_eq!(
        (report.lost, report.duplicated, report.reordered),
        (0, 0, 0),
        "{report}"
    );
    assert_eq!(
        (report.gaps, report.seq_errors, report.malformed),
        (0, 0, 0),
        "{report}"
    );
    assert_eq!(report.unfinished, 0, "{report}");
    assert_eq!(
        report.received,
        config.statuses * config.subscribers as u64,
        "{report}"
    );
    // The hub and the messenger agree: everything accepted, nothing dropped, no gap.
    assert!(report.exact(), "{report}");
    // It did restart the consumer, resume subscribers and attach the hub.
    assert!(report.consumer_restarts >= 3, "{report}");
    assert!(report.resumes >= 1000, "{report}");
    assert!(report.attached_after.is_some(), "{report}");
}
