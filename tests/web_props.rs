//! Property tests over the endpoints' parsers and encoders with arbitrary input: resume
//! points, request queries, the demo's task body, and `Frame::encode` (every frame is JSON that
//! parses back to what was published, and SSE text keeps one event per frame). Inputs that
//! failed once are kept in `web_props.proptest-regressions`. `FUZZ_CASES` sets the cases per
//! property (default 256).

#[allow(dead_code, unused_imports)]
#[path = "../examples/common/mod.rs"]
mod common;

use futures_util::StreamExt;
use proptest::prelude::*;
use status_messenger::web::{parse_seq, resume_point, Frame, RequestInfo};
use status_messenger::{Event, Hub};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256)
}

/// Publishes `text` in a fresh hub and returns the status's frame.
fn frame_of(text: &str) -> (String, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hub = Hub::new(Default::default()).unwrap();
        hub.publish(Some("s"), text).unwrap();
        let mut sub = hub.subscribe("s", None);
        let event = sub.next().await.unwrap();
        let Event::Status(status) = &event else {
            panic!("{event:?}")
        };
        let stored = status.text().to_owned();
        (Frame::encode(&event).unwrap().into_json(), stored)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn a_seq_parses_back_whatever_the_whitespace(n: u64, before in "[ \t]{0,3}", after in "[ \t]{0,3}") {
        prop_assert_eq!(parse_seq("after", &format!("{before}{n}{after}")), Ok(n));
    }

    #[test]
    fn anything_but_a_seq_is_refused_naming_the_parameter(text in "\\PC*") {
        let parsed = parse_seq("after", &text);
        match text.trim().parse::<u64>() {
            Ok(n) => prop_assert_eq!(parsed, Ok(n)),
            Err(_) => prop_assert_eq!(parsed.unwrap_err().parameter(), "after"),
        }
    }

    #[test]
    fn the_header_wins_over_the_query(header: Option<u64>, last: Option<u64>, after: Option<u64>) {
        let text = |v: Option<u64>| v.map(|v| v.to_string());
        let (h, l, a) = (text(header), text(last), text(after));
        let point = resume_point(h.as_deref(), l.as_deref(), a.as_deref()).unwrap();
        prop_assert_eq!(point, header.or(last).or(after));
    }

    #[test]
    fn any_query_reads_without_panicking_and_pairs_round_trip(raw in "\\PC{0,200}", session in "\\PC{0,40}") {
        let request = RequestInfo::new(http::HeaderMap::new(), Some(&raw));
        let _ = request.resume_point();
        let _ = request.query_pairs().count();
        let encoded = serde_urlencoded::to_string([("session", session.as_str())]).unwrap();
        let request = RequestInfo::new(http::HeaderMap::new(), Some(&encoded));
        prop_assert_eq!(request.query("session"), Some(session.as_str()));
    }

    #[test]
    fn every_status_frame_is_json_with_the_text(text in any::<String>()) {
        let (json, stored) = frame_of(&text);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(value["text"].as_str(), Some(stored.as_str()));
        prop_assert_eq!(value["seq"].as_u64(), Some(1));
        prop_assert_eq!(value["session"].as_str(), Some("s"));
        // One line: an SSE `data:` line cannot be split by the text.
        prop_assert!(!json.contains('\n') && !json.contains('\r'));
    }

    #[test]
    fn any_task_body_is_a_spec_or_a_message(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = common::parse_task(&body);
    }

    #[test]
    fn task_bodies_in_range_parse_and_out_of_range_are_refused(steps: u64, delay_ms: u64) {
        let body = format!(r#"{{"steps": {steps}, "delay_ms": {delay_ms}}}"#);
        let parsed = common::parse_task(body.as_bytes());
        let fits = common::STEPS_RANGE.contains(&steps) && common::DELAY_MS_RANGE.contains(&delay_ms);
        prop_assert_eq!(parsed.is_ok(), fits, "{:?}", parsed);
    }
}
