//! The writer task: takes statuses from the outbox and appends them to Redis, one pipeline of
//! script calls at a time, over one multiplexed connection.
//!
//! # Invariants
//!
//! - At most one batch is unconfirmed at a time. When its pipeline fails as a whole, its fate is
//!   unknown (some calls may have run); it stays `pending` and is sent again after reconnecting.
//!   Each call carries a token, increasing per writer, that the scripts record per session, so a
//!   call that had run is not applied twice.
//! - If Redis lost its data meanwhile (the epoch changed), tokens are gone too and the pending
//!   calls may already have reached some subscribers: instead of appending their statuses again,
//!   their numbers are reserved (skipped) so that whoever missed them gets a gap.
//! - `known` holds, per session, the highest number Redis gave this writer. It is sent with
//!   every append as the floor under the session's counter, so numbering never goes back after
//!   Redis restarted empty.
//! - Statuses leave the outbox's bound only once Redis confirmed them (or they were counted as
//!   dropped), so the bound holds for statuses in flight too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisError, RedisResult, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::outbox::Item;
use super::wire::{self, Append, Backoff, Body, Scripts};
use super::Shared;
use crate::hub::backend::BackendHandle;

/// How often an idle writer checks its connection and forgets old sessions.
const IDLE_TICK: Duration = Duration::from_secs(1);

enum Call {
    Append {
        session: Arc<str>,
        /// `(numbers skipped before it, status)` per status, in order.
        items: Vec<(u64, Body)>,
        /// Numbers skipped after the last status.
        trailing: u64,
        token: u64,
    },
    Close {
        session: Arc<str>,
        token: u64,
        /// Hears whether the session existed; dropped unanswered when the close fails.
        reply: Option<oneshot::Sender<bool>>,
    },
}

impl Call {
    fn statuses(&self) -> u64 {
        match self {
            Call::Append { items, .. } => items.len() as u64,
            Call::Close { .. } => 0,
        }
    }
}

struct Batch {
    /// Each call, and whether Redis confirmed it (or it was given up and counted).
    calls: Vec<(Call, bool)>,
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    hub: BackendHandle,
    id: String,
    next_token: u64,
    known: HashMap<Arc<str>, (u64, Instant)>,
    epoch: Option<String>,
    pending: Option<Batch>,
}

/// Why the writer stopped using its connection.
enum Broken {
    /// Reconnect and go on.
    Link(RedisError),
    /// The reader saw the connection to Redis fail.
    Peer,
    /// Shut down: the outbox is closed and drained.
    Done,
}

impl Writer {
    pub(super) fn new(shared: Arc<Shared>, hub: BackendHandle) -> Self {
        Self {
            shared,
            hub,
            id: format!("w:{}", wire::random_id()),
            next_token: 1,
            known: HashMap::new(),
            epoch: None,
            pending: None,
        }
    }

