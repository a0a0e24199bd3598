//! The Lua scripts, the commands that call them and the readers of their replies.
//!
//! # Invariants
//!
//! - A script's hash is computed here from its text, the same on every server, so `EVALSHA`
//!   needs no round trip to learn it; a server that lacks it answers `NOSCRIPT` before running
//!   anything (see `is_noscript`).
//! - Reading a reply never panics: an unexpected shape is `None`.

use std::sync::Arc;

use redis::{Cmd, Pipeline, RedisResult, Value};

use super::{parse_records, push_head, push_status, Body, Conn, Keys, Record};
use crate::hub::core::TaskRecord;
use crate::hub::event::Extra;
use crate::hub::TaskState;

/// Appends statuses of several sessions (see the script's header).
const APPEND: &str = include_str!("../append.lua");
/// Reads a session's history together with its counter.
const READ: &str = include_str!("../read.lua");
/// Ends a session everywhere.
const CLOSE: &str = include_str!("../close.lua");
/// Asks a task to stop, wherever it runs.
const CANCEL: &str = include_str!("../cancel.lua");
/// Puts counters back (see the script).
const RAISE: &str = include_str!("../raise.lua");

/// A status read back from history: its number, text and fields.
pub(in crate::hub::redis) type Stored = (u64, String, Option<Arc<Extra>>);

/// What the read script answers.
pub(in crate::hub::redis) struct Read {
    /// The session's counter: the highest number given.
    pub(in crate::hub::redis) counter: u64,
    /// The statuses numbered in the range asked for that its history holds, in order.
    pub(in crate::hub::redis) statuses: Vec<Stored>,
    /// How many times a session of that id was closed (while its close hash lives).
    pub(in crate::hub::redis) closes: u64,
}

/// The result of the read script, keeping the statuses numbered `from..=to`.
pub(in crate::hub::redis) fn parse_read(value: Value, from: u64, to: u64) -> Option<Read> {
    let Value::Array(mut parts) = value else {
        return None;
    };
    if parts.len() != 3 {
        return None;
    }
    let closes = match parts.pop()? {
        Value::Int(n) => u64::try_from(n).ok()?,
        _ => return None,
    };
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
    Some(Read {
        counter: head,
        statuses: out,
        closes,
    })
}

/// Reads `{applied, counter..., asked...}` as returned by the append script: whether it ran,
/// then each session's counter after it and, per task change, 1 if a stop was asked for the
/// task.
pub(in crate::hub::redis) fn parse_append(value: &Value) -> Option<(bool, Vec<u64>)> {
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
pub(in crate::hub::redis) fn parse_close(value: &Value) -> bool {
    matches!(value, Value::Int(1))
}

/// The scripts' hashes (the same on every server, computed here), for `EVALSHA`.
#[derive(Debug, Clone)]
pub(in crate::hub::redis) struct Scripts {
    pub(in crate::hub::redis) append: String,
    pub(in crate::hub::redis) read: String,
    pub(in crate::hub::redis) close: String,
    cancel: String,
}

impl Scripts {
    pub(in crate::hub::redis) fn new() -> Self {
        let hash = |code: &str| redis::Script::new(code).get_hash().to_owned();
        Self {
            append: hash(APPEND),
            read: hash(READ),
            close: hash(CLOSE),
            cancel: hash(CANCEL),
        }
    }

    /// Loads the scripts into every server `conn` reaches (each master of a cluster). A
    /// restarted or promoted server may not have them, so this runs on every connect and
    /// whenever a server answers `NOSCRIPT`.
    pub(in crate::hub::redis) async fn load(conn: &mut Conn) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for code in [APPEND, READ, CLOSE, CANCEL] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(code).ignore();
        }
        match conn {
            Conn::Single(conn) => pipe.query_async::<()>(conn).await,
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => {
                use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
                for code in [APPEND, READ, CLOSE, CANCEL] {
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
    pub(in crate::hub::redis) fn read_cmd(
        &self,
        keys: &Keys,
        session: &str,
        from: Option<u64>,
        to: Option<u64>,
        touch_ms: u64,
    ) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.read)
            .arg(2)
            .arg(keys.log(session))
            .arg(keys.meta(session));
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
pub(in crate::hub::redis) struct Append<'a> {
    pub(in crate::hub::redis) session: &'a str,
    /// The counter is raised to at least this first.
    pub(in crate::hub::redis) floor: u64,
    /// `(numbers skipped before it, status)` per status.
    pub(in crate::hub::redis) items: &'a [(u64, Body)],
    /// Numbers skipped after the last status.
    pub(in crate::hub::redis) trailing: u64,
    /// Numbers of a call of unknown fate, reserved after the floor (0: none). They are taken
    /// after the statuses and `trailing`, unless the counter already stands exactly at
    /// `floor + reserve` (a process that saw the call raised it there): then the session's part
    /// takes nothing (see append.lua).
    pub(in crate::hub::redis) reserve: u64,
    /// Renew the time to live of the session's keys.
    pub(in crate::hub::redis) renew: bool,
}

/// A task's change recorded by an append call, after its statuses.
pub(in crate::hub::redis) struct TaskPart<'a> {
    pub(in crate::hub::redis) session: &'a str,
    pub(in crate::hub::redis) task: &'a str,
    pub(in crate::hub::redis) state: TaskState,
    pub(in crate::hub::redis) message: Option<&'a str>,
}

/// What every append call carries besides its sessions.
pub(in crate::hub::redis) struct Call<'a> {
    /// The group (partition) of every session of the call.
    pub(in crate::hub::redis) group: u32,
    /// `w:<writer id>`, with `token` 0 for a call that needs no token.
    pub(in crate::hub::redis) writer: &'a str,
    pub(in crate::hub::redis) token: u64,
    /// The call may have run before (its reply was lost): the script checks its token.
    pub(in crate::hub::redis) check: bool,
    pub(in crate::hub::redis) capacity: usize,
    /// Time to live of a renewed key.
    pub(in crate::hub::redis) key_ttl_ms: u64,
    /// Time to live of the keys a task change touches.
    pub(in crate::hub::redis) task_ttl_ms: u64,
    /// How many tasks a session's hash keeps (ended ones are forgotten beyond it).
    pub(in crate::hub::redis) task_capacity: usize,
}

