//! What goes over the wire: key names, the Lua scripts, the records published per session, and
//! connecting with timeouts and backoff.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, Cmd, RedisResult, Value};

use crate::hub::core::TaskRecord;
use crate::hub::event::Extra;
use crate::hub::TaskState;
use crate::{JsonData, Progress};

/// Appends statuses to a session (see the script's header).
pub(super) const APPEND: &str = include_str!("append.lua");
/// Reads a session's history together with its counter.
pub(super) const READ: &str = include_str!("read.lua");
/// Ends a session everywhere.
pub(super) const CLOSE: &str = include_str!("close.lua");
/// Records a task's state and tells every process serving its session.
pub(super) const TASK: &str = include_str!("task.lua");
/// Asks a task to stop, wherever it runs.
pub(super) const CANCEL: &str = include_str!("cancel.lua");

/// Key names. Every key of one session shares the hash tag `{session}`, so a script only ever
/// touches one cluster slot.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, session: &str, kind: &str) -> String {
        format!("{}:{{{}}}:{}", self.prefix, session, kind)
    }

    /// The session: a hash whose field `seq` (the last number given) exists while the session
    /// does, and whose fields `w:<writer>` hold the last token each writer applied.
    pub(super) fn meta(&self, session: &str) -> String {
        self.key(session, "meta")
    }

    /// The session's history: a stream whose ids are `{seq}-0`.
    pub(super) fn log(&self, session: &str) -> String {
        self.key(session, "log")
    }

    /// The session's pub/sub channel.
    pub(super) fn channel(&self, session: &str) -> String {
        self.key(session, "ch")
    }

    /// The session's tasks: a hash whose fields `t:<task>` hold each task's state
    /// (`<state> <last seq> <order>\n<message>`), `c:<task>` a stop asked for a task, and `n`
    /// the last order given.
    pub(super) fn tasks(&self, session: &str) -> String {
        self.key(session, "tasks")
    }

    /// Changes whenever Redis starts without the data it had (see the module docs).
    pub(super) fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// The session a channel name belongs to.
    pub(super) fn session_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:ch")
    }
}

/// One record of a message published on a session's channel, with its number resolved.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Record<'a> {
    /// A status, with its fields if it has any.
    Status(u64, &'a [u8], Option<Arc<Extra>>),
    /// Numbers up to this one are taken; those not seen are lost.
    Head(u64),
    /// The session was closed.
    Closed,
    /// A task changed state (a message of its own: `t\n<task> <state> <last seq>\n<message>`).
    Task(TaskRecord),
    /// A stop was asked for a task (a message of its own: `c\n<task>`).
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

/// Splits a published message (`<base>\n` and records, or `x\n`) into records with their
/// numbers; `None` when it is malformed.
pub(super) fn parse(payload: &[u8]) -> Option<Vec<Record<'_>>> {
    if payload == b"x\n" {
        return Some(vec![Record::Closed]);
    }
    if let Some(task) = payload.strip_prefix(b"t\n") {
        return Some(vec![Record::Task(parse_task(task)?)]);
    }
    if let Some(task) = payload.strip_prefix(b"c\n") {
        let task = std::str::from_utf8(task)
            .ok()
            .filter(|task| !task.is_empty())?;
        return Some(vec![Record::Cancel(task)]);
    }
    let (line, mut payload) = split_line(payload)?;
    let mut seq: u64 = line.parse().ok()?;
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
        let Some(Value::Array(fields)) = entry.into_iter().nth(1) else {
            return None;
        };
        // Fields `m` (the message) and `l`.
        let Some(Value::BulkString(message)) = fields.into_iter().nth(1) else {
            return None;
        };
        for record in parse(&message)? {
            if let Record::Status(seq, text, extra) = record {
                if (from..=to).contains(&seq) {
                    out.push((seq, String::from_utf8_lossy(text).into_owned(), extra));
                }
            }
        }
    }
    Some((head, out))
}

/// Reads `{applied, counter}` as returned by the append script.
pub(super) fn parse_append(value: &Value) -> Option<(bool, u64)> {
    let Value::Array(parts) = value else {
        return None;
    };
    match parts.as_slice() {
        [Value::Int(applied), Value::Int(counter)] => {
            Some((*applied == 1, u64::try_from(*counter).ok()?))
        }
        _ => None,
    }
}

/// Whether the close script found the session (its reply is 1 when it did).
pub(super) fn parse_close(value: &Value) -> bool {
    matches!(value, Value::Int(1))
}

/// Script hashes as loaded on the current connection's server.
#[derive(Debug, Clone)]
pub(super) struct Scripts {
    pub(super) append: String,
    pub(super) read: String,
    pub(super) close: String,
}

impl Scripts {
    /// Loads the scripts; a restarted Redis has forgotten them, so this runs on every connect.
    pub(super) async fn load(conn: &mut MultiplexedConnection) -> RedisResult<Self> {
        let (append, read, close): (String, String, String) = redis::pipe()
            .cmd("SCRIPT")
            .arg("LOAD")
            .arg(APPEND)
            .cmd("SCRIPT")
            .arg("LOAD")
            .arg(READ)
            .cmd("SCRIPT")
            .arg("LOAD")
            .arg(CLOSE)
            .query_async(conn)
            .await?;
        Ok(Self {
            append,
            read,
            close,
        })
    }

    /// `EVALSHA` of the read script for `session`, from `from` to `to` (`None`: the end).
    pub(super) fn read_cmd(&self, keys: &Keys, session: &str, from: u64, to: Option<u64>) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.read)
            .arg(2)
            .arg(keys.meta(session))
            .arg(keys.log(session))
            .arg(from);
        match to {
            Some(to) => cmd.arg(to),
            None => cmd.arg("+"),
        };
        cmd
    }
}

