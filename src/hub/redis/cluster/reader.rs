//! The cluster's reader task: sharded subscriptions to the partitions that hold sessions with
//! local subscribers, over the cluster client's RESP3 connections, and what is heard copied into
//! the hub's local history (`follow`).
//!
//! # Invariants
//!
//! - `wanted` holds exactly the sessions with local subscribers, by partition; a partition is
//!   subscribed while it holds one.
//! - A partition is `confirmed` once Redis confirmed its subscription after the last event that
//!   may have ended it (a lost connection, an unsubscription not asked for). A session is
//!   followed only once its partition is confirmed and it was read from history after that, so
//!   every status is either in what was read or heard afterwards.
//! - Every unconfirmed partition that is wanted is subscribed to again every `reconnect_min`
//!   until it is confirmed; then each of its sessions is read again after what it holds. A
//!   partition whose frames could not all be applied (a hole not read back, a session not
//!   attached) is unconfirmed again, so nothing is left waiting for a frame that already passed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::time::Instant;

use super::super::follow::{After, Follow};
use super::super::reader::{refresh_due, touch_all};
use super::super::wire::{self, Backoff, Conn, Scripts};
use super::super::{Backing, Shared};
use crate::hub::backend::BackendHandle;

/// How often the keys of served sessions are checked for renewal.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Partition {
    sessions: HashSet<Arc<str>>,
    confirmed: bool,
}

pub(in crate::hub::redis) struct Reader {
    follow: Follow,
    wanted: HashMap<u32, Partition>,
    last_refresh: Instant,
    /// The writer's failures when last looked at, and when.
    writer_failures: (u64, Instant),
}

enum Ended {
    Stopped,
    /// The client's connection task is gone: make a new one.
    Lost,
}

impl Reader {
    pub(in crate::hub::redis) fn new(shared: Arc<Shared>, hub: BackendHandle) -> Self {
        Self {
            follow: Follow::new(shared, hub),
            wanted: HashMap::new(),
            last_refresh: Instant::now(),
            writer_failures: (0, Instant::now()),
        }
    }

