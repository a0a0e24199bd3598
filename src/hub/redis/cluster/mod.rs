//! The Redis Cluster backend: several processes share sessions through a Redis Cluster.
//!
//! [`Hub::with_redis_cluster`] makes a [`Hub`] whose sessions live on a Redis Cluster, with the
//! guarantees of the [single-Redis backend](super): one numbering per session across processes,
//! bounded history, resume on any process, and a [`Gap`](crate::Gap) for exactly what was lost.
//! Scripts, records, the outbox and the writer are the single-Redis backend's; what differs is
//! where keys live and how statuses travel.
//!
//! # How it works
//!
//! - **Partitions.** Sessions fall into [`RedisClusterConfig::partitions`] partitions by a
//!   fixed hash of their id (FNV-1a, the same in every process). Every key of a partition carries
//!   its hash tag, `<prefix>:{p<n>.<k>}:...`, `k` chosen so that partition `n`'s slot lies in the
//!   `n`th equal part of the slot space (so partitions spread over masters as evenly as slots
//!   do): each session's history stream `log:<session>` (its
//!   counter too) and close hash `meta:<session>`, and the partition's channel `ch`. So a
//!   partition lives on one shard, and one script call serves all of its sessions in a batch.
//! - **Writing.** The writer groups a batch by partition and sends one `EVALSHA` of the append
//!   script per partition (each to the shard that owns it, the partitions side by side). The
//!   script numbers and stores each session's statuses as on one Redis and publishes **one**
//!   message for the whole call with `SPUBLISH` on the partition's channel: sharded pub/sub, so
//!   it goes only through the shard that owns the partition, never rebroadcast across the
//!   cluster as classic `PUBLISH` is.
//! - **Reading.** A process subscribes (`SSUBSCRIBE`, over the cluster client's RESP3
//!   connections) only to the partitions that hold a session with local subscribers, then reads
//!   each such session's history after what it holds. Messages carry one frame per session; a
//!   process applies the frames of the sessions it follows and skips the rest.
//!
//! # Faults
//!
//! The cluster client follows `MOVED` and `ASK` redirections and reconnects to nodes by itself.
//! On top of it:
//!
//! - **A node fails and its replica takes over, or a slot moves.** Every lost connection
//!   (RESP3 `Disconnection`) and every sharded unsubscription the process did not ask for marks
//!   the subscriptions it concerns unconfirmed; the reader subscribes to them again (the client
//!   routes the command to the current owner) every [`RedisClusterConfig::reconnect_min`] until
//!   the new owner confirms, then reads each followed session's history after what it holds, so
//!   nothing published meanwhile is missed. Writes that failed or timed out stay unconfirmed and
//!   are sent again after the backoff; the call's token, recorded in the first entry it added,
//!   makes the script skip a call that had run.
//! - **Writes lost in a failover.** Redis replicates asynchronously, so a failover may lose the
//!   last writes the old master acknowledged. The writer raises each session's counter to at
//!   least the highest number it was given, so numbering never goes back; a call whose reply was
//!   lost is sent again and, with one process writing to the session (a tool runs in one
//!   process), takes the same numbers it had: subscribers that had it skip it, the others get
//!   it. Statuses the new master lacks that no one sends again reach subscribers that missed
//!   them as a gap.
//! - **Not covered.** With several processes writing to one session at the moment of a failover,
//!   a resent call may be numbered after another process's statuses: a subscriber that had the
//!   first attempt then sees its statuses twice. The single-Redis epoch key (data loss on a
//!   restart) has no cluster counterpart: a shard that loses its data and its replicas is
//!   treated as the loss of its last writes above.
//!
//! The [Semantics](super#semantics) and [bounds](super#choosing-the-bounds) of the single-Redis
//! backend apply, and [What a status costs Redis](super#what-a-status-costs-redis) has the
//! figures for both.
//!
//! # Choosing the partitions
//!
//! [`RedisClusterConfig::partitions`] (default 16) is the unit of spreading: each partition sits
//! on one shard, and partition `n` of `P` on the slots' `n`th `P`th, so with masters owning equal
//! slot ranges they spread as evenly as they can (16 over 3 masters: 5, 5 and 6). Fewer partitions mean bigger calls, so less Redis CPU per status (a batch costs one call
//! per partition it touches), and more traffic per subscription: a process that serves one
//! session of a partition receives the frames of all of them. Every process must use the same
//! number.

