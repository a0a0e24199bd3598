//! What subscribers receive: [`Event`], [`Status`] with its fields, [`Gap`] (and
//! [`TaskUpdate`](super::TaskUpdate), in `task`; the [`SessionId`] each names is in
//! `session_id`).
//!
//! # Invariants
//!
//! - A [`Status`]'s `seq` is at least 1 and its text at most the hub's `max_status_bytes`; its
//!   key is at most [`MAX_KEY_BYTES`] and its data at most `max_status_bytes`.
//! - A [`Gap`] has `1 <= from <= to`: it is never empty. Its fields are private so no value
//!   outside this crate can break that.

use std::sync::Arc;

use super::{SessionId, TaskUpdate};
use crate::status::{JsonData, Level, Progress};

/// The longest status key the hub keeps, in bytes; a longer one is cut at a char boundary
/// (counted in [`HubStats::truncated`](crate::HubStats::truncated)).
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::hub::MAX_KEY_BYTES;
/// use status_messenger::{Event, Hub, StatusMessage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.publish_message(Some("s"), StatusMessage::new("x").key("k".repeat(300))).unwrap();
/// let Some(Event::Status(status)) = hub.subscribe("s", None).next().await else { panic!() };
/// assert_eq!(status.key().map(str::len), Some(MAX_KEY_BYTES));
/// assert_eq!(hub.stats().truncated, 1);
/// # }
/// ```
pub const MAX_KEY_BYTES: usize = 256;

/// A status's optional fields, as the hub keeps them: shared by its history entry and every
/// [`Status`] handed out, so a plain status pays one pointer for them. A task's statuses
/// carry its id and usually a progress, kept inline; level, key and data are rarer and share
/// one box, so the common record is 48 bytes instead of 80.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extra {
    pub(crate) task: Option<Arc<str>>,
    pub(crate) progress: Option<Progress>,
    rare: Option<Box<RareFields>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RareFields {
    level: Option<Level>,
    key: Option<Box<str>>,
    data: Option<JsonData>,
}

impl Extra {
    /// Fields of a task's status (either may be absent) with no level, key or data.
    pub(crate) fn new(task: Option<Arc<str>>, progress: Option<Progress>) -> Self {
        Extra {
            task,
            progress,
            rare: None,
        }
    }

    /// Sets the rarer fields; a box only when one of them is present.
    pub(crate) fn set_rare(
        &mut self,
        level: Option<Level>,
        key: Option<Box<str>>,
        data: Option<JsonData>,
    ) {
        self.rare = (level.is_some() || key.is_some() || data.is_some())
            .then(|| Box::new(RareFields { level, key, data }));
    }

    /// Whether it has a level, key or data.
    pub(crate) fn has_rare(&self) -> bool {
        self.rare.is_some()
    }

    pub(crate) fn level(&self) -> Option<Level> {
        self.rare.as_ref().and_then(|rare| rare.level)
    }

    pub(crate) fn key(&self) -> Option<&str> {
        self.rare.as_ref().and_then(|rare| rare.key.as_deref())
    }

    pub(crate) fn data(&self) -> Option<&JsonData> {
        self.rare.as_ref().and_then(|rare| rare.data.as_ref())
    }
}

/// One item of a [`Subscription`](crate::Subscription).
///
/// Non-exhaustive: later versions may add kinds of item; skip the ones you do not know.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Event, Hub, HubConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut config = HubConfig::default();
/// config.history_capacity = 2;
/// let hub = Hub::new(config).unwrap();
/// for text in ["a", "b", "c"] {
///     hub.publish(Some("s"), text).unwrap();
/// }
/// let mut sub = hub.subscribe("s", None);
/// // Status 1 left history: the subscriber is told, then gets the rest.
/// assert!(matches!(sub.next().await, Some(Event::Gap(g)) if (g.from(), g.to()) == (1, 1)));
/// assert_eq!(sub.next().await.and_then(|e| e.seq()), Some(2));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A status, in order.
    Status(Status),
    /// Statuses this subscriber cannot have.
    Gap(Gap),
    /// A task of the session changed state, or (first thing on every subscription) is in that
    /// state; see [`TaskUpdate`]. Only sessions that have tasks have these.
    Task(TaskUpdate),
}

impl Event {
    /// The session of this item.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s"), "hi").unwrap();
    /// let event = hub.subscribe("s", None).next().await.unwrap();
    /// assert_eq!(event.session(), "s");
    /// # }
    /// ```
    pub fn session(&self) -> &SessionId {
        match self {
            Event::Status(status) => &status.session,
            Event::Gap(gap) => &gap.session,
            Event::Task(update) => update.session(),
        }
    }

    /// The status's number, or `None` for a gap or a task update.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s"), "hi").unwrap();
    /// assert_eq!(hub.subscribe("s", None).next().await.unwrap().seq(), Some(1));
    /// # }
    /// ```
    pub fn seq(&self) -> Option<u64> {
        match self {
            Event::Status(status) => Some(status.seq),
            Event::Gap(_) | Event::Task(_) => None,
        }
    }

