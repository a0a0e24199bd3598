//! The hub's task methods: starting a task of a session, cancelling one, and listing a
//! session's tasks. A second `impl Hub` block beside the handle's own, so that each file holds
//! one concern.
//!
//! # Invariants
//!
//! - As in the handle, a session id given as `&str` is checked once here, at the entry.

use std::sync::Arc;

use crate::hub::backend::Local;
use crate::hub::{
    CancelError, Hub, InvalidSessionId, SessionId, StartTaskError, Task, TaskState, TaskUpdate,
};

impl Hub {
    /// Starts a task in `session` (opening the session if needed): the task is given an id and
    /// a cancellation token, is `running` from now on, and its subscribers are told (see
    /// [`TaskUpdate`]). Run its tool in it with [`Task::run`] or [`Task::wrap`]; see [`Task`].
    ///
    /// The session remembers at most [`HubConfig::task_capacity`](crate::HubConfig::task_capacity)
    /// tasks; a new one makes room by forgetting the oldest that has ended. A running task
    /// keeps its session from being evicted; once it has ended, the session and its tasks
    /// expire [`HubConfig::history_ttl`](crate::HubConfig::history_ttl) after its last use.
    /// Needs no runtime, never blocks.
    ///
    /// # Errors
    ///
    /// [`StartTaskError::InvalidSessionId`], [`StartTaskError::TooManySessions`],
    /// [`StartTaskError::TooManyTasks`], [`StartTaskError::SessionBusy`] and
    /// [`StartTaskError::HubBusy`] (the running-task caps,
    /// [`HubConfig::max_running_tasks_per_session`](crate::HubConfig::max_running_tasks_per_session)
    /// and [`HubConfig::max_running_tasks`](crate::HubConfig::max_running_tasks): a task counts
    /// from here until its end is recorded), [`StartTaskError::SessionClosed`],
    /// [`StartTaskError::ShutDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, TaskState};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// assert_eq!(hub.stats().tasks, 1);
    /// let id = task.id().to_owned();
    /// let done = tokio::task::spawn_blocking(move || task.run(|| "result")).await.unwrap();
    /// assert_eq!(done, "result");
    /// assert_eq!(hub.cancel_task("s1", &id).await.unwrap(), TaskState::Finished);
    /// # }
    /// ```
    pub fn start_task(&self, session: &str) -> Result<Task, StartTaskError> {
        let id = SessionId::check_str(session).map_err(StartTaskError::InvalidSessionId)?;
        if self.core.is_shut_down() {
            return Err(StartTaskError::ShutDown);
        }
        let config = &self.core.config;
        // The place first: a refused task is never remembered, so subscribers never hear of it.
        let running = self.running.acquire(
            id,
            config.max_running_tasks_per_session,
            config.max_running_tasks,
        )?;
        let (session, task) = self.core.start_task(id)?;
        Ok(Task::new(Arc::clone(&self.core), session, task, running))
    }

    /// Asks the task `task` of `session` to stop, and answers its state after the request,
    /// as the contract's cancel endpoints do: [`TaskState::Cancelling`] while its tool has not
    /// returned (it becomes `cancelled` when it does), or the final state it had already ended
    /// in (`cancelled`, `finished`, `failed`: cancelling again changes nothing).
    ///
    /// From the request on, [`is_cancelled`](crate::is_cancelled) is `true` in the task,
    /// [`cancelled`](crate::cancelled) completes there, and the statuses it adds are refused
    /// ([`PublishError::TaskCancelled`](crate::hub::PublishError::TaskCancelled)). Its subscribers get the `cancelling` update after
    /// every status of the task that was accepted before, and no status of the task after it.
    /// A task that has not started its tool yet (its [`Task`] handle not yet run) starts
    /// cancelled.
    ///
    /// # Errors
    ///
    /// [`CancelError::InvalidSessionId`], [`CancelError::UnknownSession`] (also after
    /// shutdown), [`CancelError::UnknownTask`] (not that session's task, or forgotten); with a
    /// shared backend, [`CancelError::Backend`] when it does not answer.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::CancelError;
    /// use status_messenger::{Hub, TaskState};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// let id = task.id().to_owned();
    /// assert_eq!(hub.cancel_task("s1", &id).await.unwrap(), TaskState::Cancelling);
    /// assert!(task.is_cancelled());
    /// assert_eq!(task.finish(), TaskState::Cancelled);
    /// assert_eq!(hub.cancel_task("s1", &id).await.unwrap(), TaskState::Cancelled);
    /// assert!(matches!(hub.cancel_task("s2", &id).await, Err(CancelError::UnknownSession)));
    /// # }
    /// ```
    pub async fn cancel_task(&self, session: &str, task: &str) -> Result<TaskState, CancelError> {
        let id = SessionId::check_str(session).map_err(CancelError::InvalidSessionId)?;
        // Task ids follow the rules of session ids (the hub's own are 32 hex digits): anything
        // else is no task, and never reaches a shared backend.
        if SessionId::check_str(task).is_err() {
            return Err(CancelError::UnknownTask);
        }
        let core = &*self.core;
        if core.is_shut_down() {
            return Err(CancelError::UnknownSession);
        }
        core.backend.cancel(Local(core), id, task).await
    }

    /// The tasks `session` remembers in this process, oldest first, each in its current
    /// state: what a new subscription starts with. Empty for a session with no task or not
    /// held here. With a shared backend (Redis), the state is what this process last heard
    /// from the store, in the store's order among the statuses: a change made here shows a
    /// round trip after it was made.
    ///
    /// # Errors
    ///
    /// [`InvalidSessionId`](crate::hub::InvalidSessionId) for an invalid id.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, TaskState};
    ///
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let first = hub.start_task("s1").unwrap();
    /// let _second = hub.start_task("s1").unwrap();
    /// first.fail("timed out");
    /// let states: Vec<_> = hub.tasks("s1").unwrap().iter().map(|t| t.state()).collect();
    /// assert_eq!(states, [TaskState::Failed, TaskState::Running]);
    /// assert!(hub.tasks("s2").unwrap().is_empty());
    /// ```
    pub fn tasks(&self, session: &str) -> Result<Vec<TaskUpdate>, InvalidSessionId> {
        let id = SessionId::check_str(session)?;
        Ok(self.core.tasks(id).unwrap_or_default())
    }
}