mod reader;

use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, RedisResult};

pub(super) use self::reader::Reader;
use super::config::Common;
use super::wire::{self, Conn, Layout, Scripts};
use super::{backend_error, Backing, ConnectError, RedisBackend};
use crate::hub::{ConfigError, Hub, HubConfig};

/// How to reach a Redis Cluster and how to ride out its faults; for [`Hub::with_redis_cluster`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use status_messenger::RedisClusterConfig;
///
/// let mut config = RedisClusterConfig::new(["redis://127.0.0.1:7000/", "redis://127.0.0.1:7001/"]);
/// assert_eq!(config.partitions, 16);
/// assert_eq!(config.key_prefix, "status-messenger");
/// config.reconnect_max = Duration::from_secs(2);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisClusterConfig {
    /// Seed nodes, e.g. `redis://host:7000/`: any reachable node of the cluster will do, the rest
    /// is discovered (at least one).
    pub urls: Vec<String>,
    /// Partitions sessions are spread over (at least 1, at most 1,024; default 16). Every
    /// process sharing the sessions must use the same number. See [Choosing the
    /// partitions](self#choosing-the-partitions).
    pub partitions: u32,
    /// As [`RedisConfig::key_prefix`](crate::RedisConfig::key_prefix).
    pub key_prefix: String,
    /// As [`RedisConfig::buffer_capacity`](crate::RedisConfig::buffer_capacity).
    pub buffer_capacity: usize,
    /// As [`RedisConfig::reconnect_min`](crate::RedisConfig::reconnect_min); also how often a
    /// lost sharded subscription is asked for again.
    pub reconnect_min: Duration,
    /// As [`RedisConfig::reconnect_max`](crate::RedisConfig::reconnect_max).
    pub reconnect_max: Duration,
    /// As [`RedisConfig::timeout`](crate::RedisConfig::timeout).
    pub timeout: Duration,
    /// As [`RedisConfig::request_timeout`](crate::RedisConfig::request_timeout).
    pub request_timeout: Duration,
    /// As [`RedisConfig::batch_delay`](crate::RedisConfig::batch_delay).
    pub batch_delay: Duration,
}

impl RedisClusterConfig {
    /// The defaults, with the seed nodes `urls`.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = status_messenger::RedisClusterConfig::new(["redis://localhost:7000/"]);
    /// assert_eq!(config.urls, vec!["redis://localhost:7000/".to_owned()]);
    /// assert_eq!(config.timeout, std::time::Duration::from_secs(2));
    /// ```
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let single = super::RedisConfig::new("");
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            partitions: 16,
            key_prefix: single.key_prefix,
            buffer_capacity: single.buffer_capacity,
            reconnect_min: single.reconnect_min,
            reconnect_max: single.reconnect_max,
            timeout: single.timeout,
            request_timeout: single.request_timeout,
            batch_delay: single.batch_delay,
        }
    }

    /// Checks every field; [`Hub::with_redis_cluster`] does the same.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut config = status_messenger::RedisClusterConfig::new(Vec::<String>::new());
    /// assert_eq!(config.validate().unwrap_err().field(), "urls");
    /// config.urls = vec!["redis://localhost:7000/".to_owned()];
    /// config.partitions = 0;
    /// assert_eq!(config.validate().unwrap_err().field(), "partitions");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.nodes().map(drop)
    }

    fn nodes(&self) -> Result<Nodes, ConfigError> {
        let fail = |field, reason| {
            Err(ConfigError {
                config: "RedisClusterConfig",
                field,
                reason,
            })
        };
        if self.urls.is_empty() {
            return fail("urls", "must name at least one node");
        }
        if ClusterClientBuilder::new(self.urls.clone())
            .build()
            .is_err()
        {
            return fail("urls", "are not valid redis urls");
        }
        if !(1..=1024).contains(&self.partitions) {
            return fail("partitions", "must be between 1 and 1024");
        }
        self.common().check()?;
        Ok(Nodes {
            urls: self.urls.clone(),
        })
    }

    fn common(&self) -> Common<'_> {
        Common {
            config: "RedisClusterConfig",
            key_prefix: &self.key_prefix,
            buffer_capacity: self.buffer_capacity,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            timeout: self.timeout,
            request_timeout: self.request_timeout,
            batch_delay: self.batch_delay,
        }
    }
}

