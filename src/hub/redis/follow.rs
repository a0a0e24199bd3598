//! Following sessions: what both readers (one Redis, a cluster) do with what they hear and read
//! back, session by session: copy statuses into the hub's local history with the numbers Redis
//! gave them, read holes back from history, and report what history no longer holds as lost.
//!
//! # Invariants
//!
//! - A session is in `attached` exactly while its channel is subscribed (confirmed by Redis) and
//!   it has been read from history since; its value is the highest number applied to the local
//!   history (a status, or a number reported lost).
//! - Statuses heard for a session that is not attached are ignored: the read that attaches it
//!   comes after the subscription, so it holds them.
//! - Numbers at or below the applied one are duplicates of what was read and are skipped.
//!   While the hub's history holds less than was applied (its session was evicted and opened
//!   again before this process stopped following it), the session is read again from what the
//!   hub holds (`is_behind`).
//! - A number above the next one expected leaves a hole. Before the later status is applied the
//!   hole is read back from the stream; whatever the stream no longer holds is applied as lost,
//!   so subscribers see it as a gap, never as a silent skip.
//! - `closes` holds, per session the hub holds, the close count Redis had when this process last
//!   read the session. A read that finds it higher means the session was closed while this
//!   process was not listening (cut off from Redis): it is closed here too, as the close message
//!   would have done, and not followed; its streams end. A counter below what was applied
//!   without a close means Redis went back (restarted from an older snapshot): the writers that
//!   numbered the session put it back on reconnecting (see the writer), and it is counted and
//!   logged here.
//! - Attaching also reads the session's tasks, after its history in the same pipeline (so the
//!   hash holds every task whose statuses the read returned: a task's `running` is written
//!   before its first step), and hands them to the hub as what a subscription starts with,
//!   ahead of the statuses read; a stop asked for a task running here while this process was
//!   not following the session is applied then. A task change heard later is applied where
//!   it comes among the statuses, after the numbers up to its `last_seq` (holes read back
//!   first, as for a status).

use std::collections::HashMap;
use std::sync::Arc;

use redis::{RedisResult, Value};

use super::wire::{self, Conn, Record, Segment, Stored};
use super::Shared;
use crate::hub::backend::BackendHandle;
use crate::hub::core::{Delivered, TaskRecord};

/// Sessions per read pipeline.
pub(super) const CHUNK: usize = 256;

/// What became of a session after a segment.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum After {
    /// Still followed.
    Open,
    /// The session was closed: it is no longer followed.
    Closed,
}

pub(super) struct Follow {
    pub(super) shared: Arc<Shared>,
    pub(super) hub: BackendHandle,
    attached: HashMap<Arc<str>, u64>,
    /// The close count last read per session; kept across reconnects and while the hub holds
    /// the session (see `prune`).
    closes: HashMap<Arc<str>, u64>,
}

impl Follow {
    pub(super) fn new(shared: Arc<Shared>, hub: BackendHandle) -> Self {
        Self {
            shared,
            hub,
            attached: HashMap::new(),
            closes: HashMap::new(),
        }
    }

    /// Forgets the close counts of sessions neither followed nor held by the hub any more.
    pub(super) fn prune(&mut self) {
        if self.closes.len() <= self.attached.len() {
            return;
        }
        let attached = &self.attached;
        let closes = &mut self.closes;
        self.hub.with(|hub| {
            closes.retain(|session, _| attached.contains_key(session) || hub.holds(session));
        });
    }

    pub(super) fn is_attached(&self, session: &str) -> bool {
        self.attached.contains_key(session)
    }

    /// Whether `session` is followed while the hub's history of it holds less than was applied:
    /// the hub's session was evicted and opened again before this process stopped following
    /// it, so the new one must be read from history again.
    pub(super) fn is_behind(&self, session: &str, head: u64) -> bool {
        self.attached
            .get(session)
            .is_some_and(|&applied| applied > head)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.attached.is_empty()
    }

    /// Stops following `session`; whether it was followed.
    pub(super) fn detach(&mut self, session: &str) -> bool {
        self.attached.remove(session).is_some()
    }

    pub(super) fn clear(&mut self) {
        self.attached.clear();
    }

    /// The followed sessions.
    pub(super) fn sessions(&self) -> Vec<Arc<str>> {
        self.attached.keys().cloned().collect()
    }

    /// Reads each of `sessions` from history after `head` (the number it holds) and follows it
    /// from there; with `touch` the read also opens the session and renews its keys, as a
    /// subscriber does. On a cluster the reads of one pipeline are of one partition. Returns
    /// the sessions found closed since this process last read them: closed here too, and not
    /// followed.
    pub(super) async fn attach(
        &mut self,
        conn: &mut Conn,
        sessions: Vec<(Arc<str>, u64)>,
        touch: bool,
    ) -> RedisResult<Vec<Arc<str>>> {
        let mut closed = Vec::new();
        let shared = Arc::clone(&self.shared);
        let settings = &shared.settings;
        let keys = &settings.keys;
        let touch_ms = if touch {
            settings.key_ttl_ms().max(1)
        } else {
            0
        };
        let mut by_group: HashMap<u32, Vec<(Arc<str>, u64)>> = HashMap::new();
        for (session, head) in sessions {
            // A session followed already is read from what it applied.
            let head = self
                .attached
                .get(&session)
                .copied()
                .unwrap_or(head)
                .max(head);
            by_group
                .entry(keys.group(&session))
                .or_default()
                .push((session, head));
        }
        for sessions in by_group.into_values() {
            for chunk in sessions.chunks(CHUNK) {
                let mut pipe = redis::pipe();
                for (session, head) in chunk {
                    pipe.add_command(shared.scripts.read_cmd(
                        keys,
                        session,
                        Some(head + 1),
                        None,
                        touch_ms,
                    ));
                }
                // After the reads: every task whose statuses they hold is in its hash by then.
                for (session, _) in chunk {
                    pipe.cmd("HGETALL").arg(keys.tasks(session));
                }
                let mut reads: Vec<Value> =
                    wire::within(settings.timeout, pipe.query_async(conn)).await?;
                let tasks = reads.split_off(chunk.len().min(reads.len()));
                for (((session, head), read), tasks) in chunk.iter().zip(reads).zip(tasks) {
                    let applied = self.attached.entry(Arc::clone(session)).or_insert(*head);
                    *applied = (*applied).max(*head);
                    let Some(read) = wire::parse_read(read, head + 1, u64::MAX) else {
                        self.unexpected("read");
                        continue;
                    };
                    let seen = self.closes.insert(Arc::clone(session), read.closes);
                    if seen.is_some_and(|seen| read.closes > seen) {
                        self.closed_away(session);
                        closed.push(Arc::clone(session));
                        continue;
                    }
                    if read.counter < *head {
                        self.went_back(session, read.counter, *head);
                    }
                    self.load_tasks(session, tasks);
                    self.apply(session, read.statuses, read.counter);
                }
            }
        }
        Ok(closed)
    }

