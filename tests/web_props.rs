//! Property tests over the endpoints' parsers and encoders with arbitrary input: resume
//! points, request queries, the demo's task body, the cancel frame (any client text through
//! `ws::forward`), and `Frame::encode` (every frame is JSON that
//! parses back to what was published, and SSE text keeps one event per frame). Inputs that
//! failed once are kept in `web_props.proptest-regressions`. `FUZZ_CASES` sets the cases per
//! property (default 256).

#[allow(dead_code, unused_imports)]
#[path = "../examples/common/mod.rs"]
mod common;

use futures_util::StreamExt;
use proptest::prelude::*;
use status_messenger::web::ws::{self, Ended, Incoming, Outgoing};
use status_messenger::web::{parse_seq, resume_point, Frame, RequestInfo, Settings};
use status_messenger::{Event, Hub, TaskState};

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

/// Sends the client's text `frame` on a WebSocket of session `s`, which runs a task; whether
/// the task was cancelled by it. The frame may name the task: [`TASK`] in it is its id.
fn cancels(frame: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hub = Hub::new(Default::default()).unwrap();
        let task = hub.start_task("s").unwrap();
        let text = frame.replace(TASK, task.id());
        let sink = futures_util::sink::drain::<Outgoing>();
        let incoming = futures_util::stream::iter([Incoming::Text(text), Incoming::Close]);
        let ended = ws::forward(
            &hub,
            hub.subscribe("s", None),
            sink,
            incoming,
            &Settings::default(),
        )
        .await;
        assert_eq!(ended, Ended::ClientClosed);
        let cancelled = task.is_cancelled();
        assert_eq!(
            task.finish(),
            if cancelled {
                TaskState::Cancelled
            } else {
                TaskState::Finished
            }
        );
        cancelled
    })
}

/// Where a frame given to [`cancels`] names the running task.
const TASK: &str = "@task@";

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
    fn arbitrary_client_text_never_cancels(text in "\\PC{0,300}") {
        let text = text.replace(TASK, "");
        prop_assert!(!cancels(&text));
    }

    #[test]
    fn a_cancel_frame_cancels_whatever_its_spacing_and_extra_fields(
        space in "[ \t\r\n]{0,3}",
        extra in proptest::option::of("[a-z]{1,8}"),
        first in any::<bool>(),
    ) {
        let fields = [r#""type":"cancel""#.to_owned(), format!(r#""task":"{TASK}""#)];
        let (a, b) = if first { (&fields[0], &fields[1]) } else { (&fields[1], &fields[0]) };
        let extra = extra.map_or(String::new(), |name| format!(r#",{space}"{name}":[1,{{}}]"#));
        let frame = format!("{space}{{{space}{a},{space}{b}{extra}{space}}}{space}");
        prop_assert!(cancels(&frame), "{}", frame);
        // The same frame naming another task cancels nothing.
        let other = frame.replace(TASK, "0123456789abcdef0123456789abcdef");
        prop_assert!(!cancels(&other));
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