    /// The last number this item accounts for: a status's `seq`, a gap's `to`. A client that
    /// remembers it can resume with [`Hub::subscribe`](crate::Hub::subscribe)`(session,
    /// Some(last))`.
    ///
    /// A task update accounts for no status; for one this is its
    /// [`last_seq`](TaskUpdate::last_seq), the session's newest number when the task changed.
    /// The updates a subscription starts with may be ahead of the statuses it has delivered,
    /// so resume from [`Subscription::last_seq`](crate::Subscription::last_seq), or from the
    /// last status or gap, not from a task update.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::{Hub, HubConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut config = HubConfig::default();
    /// config.history_capacity = 1;
    /// let hub = Hub::new(config).unwrap();
    /// for text in ["a", "b", "c"] {
    ///     hub.publish(Some("s"), text).unwrap();
    /// }
    /// let gap = hub.subscribe("s", None).next().await.unwrap();
    /// assert_eq!((gap.seq(), gap.last_seq()), (None, 2));
    /// # }
    /// ```
    pub fn last_seq(&self) -> u64 {
        match self {
            Event::Status(status) => status.seq,
            Event::Gap(gap) => gap.to,
            Event::Task(update) => update.last_seq(),
        }
    }
}

/// One status of one session, as a subscriber receives it.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Event, Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.publish(Some("s"), "one").unwrap();
/// let Some(Event::Status(status)) = hub.subscribe("s", None).next().await else { panic!() };
/// assert_eq!((status.session().as_str(), status.seq(), status.text()), ("s", 1, "one"));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    session: SessionId,
    seq: u64,
    text: Arc<str>,
    extra: Option<Arc<Extra>>,
}

impl Status {
    pub(crate) fn new(
        session: SessionId,
        seq: u64,
        text: Arc<str>,
        extra: Option<Arc<Extra>>,
    ) -> Status {
        debug_assert!(seq >= 1, "statuses are numbered from 1");
        Status {
            session,
            seq,
            text,
            extra,
        }
    }

    fn extra(&self) -> Option<&Extra> {
        self.extra.as_deref()
    }

    /// The id of the task that added it (the frame field `"task"`), if it was added inside a
    /// [`Task`](crate::Task).
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let messenger = status_messenger::Messenger::new();
    /// hub.attach(&messenger).unwrap();
    /// let task = hub.start_task("s1").unwrap();
    /// let id = task.id().to_owned();
    /// task.context().with_messenger(&messenger).run(|| messenger.add_status_message("step 1"));
    /// hub.publish(Some("s1"), "not from a task").unwrap();
    ///
    /// let mut sub = hub.subscribe("s1", None);
    /// let Some(Event::Task(_running)) = sub.next().await else { panic!() };
    /// let Some(Event::Status(step)) = sub.next().await else { panic!() };
    /// assert_eq!(step.task(), Some(id.as_str()));
    /// let Some(Event::Status(other)) = sub.next().await else { panic!() };
    /// assert_eq!(other.task(), None);
    /// # }
    /// ```
    pub fn task(&self) -> Option<&str> {
        self.extra().and_then(|extra| extra.task.as_deref())
    }

    /// Its progress (the frame field `"progress": {"current": c, "total": t}`), if it has one.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub, StatusMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// hub.publish_message(Some("s1"), StatusMessage::new("step").progress(2, 5)).unwrap();
    /// let Some(Event::Status(status)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// let progress = status.progress().unwrap();
    /// assert_eq!((progress.current(), progress.total()), (2, 5));
    /// # }
    /// ```
    pub fn progress(&self) -> Option<Progress> {
        self.extra().and_then(|extra| extra.progress)
    }

    /// Its level (the frame field `"level"`, [`Level::as_str`]), if it has one.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub, Level, StatusMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// hub.publish_message(Some("s1"), StatusMessage::new("retrying").level(Level::Warn)).unwrap();
    /// let Some(Event::Status(status)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(status.level().map(|level| level.as_str()), Some("warn"));
    /// # }
    /// ```
    pub fn level(&self) -> Option<Level> {
        self.extra().and_then(Extra::level)
    }

    /// Its key (the frame field `"key"`), if it has one: a later status with the same key
    /// supersedes it on screen.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub, StatusMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// hub.publish_message(Some("s1"), StatusMessage::new("1 of 3").key("dl")).unwrap();
    /// let Some(Event::Status(status)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(status.key(), Some("dl"));
    /// # }
    /// ```
    pub fn key(&self) -> Option<&str> {
        self.extra().and_then(Extra::key)
    }

