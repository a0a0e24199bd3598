//! What each hub operation can answer: one result type per operation, holding only what that
//! operation can return.
//!
//! - [`Hub::publish`](crate::Hub::publish): [`Published`] or [`PublishError`];
//! - [`Hub::open_session`](crate::Hub::open_session): [`OpenError`];
//! - [`Hub::session_exists`](crate::Hub::session_exists): [`LookupError`];
//! - [`Hub::try_subscribe`](crate::Hub::try_subscribe): [`SubscribeError`];
//! - [`Hub::close_session`](crate::Hub::close_session): [`CloseError`];
//! - [`Hub::start_task`](crate::Hub::start_task): [`StartTaskError`];
//! - [`Hub::cancel_task`](crate::Hub::cancel_task): [`CancelError`];
//! - a shared backend's failures: [`BackendError`], the source of the `Backend` variants.

use std::fmt;
use std::time::Duration;

use super::InvalidSessionId;

/// A status the hub accepted, from [`Hub::publish`](crate::Hub::publish).
///
/// # Examples
///
/// ```
/// use status_messenger::hub::Published;
///
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// assert_eq!(hub.publish(Some("s1"), "a"), Ok(Published::Numbered(1)));
/// assert_eq!(hub.publish(Some("s1"), "b").unwrap().seq(), Some(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Published {
    /// Numbered now: this is its `seq` in the session.
    Numbered(u64),
    /// Taken by a shared backend (Redis), which numbers it once it reaches it; subscribers get
    /// it with that number, or a gap for it if it is lost on the way (counted).
    Queued,
}

impl Published {
    /// The number given, if it was given already ([`Published::Numbered`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::Published;
    ///
    /// assert_eq!(Published::Numbered(7).seq(), Some(7));
    /// assert_eq!(Published::Queued.seq(), None);
    /// ```
    pub fn seq(&self) -> Option<u64> {
        match self {
            Published::Numbered(seq) => Some(*seq),
            Published::Queued => None,
        }
    }
}

/// Why [`Hub::publish`](crate::Hub::publish) did not accept a status. Every refusal is also
/// counted in [`HubStats`](crate::HubStats).
///
/// # Examples
///
/// ```
/// use status_messenger::hub::PublishError;
///
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// assert_eq!(hub.publish(None, "nowhere"), Err(PublishError::NoSession));
/// assert_eq!(hub.publish(Some(""), "bad id"), Err(PublishError::InvalidSessionId));
/// assert_eq!(PublishError::NoSession.to_string(), "status has no session");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PublishError {
    /// Added outside any session under [`NoSessionPolicy::Drop`](crate::NoSessionPolicy::Drop)
    /// (counted in `dropped_no_session`).
    NoSession,
    /// The session id is not valid (counted in `dropped_invalid`).
    InvalidSessionId,
    /// It would have opened a session beyond
    /// [`HubConfig::max_sessions`](crate::HubConfig::max_sessions), and none of those held
    /// could give way (each has a subscriber or a running task; counted in
    /// `dropped_session_limit`).
    TooManySessions,
    /// Its session is being closed (counted in `dropped_closed`).
    SessionClosed,
    /// The hub is shut down (counted in `dropped_closed`).
    ShutDown,
    /// A shared backend's buffer is full while it cannot reach its store (counted in
    /// `dropped_backend`; subscribers get a gap for it).
    BufferFull,
    /// It was added by a task that had been asked to stop (counted in `dropped_cancelled`):
    /// no status of a task follows its `cancelling` update.
    TaskCancelled,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishError::NoSession => "status has no session",
            PublishError::InvalidSessionId => "invalid session id",
            PublishError::TooManySessions => "too many sessions",
            PublishError::SessionClosed => "the session is being closed",
            PublishError::ShutDown => "the hub is shut down",
            PublishError::BufferFull => "the backend's buffer is full",
            PublishError::TaskCancelled => "its task was cancelled",
        })
    }
}

impl std::error::Error for PublishError {}