/// The seed nodes, and how connections to the cluster are made.
#[derive(Debug)]
pub(in crate::hub::redis) struct Nodes {
    urls: Vec<String>,
}

impl Nodes {
    /// A connection to the cluster within `timeout`; with `push`, over RESP3 with its pushes
    /// (sharded messages, subscription changes, lost connections) sent there.
    pub(in crate::hub::redis) async fn connect(
        &self,
        timeout: Duration,
        push: Option<tokio::sync::mpsc::UnboundedSender<PushInfo>>,
    ) -> RedisResult<ClusterConnection> {
        // Few, quick retries inside the client: the backend's own backoff and timeouts decide
        // how long a fault is ridden out.
        let mut builder = ClusterClientBuilder::new(self.urls.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200);
        if let Some(push) = push {
            builder = builder
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push);
        }
        let client = builder.build()?;
        wire::within(timeout, client.get_async_connection()).await
    }
}

impl Hub {
    /// Creates a hub whose sessions live on a Redis Cluster, shared by every process that uses
    /// the same cluster, key prefix and number of partitions. See the [module docs](self) for
    /// how it works.
    ///
    /// Connects once to check that the cluster answers and to load the scripts on every master,
    /// then starts two tasks on the current runtime (a writer and a reader) that ride out node
    /// failures, failovers and slot moves from then on. Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Config`] when a field of either config is out of range,
    /// [`ConnectError::Backend`] when the cluster does not answer within
    /// [`RedisClusterConfig::timeout`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use status_messenger::{Hub, HubConfig, RedisClusterConfig};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), status_messenger::hub::redis::ConnectError> {
    /// let nodes = RedisClusterConfig::new(["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"]);
    /// let hub = Hub::with_redis_cluster(HubConfig::default(), nodes).await?;
    /// hub.publish(Some("s1"), "shared by every process").unwrap();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A cluster that does not answer is an error, not a hang:
    ///
    /// ```
    /// use status_messenger::hub::redis::ConnectError;
    /// use status_messenger::{Hub, HubConfig, RedisClusterConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut nodes = RedisClusterConfig::new(["redis://127.0.0.1:1/"]);
    /// nodes.timeout = std::time::Duration::from_millis(200);
    /// let result = Hub::with_redis_cluster(HubConfig::default(), nodes).await;
    /// assert!(matches!(result, Err(ConnectError::Backend(_))));
    /// # }
    /// ```
    pub async fn with_redis_cluster(
        config: HubConfig,
        cluster: RedisClusterConfig,
    ) -> Result<Hub, ConnectError> {
        config.validate().map_err(ConnectError::Config)?;
        let nodes = cluster.nodes().map_err(ConnectError::Config)?;
        let unreachable = |error| ConnectError::Backend(backend_error(error));
        let conn = nodes
            .connect(cluster.timeout, None)
            .await
            .map_err(unreachable)?;
        let mut conn = Conn::Cluster(conn);
        wire::within(cluster.timeout, Scripts::load(&mut conn))
            .await
            .map_err(unreachable)?;
        let layout = Layout::Cluster {
            partitions: cluster.partitions,
        };
        let settings = cluster.common().settings(&config, layout);
        Ok(RedisBackend::hub(
            config,
            settings,
            Backing::Cluster(nodes),
            Some(conn),
        ))
    }
}
