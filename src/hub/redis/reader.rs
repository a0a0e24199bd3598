//! The reader task: subscribes to the channels of the sessions this process serves and copies
//! their statuses, with the numbers Redis gave them, into the hub's local history.
//!
//! # Invariants
//!
//! - A session is in `attached` exactly while its channel is subscribed on the current
//!   connection; its value is the highest number applied to the local history (a status, or a
//!   number reported lost).
//! - Attaching subscribes first and reads the stream second. Every append runs atomically in
//!   Redis (stream entry and publish together), so each status is either in what was read or
//!   published after the subscription took effect: nothing falls between. Numbers at or below
//!   the applied one are duplicates of what was read and are skipped.
//! - A published number above the next one expected leaves a hole. Before the later status is
//!   applied the hole is read back from the stream; whatever the stream no longer holds is
//!   applied as lost, so subscribers see it as a gap, never as a silent skip.
//! - Every reconnect starts from scratch: resubscribe to the sessions that have local
//!   subscribers (or tasks running here) now and read each stream from its applied number on.
//! - Attaching also reads the session's tasks, after subscribing and before its history, and
//!   hands them to the hub as what a subscription starts with; a stop asked for a task running
//!   here while this process was not listening is applied then. A task change published later
//!   is applied where it comes among the statuses, after the numbers up to its `last_seq`
//!   (holes read back first, as for a status).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{Msg, RedisError, RedisResult, Value};
use tokio::time::Instant;

use super::wire::{self, Append, Backoff, Record, Scripts, Stored};
use super::Shared;
use crate::hub::backend::{BackendHandle, Local};
use crate::hub::core::{Delivered, TaskRecord};

/// How often the connections are checked.
const TICK: Duration = Duration::from_secs(1);
/// Sessions per SUBSCRIBE command and per read pipeline.
const CHUNK: usize = 256;

struct Link {
    sink: PubSubSink,
    stream: PubSubStream,
    conn: MultiplexedConnection,
    scripts: Scripts,
}