/// A shared backend (Redis) could not do what was asked: unreachable, timed out, or refused.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::BackendError;
///
/// let error = BackendError::new("redis", std::io::Error::other("connection refused"));
/// assert_eq!(error.backend(), "redis");
/// assert_eq!(error.to_string(), "redis: connection refused");
/// assert!(std::error::Error::source(&error).is_some());
/// ```
#[derive(Debug)]
pub struct BackendError {
    backend: &'static str,
    source: Box<dyn std::error::Error + Send + Sync>,
    retry_after: Option<Duration>,
}

impl BackendError {
    /// An error of the backend named `backend`, caused by `source`.
    ///
    /// # Examples
    ///
    /// ```
    /// let error = status_messenger::hub::BackendError::new("redis", "timed out");
    /// assert_eq!(error.to_string(), "redis: timed out");
    /// ```
    pub fn new(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            backend,
            source: source.into(),
            retry_after: None,
        }
    }

    /// The same error, saying that trying again after `wait` may succeed (the backend is away
    /// or did not answer in time, and reconnects by itself).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use status_messenger::hub::BackendError;
    ///
    /// let error = BackendError::new("redis", "unavailable")
    ///     .with_retry_after(Duration::from_secs(2));
    /// assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
    /// ```
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// How long to wait before trying again, when a retry may succeed: what an HTTP server
    /// answers as `Retry-After` with its 503. `None` when the backend refused the request
    /// (trying again would not help).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::BackendError;
    ///
    /// assert_eq!(BackendError::new("redis", "refused").retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The backend's name (`"redis"`).
    ///
    /// # Examples
    ///
    /// ```
    /// let error = status_messenger::hub::BackendError::new("redis", "timed out");
    /// assert_eq!(error.backend(), "redis");
    /// ```
    pub fn backend(&self) -> &'static str {
        self.backend
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.backend, self.source)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

macro_rules! display_and_source {
    ($error:ident { $($variant:ident => $text:literal),* $(,)? } $(backend: $backend:ident)? $(invalid: $invalid:ident)?) => {
        impl fmt::Display for $error {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($error::$variant => f.write_str($text),)*
                    $($error::$backend(error) => error.fmt(f),)?
                    $($error::$invalid(error) => error.fmt(f),)?
                }
            }
        }

        impl std::error::Error for $error {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $($error::$backend(error) => Some(error),)?
                    $($error::$invalid(error) => Some(error),)?
                    #[allow(unreachable_patterns)] // an error with only wrapped variants
                    _ => None,
                }
            }
        }
    };
}

/// Why [`Hub::open_session`](crate::Hub::open_session) failed.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::OpenError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// let error = hub.open_session("bad\nid").await.unwrap_err();
/// assert!(matches!(error, OpenError::InvalidSessionId(_)));
/// assert_eq!(error.to_string(), "invalid session id: has a control character");
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The id is not a valid [`SessionId`](crate::SessionId).
    InvalidSessionId(InvalidSessionId),
    /// [`HubConfig::max_sessions`](crate::HubConfig::max_sessions) sessions are held already
    /// and none of them could give way (each has a subscriber or a running task).
    TooManySessions,
    /// The hub was shut down.
    ShutDown,
    /// The shared backend could not register it.
    Backend(BackendError),
    /// [`Hub::create_session`](crate::Hub::create_session) got no random bytes for a new id
    /// from the operating system (logged with its cause).
    NoRandomness,
}

display_and_source!(OpenError {
    TooManySessions => "too many sessions",
    ShutDown => "the hub is shut down",
    NoRandomness => "no random bytes for a new session id",
} backend: Backend invalid: InvalidSessionId);

/// How long a caller refused for want of room is told to wait: sessions give way as their
/// readers leave, which for a page is seconds, not milliseconds.
pub(crate) const SESSION_ROOM_RETRY_AFTER: Duration = Duration::from_secs(5);