impl Scripts {
    /// `EVALSHA` of the append script for `sessions` and then `tasks`, all of `call.group`.
    pub(in crate::hub::redis) fn append_cmd(
        &self,
        keys: &Keys,
        call: &Call<'_>,
        sessions: &[Append<'_>],
        tasks: &[TaskPart<'_>],
    ) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.append).arg(sessions.len() + 2 * tasks.len());
        for append in sessions {
            cmd.arg(keys.log(append.session));
        }
        for task in tasks {
            cmd.arg(keys.tasks(task.session))
                .arg(keys.log(task.session));
        }
        cmd.arg(keys.publish())
            .arg(keys.group_channel(call.group))
            .arg(call.capacity)
            .arg(call.key_ttl_ms);
        if call.token == 0 {
            cmd.arg("");
        } else {
            cmd.arg(format!("{}:{}", call.writer, call.token));
        }
        cmd.arg(if call.check { "1" } else { "0" })
            .arg(call.task_ttl_ms.max(1))
            .arg(call.task_capacity)
            .arg(tasks.len());
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
            cmd.arg(append.session)
                .arg(format!("{} {} ", append.session.len(), body.len()))
                .arg(append.floor)
                .arg(numbers)
                .arg(if append.renew { "1" } else { "0" })
                .arg(append.reserve)
                .arg(body.as_slice());
        }
        for task in tasks {
            cmd.arg(task.session)
                .arg(task.task)
                .arg(task.state.as_str())
                .arg(task.message.unwrap_or(""));
        }
        cmd
    }

    /// `EVALSHA` of the close script.
    pub(in crate::hub::redis) fn close_cmd(
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

/// `EVAL` of the raise script: puts each session's counter back to at least its floor, unless
/// it was closed. Sent once per reconnect, so the script travels with the call.
pub(in crate::hub::redis) fn raise_cmd(keys: &Keys, ttl_ms: u64, floors: &[(&str, u64)]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(RAISE).arg(floors.len() * 2);
    for (session, _) in floors {
        cmd.arg(keys.log(session)).arg(keys.meta(session));
    }
    cmd.arg(ttl_ms.max(1));
    for (_, floor) in floors {
        cmd.arg(*floor);
    }
    cmd
}

impl Scripts {
    /// `EVALSHA` of the cancel script for `task` of `session`.
    pub(in crate::hub::redis) fn cancel_cmd(
        &self,
        keys: &Keys,
        ttl_ms: u64,
        capacity: usize,
        session: &str,
        task: &str,
    ) -> Cmd {
        let mut cmd = task_script(&self.cancel, keys, session, task);
        cmd.arg(ttl_ms.max(1)).arg(capacity);
        cmd
    }
}

/// `EVALSHA` of the script whose hash is `sha`, a script of a session's tasks, with what it
/// takes first: the session's task hash and history stream, the publish command, its channel,
/// the session and the task.
fn task_script(sha: &str, keys: &Keys, session: &str, task: &str) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha)
        .arg(2)
        .arg(keys.tasks(session))
        .arg(keys.log(session))
        .arg(keys.publish())
        .arg(keys.channel(session))
        .arg(session)
        .arg(task);
    cmd
}

/// What the cancel script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::hub::redis) enum Cancelled {
    /// The task's state after the request.
    State(TaskState),
    /// The session has no such task (the stop is kept for a while in case it registers).
    UnknownTask,
    /// No such session.
    UnknownSession,
}

/// Reads the cancel script's reply.
pub(in crate::hub::redis) fn parse_cancel_reply(value: &Value) -> Option<Cancelled> {
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
pub(in crate::hub::redis) fn parse_tasks(value: Value) -> Option<(Vec<TaskRecord>, Vec<String>)> {
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

/// Adds to `pipe` what renews the time to live of `session`'s history, of its tasks (which
/// a long quiet task would otherwise outlive) and of its close count (which a process serving
/// it compares after a partition).
pub(in crate::hub::redis) fn touch(pipe: &mut Pipeline, keys: &Keys, session: &str, ttl_ms: u64) {
    pipe.cmd("PEXPIRE")
        .arg(keys.log(session))
        .arg(ttl_ms)
        .ignore()
        .cmd("PEXPIRE")
        .arg(keys.meta(session))
        .arg(ttl_ms)
        .ignore()
        .cmd("PEXPIRE")
        .arg(keys.tasks(session))
        .arg(ttl_ms)
        .ignore();
}