    /// `session` was closed while this process was not listening: it ends here now, as the
    /// close message would have ended it.
    fn closed_away(&mut self, session: &Arc<str>) {
        self.attached.remove(session);
        self.closes.remove(session);
        self.hub.with(|hub| hub.close(session));
        self.shared.progress.notify_waiters();
        tracing::warn!(
            target: "status_messenger::redis",
            session = %session,
            "session closed while this process was cut off from redis; its streams end here too"
        );
    }

    /// Redis numbers `session` below what was applied here, without a close: it went back
    /// (restarted from an older snapshot, or a replica that lagged took over). Numbers up to
    /// `applied` given again would be skipped here as duplicates; the writers that numbered
    /// the session put its counter back when they reconnect.
    fn went_back(&self, session: &Arc<str>, counter: u64, applied: u64) {
        self.hub.with(|hub| hub.counters().backend_errors.add(1));
        tracing::warn!(
            target: "status_messenger::redis",
            session = %session,
            counter,
            applied,
            "redis numbers the session below what this process delivered (restored from an older \
             snapshot?); the writers that numbered it put the counter back"
        );
    }

    /// Hands the tasks of `session` (its tasks hash, read after its history) to the hub, as
    /// what a subscription starts with, ahead of the statuses just read; applies the stops
    /// asked for tasks running here.
    fn load_tasks(&self, session: &Arc<str>, tasks: Value) {
        let Some((tasks, asked)) = wire::parse_tasks(tasks) else {
            self.unexpected("tasks");
            return;
        };
        self.hub.with(|hub| {
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

    /// Applies one session's segment of a published message (ignored unless it is followed).
    pub(super) async fn on_segment(
        &mut self,
        conn: &mut Conn,
        session: &str,
        segment: &Segment<'_>,
    ) -> RedisResult<After> {
        let Some((session, &last)) = self.attached.get_key_value(session) else {
            // Not followed (yet, or any more): the read that attaches it has what this holds.
            return Ok(After::Open);
        };
        let session = Arc::clone(session);
        let Some(records) = segment.records() else {
            self.unexpected("message");
            return Ok(After::Open);
        };
        let mut last = last;
        let mut fresh: Vec<Delivered> = Vec::new();
        for record in records {
            let mut change = None;
            let (seq, status) = match record {
                Record::Status(seq, text, extra) => (seq, Some((text, extra))),
                Record::Head(seq) => (seq, None),
                Record::Cancel(task) => {
                    self.hub.with(|hub| {
                        if hub.runs_here(&session, task) {
                            let _state = hub.cancel_here(&session, task);
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
                Record::Closed => {
                    self.flush(&session, &mut fresh, last);
                    self.attached.remove(&session);
                    self.closes.remove(&session);
                    self.hub.with(|hub| hub.close(&session));
                    self.shared.progress.notify_waiters();
                    return Ok(After::Closed);
                }
            };
            let hole_end = if status.is_some() { seq - 1 } else { seq };
            if seq > last && hole_end > last {
                self.flush(&session, &mut fresh, last);
                self.fill(conn, &session, last + 1, hole_end).await?;
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
        Ok(After::Open)
    }

    /// Hands a task change to the hub, after the statuses numbered up to its `last_seq`.
    fn deliver_task(&self, session: &Arc<str>, change: TaskRecord) {
        let after = change.last_seq;
        self.hub
            .with(|hub| hub.deliver_task(session, change, Some(after)));
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
        conn: &mut Conn,
        session: &Arc<str>,
        from: u64,
        to: u64,
    ) -> RedisResult<()> {
        let settings = &self.shared.settings;
        let read: Value = wire::within(
            settings.timeout,
            self.shared
                .scripts
                .read_cmd(&settings.keys, session, Some(from), Some(to), 0)
                .query_async(conn),
        )
        .await?;
        match wire::parse_read(read, from, to) {
            Some(read) => self.apply(session, read.statuses, to),
            None => {
                self.unexpected("read");
                self.apply(session, Vec::new(), to);
            }
        }
        Ok(())
    }

    pub(super) fn unexpected(&self, what: &str) {
        self.hub.with(|hub| hub.counters().backend_errors.add(1));
        tracing::warn!(
            target: "status_messenger::redis",
            what,
            "unexpected data from redis ignored (another version of the key layout?)"
        );
    }
}
