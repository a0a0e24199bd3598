//! Tasks on Redis: the changes of the tasks started in this process, written to their
//! session's tasks hash and published on its channel by the task script, and stops asked for
//! tasks that run in any process, by the cancel script.
//!
//! # Invariants
//!
//! - A change waits in the queue until every status queued in the outbox before it was
//!   numbered by Redis ([`Outbox::released_up_to`](super::outbox::Outbox::released_up_to)), so
//!   the task script runs after their appends and the `last_seq` it records is at least their
//!   numbers: no status of a task is numbered above its `cancelling` or `cancelled` change,
//!   and a page sees a task end after its last step. Changes are written one at a time, in the
//!   order they were queued.
//! - Statuses queued after a change wait in the outbox until it is written
//!   ([`Outbox::barrier`](super::outbox::Outbox::barrier)): the task script runs before their
//!   appends, so every process hears a task's `running` before its first step. When this task
//!   stops, nothing waits for it any more.
//! - At most [`RedisConfig::buffer_capacity`](super::RedisConfig::buffer_capacity) changes
//!   wait; beyond it a change is dropped, counted as a backend error and logged once.
//! - The task script says whether a stop was asked for the task before it was known (on
//!   another process, or while this one was not listening); the stop is applied then.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::wire::{self, Backoff};
use super::Shared;
use crate::hub::backend::BackendHandle;
use crate::hub::TaskState;
use crate::sync::lock;

/// One change of a task started here, waiting to be written.
#[derive(Debug, Clone)]
pub(super) struct Queued {
    pub(super) session: Arc<str>,
    pub(super) task: Arc<str>,
    pub(super) state: TaskState,
    pub(super) message: Option<Arc<str>>,
    /// The outbox's `pushed` when it was queued.
    pub(super) after_pushed: u64,
}

/// The changes waiting to be written.
#[derive(Debug, Default)]
pub(super) struct TaskQueue {
    queue: Mutex<VecDeque<Queued>>,
    ready: Notify,
    /// Set by the first change dropped, so the log says it once.
    warned: AtomicBool,
    /// Changes written or dropped since the queue was last empty; wakes `drained`.
    drained: Notify,
}

impl TaskQueue {
    /// Queues a change; `false` when the queue is full and the change is dropped.
    pub(super) fn push(&self, change: Queued, capacity: usize) -> bool {
        let mut queue = lock(&self.queue);
        if queue.len() >= capacity {
            drop(queue);
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    target: "status_messenger::redis",
                    buffer_capacity = capacity,
                    "too many task changes wait for redis; the newest are dropped (counted in \
                     HubStats::backend_errors, warned once)"
                );
            }
            return false;
        }
        queue.push_back(change);
        drop(queue);
        self.ready.notify_one();
        true
    }

    fn front(&self) -> Option<Queued> {
        lock(&self.queue).front().cloned()
    }

    fn pop(&self) {
        let empty = {
            let mut queue = lock(&self.queue);
            queue.pop_front();
            queue.is_empty()
        };
        if empty {
            self.drained.notify_waiters();
        }
    }

    /// Resolves once nothing waits.
    pub(super) async fn drained(&self) {
        loop {
            let drained = self.drained.notified();
            let mut drained = std::pin::pin!(drained);
            drained.as_mut().enable();
            if lock(&self.queue).is_empty() {
                return;
            }
            drained.await;
        }
    }
}

/// The task writer: writes queued changes until the hub stops.
pub(super) async fn run(shared: Arc<Shared>, hub: BackendHandle) {
    let settings = &shared.settings;
    let mut stop = shared.stop.subscribe();
    let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
    let _lift = LiftOnExit(&shared);
    loop {
        let change = loop {
            let ready = shared.tasks.ready.notified();
            let mut ready = std::pin::pin!(ready);
            ready.as_mut().enable();
            if let Some(change) = shared.tasks.front() {
                break change;
            }
            tokio::select! {
                () = ready => {}
                _ = stop.changed() => return,
            }
        };
        tokio::select! {
            () = shared.outbox.released_up_to(change.after_pushed) => {}
            _ = stop.changed() => return,
        }
        loop {
            match write(&shared, &change).await {
                Ok(asked) => {
                    backoff.reset();
                    if asked && !change.state.is_final() {
                        // Asked before it was known here: applied now.
                        hub.with(|hub| hub.cancel_here(&change.session, &change.task));
                    }
                    break;
                }
                Err(error) => {
                    hub.with(|hub| hub.counters().backend_errors.add(1));
                    tracing::debug!(
                        target: "status_messenger::redis",
                        %error,
                        "task change not written yet; trying again"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
        shared.tasks.pop();
        shared.outbox.lift();
    }
}

/// Lets the statuses waiting for task changes go when the task writer ends (stopped or
/// aborted), so the status writer can still drain.
struct LiftOnExit<'a>(&'a Shared);

impl Drop for LiftOnExit<'_> {
    fn drop(&mut self) {
        self.0.outbox.lift_all();
    }
}

/// Runs the task script for `change`; whether a stop had been asked for the task.
async fn write(shared: &Shared, change: &Queued) -> Result<bool, crate::hub::BackendError> {
    let settings = &shared.settings;
    // Background work: it may wait as long as the connection's own timeout.
    let mut conn = shared
        .connection(tokio::time::Instant::now() + settings.timeout)
        .await?;
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let cmd = shared.scripts.task_cmd(
        &settings.keys,
        settings.ttl_ms,
        settings.task_capacity,
        &change.session,
        &change.task,
        change.state,
        change.message.as_deref(),
    );
    let reply = wire::run_script(&mut conn, &cmd, deadline)
        .await
        .map_err(super::backend_error)?;
    let (_last_seq, asked) = wire::parse_task_reply(&reply)
        .ok_or_else(|| super::backend_error("unexpected reply from the task script"))?;
    Ok(asked)
}