impl OpenError {
    /// How long to wait before trying again, when a retry may succeed: every held session is
    /// in use ([`OpenError::TooManySessions`], 5 s), or the backend is away
    /// ([`BackendError::retry_after`]). What an HTTP server answers as `Retry-After` with its
    /// 503.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use status_messenger::hub::OpenError;
    /// use status_messenger::{Hub, HubConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut config = HubConfig::default();
    /// config.max_sessions = 1;
    /// let hub = Hub::new(config).unwrap();
    /// let _reader = hub.subscribe("in-use", None);
    /// let error = hub.open_session("another").await.unwrap_err();
    /// assert!(matches!(error, OpenError::TooManySessions));
    /// assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
    /// assert_eq!(OpenError::ShutDown.retry_after(), None);
    /// # }
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OpenError::TooManySessions => Some(SESSION_ROOM_RETRY_AFTER),
            OpenError::Backend(error) => error.retry_after(),
            OpenError::InvalidSessionId(_) | OpenError::ShutDown | OpenError::NoRandomness => None,
        }
    }
}

/// Why [`Hub::session_exists`](crate::Hub::session_exists) could not tell.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::LookupError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// assert!(matches!(hub.session_exists("").await, Err(LookupError::InvalidSessionId(_))));
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum LookupError {
    /// The id is not a valid [`SessionId`](crate::SessionId).
    InvalidSessionId(InvalidSessionId),
    /// The shared backend did not answer.
    Backend(BackendError),
}

display_and_source!(LookupError {} backend: Backend invalid: InvalidSessionId);

impl LookupError {
    /// How long to wait before trying again, when the backend is away
    /// ([`BackendError::retry_after`]); what an HTTP server answers as `Retry-After` with its
    /// 503.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use status_messenger::hub::{BackendError, LookupError};
    ///
    /// let away = BackendError::new("redis", "unavailable")
    ///     .with_retry_after(Duration::from_secs(1));
    /// assert_eq!(LookupError::Backend(away).retry_after(), Some(Duration::from_secs(1)));
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LookupError::Backend(error) => error.retry_after(),
            LookupError::InvalidSessionId(_) => None,
        }
    }
}

/// Why [`Hub::try_subscribe`](crate::Hub::try_subscribe) refused a subscription.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::SubscribeError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// assert!(matches!(hub.try_subscribe("", None), Err(SubscribeError::InvalidSessionId(_))));
/// hub.shutdown().await;
/// assert!(matches!(hub.try_subscribe("s", None), Err(SubscribeError::ShutDown)));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The id is not a valid [`SessionId`](crate::SessionId).
    InvalidSessionId(InvalidSessionId),
    /// The session does not exist, [`HubConfig::max_sessions`](crate::HubConfig::max_sessions)
    /// sessions are held already and none of them could give way (each has a subscriber or a
    /// running task).
    TooManySessions,
    /// The hub was shut down.
    ShutDown,
}

display_and_source!(SubscribeError {
    TooManySessions => "too many sessions",
    ShutDown => "the hub is shut down",
} invalid: InvalidSessionId);

/// Why [`Hub::close_session`](crate::Hub::close_session) could not tell whether it closed a
/// session.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::CloseError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// assert!(matches!(hub.close_session("").await, Err(CloseError::InvalidSessionId(_))));
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseError {
    /// The id is not a valid [`SessionId`](crate::SessionId).
    InvalidSessionId(InvalidSessionId),
    /// The shared backend did not confirm the close in time; it stays queued and is applied
    /// when the backend is reachable again.
    Backend(BackendError),
}

display_and_source!(CloseError {} backend: Backend invalid: InvalidSessionId);

