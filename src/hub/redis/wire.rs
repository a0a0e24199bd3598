//! What goes over the wire: key names and where they live, the Lua scripts, the frames and
//! records published, connections (one Redis or a cluster), timeouts and backoff.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::hub::core::TaskRecord;
use crate::hub::event::Extra;
use crate::hub::TaskState;
use crate::{JsonData, Progress};

/// Appends statuses of several sessions (see the script's header).
pub(super) const APPEND: &str = include_str!("append.lua");
/// Reads a session's history together with its counter.
pub(super) const READ: &str = include_str!("read.lua");
/// Ends a session everywhere.
pub(super) const CLOSE: &str = include_str!("close.lua");
/// Records a task's state and tells every process serving its session.
pub(super) const TASK: &str = include_str!("task.lua");
/// Asks a task to stop, wherever it runs.
pub(super) const CANCEL: &str = include_str!("cancel.lua");

/// Where a session's keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis-cluster"), allow(dead_code))]
pub(super) enum Layout {
    /// One Redis: each session's keys carry the session as their hash tag
    /// (`{prefix}:{<session>}:meta`, `:log`, `:ch`), a channel per session, and one script call
    /// serves any sessions (one Redis runs a script over keys of any slot).
    Single,
    /// A Redis Cluster: sessions fall into `partitions` groups by a hash of their id, and every
    /// key of a partition carries its hash tag (`{prefix}:{p<n>.<k>}:meta:<session>`,
    /// `:log:<session>`, one channel `{prefix}:{p<n>.<k>}:ch` per partition), so one script call
    /// serves the sessions of one partition on the shard that owns it.
    Cluster {
        /// At least 1.
        partitions: u32,
    },
}

/// Key names.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    layout: Layout,
    /// Each partition's hash tag (cluster only).
    tags: Arc<[String]>,
}

/// The cluster slot of a hash tag: CRC16 (XMODEM) modulo 16,384, as Redis computes it.
fn slot(tag: &str) -> u16 {
    let crc = tag.bytes().fold(0u16, |crc, byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    });
    crc % 16_384
}

/// A hash tag per partition, `p<n>.<k>` with the least `k` whose slot falls in the `n`th of
/// `partitions` equal parts of the slot space: so partitions spread over the masters as evenly
/// as the slots do, and every process finds the same tags.
fn spread_tags(partitions: u32) -> Vec<String> {
    let partitions = partitions.max(1);
    (0..partitions)
        .map(|n| {
            let from = u64::from(n) * 16_384 / u64::from(partitions);
            let to = (u64::from(n) + 1) * 16_384 / u64::from(partitions);
            (0..1_000_000u32)
                .map(|k| format!("p{n}.{k}"))
                .find(|tag| (from..to).contains(&u64::from(slot(tag))))
                .unwrap_or_else(|| format!("p{n}"))
        })
        .collect()
}

