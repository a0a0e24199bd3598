//! The Redis backend of one hub: what the hub's core asks of it (publish, open, close,
//! cancel, shut down) and the tasks it starts (writer, reader).
//!
//! # Invariants
//!
//! - [`Hub::publish`](crate::Hub::publish) never waits on Redis here: a status goes into the
//!   bounded outbox or is refused and counted.
//! - The tasks are started once, by `start`, and stopped by `stop` or `shutdown`; dropping the
//!   backend aborts whatever still runs, so no task outlives its hub.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

#[cfg(feature = "redis-cluster")]
use super::cluster;
use super::outbox::{Outbox, Pushed, TaskItem};
use super::wire::{self, Conn, Scripts};
use super::{
    backend_error, reader, request_error, retry_after, writer, Backing, LinkState, Settings, Shared,
};
use crate::hub::backend::{Backend, BackendHandle, BoxFuture, Local, Outgoing, TaskChange};
use crate::hub::core::CancelHere;
use crate::hub::{
    CancelError, CloseError, Hub, HubConfig, LookupError, OpenError, PublishError, Published,
    SessionId, TaskState,
};
use crate::sync::lock;

/// The Redis backend of one hub.
pub(super) struct RedisBackend {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("key_prefix", &self.shared.settings.keys)
            .field("link_generation", &self.shared.link.generation())
            .finish()
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        for task in [&self.writer, &self.reader] {
            if let Some(task) = lock(task).take() {
                task.abort();
            }
        }
    }
}

impl Backend for RedisBackend {
    fn start(&self, hub: BackendHandle) {
        let shared = &self.shared;
        let writer = tokio::spawn(writer::Writer::new(Arc::clone(shared), hub.clone()).run());
        let reader = match &shared.backing {
            Backing::Single(_) => {
                tokio::spawn(reader::Reader::new(Arc::clone(shared), hub.clone()).run())
            }
            #[cfg(feature = "redis-cluster")]
            Backing::Cluster(_) => {
                tokio::spawn(cluster::Reader::new(Arc::clone(shared), hub.clone()).run())
            }
        };
        *lock(&self.writer) = Some(writer);
        *lock(&self.reader) = Some(reader);
    }

    /// Queues the change for Redis behind the statuses queued before it and ahead of those
    /// queued after it (the writer sends it in that place, in the same batch as they); the
    /// subscribers here hear of it when it comes back, as every process's do.
    fn task_changed(&self, hub: Local<'_>, change: &TaskChange<'_>) -> bool {
        let queued = self.shared.outbox.push_task(
            change.session.as_str(),
            TaskItem {
                task: Arc::clone(&change.task.id),
                state: change.state,
                message: change.message.map(Arc::from),
            },
        );
        if !queued {
            hub.counters().backend_errors.add(1);
        }
        false
    }

    /// Takes a checked status for Redis. Never blocks: a full buffer drops it (counted).
    fn publish(&self, hub: Local<'_>, status: Outgoing<'_>) -> Result<Published, PublishError> {
        let counters = hub.counters();
        let body = wire::Body {
            text: status.text,
            extra: status.extra,
        };
        match self.shared.outbox.push(status.session, body) {
            Pushed::Queued => {
                counters.accepted.add(1);
                counters.backend_buffered.add(1);
                Ok(Published::Queued)
            }
            Pushed::Full { first } => {
                counters.dropped_backend.add(1);
                if first {
                    tracing::warn!(
                        target: "status_messenger::redis",
                        buffer_capacity = self.shared.settings.buffer_capacity,
                        "redis buffer full; statuses are dropped until it drains (counted in \
                         HubStats::dropped_backend, subscribers get a gap)"
                    );
                }
                Err(PublishError::BufferFull)
            }
            Pushed::Closed => {
                counters.dropped_closed.add(1);
                Err(PublishError::ShutDown)
            }
        }
    }

    fn interest(&self, session: &SessionId) {
        lock(&self.shared.interest).insert(session.clone().into_shared());
        self.shared.interest_ready.notify_one();
    }

