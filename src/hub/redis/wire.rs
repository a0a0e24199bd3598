//! What goes over the wire: key names, the Lua scripts, the records published per session, and
//! connecting with timeouts and backoff.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, Cmd, RedisResult, Value};

/// Appends statuses to a session (see the script's header).
pub(super) const APPEND: &str = include_str!("append.lua");
/// Reads a session's history together with its counter.
pub(super) const READ: &str = include_str!("read.lua");
/// Ends a session everywhere.
pub(super) const CLOSE: &str = include_str!("close.lua");

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
    /// A status.
    Status(u64, &'a [u8]),
    /// Numbers up to this one are taken; those not seen are lost.
    Head(u64),
    /// The session was closed.
    Closed,
}

/// Appends the record of a status to `body`: `+<skipped> <len>\n<text>`, numbered `skipped + 1`
/// after the one before it (the first after the message's base).
pub(super) fn push_status(body: &mut Vec<u8>, skipped: u64, text: &str) {
    body.extend_from_slice(format!("+{skipped} {}\n", text.len()).as_bytes());
    body.extend_from_slice(text.as_bytes());
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
    let (line, mut payload) = split_line(payload)?;
    let mut seq: u64 = line.parse().ok()?;
    let mut records = Vec::new();
    while !payload.is_empty() {
        let (line, rest) = split_line(payload)?;
        let (skipped, len) = line.strip_prefix('+')?.split_once(' ')?;
        seq = seq.checked_add(skipped.parse().ok()?)?;
        if len == "-" {
            records.push(Record::Head(seq));
            payload = rest;
            continue;
        }
        seq = seq.checked_add(1)?;
        let len: usize = len.parse().ok()?;
        records.push(Record::Status(seq, rest.get(..len)?));
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

/// The result of the read script: the session's counter, and the statuses numbered
/// `from..=to` that its history holds, in order.
pub(super) fn parse_read(value: Value, from: u64, to: u64) -> Option<(u64, Vec<(u64, String)>)> {
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
            if let Record::Status(seq, text) = record {
                if (from..=to).contains(&seq) {
                    out.push((seq, String::from_utf8_lossy(text).into_owned()));
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
    /// `(numbers skipped before it, text)` per status.
    pub(super) items: &'a [(u64, Arc<str>)],
    /// Numbers skipped after the last status.
    pub(super) trailing: u64,
    /// Numbers of a call of unknown fate to take after the floor, unless the counter is already
    /// exactly at their end (see `append.lua`); 0 for an ordinary call.
    pub(super) reserve: u64,
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
        for (skip, text) in call.items {
            push_status(&mut body, *skip, text);
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
            .arg(body)
            .arg(call.reserve);
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
        let mut body = Vec::new();
        push_status(&mut body, 0, "hello");
        push_status(&mut body, 2, "");
        // Texts may hold anything, newlines included.
        push_status(&mut body, 0, "a\nb");
        push_head(&mut body, 3);
        let mut payload = b"6\n".to_vec();
        payload.extend_from_slice(&body);
        assert_eq!(
            parse(&payload),
            Some(vec![
                Record::Status(7, b"hello"),
                Record::Status(10, b""),
                Record::Status(11, b"a\nb"),
                Record::Head(14),
            ])
        );
        assert_eq!(parse(b"x\n"), Some(vec![Record::Closed]));
        assert_eq!(parse(b"1\n+0 9\nshort"), None);
        assert_eq!(parse(b"nonsense"), None);
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
