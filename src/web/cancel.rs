//! Cancelling a task: the one function `POST /cancel` and the WebSocket cancel frame call.
//!
//! The hub has no tasks yet, so no task is known and every cancel is answered "unknown task";
//! when it has, this is the one place that asks it.

use std::fmt;

use crate::{Hub, SessionId};

/// Why a cancel was not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CancelError {
    /// No task of that id belongs to the session.
    UnknownTask,
}

impl fmt::Display for CancelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelError::UnknownTask => f.write_str("unknown task"),
        }
    }
}

/// Asks `session`'s task `task` to stop; its state after the request (`"cancelling"`, or the
/// state it had already ended in).
pub(crate) async fn cancel(
    hub: &Hub,
    session: &SessionId,
    task: &str,
) -> Result<&'static str, CancelError> {
    // Every argument is what the hub's task API will need; until it exists no task is known.
    let _ = (hub, session, task);
    Err(CancelError::UnknownTask)
}
