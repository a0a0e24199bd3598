//! Key names and where they live: the hash tag of each session (one Redis) or of each
//! partition (a cluster), and the channels statuses are published on.
//!
//! # Invariants
//!
//! - Every process computes the same names from the same prefix and layout: a session's
//!   partition comes from a hash that is the same in every process and every version, and the
//!   partitions' tags from the slot space alone.
//! - All keys one script call touches share one hash tag, so a cluster runs it on one shard.

use std::sync::Arc;

/// Where a session's keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis-cluster"), allow(dead_code))]
pub(in crate::hub::redis) enum Layout {
    /// One Redis: each session's keys carry the session as their hash tag
    /// (`{prefix}:{<session>}:meta`, `:log`, `:tasks`), one script call serves any sessions
    /// (one Redis runs a script over keys of any slot), and every session's statuses travel on
    /// one channel, `{prefix}:ch`, once per call.
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
pub(in crate::hub::redis) struct Keys {
    prefix: String,
    layout: Layout,
    /// Each partition's hash tag (cluster only).
    tags: Arc<[String]>,
}

/// The cluster slot of a hash tag: CRC16 (XMODEM) modulo 16,384, as Redis computes it.
pub(super) fn slot(tag: &str) -> u16 {
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
    pub(in crate::hub::redis) fn new(prefix: &str, layout: Layout) -> Self {
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

    pub(super) fn tag(&self, group: u32) -> &str {
        self.tags.get(group as usize).map_or("p", String::as_str)
    }

    pub(in crate::hub::redis) fn layout(&self) -> Layout {
        self.layout
    }

    /// The group of sessions one script call may serve: always 0 on one Redis, the partition on
    /// a cluster.
    pub(in crate::hub::redis) fn group(&self, session: &str) -> u32 {
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
    pub(in crate::hub::redis) fn meta(&self, session: &str) -> String {
        self.key(session, "meta")
    }

    /// The session's history, which is also its counter: a stream whose ids are
    /// `0-<first number of the batch>` (see append.lua); it exists while the session does.
    pub(in crate::hub::redis) fn log(&self, session: &str) -> String {
        self.key(session, "log")
    }

    /// The channel that carries the session's statuses: the one channel of every session on
    /// one Redis, its partition's on a cluster.
    pub(in crate::hub::redis) fn channel(&self, session: &str) -> String {
        self.group_channel(self.group(session))
    }

    /// The session's tasks: a hash whose fields `t:<task>` hold each task's state
    /// (`<state> <last seq> <order>\n<message>`), `c:<task>` a stop asked for a task, and `n`
    /// the last order given.
    pub(in crate::hub::redis) fn tasks(&self, session: &str) -> String {
        self.key(session, "tasks")
    }

    /// A group's channel: a partition's on a cluster; on one Redis (whose only group is 0)
    /// the channel of every session. (No session's key is `{prefix}:ch`: theirs have a hash
    /// tag after the prefix.)
    pub(in crate::hub::redis) fn group_channel(&self, group: u32) -> String {
        match self.layout {
            Layout::Single => format!("{}:ch", self.prefix),
            Layout::Cluster { .. } => format!("{}:{{{}}}:ch", self.prefix, self.tag(group)),
        }
    }

    pub(super) fn publish(&self) -> &'static str {
        match self.layout {
            Layout::Single => "PUBLISH",
            Layout::Cluster { .. } => "SPUBLISH",
        }
    }

    /// Changes whenever Redis starts without the data it had (see the module docs; one Redis
    /// only).
    pub(in crate::hub::redis) fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// The partition a cluster channel belongs to.
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code))]
    pub(in crate::hub::redis) fn group_of(&self, channel: &str) -> Option<u32> {
        let tag = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:ch")?;
        let group: u32 = tag.strip_prefix('p')?.split('.').next()?.parse().ok()?;
        (self.tag(group) == tag).then_some(group)
    }
}
