//! The writer task: takes statuses from the outbox and appends them to Redis, one batch at a
//! time: one script call per group of sessions (all of them on one Redis, a partition on a
//! cluster), over one multiplexed connection (one pipeline on one Redis; each partition's calls
//! in order, the partitions side by side, on a cluster). Here the connection loop, what it
//! keeps per session and what it does with Redis's answers; `batch` builds and encodes the
//! calls, `by_group` runs them.
//!
//! # Invariants
//!
//! - At most one batch is unconfirmed at a time. When its pipeline fails as a whole, its fate is
//!   unknown (some calls may have run); it stays `pending` and is sent again after reconnecting.
//!   Each call carries a token, increasing per writer, that the scripts record per group (per
//!   session for a close), so a call that had run is not applied twice. Calls of one group are
//!   applied in the order they were made, so a token at or below the recorded one has run.
//! - If Redis lost its data meanwhile (the epoch changed), tokens are gone too and the pending
//!   calls may already have reached some subscribers: instead of appending their statuses again,
//!   their numbers are reserved (skipped) after the floor so that whoever missed them gets a
//!   gap; where a process that had them already raised the counter to exactly their end,
//!   nothing more is taken, so it sees no gap and later statuses keep their numbers.
//! - `known` holds, per session, the highest number Redis gave this writer. It is sent with
//!   every append as the floor under the session's counter, so numbering never goes back after
//!   Redis restarted empty.
//! - Statuses leave the outbox's bound only once Redis confirmed them (or they were counted as
//!   dropped), so the bound holds for statuses in flight too.
//! - A session's keys have their time to live renewed by the first call after a quarter of it
//!   has passed since this writer last renewed them, for 1.25 times the TTL: so they live at
//!   least the TTL after the last status, and most calls need not renew anything.
//! - A task's change travels in the batch with the statuses around it (see `batch`), so a
//!   task's `running` is recorded after its session's statuses queued before it and before
//!   its first step, and none of its statuses follows its `cancelling` or `cancelled` change:
//!   one Redis runs the batch's pipeline in order, a cluster each partition's calls in order.
//! - Batches start at least `batch_delay` apart unless statuses come fast enough to fill one
//!   (`LINGER_BELOW` waiting): a steady trickle costs Redis one call per group per delay, not
//!   one per status, and a busy writer never waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, RedisError, RedisResult, RetryMethod, Value};
use tokio::time::Instant;

mod batch;
mod by_group;

use self::batch::{Batch, Call};
use self::by_group::run_by_group;
use super::wire::{self, Backoff, Conn, Layout, Scripts};
use super::Shared;
use crate::hub::backend::BackendHandle;

/// How often an idle writer checks its connection and forgets old sessions.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Items waiting that make a batch worth sending at once: with fewer, the writer waits for
/// `batch_delay` to gather more; with as many, statuses come fast enough to fill batches
/// without waiting.
const LINGER_BELOW: usize = 128;

/// What this writer knows of a session.
struct Known {
    /// The highest number Redis gave it.
    seq: u64,
    /// Last confirmed call.
    used: Instant,
    /// When its keys were last renewed by this writer.
    renewed: Option<Instant>,
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    hub: BackendHandle,
    id: String,
    next_token: u64,
    known: HashMap<Arc<str>, Known>,
    epoch: Option<String>,
    pending: Option<Batch>,
    /// When the last batch started.
    last_batch: Option<Instant>,
}

