//! The current task, carried like the scoped default messenger, and its cancellation token.
//!
//! A [`Task`](crate::Task) started in a hub is carried to the code that does its work by the
//! same means as the session: [`SessionContext`](crate::SessionContext) (captured where a task
//! is current, or made by [`Task::context`](crate::Task::context)), the crate's
//! [`spawn_blocking`](crate::spawn_blocking) and [`spawn`](crate::spawn), and the task's own
//! [`run`](crate::Task::run) and [`wrap`](crate::Task::wrap). There, [`is_cancelled`] and [`cancelled`] tell the tool
//! whether someone asked it to stop, and every status it adds carries the task's id.
//!
//! # Invariants
//!
//! - The current task is a thread-local `RefCell`, set for the length of a synchronous run
//!   ([`Entered`]) or for each poll of a wrapped future (`WithMessenger`), and put back after,
//!   also on unwind. It is borrowed mutably only to swap a task in or out, and shared only to
//!   clone the `Arc` out, so no borrow is held while other code runs.
//! - A token, once cancelled, stays cancelled. Its flag is set before the waiters are woken,
//!   and a waiter registers before it reads the flag, so no waiter misses the cancel.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::hub::SessionId;

/// What the context carries of a task: its id, its session and its token.
pub(crate) type TaskRef = Arc<TaskShared>;

#[derive(Debug)]
pub(crate) struct TaskShared {
    pub(crate) id: Arc<str>,
    pub(crate) session: SessionId,
    pub(crate) token: Token,
}

/// A cancellation flag with waiters: set once, read from any thread, awaited by futures.
///
/// A flag and a `Notify` are all a task needs (no child tokens, no callbacks), so the crate
/// keeps this instead of depending on tokio-util's `CancellationToken`.
#[derive(Debug, Default)]
pub(crate) struct Token {
    cancelled: AtomicBool,
    notify: Notify,
    /// Threads asleep in [`sleep_unless_cancelled`], unparked by [`Token::wake`]. A thread is
    /// here only while it sleeps, so this holds at most one entry per sleeping thread.
    sleepers: crate::sync::Mutex<Vec<std::thread::Thread>>,
}

impl Token {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Sets the flag; whether it was not set before. Wakes nobody: call [`Token::wake`]
    /// after releasing any lock held meanwhile.
    pub(crate) fn set(&self) -> bool {
        !self.cancelled.swap(true, Ordering::AcqRel)
    }

    /// Wakes every future waiting for the flag, and every thread asleep on it.
    pub(crate) fn wake(&self) {
        self.notify.notify_waiters();
        let sleepers = std::mem::take(&mut *crate::sync::lock(&self.sleepers));
        for thread in sleepers {
            thread.unpark();
        }
    }

    /// Blocks this thread for `duration` or until the flag is set; whether it was set.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now().checked_add(duration);
        let me = std::thread::current();
        let mut registered = false;
        let cancelled = loop {
            if !registered {
                // Registered before the flag is read, so a cancel in between still unparks
                // this thread (an unpark before the park makes the park return at once).
                crate::sync::lock(&self.sleepers).push(me.clone());
                registered = true;
            }
            if self.is_cancelled() {
                break true;
            }
            let now = Instant::now();
            match deadline {
                Some(deadline) if now >= deadline => break false,
                Some(deadline) => std::thread::park_timeout(deadline - now),
                None => std::thread::park(),
            }
            // Woken by `wake` (which took this entry), by the timeout, or spuriously: look
            // again whether this thread is still listed.
            registered = crate::sync::lock(&self.sleepers)
                .iter()
                .any(|thread| thread.id() == me.id());
        };
        if registered {
            crate::sync::lock(&self.sleepers).retain(|thread| thread.id() != me.id());
        }
        cancelled
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the flag is read, so a cancel in between still wakes it.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

thread_local! {
    /// The task whose work this thread is doing now (see the module invariants).
    static CURRENT: RefCell<Option<TaskRef>> = const { RefCell::new(None) };
}

/// The current task, if one is set here: a clone of its reference.
pub(crate) fn current() -> Option<TaskRef> {
    CURRENT
        .try_with(|slot| slot.try_borrow().ok().and_then(|task| task.clone()))
        .ok()
        .flatten()
}

/// Runs `f` with the current task borrowed, not cloned (`None` outside any task); `None`
/// without running `f` when the slot cannot be read now (while the thread's locals are
/// destroyed, or while it is being changed).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&TaskRef>) -> R) -> Option<R> {
    CURRENT
        .try_with(|slot| slot.try_borrow().ok().map(|task| f(task.as_ref())))
        .ok()
        .flatten()
}