/// One call of the append script.
pub(super) struct Append<'a> {
    pub(super) session: &'a str,
    /// `w:<writer id>`, or empty with `token` 0 for a call that needs no token.
    pub(super) writer: &'a str,
    pub(super) token: u64,
    /// The counter is raised to at least this first.
    pub(super) floor: u64,
    /// `(numbers skipped before it, status)` per status.
    pub(super) items: &'a [(u64, Body)],
    /// Numbers skipped after the last status.
    pub(super) trailing: u64,
}

impl Scripts {
    /// `EVALSHA` of the append script.
    pub(super) fn append_cmd(
        &self,
        keys: &Keys,
        capacity: usize,
        ttl_ms: u64,
        call: &Append<'_>,
    ) -> Cmd {
        let mut body = Vec::new();
        let mut numbers = call.trailing;
        for (skip, status) in call.items {
            push_status(&mut body, *skip, status);
            numbers += skip + 1;
        }
        if call.trailing > 0 || call.items.is_empty() {
            push_head(&mut body, call.trailing);
        }
        let first_skip = call.items.first().map(|(skip, _)| skip.to_string());
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.append)
            .arg(2)
            .arg(keys.meta(call.session))
            .arg(keys.log(call.session))
            .arg(keys.channel(call.session))
            .arg(capacity)
            .arg(ttl_ms)
            .arg(call.writer)
            .arg(call.token)
            .arg(call.floor)
            .arg(numbers)
            .arg(first_skip.as_deref().unwrap_or("-"))
            .arg(body);
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
            .arg(keys.channel(session))
            .arg(ttl_ms)
            .arg(writer)
            .arg(token);
        cmd
    }
}

/// `EVAL` of the task script: records `state` for `task` of `session` and tells every process
/// serving it. Task changes are few, so the script travels with each call instead of being
/// loaded on every connection.
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
        .arg(3)
        .arg(keys.meta(session))
        .arg(keys.tasks(session))
        .arg(keys.log(session))
        .arg(keys.channel(session))
        .arg(task)
        .arg(state.as_str())
        .arg(message.unwrap_or(""))
        .arg(ttl_ms)
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
        .arg(keys.meta(session))
        .arg(keys.tasks(session))
        .arg(keys.channel(session))
        .arg(task)
        .arg(ttl_ms)
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

/// Adds to `pipe` what opens `session` if it is not open, and renews its time to live.
pub(super) fn touch(pipe: &mut redis::Pipeline, keys: &Keys, session: &str, ttl_ms: u64) {
    pipe.cmd("HSETNX")
        .arg(keys.meta(session))
        .arg("seq")
        .arg(0)
        .ignore()
        .cmd("PEXPIRE")
        .arg(keys.meta(session))
        .arg(ttl_ms)
        .ignore()
        .cmd("PEXPIRE")
        .arg(keys.log(session))
        .arg(ttl_ms)
        .ignore();
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
        let mut payload = b"6\n".to_vec();
        payload.extend_from_slice(&body);
        assert_eq!(
            parse(&payload),
            Some(vec![
                Record::Status(7, b"hello", None),
                Record::Status(10, b"", None),
                Record::Status(11, b"a\nb", None),
                Record::Head(14),
            ])
        );
        assert_eq!(parse(b"x\n"), Some(vec![Record::Closed]));
        assert_eq!(parse(b"1\n+0 9\nshort"), None);
        assert_eq!(parse(b"nonsense"), None);
    }

    #[test]
    fn fields_and_task_messages_go_through() {
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
        let mut payload = b"0\n".to_vec();
        push_status(&mut payload, 1, &full);
        push_status(&mut payload, 0, &bare);
        // A tag this version does not know is skipped.
        payload.extend_from_slice(b"*0 12\ns 1\nxz 3\nnew");
        assert_eq!(
            parse(&payload),
            Some(vec![
                Record::Status(2, b"line\nbreak", Some(Arc::new(extra))),
                Record::Status(3, b"bare", Some(Arc::new(Extra::default()))),
                Record::Status(4, b"x", Some(Arc::new(Extra::default()))),
            ])
        );
        assert_eq!(parse(b"0\n*0 9\ns 5\nab"), None);
        assert_eq!(parse(b"0\n*0 7\np 3\n1-2"), None);

        assert_eq!(
            parse(b"t\nabc cancelling 7\n"),
            Some(vec![Record::Task(TaskRecord {
                task: Arc::from("abc"),
                state: TaskState::Cancelling,
                last_seq: 7,
                message: None,
            })])
        );
        assert_eq!(
            parse(b"t\nabc failed 9\nno\nresults"),
            Some(vec![Record::Task(TaskRecord {
                task: Arc::from("abc"),
                state: TaskState::Failed,
                last_seq: 9,
                message: Some(Arc::from("no\nresults")),
            })])
        );
        assert_eq!(parse(b"t\nabc paused 9\n"), None);
        assert_eq!(parse(b"c\nabc"), Some(vec![Record::Cancel("abc")]));
        assert_eq!(parse(b"c\n"), None);
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
    fn channel_names_lead_back_to_their_session() {
        let keys = Keys::new("app");
        let channel = keys.channel("a}b{c");
        assert_eq!(keys.session_of(&channel), Some("a}b{c"));
        assert_eq!(keys.session_of("other:{x}:ch"), None);
        assert_eq!(keys.meta("s"), "app:{s}:meta");
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
