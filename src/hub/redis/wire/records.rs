//! The records and frames published and stored: a status's record (its text and fields), a
//! session's frame in a published message, and a task's change or a stop asked as frames of
//! their own.
//!
//! # Invariants
//!
//! - Parsing never panics on what Redis hands back: a malformed record or frame is `None`, and
//!   a reader skips field tags it does not know, so newer writers can add fields.
//! - Records number themselves relative to the one before (`skipped + 1`), so a frame's numbers
//!   follow from its `<first>` alone.

use std::sync::Arc;

use crate::hub::core::TaskRecord;
use crate::hub::event::Extra;
use crate::hub::TaskState;
use crate::{JsonData, Progress};

/// One record of a session's segment, with its number resolved.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::hub::redis) enum Record<'a> {
    /// A status, with its fields if it has any.
    Status(u64, &'a [u8], Option<Arc<Extra>>),
    /// Numbers up to this one are taken; those not seen are lost.
    Head(u64),
    /// The session was closed.
    Closed,
    /// A task changed state (a frame of its own, see [`Segment::Task`]).
    Task(TaskRecord),
    /// A stop was asked for a task (a frame of its own, see [`Segment::Cancel`]).
    Cancel(&'a str),
}

/// A status on its way to Redis: its text, and its fields if it has any.
#[derive(Debug, Clone)]
pub(in crate::hub::redis) struct Body {
    pub(in crate::hub::redis) text: Arc<str>,
    pub(in crate::hub::redis) extra: Option<Arc<Extra>>,
}

/// Appends the record of a status to `body`, numbered `skipped + 1` after the one before it
/// (the first after the message's base): `+<skipped> <len>\n<text>` for a status without
/// fields, else `*<skipped> <len>\n` and `<len>` bytes of fields, each `<tag> <len>\n<bytes>`:
/// `s` the text, `t` the task, `p` the progress (`<current>/<total>`), `l` the level, `k` the
/// key, `d` the data. A reader skips tags it does not know.
pub(in crate::hub::redis) fn push_status(body: &mut Vec<u8>, skipped: u64, status: &Body) {
    let text = &*status.text;
    let Some(extra) = status.extra.as_deref() else {
        body.extend_from_slice(format!("+{skipped} {}\n", text.len()).as_bytes());
        body.extend_from_slice(text.as_bytes());
        return;
    };
    let mut fields = Vec::with_capacity(text.len() + 64);
    let mut field = |tag: &str, value: &[u8]| {
        fields.extend_from_slice(format!("{tag} {}\n", value.len()).as_bytes());
        fields.extend_from_slice(value);
    };
    field("s", text.as_bytes());
    if let Some(task) = &extra.task {
        field("t", task.as_bytes());
    }
    if let Some(progress) = extra.progress {
        field(
            "p",
            format!("{}/{}", progress.current(), progress.total()).as_bytes(),
        );
    }
    if let Some(level) = extra.level() {
        field("l", level.as_str().as_bytes());
    }
    if let Some(key) = extra.key() {
        field("k", key.as_bytes());
    }
    if let Some(data) = extra.data() {
        field("d", data.as_str().as_bytes());
    }
    body.extend_from_slice(format!("*{skipped} {}\n", fields.len()).as_bytes());
    body.extend_from_slice(&fields);
}

/// The text and fields of a `*` record; `None` when malformed.
fn parse_fields(mut fields: &[u8]) -> Option<(&[u8], Extra)> {
    let mut text: &[u8] = b"";
    let mut extra = Extra::default();
    let (mut level, mut key, mut data) = (None, None, None);
    while !fields.is_empty() {
        let (line, rest) = split_line(fields)?;
        let (tag, len) = line.split_once(' ')?;
        let len: usize = len.parse().ok()?;
        let value = rest.get(..len)?;
        fields = &rest[len..];
        let as_str = || std::str::from_utf8(value).ok();
        match tag {
            "s" => text = value,
            "t" => extra.task = Some(Arc::from(as_str()?)),
            "p" => {
                let (current, total) = as_str()?.split_once('/')?;
                extra.progress = Some(Progress::new(current.parse().ok()?, total.parse().ok()?));
            }
            "l" => level = as_str()?.parse().ok(),
            "k" => key = Some(Box::from(as_str()?)),
            // Checked again: it goes into frames as it is.
            "d" => data = JsonData::new(as_str()?).ok(),
            _ => {}
        }
    }
    extra.set_rare(level, key, data);
    Some((text, extra))
}

/// A task message's record: `<task> <state> <last seq>\n<message>`.
fn parse_task(payload: &[u8]) -> Option<TaskRecord> {
    let (line, message) = split_line(payload)?;
    let mut words = line.splitn(3, ' ');
    let task = words.next().filter(|task| !task.is_empty())?;
    let state: TaskState = words.next()?.parse().ok()?;
    let last_seq = words.next()?.parse().ok()?;
    let message = std::str::from_utf8(message).ok()?;
    Some(TaskRecord {
        task: Arc::from(task),
        state,
        last_seq,
        message: (!message.is_empty()).then(|| Arc::from(message)),
    })
}

/// Appends `+<skipped> -\n`: `skipped` numbers after the last record are taken without a status.
pub(in crate::hub::redis) fn push_head(body: &mut Vec<u8>, skipped: u64) {
    body.extend_from_slice(format!("+{skipped} -\n").as_bytes());
}

/// Splits records into records with their numbers, the first numbered after `base`; `None` when
/// they are malformed.
pub(in crate::hub::redis) fn parse_records(
    base: u64,
    mut payload: &[u8],
) -> Option<Vec<Record<'_>>> {
    let mut seq = base;
    let mut records = Vec::new();
    while !payload.is_empty() {
        let (line, rest) = split_line(payload)?;
        let (with_fields, line) = match line.strip_prefix('*') {
            Some(line) => (true, line),
            None => (false, line.strip_prefix('+')?),
        };
        let (skipped, len) = line.split_once(' ')?;
        seq = seq.checked_add(skipped.parse().ok()?)?;
        if len == "-" && !with_fields {
            records.push(Record::Head(seq));
            payload = rest;
            continue;
        }
        seq = seq.checked_add(1)?;
        let len: usize = len.parse().ok()?;
        let bytes = rest.get(..len)?;
        records.push(if with_fields {
            let (text, extra) = parse_fields(bytes)?;
            Record::Status(seq, text, Some(Arc::new(extra)))
        } else {
            Record::Status(seq, bytes, None)
        });
        payload = &rest[len..];
    }
    Some(records)
}