    pub(in crate::hub::redis) async fn run(mut self) {
        let shared = Arc::clone(&self.follow.shared);
        let settings = &shared.settings;
        let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
        let mut stop = shared.stop.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
            // Unbounded because that is what the cluster client sends pushes through; it is
            // drained by this task as they come, and Redis itself bounds what a subscriber that
            // falls behind may owe (`client-output-buffer-limit pubsub`), dropping it beyond.
            let (push, pushes) = mpsc::unbounded_channel();
            let connected = match &shared.backing {
                Backing::Cluster(nodes) => nodes.connect(settings.timeout, Some(push)).await,
                Backing::Single(_) => return,
            };
            match connected {
                Ok(conn) => {
                    backoff.reset();
                    match self.serve(conn, pushes, &mut stop).await {
                        Ended::Stopped => return,
                        Ended::Lost => {
                            self.with_counters(|c| c.backend_errors.add(1));
                            tracing::warn!(
                                target: "status_messenger::redis",
                                "redis cluster connection ended; reconnecting"
                            );
                        }
                    }
                }
                Err(error) => {
                    self.with_counters(|c| c.backend_errors.add(1));
                    tracing::warn!(target: "status_messenger::redis", %error, "redis cluster unreachable");
                    let delay = backoff.next_delay();
                    shared.set_down(&error, delay);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    fn with_counters(&self, f: impl FnOnce(&crate::hub::counters::Counters)) {
        self.follow.hub.with(|hub| f(hub.counters()));
    }

    async fn serve(
        &mut self,
        cluster: ClusterConnection,
        mut pushes: UnboundedReceiver<PushInfo>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Ended {
        let shared = Arc::clone(&self.follow.shared);
        let settings = &shared.settings;
        let mut conn = Conn::Cluster(cluster);
        // The master that took over may not have the scripts; `load` retries are in `recover`.
        let _ = wire::within(settings.timeout, Scripts::load(&mut conn)).await;
        shared.set_conn(Some(conn.clone()));
        self.follow.clear();
        self.wanted.clear();
        shared.take_interest();
        let watched = self.follow.hub.with(|hub| hub.watched());
        let Some(watched) = watched else {
            return Ended::Stopped;
        };
        for (session, _) in watched {
            let session = session.into_shared();
            let group = settings.keys.group(&session);
            self.wanted
                .entry(group)
                .or_default()
                .sessions
                .insert(session);
        }
        let mut recover = wire::ticker(settings.reconnect_min.max(Duration::from_millis(10)));
        let mut tick = wire::ticker(TICK);
        loop {
            let result = tokio::select! {
                biased;
                _ = stop.changed() => return Ended::Stopped,
                push = pushes.recv() => match push {
                    Some(push) => self.on_push(&mut conn, push).await,
                    None => return Ended::Lost,
                },
                () = shared.interest_ready.notified() => self.update_interest(&mut conn).await,
                _ = recover.tick() => self.recover(&mut conn).await,
                _ = tick.tick() => self.refresh(&mut conn).await,
            };
            if let Err(error) = result {
                // The node is away or the cluster is changing: the partitions involved stay
                // unconfirmed and are tried again.
                self.with_counters(|c| c.backend_errors.add(1));
                tracing::debug!(target: "status_messenger::redis", %error, "redis cluster request failed");
            }
        }
    }

    async fn on_push(&mut self, conn: &mut Conn, push: PushInfo) -> RedisResult<()> {
        let keys = self.follow.shared.settings.keys.clone();
        match push.kind {
            PushKind::SMessage => {
                let [channel, Value::BulkString(message)] = push.data.as_slice() else {
                    return Ok(());
                };
                let Some(group) = channel_name(channel).and_then(|c| keys.group_of(&c)) else {
                    return Ok(());
                };
                let Some(frames) = wire::parse_frames(message) else {
                    self.follow.unexpected("message");
                    return Ok(());
                };
                let mut failed = None;
                for (session, segment) in frames {
                    match self.follow.on_segment(conn, session, &segment).await {
                        Ok(After::Open) => {}
                        Ok(After::Closed) => {
                            // A subscription left behind only brings frames that are skipped.
                            let _ = self.forget(conn, group, session).await;
                        }
                        // A hole could not be read back: the partition is read again from
                        // history once the cluster answers.
                        Err(error) => failed = Some(error),
                    }
                }
                if let Some(error) = failed {
                    self.unconfirm(group);
                    return Err(error);
                }
            }
            PushKind::SSubscribe => {
                let Some(group) = push
                    .data
                    .first()
                    .and_then(channel_name)
                    .and_then(|c| keys.group_of(&c))
                else {
                    return Ok(());
                };
                // Confirmed again after a failover or a reconnect made by the client itself.
                if self.wanted.get(&group).is_some_and(|p| !p.confirmed) {
                    self.confirmed(conn, group).await?;
                }
            }
            PushKind::SUnsubscribe => {
                let group = push
                    .data
                    .first()
                    .and_then(channel_name)
                    .and_then(|c| keys.group_of(&c));
                if let Some(partition) = group.and_then(|g| self.wanted.get_mut(&g)) {
                    // Not asked for (the slot moved): subscribe again where it lives now.
                    partition.confirmed = false;
                }
            }
            PushKind::Disconnection => {
                for partition in self.wanted.values_mut() {
                    partition.confirmed = false;
                }
                self.with_counters(|c| c.backend_errors.add(1));
                tracing::warn!(
                    target: "status_messenger::redis",
                    "redis cluster node connection lost; resubscribing and catching up from history"
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Subscribes again to every wanted partition that is not confirmed (all of them when the
    /// writer failed since the last look: a node may be gone).
    async fn recover(&mut self, conn: &mut Conn) -> RedisResult<()> {
        let failures = self.follow.shared.link.writer_failures();
        // At most once a second: a failover makes the writer fail several times.
        if failures != self.writer_failures.0 && self.writer_failures.1.elapsed() >= TICK {
            self.writer_failures = (failures, Instant::now());
            for partition in self.wanted.values_mut() {
                partition.confirmed = false;
            }
        }
        let groups: Vec<u32> = self
            .wanted
            .iter()
            .filter(|(_, p)| !p.confirmed && !p.sessions.is_empty())
            .map(|(group, _)| *group)
            .collect();
        let mut failed = Ok(());
        for group in groups {
            if let Err(error) = self.subscribe(conn, group).await {
                failed = Err(error);
            }
        }
        failed
    }

    /// Something of `group` may have been missed: subscribe again and read its sessions.
    fn unconfirm(&mut self, group: u32) {
        if let Some(partition) = self.wanted.get_mut(&group) {
            partition.confirmed = false;
        }
    }

    async fn subscribe(&mut self, conn: &mut Conn, group: u32) -> RedisResult<()> {
        let shared = Arc::clone(&self.follow.shared);
        let channel = shared.settings.keys.group_channel(group);
        let Conn::Cluster(cluster) = conn else {
            return Ok(());
        };
        wire::within(shared.settings.timeout, cluster.ssubscribe(channel)).await?;
        self.confirmed(conn, group).await
    }

    /// A partition's subscription was confirmed: read each of its sessions after what it holds.
    async fn confirmed(&mut self, conn: &mut Conn, group: u32) -> RedisResult<()> {
        let Some(partition) = self.wanted.get_mut(&group) else {
            return Ok(());
        };
        partition.confirmed = true;
        let sessions: Vec<Arc<str>> = partition.sessions.iter().cloned().collect();
        let heads = self.heads(sessions);
        match self.follow.attach(conn, heads, true).await {
            Ok(closed) => {
                for session in closed {
                    // A subscription left behind only brings frames that are skipped.
                    let _ = self.forget(conn, group, &session).await;
                }
                Ok(())
            }
            Err(error) => {
                if let Some(partition) = self.wanted.get_mut(&group) {
                    partition.confirmed = false;
                }
                // The scripts may be missing on a newly promoted master.
                let timeout = self.follow.shared.settings.timeout;
                let _ = wire::within(timeout, Scripts::load(conn)).await;
                Err(error)
            }
        }
    }

    /// Each session with the number the local history holds.
    fn heads(&self, sessions: Vec<Arc<str>>) -> Vec<(Arc<str>, u64)> {
        self.follow
            .hub
            .with(|hub| {
                sessions
                    .into_iter()
                    .filter_map(|s| hub.watched_head(&s).map(|head| (s, head)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops following `session`; unsubscribes from its partition when it was the last.
    async fn forget(&mut self, conn: &mut Conn, group: u32, session: &str) -> RedisResult<()> {
        self.follow.detach(session);
        let Some(partition) = self.wanted.get_mut(&group) else {
            return Ok(());
        };
        partition.sessions.remove(session);
        if !partition.sessions.is_empty() {
            return Ok(());
        }
        self.wanted.remove(&group);
        let shared = Arc::clone(&self.follow.shared);
        let channel = shared.settings.keys.group_channel(group);
        if let Conn::Cluster(cluster) = conn {
            wire::within(shared.settings.timeout, cluster.sunsubscribe(channel)).await?;
        }
        Ok(())
    }

    /// Follows sessions that gained their first local subscriber, forgets those that lost
    /// their last.
    async fn update_interest(&mut self, conn: &mut Conn) -> RedisResult<()> {
        let shared = Arc::clone(&self.follow.shared);
        let keys = &shared.settings.keys;
        let dirty = shared.take_interest();
        let mut join = Vec::new();
        let mut leave = Vec::new();
        let mut again = Vec::new();
        let wanted = &self.wanted;
        let follow = &self.follow;
        let looked = follow.hub.with(|hub| {
            for session in dirty {
                let group = keys.group(&session);
                let known = wanted
                    .get(&group)
                    .is_some_and(|p| p.sessions.contains(&session));
                match (hub.watched_head(&session), known) {
                    (Some(head), false) => join.push((session, head)),
                    // The hub's session was evicted and opened again: read it again.
                    (Some(head), true) if follow.is_behind(&session, head) => {
                        again.push((session, head));
                    }
                    (None, true) => leave.push(session),
                    _ => {}
                }
            }
        });
        if looked.is_none() {
            return Ok(());
        }
        for session in leave {
            // A subscription left behind only brings frames that are skipped.
            let _ = self.forget(conn, keys.group(&session), &session).await;
        }
        // Still wanted and subscribed: read again from what the hub holds now.
        for (session, _) in &again {
            self.follow.detach(session);
        }
        join.extend(again);
        let mut now: Vec<(Arc<str>, u64)> = Vec::new();
        let mut subscribe = Vec::new();
        for (session, head) in join {
            let group = keys.group(&session);
            let partition = self.wanted.entry(group).or_default();
            partition.sessions.insert(Arc::clone(&session));
            if partition.confirmed {
                now.push((session, head));
            } else if !subscribe.contains(&group) {
                subscribe.push(group);
            }
        }
        let mut failed = Ok(());
        if !now.is_empty() {
            let groups: Vec<u32> = now.iter().map(|(s, _)| keys.group(s)).collect();
            match self.follow.attach(conn, now, true).await {
                Ok(closed) => {
                    for session in closed {
                        let _ = self.forget(conn, keys.group(&session), &session).await;
                    }
                }
                Err(error) => {
                    // Not attached: the recovery subscribes again and reads them.
                    for group in groups {
                        self.unconfirm(group);
                    }
                    failed = Err(error);
                }
            }
        }
        for group in subscribe {
            if let Err(error) = self.subscribe(conn, group).await {
                failed = Err(error);
            }
        }
        failed
    }

    /// Keeps the keys of served sessions alive while they have subscribers.
    async fn refresh(&mut self, conn: &mut Conn) -> RedisResult<()> {
        let shared = Arc::clone(&self.follow.shared);
        self.follow.prune();
        if !refresh_due(&mut self.last_refresh, shared.settings.ttl_ms) || self.follow.is_empty() {
            return Ok(());
        }
        let sessions = self.follow.sessions();
        // The ones no longer to be followed are let go next, and renewed no more after this.
        shared.recheck_interest(sessions.clone());
        touch_all(&shared, conn, &sessions).await
    }
}

fn channel_name(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}