/// FNV-1a of the id: the same in every process and every version, so processes agree on
/// partitions.
fn stable_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Keys {
    pub(super) fn new(prefix: &str, layout: Layout) -> Self {
        let tags = match layout {
            Layout::Single => Vec::new(),
            Layout::Cluster { partitions } => spread_tags(partitions),
        };
        Self {
            prefix: prefix.to_owned(),
            layout,
            tags: tags.into(),
        }
    }

    fn tag(&self, group: u32) -> &str {
        self.tags.get(group as usize).map_or("p", String::as_str)
    }

    pub(super) fn layout(&self) -> Layout {
        self.layout
    }

    /// The group of sessions one script call may serve: always 0 on one Redis, the partition on
    /// a cluster.
    pub(super) fn group(&self, session: &str) -> u32 {
        match self.layout {
            Layout::Single => 0,
            Layout::Cluster { partitions } => {
                (stable_hash(session) % u64::from(partitions.max(1))) as u32
            }
        }
    }

    fn key(&self, session: &str, kind: &str) -> String {
        match self.layout {
            Layout::Single => format!("{}:{{{}}}:{}", self.prefix, session, kind),
            Layout::Cluster { .. } => {
                format!(
                    "{}:{{{}}}:{}:{}",
                    self.prefix,
                    self.tag(self.group(session)),
                    kind,
                    session
                )
            }
        }
    }

    /// The session's close tokens: a hash whose fields `w:<writer>` hold the last close token
    /// each writer applied there, and `cw:<writer>` the answer it gave.
    pub(super) fn meta(&self, session: &str) -> String {
        self.key(session, "meta")
    }

    /// The session's history, which is also its counter: a stream whose ids are
    /// `0-<first number of the batch>` (see append.lua); it exists while the session does.
    pub(super) fn log(&self, session: &str) -> String {
        self.key(session, "log")
    }

    /// The channel that carries the session's statuses: its own on one Redis, its partition's
    /// on a cluster.
    pub(super) fn channel(&self, session: &str) -> String {
        match self.layout {
            Layout::Single => self.key(session, "ch"),
            Layout::Cluster { .. } => self.group_channel(self.group(session)),
        }
    }

    /// The session's tasks: a hash whose fields `t:<task>` hold each task's state
    /// (`<state> <last seq> <order>\n<message>`), `c:<task>` a stop asked for a task, and `n`
    /// the last order given.
    pub(super) fn tasks(&self, session: &str) -> String {
        self.key(session, "tasks")
    }

    /// A partition's channel (cluster only).
    pub(super) fn group_channel(&self, group: u32) -> String {
        format!("{}:{{{}}}:ch", self.prefix, self.tag(group))
    }

    /// The channel one append call publishes on for all its sessions, or `None` when each
    /// session publishes on its own.
    fn call_channel(&self, group: u32) -> Option<String> {
        match self.layout {
            Layout::Single => None,
            Layout::Cluster { .. } => Some(self.group_channel(group)),
        }
    }

    fn publish(&self) -> &'static str {
        match self.layout {
            Layout::Single => "PUBLISH",
            Layout::Cluster { .. } => "SPUBLISH",
        }
    }

    /// Changes whenever Redis starts without the data it had (see the module docs; one Redis
    /// only).
    pub(super) fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// The partition a cluster channel belongs to.
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code))]
    pub(super) fn group_of(&self, channel: &str) -> Option<u32> {
        let tag = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:ch")?;
        let group: u32 = tag.strip_prefix('p')?.split('.').next()?.parse().ok()?;
        (self.tag(group) == tag).then_some(group)
    }
}

/// One record of a session's segment, with its number resolved.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Record<'a> {
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
pub(super) struct Body {
    pub(super) text: Arc<str>,
    pub(super) extra: Option<Arc<Extra>>,
}

/// Appends the record of a status to `body`, numbered `skipped + 1` after the one before it
/// (the first after the message's base): `+<skipped> <len>\n<text>` for a status without
/// fields, else `*<skipped> <len>\n` and `<len>` bytes of fields, each `<tag> <len>\n<bytes>`:
/// `s` the text, `t` the task, `p` the progress (`<current>/<total>`), `l` the level, `k` the
/// key, `d` the data. A reader skips tags it does not know.
pub(super) fn push_status(body: &mut Vec<u8>, skipped: u64, status: &Body) {
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
    if let Some(level) = extra.level {
        field("l", level.as_str().as_bytes());
    }
    if let Some(key) = &extra.key {
        field("k", key.as_bytes());
    }
    if let Some(data) = &extra.data {
        field("d", data.as_str().as_bytes());
    }
    body.extend_from_slice(format!("*{skipped} {}\n", fields.len()).as_bytes());
    body.extend_from_slice(&fields);
}