/// One session's part of a published message. New kinds of frames (a cancel for the process
/// that runs a task, say) are new variants, named by the frame's `<first>` field as `x` names a
/// close.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::hub::redis) enum Segment<'a> {
    /// Records numbered after `base`.
    Batch { base: u64, records: &'a [u8] },
    /// The session was closed.
    Closed,
    /// A task changed state (`<first>` is `t`; the records are `<task> <state> <last
    /// seq>\n<message>`).
    Task(&'a [u8]),
    /// A stop was asked for a task (`<first>` is `c`; the records are the task's id).
    Cancel(&'a [u8]),
}

impl<'a> Segment<'a> {
    /// Its records with their numbers; `None` when they are malformed.
    pub(in crate::hub::redis) fn records(&self) -> Option<Vec<Record<'a>>> {
        match self {
            Segment::Batch { base, records } => parse_records(*base, records),
            Segment::Closed => Some(vec![Record::Closed]),
            Segment::Task(record) => Some(vec![Record::Task(parse_task(record)?)]),
            Segment::Cancel(task) => {
                let task = std::str::from_utf8(task)
                    .ok()
                    .filter(|task| !task.is_empty())?;
                Some(vec![Record::Cancel(task)])
            }
        }
    }
}

/// Splits a published message into its frames, one per session: `<id length> <records
/// length> <first>\n<id><records>` (`<first>` the first number the records take, `x` for a
/// closed session, `t` for a task's change, `c` for a stop asked); `None` when it is malformed.
pub(in crate::hub::redis) fn parse_frames(message: &[u8]) -> Option<Vec<(&str, Segment<'_>)>> {
    let mut frames = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let (line, after) = split_line(rest)?;
        let mut fields = line.splitn(3, ' ');
        let id_len: usize = fields.next()?.parse().ok()?;
        let records_len: usize = fields.next()?.parse().ok()?;
        let first = fields.next()?;
        let end = id_len.checked_add(records_len)?;
        let frame = after.get(..end)?;
        let id = std::str::from_utf8(&frame[..id_len]).ok()?;
        let records = &frame[id_len..];
        let segment = match first {
            "x" => Segment::Closed,
            "t" => Segment::Task(records),
            "c" => Segment::Cancel(records),
            first => Segment::Batch {
                base: first.parse::<u64>().ok()?.checked_sub(1)?,
                records,
            },
        };
        frames.push((id, segment));
        rest = &after[end..];
    }
    Some(frames)
}

fn split_line(payload: &[u8]) -> Option<(&str, &[u8])> {
    let end = payload.iter().position(|&b| b == b'\n')?;
    Some((
        std::str::from_utf8(&payload[..end]).ok()?,
        &payload[end + 1..],
    ))
}
