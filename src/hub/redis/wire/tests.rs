//! Unit tests of the wire format: records, frames, key names, replies and backoff, without a
//! Redis.

use std::sync::Arc;

use super::keys::slot;
use super::*;
use crate::hub::core::TaskRecord;
use crate::hub::event::Extra;
use crate::hub::TaskState;
use crate::{JsonData, Progress};

#[test]
fn records_are_numbered_from_the_base() {
    let plain = |text: &str| Body {
        text: Arc::from(text),
        extra: None,
    };
    let mut body = Vec::new();
    push_status(&mut body, 0, &plain("hello"));
    push_status(&mut body, 2, &plain(""));
    // Texts may hold anything, newlines included.
    push_status(&mut body, 0, &plain("a\nb"));
    push_head(&mut body, 3);
    assert_eq!(
        parse_records(6, &body),
        Some(vec![
            Record::Status(7, b"hello", None),
            Record::Status(10, b"", None),
            Record::Status(11, b"a\nb", None),
            Record::Head(14),
        ])
    );
    assert_eq!(parse_records(1, b"+0 9\nshort"), None);
    assert_eq!(parse_records(1, b"nonsense"), None);
}

#[test]
fn frames_carry_each_session_and_its_records() {
    let mut records = Vec::new();
    push_status(
        &mut records,
        0,
        &Body {
            text: Arc::from("hi"),
            extra: None,
        },
    );
    let mut message = format!("1 {} 7\na", records.len()).into_bytes();
    message.extend_from_slice(&records);
    message.extend_from_slice(b"4 0 x\nb{c}");
    let frames = parse_frames(&message).unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].0, "a");
    assert_eq!(
        frames[0].1.records(),
        Some(vec![Record::Status(7, b"hi", None)])
    );
    assert_eq!(frames[1], ("b{c}", Segment::Closed));
    assert_eq!(parse_frames(b"1 9 1\nashort"), None);
    assert_eq!(parse_frames(b"1 0 0\na"), None);
    assert_eq!(parse_frames(b""), Some(vec![]));
}

#[test]
fn one_redis_keeps_a_tag_per_session_and_a_cluster_one_per_partition() {
    let single = Keys::new("app", Layout::Single);
    assert_eq!(single.meta("s"), "app:{s}:meta");
    // One channel for every session, which no session's key can be.
    assert_eq!(single.channel("s"), "app:ch");
    assert_eq!(single.channel("t"), "app:ch");
    assert_ne!(single.log("ch"), "app:ch");
    assert_eq!(single.group("s"), 0);
    let cluster = Keys::new("app", Layout::Cluster { partitions: 16 });
    let group = cluster.group("s");
    assert!(group < 16);
    let tag = cluster.tag(group).to_owned();
    assert!(tag.starts_with(&format!("p{group}.")));
    assert_eq!(cluster.log("s"), format!("app:{{{tag}}}:log:s"));
    assert_eq!(cluster.channel("s"), format!("app:{{{tag}}}:ch"));
    assert_eq!(cluster.group_of(&cluster.channel("s")), Some(group));
    assert_eq!(cluster.group_of("other:{p1.0}:ch"), None);
    assert_eq!(cluster.group_of("app:{p1.999999}:ch"), None);
    // Partition n's slot is in the nth sixteenth of the slot space.
    for n in 0..16u32 {
        let slot = u32::from(slot(cluster.tag(n)));
        assert_eq!(slot * 16 / 16_384, n, "{}", cluster.tag(n));
    }
    // Redis's own figures for two tags.
    assert_eq!(slot("foo"), 12_182);
    assert_eq!(slot("bar"), 5_061);
    // Partitions are a pure function of the id, so every process agrees.
    let spread: std::collections::HashSet<u32> = (0..200)
        .map(|i| cluster.group(&format!("session-{i}")))
        .collect();
    assert_eq!(spread.len(), 16);
}

#[test]
fn fields_and_task_frames_go_through() {
    let mut extra = Extra::new(Some(Arc::from("t1")), Some(Progress::new(3, 10)));
    extra.set_rare(
        Some(crate::Level::Warn),
        Some(Box::from("k\ney")),
        Some(JsonData::new(r#"{"a": [1, "x\ny"]}"#).unwrap()),
    );
    let full = Body {
        text: Arc::from("line\nbreak"),
        extra: Some(Arc::new(extra.clone())),
    };
    let bare = Body {
        text: Arc::from("bare"),
        extra: Some(Arc::new(Extra::default())),
    };
    let mut records = Vec::new();
    push_status(&mut records, 1, &full);
    push_status(&mut records, 0, &bare);
    // A tag this version does not know is skipped.
    records.extend_from_slice(b"*0 12\ns 1\nxz 3\nnew");
    assert_eq!(
        parse_records(0, &records),
        Some(vec![
            Record::Status(2, b"line\nbreak", Some(Arc::new(extra))),
            Record::Status(3, b"bare", Some(Arc::new(Extra::default()))),
            Record::Status(4, b"x", Some(Arc::new(Extra::default()))),
        ])
    );
    assert_eq!(parse_records(0, b"*0 9\ns 5\nab"), None);
    assert_eq!(parse_records(0, b"*0 7\np 3\n1-2"), None);

    let frames = parse_frames(b"1 17 t\nsabc cancelling 7\n1 3 c\nsabc").unwrap();
    assert_eq!(
        frames[0].1.records(),
        Some(vec![Record::Task(TaskRecord {
            task: Arc::from("abc"),
            state: TaskState::Cancelling,
            last_seq: 7,
            message: None,
        })])
    );
    assert_eq!(frames[1].1.records(), Some(vec![Record::Cancel("abc")]));
    assert_eq!(
        Segment::Task(b"abc failed 9\nno\nresults").records(),
        Some(vec![Record::Task(TaskRecord {
            task: Arc::from("abc"),
            state: TaskState::Failed,
            last_seq: 9,
            message: Some(Arc::from("no\nresults")),
        })])
    );
    assert_eq!(Segment::Task(b"abc paused 9\n").records(), None);
    assert_eq!(Segment::Cancel(b"").records(), None);
}

#[test]
fn a_tasks_hash_reads_back_oldest_first() {
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    let value = Value::Array(vec![
        bulk("n"),
        bulk("2"),
        bulk("t:late"),
        bulk("running 5 2\n"),
        bulk("c:late"),
        bulk("1"),
        bulk("t:early"),
        bulk("failed 3 1\ntimed out"),
    ]);
    let (tasks, asked) = parse_tasks(value).unwrap();
    let ids: Vec<_> = tasks.iter().map(|t| &*t.task).collect();
    assert_eq!(ids, ["early", "late"]);
    assert_eq!(tasks[0].message.as_deref(), Some("timed out"));
    assert_eq!((tasks[1].state, tasks[1].last_seq), (TaskState::Running, 5));
    assert_eq!(asked, ["late"]);
}

#[test]
fn backoff_doubles_up_to_its_max() {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
    let delays: Vec<_> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
    assert_eq!(delays, vec![100, 200, 350, 350]);
    backoff.reset();
    assert_eq!(backoff.next_delay().as_millis(), 100);
}