/// The text and fields of a `*` record; `None` when malformed.
fn parse_fields(mut fields: &[u8]) -> Option<(&[u8], Extra)> {
    let mut text: &[u8] = b"";
    let mut extra = Extra::default();
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
            "l" => extra.level = as_str()?.parse().ok(),
            "k" => extra.key = Some(Box::from(as_str()?)),
            // Checked again: it goes into frames as it is.
            "d" => extra.data = JsonData::new(as_str()?).ok(),
            _ => {}
        }
    }
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
pub(super) fn push_head(body: &mut Vec<u8>, skipped: u64) {
    body.extend_from_slice(format!("+{skipped} -\n").as_bytes());
}

/// Splits records into records with their numbers, the first numbered after `base`; `None` when
/// they are malformed.
pub(super) fn parse_records(base: u64, mut payload: &[u8]) -> Option<Vec<Record<'_>>> {
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
pub(super) enum Segment<'a> {
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
    pub(super) fn records(&self) -> Option<Vec<Record<'a>>> {
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
pub(super) fn parse_frames(message: &[u8]) -> Option<Vec<(&str, Segment<'_>)>> {
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

/// A status read back from history: its number, text and fields.
pub(super) type Stored = (u64, String, Option<Arc<Extra>>);

/// The result of the read script: the session's counter, and the statuses numbered
/// `from..=to` that its history holds, in order.
pub(super) fn parse_read(value: Value, from: u64, to: u64) -> Option<(u64, Vec<Stored>)> {
    let Value::Array(mut parts) = value else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let entries = parts.pop()?;
    let head = match parts.pop()? {
        Value::Int(n) => u64::try_from(n).ok()?,
        _ => return None,
    };
    let Value::Array(entries) = entries else {
        return None;
    };
    let mut out = Vec::new();
    for entry in entries {
        let Value::Array(entry) = entry else {
            return None;
        };
        let mut entry = entry.into_iter();
        // The id `0-<first number>`: the batch's base is one below.
        let first: u64 = match entry.next()? {
            Value::BulkString(id) => std::str::from_utf8(&id)
                .ok()?
                .strip_prefix("0-")?
                .parse()
                .ok()?,
            Value::SimpleString(id) => id.strip_prefix("0-")?.parse().ok()?,
            _ => return None,
        };
        // Fields `m` (the records) and `n`; RESP3 may answer with a map.
        let records = match entry.next()? {
            Value::Array(fields) => fields.into_iter().nth(1),
            Value::Map(fields) => fields.into_iter().next().map(|(_, v)| v),
            _ => None,
        };
        let Some(Value::BulkString(records)) = records else {
            return None;
        };
        for record in parse_records(first.checked_sub(1)?, &records)? {
            if let Record::Status(seq, text, extra) = record {
                if (from..=to).contains(&seq) {
                    out.push((seq, String::from_utf8_lossy(text).into_owned(), extra));
                }
            }
        }
    }
    Some((head, out))
}

/// Reads `{applied, counter...}` as returned by the append script: whether it ran, and each
/// session's counter after it.
pub(super) fn parse_append(value: &Value) -> Option<(bool, Vec<u64>)> {
    let Value::Array(parts) = value else {
        return None;
    };
    let (applied, counters) = parts.split_first()?;
    let Value::Int(applied) = applied else {
        return None;
    };
    let counters = counters
        .iter()
        .map(|counter| match counter {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .collect::<Option<Vec<u64>>>()?;
    Some((*applied == 1, counters))
}

/// Whether the close script found the session (its reply is 1 when it did).
pub(super) fn parse_close(value: &Value) -> bool {
    matches!(value, Value::Int(1))
}

/// The scripts' hashes (the same on every server, computed here), for `EVALSHA`.
#[derive(Debug, Clone)]
pub(super) struct Scripts {
    pub(super) append: String,
    pub(super) read: String,
    pub(super) close: String,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let hash = |code: &str| redis::Script::new(code).get_hash().to_owned();
        Self {
            append: hash(APPEND),
            read: hash(READ),
            close: hash(CLOSE),
        }
    }

    /// Loads the scripts into every server `conn` reaches (each master of a cluster). A
    /// restarted or promoted server may not have them, so this runs on every connect and
    /// whenever a server answers `NOSCRIPT`.
    pub(super) async fn load(conn: &mut Conn) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for code in [APPEND, READ, CLOSE] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(code).ignore();
        }
        match conn {
            Conn::Single(conn) => pipe.query_async::<()>(conn).await,
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => {
                use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
                for code in [APPEND, READ, CLOSE] {
                    let mut cmd = redis::cmd("SCRIPT");
                    cmd.arg("LOAD").arg(code);
                    let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                    conn.route_command(cmd, all).await?;
                }
                Ok(())
            }
        }
    }

    /// `EVALSHA` of the read script for `session`, from `from` to `to` (`None`: the end; `from`
    /// `None`: only the counter); with `touch_ms` above 0 it also opens the session and renews
    /// its key for that long.
    pub(super) fn read_cmd(
        &self,
        keys: &Keys,
        session: &str,
        from: Option<u64>,
        to: Option<u64>,
        touch_ms: u64,
    ) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.read).arg(1).arg(keys.log(session));
        match from {
            Some(from) => cmd.arg(from),
            None => cmd.arg("-"),
        };
        match to {
            Some(to) => cmd.arg(to),
            None => cmd.arg("+"),
        };
        cmd.arg(touch_ms);
        cmd
    }
}

