//! Cancelling a task: the one function `POST /cancel` and the WebSocket cancel frame call.

use std::fmt;

use crate::{Hub, SessionId};

/// Why a cancel was not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CancelError {
    /// No task of that id belongs to the session, or no such session (a 404).
    NotFound(String),
    /// The shared backend did not answer (a 503).
    Backend(String),
}

impl CancelError {
    /// Whether the session or the task was not found.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, CancelError::NotFound(_))
    }
}

impl fmt::Display for CancelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelError::NotFound(message) | CancelError::Backend(message) => f.write_str(message),
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
    match hub.cancel_task(session.as_str(), task).await {
        Ok(state) => Ok(state.as_str()),
        Err(error) if error.is_not_found() => Err(CancelError::NotFound(error.to_string())),
        Err(error) => Err(CancelError::Backend(error.to_string())),
    }
}
