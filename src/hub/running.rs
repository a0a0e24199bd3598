//! The caps on running tasks: [`RunningTasks`] counts the tasks running in this process, per
//! session and in all, and [`RunningPermit`] is one running task's place under them.
//!
//! # Invariants
//!
//! - A permit is taken before a task starts and given back when it is dropped, exactly once,
//!   so the counts never exceed the caps they were checked against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::StartTaskError;

/// The tasks running in this process, counted against
/// [`HubConfig::max_running_tasks_per_session`](crate::HubConfig::max_running_tasks_per_session)
/// and [`HubConfig::max_running_tasks`](crate::HubConfig::max_running_tasks).
///
/// # Invariants
///
/// - `total` is the sum of `per_session`'s counts, and no count in it is 0 (a session leaves
///   the map with its last running task), so the map holds at most `total` entries.
/// - Both change only under the one lock, held for no await and no call out.
#[derive(Debug, Default)]
pub(crate) struct RunningTasks {
    counts: Mutex<RunningCounts>,
}

#[derive(Debug, Default)]
struct RunningCounts {
    total: usize,
    per_session: HashMap<Arc<str>, usize>,
}

impl RunningTasks {
    fn counts(&self) -> MutexGuard<'_, RunningCounts> {
        // The counts are whole after any panic: every change is one statement.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more running task of `session`, or why there is none.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        session: &str,
        per_session: usize,
        total: usize,
    ) -> Result<RunningPermit, StartTaskError> {
        let mut counts = self.counts();
        let in_session = counts.per_session.get(session).copied().unwrap_or(0);
        if in_session >= per_session {
            return Err(StartTaskError::SessionBusy);
        }
        if counts.total >= total {
            return Err(StartTaskError::HubBusy);
        }
        counts.total += 1;
        let session: Arc<str> = Arc::from(session);
        *counts.per_session.entry(Arc::clone(&session)).or_insert(0) += 1;
        Ok(RunningPermit {
            running: Arc::clone(self),
            session,
        })
    }
}

/// One running task's place under the caps; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct RunningPermit {
    running: Arc<RunningTasks>,
    session: Arc<str>,
}

impl Drop for RunningPermit {
    fn drop(&mut self) {
        let mut counts = self.running.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_session.get_mut(&self.session) {
            *count -= 1;
            if *count == 0 {
                counts.per_session.remove(&self.session);
            }
        }
    }
}