/// One session's part of an append call.
pub(super) struct Append<'a> {
    pub(super) session: &'a str,
    /// The counter is raised to at least this first.
    pub(super) floor: u64,
    /// `(numbers skipped before it, status)` per status.
    pub(super) items: &'a [(u64, Body)],
    /// Numbers skipped after the last status.
    pub(super) trailing: u64,
    /// Numbers of a call of unknown fate, reserved after the floor (0: none). They are taken
    /// after the statuses and `trailing`, unless the counter already stands exactly at
    /// `floor + reserve` (a process that saw the call raised it there): then the session's part
    /// takes nothing (see append.lua).
    pub(super) reserve: u64,
    /// Renew the time to live of the session's keys.
    pub(super) renew: bool,
}

/// What every append call carries besides its sessions.
pub(super) struct Call<'a> {
    /// The group (partition) of every session of the call.
    pub(super) group: u32,
    /// `w:<writer id>`, with `token` 0 for a call that needs no token.
    pub(super) writer: &'a str,
    pub(super) token: u64,
    /// The call may have run before (its reply was lost): the script checks its token.
    pub(super) check: bool,
    pub(super) capacity: usize,
    /// Time to live of a renewed key.
    pub(super) key_ttl_ms: u64,
}

impl Scripts {
    /// `EVALSHA` of the append script for `sessions`, all of `call.group`.
    pub(super) fn append_cmd(&self, keys: &Keys, call: &Call<'_>, sessions: &[Append<'_>]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.append).arg(sessions.len());
        for append in sessions {
            cmd.arg(keys.log(append.session));
        }
        let shared = keys.call_channel(call.group);
        cmd.arg(keys.publish())
            .arg(shared.as_deref().unwrap_or(""))
            .arg(call.capacity)
            .arg(call.key_ttl_ms);
        if call.token == 0 {
            cmd.arg("");
        } else {
            cmd.arg(format!("{}:{}", call.writer, call.token));
        }
        cmd.arg(if call.check { "1" } else { "0" });
        let mut body = Vec::new();
        for append in sessions {
            body.clear();
            let after = append.trailing.saturating_add(append.reserve);
            let mut numbers = after;
            for (skip, status) in append.items {
                push_status(&mut body, *skip, status);
                numbers = numbers.saturating_add(skip.saturating_add(1));
            }
            if after > 0 || append.items.is_empty() {
                push_head(&mut body, after);
            }
            if append.items.is_empty() && after == 0 {
                // Only the floor: nothing to number.
                body.clear();
            }
            let own = match shared {
                Some(_) => String::new(),
                None => keys.channel(append.session),
            };
            cmd.arg(append.session)
                .arg(format!("{} {} ", append.session.len(), body.len()))
                .arg(own)
                .arg(append.floor)
                .arg(numbers)
                .arg(if append.renew { "1" } else { "0" })
                .arg(append.reserve)
                .arg(body.as_slice());
        }
        cmd
    }

    /// `EVALSHA` of the close script.
    pub(super) fn close_cmd(
        &self,
        keys: &Keys,
        ttl_ms: u64,
        session: &str,
        writer: &str,
        token: u64,
    ) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.close)
            .arg(2)
            .arg(keys.meta(session))
            .arg(keys.log(session))
            .arg(keys.publish())
            .arg(keys.channel(session))
            .arg(ttl_ms)
            .arg(writer)
            .arg(token)
            .arg(session);
        cmd
    }
}