/// Reads the current task without cloning it (`None` outside any task).
fn read_current<R>(f: impl Fn(&TaskShared) -> R) -> Option<R> {
    CURRENT
        .try_with(|slot| {
            let task = slot.try_borrow().ok()?;
            task.as_deref().map(&f)
        })
        .ok()
        .flatten()
}

/// Puts `task` in this thread's slot and returns what was there; gives `task` back when the
/// slot cannot be changed now (while the thread's locals are destroyed).
pub(crate) fn replace(task: Option<TaskRef>) -> Result<Option<TaskRef>, Option<TaskRef>> {
    let mut task = Some(task);
    let replaced = CURRENT
        .try_with(|slot| {
            let mut current = slot.try_borrow_mut().ok()?;
            Some(std::mem::replace(&mut *current, task.take()?))
        })
        .ok()
        .flatten();
    match replaced {
        Some(previous) => Ok(previous),
        None => Err(task.flatten()),
    }
}

/// Makes `task` current on this thread until dropped, then puts the previous one back.
#[derive(Debug)]
pub(crate) struct Entered {
    /// What to put back; `None` when nothing was installed.
    prior: Option<Option<TaskRef>>,
    /// The task given, when it could not be installed (the thread is ending).
    refused: Option<Option<TaskRef>>,
}

impl Entered {
    pub(crate) fn new(task: Option<TaskRef>) -> Self {
        match replace(task) {
            Ok(prior) => Self {
                prior: Some(prior),
                refused: None,
            },
            Err(task) => Self {
                prior: None,
                refused: Some(task),
            },
        }
    }

    /// Puts the previous task back and returns the one this guard was given.
    pub(crate) fn end(mut self) -> Option<TaskRef> {
        if let Some(refused) = self.refused.take() {
            return refused;
        }
        let prior = self.prior.take()?;
        replace(prior).ok().flatten()
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Some(prior) = self.prior.take() {
            let ended = replace(prior);
            // Dropped outside the slot's borrow: the last reference of a task may go here.
            drop(ended);
        }
    }
}

/// Whether the task this code runs in was asked to stop: by
/// [`Hub::cancel_task`](crate::Hub::cancel_task) (so by `POST /cancel` or a WebSocket cancel
/// frame), by [`Task::cancel`](crate::Task::cancel), or because its session was closed or its
/// hub shut down. `false` outside any task.
///
/// Synchronous and cheap (a thread-local read and an atomic load), for tool code to ask before
/// each step, on any thread the task's context reached ([`Task::run`](crate::Task::run), the
/// crate's [`spawn_blocking`](crate::spawn_blocking) and [`spawn`](crate::spawn), a
/// [`SessionContext`](crate::SessionContext) run on a `std::thread` or in actix's `web::block`).
/// Once it is `true`, the statuses the task adds are refused by the hub
/// ([`PublishError::TaskCancelled`](crate::hub::PublishError::TaskCancelled)).
///
/// # Examples
///
/// ```
/// use status_messenger::{add_status_message, is_cancelled, Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// let task = hub.start_task("s1").unwrap();
/// let id = task.id().to_owned();
/// hub.cancel_task("s1", &id).await.unwrap();
///
/// // The tool: it never sees the task, it only asks.
/// fn tool() -> u32 {
///     let mut done = 0;
///     for step in 1..=10 {
///         if is_cancelled() {
///             break;
///         }
///         add_status_message(format!("step {step}"));
///         done += 1;
///     }
///     done
/// }
/// let steps = tokio::task::spawn_blocking(move || task.run(tool)).await.unwrap();
/// assert_eq!(steps, 0);
/// assert!(!is_cancelled()); // outside any task
/// # }
/// ```
pub fn is_cancelled() -> bool {
    read_current(|task| task.token.is_cancelled()).unwrap_or(false)
}

