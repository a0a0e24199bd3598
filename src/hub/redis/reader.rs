//! The reader task: subscribes to the channels of the sessions this process serves and copies
//! their statuses, with the numbers Redis gave them, into the hub's local history.
//!
//! One Redis: one channel for every session, on one pub/sub connection, subscribed while this
//! process follows any session (each append call publishes once for all its sessions, so a
//! session costs no subscription of its own). What is done with each session's statuses is in
//! `follow`; frames of sessions not followed here are skipped.
//!
//! # Invariants
//!
//! - The channel is subscribed (Redis confirmed it) on the current connection whenever a
//!   session is followed, and unsubscribed once none is.
//! - Attaching subscribes first (unless subscribed already) and reads the stream second. Every
//!   append runs atomically in Redis (stream entry and publish together), so each status is
//!   either in what was read or published after the subscription took effect: nothing falls
//!   between. Numbers at or below the applied one are duplicates of what was read and are
//!   skipped.
//! - Every reconnect starts from scratch: resubscribe to the sessions that have local
//!   subscribers now and read each stream from its applied number on.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{Msg, RedisError, RedisResult, Value};
use tokio::time::Instant;

use super::follow::{After, Follow, CHUNK};
use super::wire::{self, Append, Backoff, Conn};
use super::{Backing, Shared};
use crate::hub::backend::{BackendHandle, Local};

/// How often the connections are checked.
const TICK: Duration = Duration::from_secs(1);

struct Link {
    sink: PubSubSink,
    stream: PubSubStream,
    conn: Conn,
    /// The channel is subscribed on this connection.
    subscribed: bool,
}

pub(super) struct Reader {
    follow: Follow,
    epoch: Option<String>,
    last_refresh: Instant,
}

enum Ended {
    Stopped,
    Broken(RedisError),
}

impl From<RedisError> for Ended {
    fn from(error: RedisError) -> Self {
        Ended::Broken(error)
    }
}