/// `EVAL` of the task script: records `state` for `task` of `session` and tells every process
/// serving it. Task changes are few, so the script travels with each call instead of being
/// loaded on every server.
pub(super) fn task_cmd(
    keys: &Keys,
    ttl_ms: u64,
    capacity: usize,
    session: &str,
    task: &str,
    state: TaskState,
    message: Option<&str>,
) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(TASK)
        .arg(2)
        .arg(keys.tasks(session))
        .arg(keys.log(session))
        .arg(keys.publish())
        .arg(keys.channel(session))
        .arg(session)
        .arg(task)
        .arg(state.as_str())
        .arg(message.unwrap_or(""))
        .arg(ttl_ms.max(1))
        .arg(capacity);
    cmd
}

/// The task script's reply: the session's counter when the state was recorded (its
/// `last_seq`), and whether a stop had been asked for the task.
pub(super) fn parse_task_reply(value: &Value) -> Option<(u64, bool)> {
    let Value::Array(parts) = value else {
        return None;
    };
    match parts.as_slice() {
        [Value::Int(seq), Value::Int(asked)] => Some((u64::try_from(*seq).ok()?, *asked == 1)),
        _ => None,
    }
}

/// `EVAL` of the cancel script for `task` of `session`.
pub(super) fn cancel_cmd(
    keys: &Keys,
    ttl_ms: u64,
    capacity: usize,
    session: &str,
    task: &str,
) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(CANCEL)
        .arg(2)
        .arg(keys.tasks(session))
        .arg(keys.log(session))
        .arg(keys.publish())
        .arg(keys.channel(session))
        .arg(session)
        .arg(task)
        .arg(ttl_ms.max(1))
        .arg(capacity);
    cmd
}

/// What the cancel script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cancelled {
    /// The task's state after the request.
    State(TaskState),
    /// The session has no such task (the stop is kept for a while in case it registers).
    UnknownTask,
    /// No such session.
    UnknownSession,
}

/// Reads the cancel script's reply.
pub(super) fn parse_cancel_reply(value: &Value) -> Option<Cancelled> {
    let reply = match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?,
        Value::SimpleString(text) => text.as_str(),
        _ => return None,
    };
    Some(match reply {
        "unknown" => Cancelled::UnknownTask,
        "nosession" => Cancelled::UnknownSession,
        state => Cancelled::State(state.parse().ok()?),
    })
}