    pub(super) async fn run(mut self) {
        let settings = &self.shared.settings;
        let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
        let mut down_since: Option<Instant> = None;
        loop {
            let generation = self.shared.link.generation();
            let attempt = self.open().await;
            let (mut conn, mut scripts, lost) = match attempt {
                Ok(opened) => opened,
                Err(error) => {
                    self.count_error();
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        tracing::warn!(
                            target: "status_messenger::redis",
                            %error,
                            buffer_capacity = self.shared.settings.buffer_capacity,
                            "redis unreachable; statuses are buffered up to buffer_capacity, \
                             beyond it dropped and counted"
                        );
                    } else {
                        tracing::debug!(target: "status_messenger::redis", %error, "reconnect failed");
                    }
                    if self.shared.stopping() {
                        self.give_up();
                        return;
                    }
                    let delay = backoff.next_delay();
                    // Shutting down, it tries once more at once, then gives up.
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shared.outbox.wait_shut() => {}
                    }
                    continue;
                }
            };
            backoff.reset();
            if let Some(since) = down_since.take() {
                self.count_reconnect();
                tracing::warn!(
                    target: "status_messenger::redis",
                    after_ms = since.elapsed().as_millis() as u64,
                    data_lost = lost,
                    "writer reconnected to redis"
                );
            }
            if lost {
                self.reserve_pending();
            }
            match self.serve(&mut conn, &mut scripts, generation).await {
                Broken::Done => {
                    self.shared.set_final_heads(
                        self.known
                            .iter()
                            .map(|(s, (seq, _))| (Arc::clone(s), *seq))
                            .collect(),
                    );
                    return;
                }
                Broken::Peer => {
                    down_since.get_or_insert_with(Instant::now);
                    tracing::debug!(
                        target: "status_messenger::redis",
                        "writer reconnecting: the reader lost redis"
                    );
                }
                Broken::Link(error) => {
                    self.count_error();
                    down_since = Some(Instant::now());
                    tracing::warn!(
                        target: "status_messenger::redis",
                        %error,
                        unconfirmed = self.pending.as_ref().map_or(0, Batch::open_statuses),
                        "redis connection lost while writing; reconnecting, unconfirmed \
                         statuses are sent again"
                    );
                }
            }
        }
    }

    /// Connects, loads the scripts and reads the epoch; says whether Redis lost its data.
    async fn open(&mut self) -> RedisResult<(MultiplexedConnection, Scripts, bool)> {
        let settings = &self.shared.settings;
        let mut conn = wire::connect(&self.shared.client, settings.timeout).await?;
        let scripts = Scripts::load(&mut conn).await?;
        let epoch = wire::epoch(&mut conn, &settings.keys).await?;
        let lost = self.epoch.as_ref().is_some_and(|seen| *seen != epoch);
        if lost {
            tracing::warn!(
                target: "status_messenger::redis",
                "redis restarted without its data: history is lost, numbering goes on from \
                 what this process knew"
            );
        }
        self.epoch = Some(epoch);
        Ok((conn, scripts, lost))
    }

    /// Sends the pending batch, then batches from the outbox, until the connection breaks or the
    /// outbox is closed and empty.
    async fn serve(
        &mut self,
        conn: &mut MultiplexedConnection,
        scripts: &mut Scripts,
        generation: u64,
    ) -> Broken {
        let mut items = Vec::new();
        let mut idle = tokio::time::interval(IDLE_TICK);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.shared.link.generation() != generation {
                return Broken::Peer;
            }
            if self.pending.is_none() {
                if self
                    .shared
                    .outbox
                    .try_take(self.shared.settings.batch, &mut items)
                    .is_some()
                {
                    let batch = self.build(std::mem::take(&mut items));
                    self.pending = Some(batch);
                } else if self.shared.outbox.is_shut() {
                    return Broken::Done;
                }
            }
            if let Some(mut batch) = self.pending.take() {
                if let Err(error) = self.send(conn, scripts, &mut batch).await {
                    self.pending = Some(batch);
                    return Broken::Link(error);
                }
                continue;
            }
            tokio::select! {
                biased;
                () = self.shared.link.down.notified() => {}
                () = self.shared.outbox.ready() => {}
                _ = idle.tick() => {
                    self.forget_idle();
                    let ping: RedisResult<()> = redis::cmd("PING").query_async(conn).await;
                    if let Err(error) = ping {
                        return Broken::Link(error);
                    }
                }
            }
        }
    }

    fn token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// Groups items into one append call per session (split where a session is closed).
    fn build(&mut self, items: Vec<Item>) -> Batch {
        let mut calls: Vec<(Call, bool)> = Vec::new();
        let mut open: HashMap<Arc<str>, usize> = HashMap::new();
        for item in items {
            let session = Arc::clone(item.session());
            if let Item::Close { reply, .. } = item {
                open.remove(&session);
                let token = self.token();
                calls.push((
                    Call::Close {
                        session,
                        token,
                        reply,
                    },
                    false,
                ));
                continue;
            }
            let index = match open.get(&session) {
                Some(&index) => index,
                None => {
                    let token = self.token();
                    calls.push((
                        Call::Append {
                            session: Arc::clone(&session),
                            items: Vec::new(),
                            trailing: 0,
                            token,
                        },
                        false,
                    ));
                    open.insert(session, calls.len() - 1);
                    calls.len() - 1
                }
            };
            if let (
                Call::Append {
                    items, trailing, ..
                },
                _,
            ) = &mut calls[index]
            {
                match item {
                    Item::Status { status, skip, .. } => {
                        items.push((skip + std::mem::take(trailing), status));
                    }
                    Item::Skip { count, .. } => *trailing += count,
                    Item::Close { .. } => {}
                }
            }
        }
        Batch { calls }
    }

    fn command(&self, call: &Call, scripts: &Scripts) -> Cmd {
        let settings = &self.shared.settings;
        match call {
            Call::Append {
                session,
                items,
                trailing,
                token,
            } => scripts.append_cmd(
                &settings.keys,
                settings.history_capacity,
                settings.ttl_ms,
                &Append {
                    session,
                    writer: &self.id,
                    token: *token,
                    floor: self.known.get(session).map_or(0, |k| k.0),
                    items,
                    trailing: *trailing,
                },
            ),
            Call::Close { session, token, .. } => {
                scripts.close_cmd(&settings.keys, settings.ttl_ms, session, &self.id, *token)
            }
        }
    }

    /// Sends the calls of `batch` not yet confirmed. `Err` when the pipeline failed as a whole:
    /// the batch stays unconfirmed.
    async fn send(
        &mut self,
        conn: &mut MultiplexedConnection,
        scripts: &mut Scripts,
        batch: &mut Batch,
    ) -> RedisResult<()> {
        // A second round only when the server had forgotten the scripts (flushed or restarted
        // under us): those calls did not run, so sending them again is safe.
        for round in 0..2 {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            let mut sent = Vec::new();
            for (index, (call, done)) in batch.calls.iter().enumerate() {
                if !*done {
                    pipe.add_command(self.command(call, scripts));
                    sent.push(index);
                }
            }
            if sent.is_empty() {
                return Ok(());
            }
            let results: Vec<RedisResult<Value>> = pipe.query_async(conn).await?;
            let mut reload = false;
            for (index, result) in sent.into_iter().zip(results) {
                let (call, done) = &mut batch.calls[index];
                match result {
                    Err(error) if round == 0 && wire::is_noscript(&error) => reload = true,
                    Ok(value) => {
                        *done = true;
                        let statuses = call.statuses();
                        self.confirmed(call, &value);
                        self.release(statuses);
                    }
                    Err(error) => {
                        *done = true;
                        let statuses = call.statuses();
                        self.count_error();
                        self.count_dropped(statuses);
                        self.release(statuses);
                        tracing::warn!(
                            target: "status_messenger::redis",
                            %error,
                            statuses,
                            "redis refused a write; its statuses are dropped (counted in \
                             HubStats::dropped_backend)"
                        );
                    }
                }
            }
            if !reload {
                return Ok(());
            }
            *scripts = Scripts::load(conn).await?;
        }
        Ok(())
    }

    fn confirmed(&mut self, call: &mut Call, value: &Value) {
        match call {
            Call::Append { session, .. } => match wire::parse_append(value) {
                Some((_, counter)) => {
                    let now = Instant::now();
                    let known = self
                        .known
                        .entry(Arc::clone(session))
                        .or_insert((counter, now));
                    *known = (known.0.max(counter), now);
                }
                None => {
                    self.count_error();
                    tracing::warn!(
                        target: "status_messenger::redis",
                        reply = ?value,
                        "unexpected reply from the append script"
                    );
                }
            },
            Call::Close { session, reply, .. } => {
                self.known.remove(session);
                if let Some(reply) = reply.take() {
                    // The caller may have stopped waiting; the close was applied either way.
                    let _gone = reply.send(wire::parse_close(value));
                }
            }
        }
    }

    /// Redis lost its data while a batch was unconfirmed: some of its statuses may have reached
    /// subscribers, the rest never will. Appending them again would deliver some twice, so
    /// their numbers are reserved instead and whoever missed them gets a gap.
    fn reserve_pending(&mut self) {
        let Some(batch) = self.pending.as_mut() else {
            return;
        };
        let mut reserved = 0;
        for (call, done) in &mut batch.calls {
            if *done {
                continue;
            }
            if let Call::Append {
                items, trailing, ..
            } = call
            {
                reserved += items.len() as u64;
                *trailing += items.drain(..).map(|(skip, _)| skip + 1).sum::<u64>();
            }
        }
        // Fresh tokens: the scripts must run even if the new Redis somehow had old tokens.
        let calls = std::mem::take(&mut batch.calls);
        let calls = calls
            .into_iter()
            .map(|(call, done)| {
                let token = self.token();
                let call = match call {
                    Call::Append {
                        session,
                        items,
                        trailing,
                        ..
                    } => Call::Append {
                        session,
                        items,
                        trailing,
                        token,
                    },
                    Call::Close { session, reply, .. } => Call::Close {
                        session,
                        token,
                        reply,
                    },
                };
                (call, done)
            })
            .collect();
        self.pending = Some(Batch { calls });
        if reserved > 0 {
            self.count_dropped(reserved);
            self.release(reserved);
            tracing::warn!(
                target: "status_messenger::redis",
                statuses = reserved,
                "statuses unconfirmed when redis lost its data; their numbers are skipped so \
                 subscribers that missed them get a gap (counted in HubStats::dropped_backend)"
            );
        }
    }

    /// Shutting down with Redis away: what is still buffered cannot be delivered.
    fn give_up(&mut self) {
        self.pending = None;
        let lost = self.shared.outbox.discard() as u64;
        self.hub
            .with(|hub| hub.counters().backend_buffered.sub(lost));
        if lost > 0 {
            self.count_dropped(lost);
            tracing::warn!(
                target: "status_messenger::redis",
                statuses = lost,
                "shutting down with redis unreachable; buffered statuses dropped (counted in \
                 HubStats::dropped_backend)"
            );
        }
    }

    fn forget_idle(&mut self) {
        let ttl = Duration::from_millis(self.shared.settings.ttl_ms);
        self.known.retain(|_, (_, at)| at.elapsed() < ttl);
    }

    fn release(&self, statuses: u64) {
        self.shared.outbox.release(statuses as usize);
        self.hub
            .with(|hub| hub.counters().backend_buffered.sub(statuses));
    }

    fn count_error(&self) {
        self.hub.with(|hub| hub.counters().backend_errors.add(1));
    }

    fn count_reconnect(&self) {
        self.hub
            .with(|hub| hub.counters().backend_reconnects.add(1));
    }

    fn count_dropped(&self, statuses: u64) {
        self.hub
            .with(|hub| hub.counters().dropped_backend.add(statuses));
    }
}

impl Batch {
    fn open_statuses(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(_, done)| !done)
            .map(|(call, _)| call.statuses())
            .sum()
    }
}
