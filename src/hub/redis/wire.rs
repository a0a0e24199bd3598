//! What goes over the wire: key names, the Lua scripts, the records published per session, and
//! connecting with timeouts and backoff.

use std::hash::{BuildHasher, RandomState};
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

    /// The session's sequence counter (a string holding an integer).
    pub(super) fn seq(&self, session: &str) -> String {
        self.key(session, "seq")
    }

    /// The session's history: a stream whose ids are `{seq}-0`.
    pub(super) fn log(&self, session: &str) -> String {
        self.key(session, "log")
    }

    /// Present while the session exists.
    pub(super) fn registry(&self, session: &str) -> String {
        self.key(session, "reg")
    }

    /// The last batch token each writer applied to this session (a hash).
    pub(super) fn tokens(&self, session: &str) -> String {
        self.key(session, "tok")
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

/// One record of a message published on a session's channel.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Record<'a> {
    /// `SEQ LEN\nTEXT`: a status.
    Status(u64, &'a [u8]),
    /// `SEQ -\n`: numbers up to `SEQ` are taken; those not seen are lost.
    Head(u64),
    /// `x\n`: the session was closed.
    Closed,
}

/// Splits a published message into its records; `None` when it is malformed.
pub(super) fn parse(mut payload: &[u8]) -> Option<Vec<Record<'_>>> {
    let mut records = Vec::new();
    while !payload.is_empty() {
        let line_end = payload.iter().position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&payload[..line_end]).ok()?;
        let rest = &payload[line_end + 1..];
        if line == "x" {
            records.push(Record::Closed);
            payload = rest;
            continue;
        }
        let (seq, len) = line.split_once(' ')?;
        let seq: u64 = seq.parse().ok()?;
        if len == "-" {
            records.push(Record::Head(seq));
            payload = rest;
            continue;
        }
        let len: usize = len.parse().ok()?;
        let text = rest.get(..len)?;
        records.push(Record::Status(seq, text));
        payload = &rest[len..];
    }
    Some(records)
}

/// Decodes a stream entry id `{seq}-0`.
pub(super) fn seq_of_id(id: &[u8]) -> Option<u64> {
    let id = std::str::from_utf8(id).ok()?;
    id.split_once('-')?.0.parse().ok()
}

/// The result of the read script: the session's counter and its history entries in order.
pub(super) fn parse_read(value: Value) -> Option<(u64, Vec<(u64, String)>)> {
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
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(entry) = entry else {
            return None;
        };
        let mut entry = entry.into_iter();
        let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
            (entry.next(), entry.next())
        else {
            return None;
        };
        let seq = seq_of_id(&id)?;
        // The only field is `t`, the text.
        let text = match fields.into_iter().nth(1)? {
            Value::BulkString(bytes) => String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            _ => return None,
        };
        out.push((seq, text));
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
            .arg(keys.seq(session))
            .arg(keys.log(session))
            .arg(from);
        match to {
            Some(to) => cmd.arg(to),
            None => cmd.arg("+"),
        };
        cmd
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
    fn records_round_trip_the_script_format() {
        let payload = b"7 5\nhello8 0\n9 -\nx\n";
        assert_eq!(
            parse(payload),
            Some(vec![
                Record::Status(7, b"hello"),
                Record::Status(8, b""),
                Record::Head(9),
                Record::Closed,
            ])
        );
        // Texts may hold anything, newlines included.
        assert_eq!(parse(b"1 3\na\nb"), Some(vec![Record::Status(1, b"a\nb")]));
        assert_eq!(parse(b"1 9\nshort"), None);
        assert_eq!(parse(b"nonsense"), None);
    }

    #[test]
    fn channel_names_lead_back_to_their_session() {
        let keys = Keys::new("app");
        let channel = keys.channel("a}b{c");
        assert_eq!(keys.session_of(&channel), Some("a}b{c"));
        assert_eq!(keys.session_of("other:{x}:ch"), None);
        assert_eq!(keys.seq("s"), "app:{s}:seq");
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