/// What [`Writer::send`] did with a batch whose connection held.
enum Sent {
    /// Every call is confirmed, or was refused and counted.
    All,
    /// Some calls were answered `NOSCRIPT` after the scripts had been loaded again: they ran
    /// nothing and stay unconfirmed.
    Forgotten(RedisError),
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

/// A failure after which the command may or may not have run, or did not run and may run
/// later (a lost connection, a timeout, a failover or slot move under way): the call stays
/// unconfirmed and is sent again. Anything else is a refusal.
fn transient(error: &RedisError) -> bool {
    !matches!(error.retry_method(), RetryMethod::NoRetry)
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
            last_batch: None,
        }
    }

    pub(super) async fn run(mut self) {
        let settings = &self.shared.settings;
        let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
        let mut down_since: Option<Instant> = None;
        let mut last_try = false;
        loop {
            let generation = self.shared.link.generation();
            let attempt = self.open().await;
            let (mut conn, lost) = match attempt {
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
                    // Shutting down, it tries once more at once, then gives up. The reader
                    // connecting means Redis is back: no reason to wait out the backoff.
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shared.outbox.wait_shut() => {}
                        () = self.shared.conn_ready.notified() => {}
                    }
                    continue;
                }
            };
            if self.shared.settings.keys.layout() == Layout::Single {
                backoff.reset();
            }
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
            let broken = self.serve(&mut conn, generation, &mut backoff).await;
            match broken {
                Broken::Done => {
                    self.shared.set_final_heads(
                        self.known
                            .iter()
                            .map(|(s, known)| (Arc::clone(s), known.seq))
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
                    self.shared.link.writer_failed();
                    down_since = Some(Instant::now());
                    tracing::warn!(
                        target: "status_messenger::redis",
                        %error,
                        unconfirmed = self.pending.as_ref().map_or(0, Batch::open_statuses),
                        "redis connection lost while writing; reconnecting, unconfirmed \
                         statuses are sent again"
                    );
                    // One Redis: reconnect at once (a failed connect waits for the backoff). A
                    // cluster connection reconnects by itself, so a failure there (a failover
                    // under way) is retried after the backoff, not at once.
                    if self.shared.settings.keys.layout() == Layout::Single {
                        continue;
                    }
                    if self.shared.stopping() {
                        // Shutting down: one more try, then what is left is given up.
                        if last_try {
                            self.give_up();
                            return;
                        }
                        last_try = true;
                        continue;
                    }
                    let delay = backoff.next_delay();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shared.outbox.wait_shut() => {}
                    }
                    continue;
                }
            }
        }
    }

    /// Connects, loads the scripts and reads the epoch (one Redis); says whether Redis lost its
    /// data.
    async fn open(&mut self) -> RedisResult<(Conn, bool)> {
        let settings = &self.shared.settings;
        let mut conn = self.shared.backing.command_conn(settings.timeout).await?;
        wire::within(settings.timeout, Scripts::load(&mut conn)).await?;
        let epoch = match &mut conn {
            Conn::Single(single) => wire::epoch(single, &settings.keys).await?,
            // A cluster has no epoch key: see the cluster module's docs.
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(_) => return Ok((conn, false)),
        };
        let lost = self.epoch.as_ref().is_some_and(|seen| *seen != epoch);
        if lost {
            tracing::warn!(
                target: "status_messenger::redis",
                "redis restarted without its data: history is lost, numbering goes on from \
                 what this process knew"
            );
        }
        self.epoch = Some(epoch);
        self.raise_known(&mut conn).await?;
        Ok((conn, lost))
    }

    /// Puts the counter of every session this writer was given numbers for back to at least
    /// the highest of them. Redis may have come back from an older snapshot, which keeps its
    /// epoch: a process that never numbered the session would then be given numbers its
    /// subscribers already had. Every reconnect does it, before this writer sends anything.
    async fn raise_known(&self, conn: &mut Conn) -> RedisResult<()> {
        let settings = &self.shared.settings;
        let floors: Vec<(&str, u64)> = self
            .known
            .iter()
            .filter(|(_, known)| known.seq > 0)
            .map(|(session, known)| (&**session, known.seq))
            .collect();
        let ttl_ms = settings.key_ttl_ms();
        for chunk in floors.chunks(256) {
            let raised: u64 = wire::within(
                settings.timeout,
                wire::raise_cmd(&settings.keys, ttl_ms, chunk).query_async(conn),
            )
            .await?;
            if raised > 0 {
                tracing::warn!(
                    target: "status_messenger::redis",
                    sessions = raised,
                    "redis had counters below numbers this process was given (restored from \
                     an older snapshot?); put back, so no number is given twice"
                );
            }
        }
        Ok(())
    }

    /// Sends the pending batch, then batches from the outbox, until the connection breaks or the
    /// outbox is closed and empty.
    async fn serve(&mut self, conn: &mut Conn, generation: u64, backoff: &mut Backoff) -> Broken {
        let mut items = Vec::new();
        let mut idle = wire::ticker(IDLE_TICK);
        let scripts = self.shared.scripts.clone();
        loop {
            if self.shared.link.generation() != generation {
                return Broken::Peer;
            }
            if self.pending.is_none() {
                self.linger().await;
                if self
                    .shared
                    .outbox
                    .try_take(self.shared.settings.batch, &mut items)
                    .is_some()
                {
                    self.last_batch = Some(Instant::now());
                    let batch = self.build(std::mem::take(&mut items));
                    self.pending = Some(batch);
                } else if self.shared.outbox.is_shut() {
                    return Broken::Done;
                }
            }
            if let Some(mut batch) = self.pending.take() {
                match self.send(conn, &scripts, &mut batch).await {
                    Err(error) => {
                        self.pending = Some(batch);
                        return Broken::Link(error);
                    }
                    Ok(Sent::All) => {
                        // The connection works: the next failure starts from the shortest
                        // backoff.
                        backoff.reset();
                    }
                    Ok(Sent::Forgotten(error)) => {
                        // A server that keeps forgetting the scripts (flushed again and again,
                        // or one they do not reach yet) is tried again at the backoff's pace on
                        // this connection, each time loading them first, not as fast as it
                        // answers.
                        self.count_error();
                        if self.shared.stopping() {
                            // Shutting down: what Redis will not run is given up, and counted
                            // as a refused write is.
                            let statuses = batch.open_statuses();
                            for (_, done) in &mut batch.calls {
                                *done = true;
                            }
                            self.drop_unconfirmed(statuses);
                            tracing::warn!(
                                target: "status_messenger::redis",
                                %error,
                                statuses,
                                "shutting down while redis does not keep the scripts; the \
                                 unconfirmed statuses are dropped (counted in \
                                 HubStats::dropped_backend)"
                            );
                            continue;
                        }
                        self.pending = Some(batch);
                        tracing::warn!(
                            target: "status_messenger::redis",
                            %error,
                            unconfirmed = self.pending.as_ref().map_or(0, Batch::open_statuses),
                            "redis does not keep the scripts; loading them and sending the \
                             unconfirmed statuses again"
                        );
                        let delay = backoff.next_delay();
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = self.shared.outbox.wait_shut() => {}
                        }
                    }
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

    /// Waits until one `batch_delay` after the last batch started, unless statuses are coming
    /// fast enough to make a batch of [`LINGER_BELOW`] already (or a shutdown is waiting).
    async fn linger(&self) {
        let settings = &self.shared.settings;
        let Some(last) = self.last_batch else {
            return;
        };
        let due = last + settings.batch_delay;
        if settings.batch_delay.is_zero()
            || Instant::now() >= due
            || self.shared.outbox.queued() >= LINGER_BELOW.min(settings.batch)
        {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = self.shared.outbox.wait_shut() => {}
        }
    }

    /// Sends the calls of `batch` not yet confirmed. `Err` when some could not be sent or their
    /// fate is unknown, [`Sent::Forgotten`] when a server answered `NOSCRIPT` even after the
    /// scripts were loaded again: those stay unconfirmed.
    async fn send(
        &mut self,
        conn: &mut Conn,
        scripts: &Scripts,
        batch: &mut Batch,
    ) -> RedisResult<Sent> {
        // A second round only when a server had forgotten the scripts (flushed, restarted or
        // newly promoted): those calls did not run, so sending them again is safe. One answered
        // `NOSCRIPT` in the second round too stays unconfirmed ([`Sent::Forgotten`]).
        for round in 0..2 {
            let sent: Vec<usize> = (0..batch.calls.len())
                .filter(|&index| !batch.calls[index].1)
                .collect();
            if sent.is_empty() {
                return Ok(Sent::All);
            }
            let commands: Vec<Cmd> = sent
                .iter()
                .map(|&index| self.command(&batch.calls[index].0, scripts, batch.sent))
                .collect();
            batch.sent = true;
            let groups: Vec<u32> = sent
                .iter()
                .map(|&index| batch.calls[index].0.group())
                .collect();
            let timeout = self.shared.settings.timeout;
            let results = match self.shared.settings.keys.layout() {
                Layout::Single => {
                    let mut pipe = redis::pipe();
                    pipe.ignore_errors();
                    for cmd in commands {
                        pipe.add_command(cmd);
                    }
                    let results: Vec<RedisResult<Value>> = pipe.query_async(conn).await?;
                    results
                }
                Layout::Cluster { .. } => run_by_group(conn, commands, &groups, timeout).await,
            };
            let mut reload = false;
            let mut unsent = None;
            let mut forgotten = None;
            for (index, result) in sent.into_iter().zip(results) {
                let made = batch.made;
                let (call, done) = &mut batch.calls[index];
                match result {
                    Err(error) if wire::is_noscript(&error) && round == 0 => reload = true,
                    // A call answered `NOSCRIPT` ran nothing, however late: a server that forgot
                    // the scripts again, or one the scripts did not reach (a cluster's newly
                    // promoted master the client did not know of yet when they were loaded).
                    // It stays unconfirmed, and the batch is sent again after a backoff.
                    Err(error) if wire::is_noscript(&error) => {
                        forgotten.get_or_insert(error);
                    }
                    Err(error) if transient(&error) => {
                        unsent.get_or_insert(error);
                    }
                    Ok(value) => {
                        *done = true;
                        let statuses = call.statuses();
                        self.confirmed(call, &value, made);
                        self.release(statuses);
                    }
                    Err(error) => {
                        *done = true;
                        let statuses = call.statuses();
                        self.count_error();
                        self.drop_unconfirmed(statuses);
                        tracing::warn!(
                            target: "status_messenger::redis",
                            %error,
                            statuses,
                            task_changes = call.task_changes(),
                            "redis refused a write; its statuses and task changes are dropped \
                             (statuses counted in HubStats::dropped_backend, the call in \
                             HubStats::backend_errors)"
                        );
                    }
                }
            }
            if let Some(error) = unsent {
                return Err(error);
            }
            if let Some(error) = forgotten {
                return Ok(Sent::Forgotten(error));
            }
            if !reload {
                return Ok(Sent::All);
            }
            wire::within(timeout, Scripts::load(conn)).await?;
        }
        Ok(Sent::All)
    }

    fn confirmed(&mut self, call: &mut Call, value: &Value, made: Instant) {
        match call {
            Call::Append { parts, tasks, .. } => match wire::parse_append(value) {
                Some((_, replies)) if replies.len() == parts.len() + tasks.len() => {
                    let now = Instant::now();
                    let (counters, asked) = replies.split_at(parts.len());
                    for ((session, change), asked) in tasks.iter().zip(asked) {
                        if *asked == 1 && !change.state.is_final() {
                            // Asked (on another process, or while this one was not listening)
                            // before it was known here: applied now.
                            self.hub.with(|hub| hub.cancel_here(session, &change.task));
                        }
                    }
                    for (part, &counter) in parts.iter().zip(counters) {
                        let known = self
                            .known
                            .entry(Arc::clone(&part.session))
                            .or_insert(Known {
                                seq: counter,
                                used: now,
                                renewed: None,
                            });
                        known.seq = known.seq.max(counter);
                        known.used = now;
                        if part.renew {
                            known.renewed = Some(made);
                        }
                    }
                }
                _ => {
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
    ///
    /// Each session's part becomes a reservation of the numbers it takes, after `known` (sent
    /// as the floor): where a process that saw the call has already raised the counter to
    /// exactly their end, the script takes nothing more, so those who had the statuses see no
    /// gap and later statuses keep their places; where the counter is past the floor otherwise
    /// (others numbered statuses since), the part takes as many fresh numbers, so whoever
    /// missed it still gets a gap of its size.
    fn reserve_pending(&mut self) {
        let Some(mut batch) = self.pending.take() else {
            return;
        };
        let mut reserved = 0;
        for (call, done) in &mut batch.calls {
            if *done {
                continue;
            }
            if let Call::Append { parts, .. } = call {
                for part in parts {
                    reserved += part.items.len() as u64;
                    let numbers: u64 = part.items.drain(..).map(|(skip, _)| skip + 1).sum();
                    part.reserve += numbers + std::mem::take(&mut part.trailing);
                    // The keys were lost with the data: renew them with the next call.
                    part.renew = true;
                }
            }
        }
        // Fresh tokens: the scripts must run even if the new Redis somehow had old tokens.
        for (call, _) in &mut batch.calls {
            let token = self.token();
            call.set_token(token);
        }
        for known in self.known.values_mut() {
            known.renewed = None;
        }
        self.pending = Some(batch);
        if reserved > 0 {
            self.drop_unconfirmed(reserved);
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
        let pending_changes: u64 = self.pending.take().map_or(0, |batch| {
            batch
                .calls
                .iter()
                .filter(|(_, done)| !done)
                .map(|(call, _)| call.task_changes())
                .sum()
        });
        let discarded = self.shared.outbox.discard();
        let lost = discarded.statuses as u64;
        let task_changes = pending_changes + discarded.queued_task_changes as u64;
        self.hub
            .with(|hub| hub.counters().backend_buffered.sub(lost));
        if lost > 0 {
            self.count_dropped(lost);
        }
        if lost > 0 || task_changes > 0 {
            tracing::warn!(
                target: "status_messenger::redis",
                statuses = lost,
                task_changes,
                "shutting down with redis unreachable; buffered statuses and task changes \
                 dropped (statuses counted in HubStats::dropped_backend; the tasks keep their \
                 last recorded state in redis until it expires)"
            );
        }
    }

    fn forget_idle(&mut self) {
        let ttl = Duration::from_millis(self.shared.settings.ttl_ms);
        self.known.retain(|_, known| known.used.elapsed() < ttl);
    }

    fn release(&self, statuses: u64) {
        self.shared.outbox.release(statuses as usize);
        self.hub
            .with(|hub| hub.counters().backend_buffered.sub(statuses));
    }

    /// `statuses` of the buffer that will never be delivered: counted as dropped, and their
    /// room given back.
    fn drop_unconfirmed(&self, statuses: u64) {
        self.count_dropped(statuses);
        self.release(statuses);
    }

    // Each of these also records the metrics: they change while the hub may have no call to
    // sweep on (Redis away from an idle server), and an exporter that is not asked to record
    // should still see an outage. They are rare next to statuses.

    fn count_error(&self) {
        self.hub.with(|hub| {
            hub.counters().backend_errors.add(1);
            record_metrics(hub.counters());
        });
    }

    fn count_reconnect(&self) {
        self.hub.with(|hub| {
            hub.counters().backend_reconnects.add(1);
            record_metrics(hub.counters());
        });
    }

    fn count_dropped(&self, statuses: u64) {
        self.hub.with(|hub| {
            hub.counters().dropped_backend.add(statuses);
            record_metrics(hub.counters());
        });
    }
}

#[cfg(feature = "metrics")]
fn record_metrics(counters: &crate::hub::counters::Counters) {
    counters.record();
}

#[cfg(not(feature = "metrics"))]
fn record_metrics(_counters: &crate::hub::counters::Counters) {}