impl Reader {
    pub(super) fn new(shared: Arc<Shared>, hub: BackendHandle) -> Self {
        Self {
            follow: Follow::new(shared, hub),
            epoch: None,
            last_refresh: Instant::now(),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.follow.shared
    }

    pub(super) async fn run(mut self) {
        let shared = Arc::clone(self.shared());
        let settings = &shared.settings;
        let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
        let mut stop = shared.stop.subscribe();
        let mut down_since: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let error = match self.open().await {
                Ok((link, lost)) => {
                    backoff.reset();
                    if let Some(since) = down_since.take() {
                        self.with_hub(|hub| hub.counters().backend_reconnects.add(1));
                        tracing::warn!(
                            target: "status_messenger::redis",
                            after_ms = since.elapsed().as_millis() as u64,
                            data_lost = lost,
                            "reader reconnected to redis; resubscribed and catching up from \
                             history"
                        );
                    }
                    match self.serve(link, lost, &mut stop).await {
                        Ended::Stopped => return,
                        Ended::Broken(error) => {
                            shared.set_conn(None);
                            self.follow.clear();
                            // Tell the writer before anyone can see the error counted.
                            shared.link.bump();
                            self.with_hub(|hub| hub.counters().backend_errors.add(1));
                            if down_since.is_none() {
                                down_since = Some(Instant::now());
                                tracing::warn!(
                                    target: "status_messenger::redis",
                                    %error,
                                    "redis connection lost; reconnecting"
                                );
                            }
                            continue;
                        }
                    }
                }
                Err(error) => error,
            };
            shared.link.bump();
            self.with_hub(|hub| hub.counters().backend_errors.add(1));
            if down_since.is_none() {
                down_since = Some(Instant::now());
                tracing::warn!(target: "status_messenger::redis", %error, "redis unreachable");
            } else {
                tracing::debug!(target: "status_messenger::redis", %error, "reconnect failed");
            }
            let delay = backoff.next_delay();
            shared.set_down(&error, delay);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn with_hub(&self, f: impl FnOnce(Local<'_>)) {
        self.follow.hub.with(f);
    }

    async fn open(&mut self) -> RedisResult<(Link, bool)> {
        let shared = Arc::clone(self.shared());
        let settings = &shared.settings;
        #[cfg_attr(
            not(feature = "redis-cluster"),
            allow(
                clippy::infallible_destructuring_match,
                reason = "one variant without the cluster"
            )
        )]
        let client = match &shared.backing {
            Backing::Single(client) => client,
            #[cfg(feature = "redis-cluster")]
            Backing::Cluster(_) => return Err(wire::timed_out()),
        };
        let mut conn = wire::connect(client, settings.timeout).await?;
        let epoch = wire::epoch(&mut conn, &settings.keys).await?;
        let mut conn = Conn::Single(conn);
        wire::Scripts::load(&mut conn).await?;
        let (sink, stream) = wire::connect_pubsub(client, settings.timeout).await?;
        let lost = self.epoch.as_ref().is_some_and(|seen| *seen != epoch);
        self.epoch = Some(epoch);
        let link = Link {
            sink,
            stream,
            conn,
            subscribed: false,
        };
        Ok((link, lost))
    }

    async fn serve(
        &mut self,
        mut link: Link,
        lost: bool,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Ended {
        let shared = Arc::clone(self.shared());
        shared.set_conn(Some(link.conn.clone()));
        self.follow.clear();
        // Everything that changes from here on is seen by the next `update_interest`.
        shared.take_interest();
        let watched = self.follow.hub.with(|hub| {
            hub.watched()
                .into_iter()
                .map(|(id, head)| (id.into_shared(), head))
                .collect::<Vec<_>>()
        });
        let Some(watched) = watched else {
            return Ended::Stopped;
        };
        if lost {
            if let Err(error) = raise_floors(&shared, &mut link.conn, &watched).await {
                return Ended::Broken(error);
            }
        }
        if let Err(error) = self.attach(&mut link, watched).await {
            return Ended::Broken(error);
        }
        let mut tick = wire::ticker(TICK);
        loop {
            let result = tokio::select! {
                biased;
                _ = stop.changed() => return Ended::Stopped,
                message = next_message(&mut link.stream) => match message {
                    Some(message) => self.on_message(&mut link, &message).await,
                    None => Err(closed()),
                },
                () = shared.interest_ready.notified() => self.update_interest(&mut link).await,
                _ = tick.tick() => self.check(&mut link).await,
            };
            if let Err(error) = result {
                return Ended::Broken(error);
            }
        }
    }

    /// Subscribes to the channel unless it is, then reads each of `sessions` after what the
    /// local history holds.
    async fn attach(&mut self, link: &mut Link, sessions: Vec<(Arc<str>, u64)>) -> RedisResult<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let shared = Arc::clone(self.shared());
        let settings = &shared.settings;
        if !link.subscribed {
            let channel = settings.keys.group_channel(0);
            wire::within(settings.timeout, link.sink.subscribe(channel)).await?;
            link.subscribed = true;
        }
        for chunk in sessions.chunks(CHUNK) {
            // A subscriber opens the session, as a status would. Sessions found closed are not
            // followed.
            self.follow
                .attach(&mut link.conn, chunk.to_vec(), true)
                .await?;
        }
        self.unsubscribe_if_idle(link).await
    }

    /// Unsubscribes from the channel once no session is followed, so an idle process hears
    /// nothing.
    async fn unsubscribe_if_idle(&mut self, link: &mut Link) -> RedisResult<()> {
        if !link.subscribed || !self.follow.is_empty() {
            return Ok(());
        }
        let settings = &self.shared().settings;
        let channel = settings.keys.group_channel(0);
        wire::within(settings.timeout, link.sink.unsubscribe(channel)).await?;
        link.subscribed = false;
        Ok(())
    }

    async fn on_message(&mut self, link: &mut Link, message: &Msg) -> RedisResult<()> {
        let Some(frames) = wire::parse_frames(message.get_payload_bytes()) else {
            self.follow.unexpected("message");
            return Ok(());
        };
        let mut closed = false;
        for (session, segment) in frames {
            closed |= self
                .follow
                .on_segment(&mut link.conn, session, &segment)
                .await?
                == After::Closed;
        }
        if closed {
            self.unsubscribe_if_idle(link).await?;
        }
        Ok(())
    }

    /// Attaches sessions that gained their first local subscriber, detaches those that lost
    /// their last.
    async fn update_interest(&mut self, link: &mut Link) -> RedisResult<()> {
        let shared = Arc::clone(self.shared());
        let dirty = shared.take_interest();
        let mut attach = Vec::new();
        let mut detach = Vec::new();
        let mut again = Vec::new();
        let follow = &self.follow;
        let looked = follow.hub.with(|hub| {
            for session in dirty {
                match (hub.watched_head(&session), follow.is_attached(&session)) {
                    (Some(head), false) => attach.push((session, head)),
                    (Some(head), true) if follow.is_behind(&session, head) => {
                        again.push((session, head));
                    }
                    (None, true) => detach.push(session),
                    _ => {}
                }
            }
        });
        if looked.is_none() {
            return Ok(());
        }
        // Still subscribed: read again from what the hub holds now.
        for (session, _) in &again {
            self.follow.detach(session);
        }
        attach.extend(again);
        for session in &detach {
            self.follow.detach(session);
        }
        if attach.is_empty() {
            return self.unsubscribe_if_idle(link).await;
        }
        self.attach(link, attach).await
    }

    /// Pings both connections, so a dead one is noticed even when nothing happens, and keeps
    /// the keys of served sessions alive while they have subscribers.
    async fn check(&mut self, link: &mut Link) -> RedisResult<()> {
        let shared = Arc::clone(self.shared());
        let settings = &shared.settings;
        wire::within(settings.timeout, link.sink.ping::<Value>()).await?;
        redis::cmd("PING")
            .query_async::<Value>(&mut link.conn)
            .await?;
        self.follow.prune();
        if !refresh_due(&mut self.last_refresh, settings.ttl_ms) || self.follow.is_empty() {
            return Ok(());
        }
        let sessions = self.follow.sessions();
        // The ones no longer to be followed are let go next, and renewed no more after this.
        shared.recheck_interest(sessions.clone());
        touch_all(&shared, &mut link.conn, &sessions).await
    }
}

/// Whether the keys of served sessions are due to be renewed (every third of the TTL, at most
/// once a second); restarts the clock when they are.
pub(super) fn refresh_due(last: &mut Instant, ttl_ms: u64) -> bool {
    let every = Duration::from_millis(ttl_ms / 3).max(TICK);
    if last.elapsed() < every {
        return false;
    }
    *last = Instant::now();
    true
}

/// Renews the keys of `sessions` (one pipeline per partition on a cluster).
pub(super) async fn touch_all(
    shared: &Shared,
    conn: &mut Conn,
    sessions: &[Arc<str>],
) -> RedisResult<()> {
    let settings = &shared.settings;
    let keys = &settings.keys;
    let mut by_group: std::collections::HashMap<u32, Vec<&Arc<str>>> =
        std::collections::HashMap::new();
    for session in sessions {
        by_group
            .entry(keys.group(session))
            .or_default()
            .push(session);
    }
    for sessions in by_group.into_values() {
        for chunk in sessions.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for session in chunk {
                wire::touch(&mut pipe, keys, session, settings.key_ttl_ms());
            }
            wire::within(settings.timeout, pipe.query_async::<()>(conn)).await?;
        }
    }
    Ok(())
}

/// Redis restarted without its data: put each watched session's counter back to at least
/// what this process has seen, so new statuses are not numbered below it.
async fn raise_floors(
    shared: &Shared,
    conn: &mut Conn,
    watched: &[(Arc<str>, u64)],
) -> RedisResult<()> {
    let settings = &shared.settings;
    let call = settings.call(0, "", 0, false);
    let watched: Vec<&(Arc<str>, u64)> = watched.iter().filter(|(_, head)| *head > 0).collect();
    for chunk in watched.chunks(CHUNK) {
        let appends: Vec<Append<'_>> = chunk
            .iter()
            .map(|(session, head)| Append {
                session,
                floor: *head,
                items: &[],
                trailing: 0,
                reserve: 0,
                renew: true,
            })
            .collect();
        shared
            .scripts
            .append_cmd(&settings.keys, &call, &appends, &[])
            .query_async::<()>(conn)
            .await?;
    }
    Ok(())
}

async fn next_message(stream: &mut PubSubStream) -> Option<Msg> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

fn closed() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "redis closed the subscription connection",
    ))
}