    fn open<'a>(&'a self, _hub: Local<'a>, id: &'a str) -> BoxFuture<'a, Result<(), OpenError>> {
        Box::pin(async move {
            let deadline = self.shared.request_deadline();
            let mut conn = self
                .shared
                .connection(deadline)
                .await
                .map_err(OpenError::Backend)?;
            let settings = &self.shared.settings;
            let open = self.shared.scripts.read_cmd(
                &settings.keys,
                id,
                None,
                None,
                settings.key_ttl_ms().max(1),
            );
            let result = wire::run_script(&mut conn, &open, deadline).await;
            result.map(drop).map_err(|error| {
                OpenError::Backend(request_error(error, self.shared.settings.keys.layout()))
            })
        })
    }

    fn exists<'a>(
        &'a self,
        _hub: Local<'a>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>> {
        Box::pin(async move {
            let deadline = self.shared.request_deadline();
            let mut conn = self
                .shared
                .connection(deadline)
                .await
                .map_err(LookupError::Backend)?;
            let settings = &self.shared.settings;
            let exists = redis::cmd("EXISTS").arg(settings.keys.log(id)).clone();
            wire::by(deadline, exists.query_async(&mut conn))
                .await
                .map_err(|error| {
                    LookupError::Backend(request_error(error, self.shared.settings.keys.layout()))
                })
        })
    }

    /// Queues the close behind the statuses already buffered for the session (so they are
    /// applied first), ends the session's streams here at once, and waits up to twice the
    /// timeout for Redis to say whether the session existed.
    fn close<'a>(&'a self, hub: Local<'a>, id: &'a str) -> BoxFuture<'a, Result<bool, CloseError>> {
        let (reply, answer) = oneshot::channel();
        let queued = self.shared.outbox.close(id, reply);
        let here = hub.close(id);
        let wait = self.shared.settings.timeout * 2;
        Box::pin(async move {
            if !queued {
                // Shutting down: the hub closes every session itself.
                return Ok(here);
            }
            let went_down = self.shared.went_down.notified();
            let mut went_down = std::pin::pin!(went_down);
            went_down.as_mut().enable();
            if let Some(error) = self.shared.unavailable() {
                // Nothing will confirm it soon: say so now. It stays queued and is applied when
                // Redis is back.
                return Err(CloseError::Backend(error));
            }
            let answer = tokio::select! {
                biased;
                answer = tokio::time::timeout(wait, answer) => answer,
                () = went_down => {
                    let error = self.shared.unavailable().unwrap_or_else(|| {
                        backend_error("unavailable; reconnecting in the background")
                            .with_retry_after(retry_after(Duration::ZERO))
                    });
                    return Err(CloseError::Backend(error));
                }
            };
            match answer {
                Ok(Ok(existed)) => {
                    // Its tasks go with it; they would expire with its other keys otherwise.
                    let deadline = self.shared.request_deadline();
                    if let Ok(mut conn) = self.shared.connection(deadline).await {
                        let forget = redis::cmd("DEL")
                            .arg(self.shared.settings.keys.tasks(id))
                            .to_owned();
                        let forgotten: redis::RedisResult<()> =
                            wire::by(deadline, forget.query_async(&mut conn)).await;
                        if let Err(error) = forgotten {
                            tracing::debug!(
                                target: "status_messenger::redis",
                                %error,
                                "the closed session's tasks stay until they expire"
                            );
                        }
                    }
                    Ok(existed || here)
                }
                Ok(Err(_unanswered)) => Err(CloseError::Backend(backend_error(
                    "the close could not be applied",
                ))),
                Err(_elapsed) => Err(CloseError::Backend(
                    backend_error("redis did not confirm the close in time; it stays queued")
                        .with_retry_after(retry_after(Duration::ZERO)),
                )),
            }
        })
    }

    /// A task started here is asked at once; any other goes through Redis, which records the
    /// stop (for a task not registered yet too) and tells every process serving the session.
    fn cancel<'a>(
        &'a self,
        hub: Local<'a>,
        id: &'a str,
        task: &'a str,
    ) -> BoxFuture<'a, Result<TaskState, CancelError>> {
        if let CancelHere::Done(state) = hub.cancel_here(id, task) {
            return Box::pin(std::future::ready(Ok(state)));
        }
        Box::pin(async move {
            let shared = &self.shared;
            let settings = &shared.settings;
            let deadline = shared.request_deadline();
            let mut conn = shared
                .connection(deadline)
                .await
                .map_err(CancelError::Backend)?;
            let cancel = shared.scripts.cancel_cmd(
                &settings.keys,
                settings.key_ttl_ms(),
                settings.task_capacity,
                id,
                task,
            );
            let reply = wire::run_script(&mut conn, &cancel, deadline)
                .await
                .map_err(|error| {
                    CancelError::Backend(request_error(error, self.shared.settings.keys.layout()))
                })?;
            match wire::parse_cancel_reply(&reply) {
                Some(wire::Cancelled::State(state)) => Ok(state),
                Some(wire::Cancelled::UnknownTask) => Err(CancelError::UnknownTask),
                Some(wire::Cancelled::UnknownSession) => Err(CancelError::UnknownSession),
                None => Err(CancelError::Backend(backend_error(
                    "unexpected reply from the cancel script",
                ))),
            }
        })
    }

    /// Stops both tasks without waiting: the writer still sends what is buffered if Redis is
    /// there, the reader stops at once.
    fn stop(&self) {
        self.shared.outbox.shut();
        self.shared.stop.send_replace(true);
    }

    /// Sends what is buffered, waits (within twice the timeout) until local subscribers have it
    /// in their history, then stops both tasks. What could not be sent is counted as dropped.
    fn shutdown<'a>(&'a self, hub: Local<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let shared = &self.shared;
            shared.outbox.shut();
            let deadline = tokio::time::Instant::now() + shared.settings.timeout * 2;
            // The writer ends once the buffer is empty, or gives up after a failed reconnect.
            let writer = lock(&self.writer).take();
            if let Some(mut writer) = writer {
                if tokio::time::timeout_at(deadline, &mut writer)
                    .await
                    .is_err()
                {
                    writer.abort();
                    let discarded = shared.outbox.discard();
                    let lost = discarded.statuses as u64;
                    hub.counters().backend_buffered.sub(lost);
                    hub.counters().dropped_backend.add(lost);
                    tracing::warn!(
                        target: "status_messenger::redis",
                        statuses = lost,
                        queued_task_changes = discarded.queued_task_changes,
                        "redis too slow to take the buffered statuses and task changes at \
                         shutdown; dropped (statuses counted in HubStats::dropped_backend; \
                         the changes of a call under way are not in queued_task_changes; the \
                         tasks keep their last recorded state in redis until it expires)"
                    );
                }
            }
            let heads = lock(&shared.final_heads).take().unwrap_or_default();
            loop {
                let progress = shared.progress.notified();
                let mut progress = std::pin::pin!(progress);
                progress.as_mut().enable();
                let behind = heads
                    .iter()
                    .any(|(session, head)| hub.watched_head(session).is_some_and(|h| h < *head));
                if !behind || tokio::time::timeout_at(deadline, progress).await.is_err() {
                    break;
                }
            }
            shared.stop.send_replace(true);
            let reader = lock(&self.reader).take();
            if let Some(reader) = reader {
                reader.abort();
                // Aborted, or ended by the stop signal: nothing to report either way.
                let _ = reader.await;
            }
            shared.set_conn(None);
        })
    }
}

impl RedisBackend {
    /// A hub on this backend; `conn` is a command connection known to work.
    pub(super) fn hub(
        config: HubConfig,
        settings: Settings,
        backing: Backing,
        conn: Option<Conn>,
    ) -> Hub {
        let buffer_capacity = settings.buffer_capacity;
        let shared = Arc::new(Shared {
            settings,
            backing,
            scripts: Scripts::new(),
            outbox: Outbox::new(buffer_capacity),
            link: LinkState::default(),
            interest: Mutex::new(HashSet::new()),
            interest_ready: Notify::new(),
            conn: Mutex::new(conn),
            down: Mutex::new(None),
            went_down: Notify::new(),
            conn_ready: Notify::new(),
            stop: watch::Sender::new(false),
            progress: Notify::new(),
            final_heads: Mutex::new(None),
        });
        let backend = RedisBackend {
            shared,
            writer: Mutex::new(None),
            reader: Mutex::new(None),
        };
        Hub::with_backend(config, Box::new(backend))
    }
}