    /// Its JSON data (the frame field `"data"`, to be written into the frame as it is: it is
    /// valid, compact JSON), if it has any.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub, JsonData, StatusMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// let data = JsonData::new(r#"{"hits": [1, 2]}"#).unwrap();
    /// hub.publish_message(Some("s1"), StatusMessage::new("found").data(data)).unwrap();
    /// let Some(Event::Status(status)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(status.data().map(|data| data.as_str()), Some(r#"{"hits":[1,2]}"#));
    /// # }
    /// ```
    pub fn data(&self) -> Option<&JsonData> {
        self.extra().and_then(Extra::data)
    }

    /// The session it belongs to.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s1"), "x").unwrap();
    /// let Some(Event::Status(status)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(status.session(), "s1");
    /// # }
    /// ```
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// Its number in the session: 1, 2, 3, ... in the order the statuses were accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s1"), "a").unwrap();
    /// hub.publish(Some("s1"), "b").unwrap();
    /// let Some(Event::Status(status)) = hub.subscribe("s1", Some(1)).next().await else { panic!() };
    /// assert_eq!(status.seq(), 2);
    /// # }
    /// ```
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The text, cut to [`HubConfig::max_status_bytes`](crate::HubConfig::max_status_bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s1"), "Reading 3 pages...").unwrap();
    /// let Some(Event::Status(status)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(status.text(), "Reading 3 pages...");
    /// # }
    /// ```
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text as the shared allocation the hub holds, to hand on without a copy.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s1"), "shared").unwrap();
    /// let Some(Event::Status(status)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// let text: std::sync::Arc<str> = status.shared_text().clone();
    /// assert_eq!(&*text, "shared");
    /// # }
    /// ```
    pub fn shared_text(&self) -> &Arc<str> {
        &self.text
    }
}

/// Statuses `from..=to` of a session are missing for this subscriber and cannot be delivered.
///
/// Never empty: `1 <= from <= to`.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Event, Hub, HubConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut config = HubConfig::default();
/// config.history_capacity = 1;
/// let hub = Hub::new(config).unwrap();
/// for text in ["a", "b", "c", "d"] {
///     hub.publish(Some("s"), text).unwrap();
/// }
/// let Some(Event::Gap(gap)) = hub.subscribe("s", None).next().await else { panic!() };
/// assert_eq!((gap.session().as_str(), gap.from(), gap.to(), gap.len()), ("s", 1, 3, 3));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gap {
    session: SessionId,
    from: u64,
    to: u64,
}

impl Gap {
    pub(crate) fn new(session: SessionId, from: u64, to: u64) -> Gap {
        debug_assert!(1 <= from && from <= to, "an empty gap {from}..={to}");
        Gap { session, from, to }
    }

    /// The session.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub, HubConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mut config = HubConfig::default();
    /// # config.history_capacity = 1;
    /// # let hub = Hub::new(config).unwrap();
    /// hub.publish(Some("s"), "a").unwrap();
    /// hub.publish(Some("s"), "b").unwrap();
    /// let Some(Event::Gap(gap)) = hub.subscribe("s", None).next().await else { panic!() };
    /// assert_eq!(gap.session(), "s");
    /// # }
    /// ```
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// The first missing number.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub, HubConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mut config = HubConfig::default();
    /// # config.history_capacity = 1;
    /// # let hub = Hub::new(config).unwrap();
    /// for text in ["a", "b", "c"] {
    ///     hub.publish(Some("s"), text).unwrap();
    /// }
    /// let Some(Event::Gap(gap)) = hub.subscribe("s", Some(1)).next().await else { panic!() };
    /// assert_eq!(gap.from(), 2);
    /// # }
    /// ```
    pub fn from(&self) -> u64 {
        self.from
    }

    /// The last missing number (at least [`from`](Gap::from)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub, HubConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mut config = HubConfig::default();
    /// # config.history_capacity = 1;
    /// # let hub = Hub::new(config).unwrap();
    /// for text in ["a", "b", "c"] {
    ///     hub.publish(Some("s"), text).unwrap();
    /// }
    /// let Some(Event::Gap(gap)) = hub.subscribe("s", None).next().await else { panic!() };
    /// assert_eq!(gap.to(), 2);
    /// # }
    /// ```
    pub fn to(&self) -> u64 {
        self.to
    }

    /// How many statuses are missing (at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::{Event, Hub, HubConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mut config = HubConfig::default();
    /// # config.history_capacity = 1;
    /// # let hub = Hub::new(config).unwrap();
    /// hub.publish(Some("s"), "a").unwrap();
    /// hub.publish(Some("s"), "b").unwrap();
    /// let Some(Event::Gap(gap)) = hub.subscribe("s", None).next().await else { panic!() };
    /// assert_eq!(gap.len(), 1);
    /// # }
    /// ```
    #[allow(clippy::len_without_is_empty)] // never empty, see the type's docs
    pub fn len(&self) -> u64 {
        (self.to - self.from).saturating_add(1)
    }
}