/// A session's tasks as `HGETALL` of its tasks hash gives them: each task's record, oldest
/// first, and the tasks a stop was asked for.
pub(super) fn parse_tasks(value: Value) -> Option<(Vec<TaskRecord>, Vec<String>)> {
    let fields: Vec<(String, String)> = match value {
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Some((bulk(k)?, bulk(v)?)))
            .collect::<Option<_>>()?,
        Value::Array(flat) => {
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                fields.push((bulk(k)?, bulk(v)?));
            }
            fields
        }
        _ => return None,
    };
    let mut tasks = Vec::new();
    let mut asked = Vec::new();
    for (field, value) in fields {
        if let Some(task) = field.strip_prefix("t:") {
            // `<state> <last seq> <order>\n<message>`
            let (line, message) = value.split_once('\n')?;
            let mut words = line.split(' ');
            let state: TaskState = words.next()?.parse().ok()?;
            let last_seq: u64 = words.next()?.parse().ok()?;
            let order: u64 = words.next()?.parse().ok()?;
            let record = TaskRecord {
                task: Arc::from(task),
                state,
                last_seq,
                message: (!message.is_empty()).then(|| Arc::from(message)),
            };
            tasks.push((order, record));
        } else if let Some(task) = field.strip_prefix("c:") {
            asked.push(task.to_owned());
        }
    }
    tasks.sort_by_key(|(order, _)| *order);
    Some((tasks.into_iter().map(|(_, record)| record).collect(), asked))
}

fn bulk(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// Adds to `pipe` what renews the time to live of `session`'s history and of its tasks (which
/// a long quiet task would otherwise outlive).
pub(super) fn touch(pipe: &mut Pipeline, keys: &Keys, session: &str, ttl_ms: u64) {
    pipe.cmd("PEXPIRE")
        .arg(keys.log(session))
        .arg(ttl_ms)
        .ignore()
        .cmd("PEXPIRE")
        .arg(keys.tasks(session))
        .arg(ttl_ms)
        .ignore();
}

/// A command connection: to one Redis, or to a cluster (which routes each command to the shard
/// that owns its keys, and follows failovers and slot moves by itself).
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipe, offset, count),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => conn.req_packed_commands(pipe, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Whether an error says the server has no such script (it restarted or was flushed): the
/// command did not run, so sending it again after loading is safe.
pub(super) fn is_noscript(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Opens a multiplexed command connection; every command on it times out after `timeout`.
pub(super) async fn connect(
    client: &Client,
    timeout: Duration,
) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Opens a pub/sub connection within `timeout`.
pub(super) async fn connect_pubsub(
    client: &Client,
    timeout: Duration,
) -> RedisResult<(PubSubSink, PubSubStream)> {
    match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
        Ok(pubsub) => Ok(pubsub?.split()),
        Err(_) => Err(timed_out()),
    }
}

/// The error for a pub/sub request that got no answer in time.
pub(super) fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis did not answer in time",
    ))
}

/// Runs `fut` within `timeout`, turning the timeout into an I/O error.
pub(super) async fn within<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// Reads the data epoch, creating it if Redis has none. A Redis that restarted without its data
/// has no epoch; the first process to reconnect writes a new one, and every process that saw
/// the old one learns that history and counters were lost.
pub(super) async fn epoch(conn: &mut MultiplexedConnection, keys: &Keys) -> RedisResult<String> {
    let (epoch,): (String,) = redis::pipe()
        .cmd("SET")
        .arg(keys.epoch())
        .arg(random_id())
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(keys.epoch())
        .query_async(conn)
        .await?;
    Ok(epoch)
}

/// 64 random bits as hex, from the standard library's per-process random hash keys.
pub(super) fn random_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:016x}",
        RandomState::new().hash_one((nanos, std::process::id()))
    )
}

/// An interval that skips the ticks it missed instead of bursting.
pub(super) fn ticker(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Exponential reconnect delays from `min`, doubling up to `max`.
#[derive(Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt.
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub(super) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(single.channel("s"), "app:{s}:ch");
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
        let extra = Extra {
            task: Some(Arc::from("t1")),
            progress: Some(Progress::new(3, 10)),
            level: Some(crate::Level::Warn),
            key: Some(Box::from("k\ney")),
            data: Some(JsonData::new(r#"{"a": [1, "x\ny"]}"#).unwrap()),
        };
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
}
