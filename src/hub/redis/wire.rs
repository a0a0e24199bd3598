//! What goes over the wire, one file per concept: key names and where they live (`keys`), the
//! records and frames published (`records`), the Lua scripts and their replies (`scripts`);
//! and here the connections (one Redis or a cluster), timeouts and backoff.
//!
//! # Invariants
//!
//! - Every command on a connection made here times out ([`connect`], [`within`]), so no task
//!   waits on Redis without bound.
//! - Reconnect delays grow from the least to the longest configured and start again at the
//!   least once a connection works ([`Backoff`]).

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

mod keys;
mod records;
mod scripts;
#[cfg(test)]
mod tests;

pub(super) use self::keys::{Keys, Layout};
pub(super) use self::records::{
    parse_frames, parse_records, push_head, push_status, Body, Record, Segment,
};
pub(super) use self::scripts::{
    parse_append, parse_cancel_reply, parse_close, parse_read, parse_tasks, raise_cmd, touch,
    Append, Call, Cancelled, Scripts, Stored, TaskPart,
};

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

/// Runs `cmd`, an `EVALSHA` of one of [`Scripts`], by `deadline`. A server that restarted or
/// took over may not have been given the scripts yet: it answers `NOSCRIPT` without running
/// anything, so the scripts are loaded and the command is sent once more.
pub(super) async fn run_script(
    conn: &mut Conn,
    cmd: &Cmd,
    deadline: tokio::time::Instant,
) -> RedisResult<Value> {
    let result = by(deadline, cmd.query_async::<Value>(conn)).await;
    if !result.as_ref().is_err_and(is_noscript) {
        return result;
    }
    by(deadline, Scripts::load(conn)).await?;
    by(deadline, cmd.query_async::<Value>(conn)).await
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

/// Runs `fut` until `deadline`, turning the timeout into an I/O error.
pub(super) async fn by<T>(
    deadline: tokio::time::Instant,
    fut: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
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