/// Why [`Hub::start_task`](crate::Hub::start_task) did not start a task.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::StartTaskError;
/// use status_messenger::{Hub, HubConfig};
///
/// let mut config = HubConfig::default();
/// config.task_capacity = 1;
/// let hub = Hub::new(config).unwrap();
/// let running = hub.start_task("s1").unwrap();
/// assert_eq!(hub.start_task("s1").unwrap_err(), StartTaskError::TooManyTasks);
/// running.finish();
/// assert!(hub.start_task("s1").is_ok()); // the ended task is forgotten to make room
/// assert!(matches!(hub.start_task(""), Err(StartTaskError::InvalidSessionId(_))));
///
/// let mut config = HubConfig::default();
/// config.max_running_tasks_per_session = 1;
/// config.max_running_tasks = 2;
/// let hub = Hub::new(config).unwrap();
/// let _a = hub.start_task("a").unwrap();
/// assert_eq!(hub.start_task("a").unwrap_err(), StartTaskError::SessionBusy);
/// let _b = hub.start_task("b").unwrap();
/// assert_eq!(hub.start_task("c").unwrap_err(), StartTaskError::HubBusy);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartTaskError {
    /// The id is not a valid [`SessionId`](crate::SessionId).
    InvalidSessionId(InvalidSessionId),
    /// The session does not exist and [`HubConfig::max_sessions`](crate::HubConfig::max_sessions)
    /// sessions are held already.
    TooManySessions,
    /// The session remembers [`HubConfig::task_capacity`](crate::HubConfig::task_capacity)
    /// tasks and none of them has ended.
    TooManyTasks,
    /// [`HubConfig::max_running_tasks_per_session`](crate::HubConfig::max_running_tasks_per_session)
    /// tasks of the session are running in this process; try again once one has ended.
    SessionBusy,
    /// [`HubConfig::max_running_tasks`](crate::HubConfig::max_running_tasks) tasks are running
    /// in this process; try again once one has ended.
    HubBusy,
    /// The session is being closed.
    SessionClosed,
    /// The hub was shut down.
    ShutDown,
}

display_and_source!(StartTaskError {
    TooManySessions => "too many sessions",
    TooManyTasks => "too many running tasks in the session",
    SessionBusy => "too many tasks of the session are running at once",
    HubBusy => "too many tasks are running at once",
    SessionClosed => "the session is being closed",
    ShutDown => "the hub is shut down",
} invalid: InvalidSessionId);

/// Why [`Hub::cancel_task`](crate::Hub::cancel_task) could not ask a task to stop.
///
/// The contract answers each of the "not found" cases ([`is_not_found`](CancelError::is_not_found))
/// with 404.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::CancelError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// let task = hub.start_task("s1").unwrap();
/// let error = hub.cancel_task("s2", task.id()).await.unwrap_err();
/// assert!(matches!(error, CancelError::UnknownSession));
/// assert_eq!(error.to_string(), "unknown session");
/// let error = hub.cancel_task("s1", "no-such-task").await.unwrap_err();
/// assert!(matches!(error, CancelError::UnknownTask));
/// assert!(error.is_not_found());
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum CancelError {
    /// The id is not a valid [`SessionId`](crate::SessionId).
    InvalidSessionId(InvalidSessionId),
    /// No such session (never opened, closed, or evicted; every session after shutdown).
    UnknownSession,
    /// The session has no such task: never started there, or forgotten
    /// ([`HubConfig::task_capacity`](crate::HubConfig::task_capacity)).
    UnknownTask,
    /// The shared backend did not answer.
    Backend(BackendError),
}

impl CancelError {
    /// Whether the session or the task was not found (an invalid id included): the contract's
    /// 404, as opposed to a backend failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::{BackendError, CancelError};
    ///
    /// assert!(CancelError::UnknownTask.is_not_found());
    /// assert!(!CancelError::Backend(BackendError::new("redis", "timed out")).is_not_found());
    /// ```
    pub fn is_not_found(&self) -> bool {
        !matches!(self, CancelError::Backend(_))
    }

    /// When to try again, if the error says: a backend known to be away.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use status_messenger::hub::{BackendError, CancelError};
    ///
    /// assert_eq!(CancelError::UnknownTask.retry_after(), None);
    /// let away = BackendError::new("redis", "refused").with_retry_after(Duration::from_secs(1));
    /// assert_eq!(CancelError::Backend(away).retry_after(), Some(Duration::from_secs(1)));
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CancelError::Backend(error) => error.retry_after(),
            _ => None,
        }
    }
}

display_and_source!(CancelError {
    UnknownSession => "unknown session",
    UnknownTask => "unknown task",
} backend: Backend invalid: InvalidSessionId);