/// Sleeps for `duration`, or less if the task this code runs in is asked to stop meanwhile;
/// `true` when it was (at once if it already was). For synchronous tool code that waits
/// between steps: a cancel ends the wait at once instead of after it. Outside any task it
/// sleeps the whole `duration` and returns `false`.
///
/// It blocks the thread, as `std::thread::sleep` does: call it on a blocking thread (the
/// crate's [`spawn_blocking`](crate::spawn_blocking), a [`BlockingPool`](crate::BlockingPool),
/// a `std::thread`), never in async code, which awaits [`cancelled`] instead.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use status_messenger::{add_status_message, sleep_unless_cancelled, Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// let task = hub.start_task("s1").unwrap();
/// let id = task.id().to_owned();
///
/// // A tool that waits a minute between its steps.
/// fn tool() -> u32 {
///     let mut done = 0;
///     for step in 1..=10 {
///         if step > 1 && sleep_unless_cancelled(Duration::from_secs(60)) {
///             break;
///         }
///         add_status_message(format!("step {step}"));
///         done += 1;
///     }
///     done
/// }
/// let started = Instant::now();
/// let tool = tokio::task::spawn_blocking(move || task.run(tool));
/// tokio::time::sleep(Duration::from_millis(50)).await;
/// hub.cancel_task("s1", &id).await.unwrap();
/// assert_eq!(tool.await.unwrap(), 1); // stopped in its first wait
/// assert!(started.elapsed() < Duration::from_secs(30));
///
/// assert!(!sleep_unless_cancelled(Duration::from_millis(1))); // outside any task
/// # }
/// ```
pub fn sleep_unless_cancelled(duration: Duration) -> bool {
    match current() {
        Some(task) => task.token.sleep(duration),
        None => {
            std::thread::sleep(duration);
            false
        }
    }
}

/// The id of the task this code runs in, if any.
///
/// # Examples
///
/// ```
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// let task = hub.start_task("s1").unwrap();
/// let id = task.id().to_owned();
/// assert_eq!(task.run(status_messenger::current_task_id), Some(id));
/// assert_eq!(status_messenger::current_task_id(), None);
/// ```
pub fn current_task_id() -> Option<String> {
    read_current(|task| task.id.to_string())
}

/// Completes when the task this code runs in is asked to stop (at once if it was already); for
/// async tool code, e.g. in `tokio::select!` beside the work. Outside any task it never
/// completes.
///
/// The task is the one current when `cancelled()` is called; the future can then be moved and
/// awaited anywhere.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use status_messenger::Hub;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// let task = hub.start_task("s1").unwrap();
/// let id = task.id().to_owned();
/// let tool = tokio::spawn(task.wrap(async {
///     tokio::select! {
///         _ = status_messenger::cancelled() => "stopped",
///         _ = tokio::time::sleep(Duration::from_secs(3600)) => "done",
///     }
/// }));
/// hub.cancel_task("s1", &id).await.unwrap();
/// assert_eq!(tool.await.unwrap(), "stopped");
/// # }
/// ```
pub fn cancelled() -> Cancelled {
    Cancelled::new(current())
}

/// Completes when its task is asked to stop; from [`cancelled`] and
/// [`Task::cancelled`](crate::Task::cancelled). `Send`, `Unpin` and `'static`.
///
/// # Examples
///
/// ```
/// use status_messenger::{Cancelled, Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// let task = hub.start_task("s1").unwrap();
/// let stop: Cancelled = task.cancelled();
/// task.cancel();
/// stop.await; // completes: the task was cancelled
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Cancelled {
    /// `None` outside any task: never completes.
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl Cancelled {
    pub(crate) fn new(task: Option<TaskRef>) -> Self {
        Self {
            wait: task.map(|task| {
                Box::pin(async move { task.token.wait().await })
                    as Pin<Box<dyn Future<Output = ()> + Send + Sync>>
            }),
        }
    }
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelled")
            .field("in_task", &self.wait.is_some())
            .finish()
    }
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.wait.as_mut() {
            Some(wait) => wait.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}