pub(super) struct Reader {
    shared: Arc<Shared>,
    hub: BackendHandle,
    epoch: Option<String>,
    attached: HashMap<Arc<str>, u64>,
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
            shared,
            hub,
            epoch: None,
            attached: HashMap::new(),
            last_refresh: Instant::now(),
        }
    }

    pub(super) async fn run(mut self) {
        let settings = &self.shared.settings;
        let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
        let mut stop = self.shared.stop.subscribe();
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
                            self.shared.set_conn(None);
                            self.attached.clear();
                            // Tell the writer before anyone can see the error counted.
                            self.shared.link.bump();
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
            self.shared.link.bump();
            self.with_hub(|hub| hub.counters().backend_errors.add(1));
            if down_since.is_none() {
                down_since = Some(Instant::now());
                tracing::warn!(target: "status_messenger::redis", %error, "redis unreachable");
            } else {
                tracing::debug!(target: "status_messenger::redis", %error, "reconnect failed");
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn with_hub(&self, f: impl FnOnce(Local<'_>)) {
        self.hub.with(f);
    }

    async fn open(&mut self) -> RedisResult<(Link, bool)> {
        let settings = &self.shared.settings;
        let mut conn = wire::connect(&self.shared.client, settings.timeout).await?;
        let scripts = Scripts::load(&mut conn).await?;
        let epoch = wire::epoch(&mut conn, &settings.keys).await?;
        let (sink, stream) = wire::connect_pubsub(&self.shared.client, settings.timeout).await?;
        let lost = self.epoch.as_ref().is_some_and(|seen| *seen != epoch);
        self.epoch = Some(epoch);
        Ok((
            Link {
                sink,
                stream,
                conn,
                scripts,
            },
            lost,
        ))
    }

    async fn serve(
        &mut self,
        mut link: Link,
        lost: bool,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Ended {
        self.shared.set_conn(Some(link.conn.clone()));
        self.attached.clear();
        // Everything that changes from here on is seen by the next `update_interest`.
        self.shared.take_interest();
        let watched = self.hub.with(|hub| {
            hub.watched()
                .into_iter()
                .map(|(id, head)| (id.into_shared(), head))
                .collect::<Vec<_>>()
        });
        let Some(watched) = watched else {
            return Ended::Stopped;
        };
        if lost {
            if let Err(error) = self.raise_floors(&mut link, &watched).await {
                return Ended::Broken(error);
            }
        }
        if let Err(error) = self.attach(&mut link, watched).await {
            return Ended::Broken(error);
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                biased;
                _ = stop.changed() => return Ended::Stopped,
                message = next_message(&mut link.stream) => match message {
                    Some(message) => self.on_message(&mut link, &message).await,
                    None => Err(closed()),
                },
                () = self.shared.interest_ready.notified() => self.update_interest(&mut link).await,
                _ = tick.tick() => self.check(&mut link).await,
            };
            if let Err(error) = result {
                return Ended::Broken(error);
            }
        }
    }

    /// Redis restarted without its data: put each watched session's counter back to at least
    /// what this process has seen, so new statuses are not numbered below it.
    async fn raise_floors(
        &mut self,
        link: &mut Link,
        watched: &[(Arc<str>, u64)],
    ) -> RedisResult<()> {
        let settings = &self.shared.settings;
        let keys = &settings.keys;
        for chunk in watched.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for (session, head) in chunk.iter().filter(|(_, head)| *head > 0) {
                let call = Append {
                    session,
                    writer: "",
                    token: 0,
                    floor: *head,
                    items: &[],
                    trailing: 0,
                };
                pipe.add_command(link.scripts.append_cmd(
                    keys,
                    settings.history_capacity,
                    settings.ttl_ms,
                    &call,
                ))
                .ignore();
            }
            if !pipe.is_empty() {
                pipe.query_async::<()>(&mut link.conn).await?;
            }
        }
        Ok(())
    }

    /// Subscribes to `sessions`, then reads each stream after what the local history holds.
    async fn attach(&mut self, link: &mut Link, sessions: Vec<(Arc<str>, u64)>) -> RedisResult<()> {
        let shared = Arc::clone(&self.shared);
        let settings = &shared.settings;
        let keys = &settings.keys;
        for chunk in sessions.chunks(CHUNK) {
            let channels: Vec<String> = chunk.iter().map(|(s, _)| keys.channel(s)).collect();
            wire::within(settings.timeout, link.sink.subscribe(channels)).await?;
            self.load_tasks(link, chunk).await?;
            let mut pipe = redis::pipe();
            for (session, head) in chunk {
                pipe.add_command(link.scripts.read_cmd(keys, session, head + 1, None));
                // A subscriber opens the session, as a status would.
                wire::touch(&mut pipe, keys, session, settings.ttl_ms);
            }
            let reads: Vec<Value> = pipe.query_async(&mut link.conn).await?;
            for ((session, head), read) in chunk.iter().zip(reads) {
                self.attached.insert(Arc::clone(session), *head);
                let Some((counter, entries)) = wire::parse_read(read, head + 1, u64::MAX) else {
                    self.unexpected("read");
                    continue;
                };
                self.apply(session, entries, counter);
            }
        }
        Ok(())
    }

    /// Reads the tasks of `sessions` and hands them to the hub, as what a subscription starts
    /// with; applies the stops asked for tasks running here.
    async fn load_tasks(
        &mut self,
        link: &mut Link,
        sessions: &[(Arc<str>, u64)],
    ) -> RedisResult<()> {
        let keys = &self.shared.settings.keys;
        let mut pipe = redis::pipe();
        for (session, _) in sessions {
            pipe.cmd("HGETALL").arg(keys.tasks(session));
        }
        let all: Vec<Value> = pipe.query_async(&mut link.conn).await?;
        for ((session, _), tasks) in sessions.iter().zip(all) {
            let Some((tasks, asked)) = wire::parse_tasks(tasks) else {
                self.unexpected("tasks");
                continue;
            };
            self.with_hub(|hub| {
                for task in tasks {
                    hub.deliver_task(session, task, None);
                }
                for task in asked {
                    if hub.runs_here(session, &task) {
                        let _state = hub.cancel_here(session, &task);
                    }
                }
            });
        }
        Ok(())
    }

    /// Applies statuses read from the stream, and `counter` as the highest number given.
    fn apply(&mut self, session: &Arc<str>, entries: Vec<Stored>, counter: u64) {
        let Some(last) = self.attached.get_mut(session) else {
            return;
        };
        let fresh: Vec<Delivered> = entries
            .into_iter()
            .filter(|(seq, _, _)| *seq > *last)
            .map(|(seq, text, extra)| Delivered {
                seq,
                text: Arc::from(text),
                extra,
            })
            .collect();
        let top = fresh
            .last()
            .map_or(counter, |status| counter.max(status.seq));
        if top <= *last {
            return;
        }
        *last = top;
        self.hub.with(|hub| hub.deliver(session, fresh, top));
        self.shared.progress.notify_waiters();
    }

    async fn on_message(&mut self, link: &mut Link, message: &Msg) -> RedisResult<()> {
        let keys = &self.shared.settings.keys;
        let Some(session) = keys.session_of(message.get_channel_name()) else {
            return Ok(());
        };
        let Some((session, &last)) = self.attached.get_key_value(session) else {
            // Unsubscribed since; the message was already on its way.
            return Ok(());
        };
        let session = Arc::clone(session);
        let Some(records) = wire::parse(message.get_payload_bytes()) else {
            self.unexpected("message");
            return Ok(());
        };
        let mut last = last;
        let mut fresh: Vec<Delivered> = Vec::new();
        for record in records {
            let mut change = None;
            let (seq, status) = match record {
                Record::Status(seq, text, extra) => (seq, Some((text, extra))),
                Record::Head(seq) => (seq, None),
                Record::Closed => {
                    self.flush(&session, &mut fresh, last);
                    return self.closed(link, &session).await;
                }
                Record::Cancel(task) => {
                    let task = task.to_owned();
                    self.with_hub(|hub| {
                        if hub.runs_here(&session, &task) {
                            let _state = hub.cancel_here(&session, &task);
                        }
                    });
                    continue;
                }
                // Placed after the numbers up to its `last_seq`, which come first.
                Record::Task(task) => {
                    let seq = task.last_seq;
                    change = Some(task);
                    (seq, None)
                }
            };
            let hole_end = if status.is_some() { seq - 1 } else { seq };
            if seq > last && hole_end > last {
                self.flush(&session, &mut fresh, last);
                self.fill(link, &session, last + 1, hole_end).await?;
                last = hole_end;
            }
            if let Some(change) = change {
                self.flush(&session, &mut fresh, last);
                self.deliver_task(&session, change);
                continue;
            }
            if seq <= last {
                continue;
            }
            if let Some((text, extra)) = status {
                fresh.push(Delivered {
                    seq,
                    text: Arc::from(String::from_utf8_lossy(text)),
                    extra,
                });
                last = seq;
            }
        }
        self.flush(&session, &mut fresh, last);
        Ok(())
    }

    /// Hands a task change to the hub, after the statuses numbered up to its `last_seq`.
    fn deliver_task(&self, session: &Arc<str>, change: TaskRecord) {
        let after = change.last_seq;
        self.with_hub(|hub| hub.deliver_task(session, change, Some(after)));
        self.shared.progress.notify_waiters();
    }

    fn flush(&mut self, session: &Arc<str>, fresh: &mut Vec<Delivered>, last: u64) {
        let applied = self.attached.get(session).copied().unwrap_or(0);
        if fresh.is_empty() && last <= applied {
            return;
        }
        let entries = std::mem::take(fresh);
        if let Some(applied) = self.attached.get_mut(session) {
            *applied = (*applied).max(last);
        }
        self.hub.with(|hub| hub.deliver(session, entries, last));
        self.shared.progress.notify_waiters();
    }

    /// Reads numbers `from..=to` back from the stream; what it no longer holds is lost.
    async fn fill(
        &mut self,
        link: &mut Link,
        session: &Arc<str>,
        from: u64,
        to: u64,
    ) -> RedisResult<()> {
        let keys = &self.shared.settings.keys;
        let read: Value = link
            .scripts
            .read_cmd(keys, session, from, Some(to))
            .query_async(&mut link.conn)
            .await?;
        match wire::parse_read(read, from, to) {
            Some((_, entries)) => self.apply(session, entries, to),
            None => {
                self.unexpected("read");
                self.apply(session, Vec::new(), to);
            }
        }
        Ok(())
    }

    async fn closed(&mut self, link: &mut Link, session: &Arc<str>) -> RedisResult<()> {
        self.attached.remove(session);
        self.hub.with(|hub| hub.close(session));
        self.shared.progress.notify_waiters();
        let channel = self.shared.settings.keys.channel(session);
        wire::within(self.shared.settings.timeout, link.sink.unsubscribe(channel)).await
    }

    /// Attaches sessions that gained their first local subscriber, detaches those that lost
    /// their last.
    async fn update_interest(&mut self, link: &mut Link) -> RedisResult<()> {
        let dirty = self.shared.take_interest();
        let mut attach = Vec::new();
        let mut detach = Vec::new();
        let attached = &self.attached;
        let looked = self.hub.with(|hub| {
            for session in dirty {
                match (hub.watched_head(&session), attached.contains_key(&session)) {
                    (Some(head), false) => attach.push((session, head)),
                    (None, true) => detach.push(session),
                    _ => {}
                }
            }
        });
        if looked.is_none() {
            return Ok(());
        }
        if !detach.is_empty() {
            let keys = &self.shared.settings.keys;
            let channels: Vec<String> = detach.iter().map(|s| keys.channel(s)).collect();
            for session in &detach {
                self.attached.remove(session);
            }
            wire::within(
                self.shared.settings.timeout,
                link.sink.unsubscribe(channels),
            )
            .await?;
        }
        if !attach.is_empty() {
            self.attach(link, attach).await?;
        }
        Ok(())
    }

    /// Pings both connections, so a dead one is noticed even when nothing happens, and keeps
    /// the keys of served sessions alive while they have subscribers or tasks running here.
    async fn check(&mut self, link: &mut Link) -> RedisResult<()> {
        let settings = &self.shared.settings;
        wire::within(settings.timeout, link.sink.ping::<Value>()).await?;
        redis::cmd("PING")
            .query_async::<Value>(&mut link.conn)
            .await?;
        let refresh_every = Duration::from_millis(settings.ttl_ms / 3).max(TICK);
        if self.last_refresh.elapsed() < refresh_every || self.attached.is_empty() {
            return Ok(());
        }
        self.last_refresh = Instant::now();
        let keys = &settings.keys;
        let sessions: Vec<Arc<str>> = self.attached.keys().cloned().collect();
        for chunk in sessions.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for session in chunk {
                wire::touch(&mut pipe, keys, session, settings.ttl_ms);
                // And its tasks, which a long quiet task would otherwise outlive.
                pipe.cmd("PEXPIRE")
                    .arg(keys.tasks(session))
                    .arg(settings.ttl_ms)
                    .ignore();
            }
            pipe.query_async::<()>(&mut link.conn).await?;
        }
        Ok(())
    }

    fn unexpected(&self, what: &str) {
        self.with_hub(|hub| hub.counters().backend_errors.add(1));
        tracing::warn!(
            target: "status_messenger::redis",
            what,
            "unexpected data from redis ignored (another version of the key layout?)"
        );
    }
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
