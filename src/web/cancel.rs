//! Cancelling a task: the one function `POST /cancel` and the WebSocket cancel frame call.

use crate::hub::CancelError;
use crate::{Hub, SessionId};

/// Asks `session`'s task `task` to stop; its state after the request (`"cancelling"`, or the
/// state it had already ended in).
pub(crate) async fn cancel(
    hub: &Hub,
    session: &SessionId,
    task: &str,
) -> Result<&'static str, CancelError> {
    match hub.cancel_task(session.as_str(), task).await {
        Ok(state) => Ok(state.as_str()),
        Err(error) => Err(error),
    }
}
