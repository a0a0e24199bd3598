//! The handle users hold: [`Hub`], cheap to clone, and what it does on behalf of the core and
//! its backend.
//!
//! # Invariants
//!
//! - Every clone of one hub shares one `Handles`; subscriptions hold only the core. When the
//!   last clone goes nobody can publish any more, so the hub shuts down and its streams end.
//! - A session id given as `&str` is checked once here, at the entry, and travels checked from
//!   then on.

use std::fmt;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::backend::{Backend, BackendHandle, Local, Memory};
use super::core::Core;
use super::running::RunningTasks;
use super::{
    CloseError, ConfigError, HubConfig, HubStats, LookupError, OpenError, PublishError, Published,
    SessionId, SubscribeError, Subscription,
};
use crate::messenger::Payload;
use crate::StatusMessage;

mod tasks;

/// Routes statuses to per-session subscribers, with history, resume and signalled loss.
///
/// Cheap to clone (clones share one hub), `Send + Sync`, needs no runtime to create or to
/// [`publish`](Hub::publish) into. See the [module docs](crate::hub) for how it works and how to
/// choose its bounds. When its last clone is dropped it shuts down as by
/// [`shutdown`](Hub::shutdown): subscriptions get what was accepted, then end.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::hub::Published;
/// use status_messenger::{Event, Hub, HubConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(HubConfig::default()).unwrap();
/// let mut tab1 = hub.subscribe("s1", None);
/// let mut tab2 = hub.subscribe("s1", None);
/// assert_eq!(hub.publish(Some("s1"), "working"), Ok(Published::Numbered(1)));
/// assert_eq!(hub.publish(Some("s2"), "elsewhere"), Ok(Published::Numbered(1)));
/// for tab in [&mut tab1, &mut tab2] {
///     let Some(Event::Status(status)) = tab.next().await else { panic!() };
///     assert_eq!((status.session().as_str(), status.seq(), status.text()), ("s1", 1, "working"));
/// }
/// assert_eq!(hub.stats().delivered, 2);
/// # }
/// ```
#[derive(Clone)]
pub struct Hub {
    pub(super) core: Arc<Core>,
    running: Arc<RunningTasks>,
    _handles: Arc<Handles>,
}

/// Shared by every clone of one [`Hub`] (subscriptions hold only `Inner`): when the last clone
/// goes, nobody can publish any more, so the hub shuts down and its streams end.
struct Handles {
    core: Arc<Core>,
}

impl Drop for Handles {
    fn drop(&mut self) {
        let core = &*self.core;
        if core.stop_accepting() {
            core.backend.stop();
            core.close_sessions();
        }
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt(f)
    }
}

impl Hub {
    /// Creates a hub with `config`. Needs no runtime.
    ///
    /// With the `metrics` feature, the hub's metrics are registered with the recorder installed
    /// at this moment, and brought to the hub's counters by
    /// [`record_metrics`](Hub::record_metrics).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when a field is out of range (see [`HubConfig::validate`](crate::HubConfig::validate)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, HubConfig};
    ///
    /// let hub = Hub::new(HubConfig::default()).unwrap();
    /// assert_eq!(hub.stats().sessions, 0);
    ///
    /// let mut bad = HubConfig::default();
    /// bad.history_ttl = std::time::Duration::ZERO;
    /// assert_eq!(Hub::new(bad).unwrap_err().field(), "history_ttl");
    /// ```
    pub fn new(config: HubConfig) -> Result<Hub, ConfigError> {
        config.validate()?;
        Ok(Hub::with_backend(config, Box::new(Memory)))
    }

    /// A hub on `backend`, for a config already validated; starts the backend's work.
    pub(crate) fn with_backend(config: HubConfig, backend: Box<dyn Backend>) -> Hub {
        let core = Arc::new(Core::new(config, backend));
        core.backend.start(BackendHandle::new(&core));
        Hub {
            _handles: Arc::new(Handles {
                core: Arc::clone(&core),
            }),
            running: Arc::default(),
            core,
        }
    }

    /// The configuration this hub was created with.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert_eq!(hub.config().history_capacity, 1000);
    /// ```
    pub fn config(&self) -> &HubConfig {
        &self.core.config
    }

    /// Routes one update now (what a consumer does per item): says whether it was accepted
    /// and with which number, or why not. Counted either way.
    ///
    /// A status with no session follows [`HubConfig::no_session`](crate::HubConfig::no_session). A status whose session does
    /// not exist yet opens it. In memory it is numbered at once ([`Published::Numbered`]); a
    /// shared backend takes it to number it later ([`Published::Queued`]). Not accepted, and
    /// counted in [`HubStats`](crate::HubStats): see [`PublishError`]. Never blocks on a subscriber, never
    /// panics; works without a runtime.
    ///
    /// # Errors
    ///
    /// A [`PublishError`] naming why the status was dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::{PublishError, Published};
    ///
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert_eq!(hub.publish(Some("s1"), "a"), Ok(Published::Numbered(1)));
    /// assert_eq!(hub.publish(Some("s1"), "b"), Ok(Published::Numbered(2)));
    /// assert_eq!(hub.publish(Some("s2"), "c"), Ok(Published::Numbered(1)));
    /// assert_eq!(hub.publish(None, "dropped by default"), Err(PublishError::NoSession));
    /// assert_eq!(hub.stats().accepted, 3);
    /// ```
    pub fn publish(
        &self,
        session: Option<&str>,
        text: impl Into<String>,
    ) -> Result<Published, PublishError> {
        self.core.publish(session, None, Payload::Text(text.into()))
    }

    /// Routes one status with its fields now, as [`publish`](Hub::publish) routes a text.
    ///
    /// The fields are bounded like the text: a key longer than
    /// [`MAX_KEY_BYTES`](crate::hub::MAX_KEY_BYTES) is cut, data longer than
    /// [`HubConfig::max_status_bytes`](crate::HubConfig::max_status_bytes) is left out (either
    /// counted in [`HubStats::truncated`](crate::HubStats::truncated)).
    ///
    /// # Errors
    ///
    /// A [`PublishError`] naming why the status was dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::{Event, Hub, Level, StatusMessage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let status = StatusMessage::new("disk almost full").level(Level::Error);
    /// assert_eq!(hub.publish_message(Some("s1"), status).unwrap().seq(), Some(1));
    /// let Some(Event::Status(status)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(status.level(), Some(Level::Error));
    /// # }
    /// ```
    pub fn publish_message(
        &self,
        session: Option<&str>,
        status: StatusMessage,
    ) -> Result<Published, PublishError> {
        let (task, payload) = Payload::from_message(status);
        self.core.publish(session, task.as_ref(), payload)
    }

    /// Registers a session id (server-issued). Sessions are also created implicitly by their
    /// first status or subscriber; opening one that exists only marks it active.
    ///
    /// # Errors
    ///
    /// [`OpenError::InvalidSessionId`], [`OpenError::TooManySessions`], [`OpenError::ShutDown`];
    /// with a shared backend, [`OpenError::Backend`] when it cannot register the session.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// assert!(!hub.session_exists("s1").await.unwrap());
    /// hub.open_session("s1").await.unwrap();
    /// assert!(hub.session_exists("s1").await.unwrap());
    /// # }
    /// ```
    pub async fn open_session(&self, id: &str) -> Result<(), OpenError> {
        let id = SessionId::check_str(id).map_err(OpenError::InvalidSessionId)?;
        let core = &*self.core;
        if core.is_shut_down() {
            return Err(OpenError::ShutDown);
        }
        core.backend.open(Local(core), id).await
    }

    /// Opens a new session under an id made for it: 128 bits from the operating system's
    /// random source, as 32 lowercase hex digits. What a server hands a page that asks for a
    /// session (the demos' `POST /api/sessions`): with the endpoints' default authorization the
    /// id is the page's capability, so nobody can guess another's.
    ///
    /// # Errors
    ///
    /// As [`open_session`](Hub::open_session), and [`OpenError::NoRandomness`] when the
    /// operating system gives no random bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let id = hub.create_session().await.unwrap();
    /// assert_eq!(id.len(), 32);
    /// assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    /// assert!(hub.session_exists(&id).await.unwrap());
    /// assert_ne!(hub.create_session().await.unwrap(), id);
    /// # }
    /// ```
    pub async fn create_session(&self) -> Result<String, OpenError> {
        let mut bytes = [0u8; 16];
        if let Err(error) = getrandom::fill(&mut bytes) {
            tracing::error!(target: "status_messenger", %error, "no random bytes for a session id");
            return Err(OpenError::NoRandomness);
        }
        let mut id = String::with_capacity(32);
        for byte in bytes {
            for nibble in [byte >> 4, byte & 0xf] {
                id.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
            }
        }
        self.open_session(&id).await?;
        Ok(id)
    }

    /// Whether the session is held now (opened, or used by a status or a subscriber, and not
    /// closed or evicted since). A session idle past its time to live is evicted here at once.
    ///
    /// # Errors
    ///
    /// [`LookupError::InvalidSessionId`]; with a shared backend, [`LookupError::Backend`] when
    /// it does not answer. After shutdown every session is gone: `Ok(false)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::LookupError;
    /// use status_messenger::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s1"), "hi").unwrap();
    /// assert!(hub.session_exists("s1").await.unwrap());
    /// assert!(!hub.session_exists("s2").await.unwrap());
    /// assert!(matches!(hub.session_exists("").await, Err(LookupError::InvalidSessionId(_))));
    /// # }
    /// ```
    pub async fn session_exists(&self, id: &str) -> Result<bool, LookupError> {
        let id = SessionId::check_str(id).map_err(LookupError::InvalidSessionId)?;
        let core = &*self.core;
        if core.is_shut_down() {
            return Ok(false);
        }
        core.backend.exists(Local(core), id).await
    }

    /// Statuses with seq > `after` (`None` = from the start, i.e. after 0): first what history
    /// still holds (a [`Gap`](crate::Gap) first for what it no longer holds), then live ones; no duplicate,
    /// no gap.
    ///
    /// Subscribing is atomic with respect to concurrent publishing: the subscription reads the
    /// session's numbered history from its cursor, so each status is either delivered once or
    /// reported in a gap. A session that does not exist is opened. When the id is invalid, the
    /// session limit is reached or the hub is shut down, the subscription ends at once (logged);
    /// [`try_subscribe`](Hub::try_subscribe) says why.
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
    /// for text in ["one", "two", "three"] {
    ///     hub.publish(Some("s"), text).unwrap();
    /// }
    /// let mut resumed = hub.subscribe("s", Some(1));
    /// assert_eq!(resumed.next().await.and_then(|e| e.seq()), Some(2));
    /// assert_eq!(resumed.next().await.and_then(|e| e.seq()), Some(3));
    /// # }
    /// ```
    pub fn subscribe(&self, session: &str, after: Option<u64>) -> Subscription {
        self.try_subscribe(session, after).unwrap_or_else(|error| {
            tracing::warn!(
                target: "status_messenger::hub",
                %error,
                "subscription refused; it ends at once"
            );
            Subscription::ended(SessionId::new(session).ok(), after.unwrap_or(0))
        })
    }

    /// Like [`subscribe`](Hub::subscribe), but says why a subscription cannot be had.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::InvalidSessionId`], [`SubscribeError::TooManySessions`],
    /// [`SubscribeError::ShutDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::SubscribeError;
    /// use status_messenger::Hub;
    ///
    /// let hub = Hub::new(Default::default()).unwrap();
    /// assert!(hub.try_subscribe("s", None).is_ok());
    /// assert!(matches!(hub.try_subscribe("", None), Err(SubscribeError::InvalidSessionId(_))));
    /// ```
    pub fn try_subscribe(
        &self,
        session: &str,
        after: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        let id = SessionId::check_str(session).map_err(SubscribeError::InvalidSessionId)?;
        let core = &self.core;
        let found = core.join(id)?;
        core.backend.interest(&found.id);
        Ok(Subscription::join(
            Arc::clone(core),
            found,
            after.unwrap_or(0),
        ))
    }

    /// Ends the session: its subscribers get what it had accepted, then their streams end
    /// cleanly; its history goes (once they have read it). Returns whether it existed, on
    /// every backend: with Redis, whether Redis held it (after the statuses published before
    /// the close were applied) or this process did. A later status or subscriber for the same
    /// id opens a new session, numbered from 1. After shutdown every session is gone:
    /// `Ok(false)`.
    ///
    /// # Errors
    ///
    /// [`CloseError::InvalidSessionId`]; with a shared backend, [`CloseError::Backend`] when
    /// it did not confirm the close in time (the close stays queued and is applied when it
    /// can be; the streams here end at once either way).
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let mut sub = hub.subscribe("s", None);
    /// hub.publish(Some("s"), "last words").unwrap();
    /// assert!(hub.close_session("s").await.unwrap());
    /// assert_eq!(sub.next().await.and_then(|e| e.seq()), Some(1));
    /// assert_eq!(sub.next().await, None);
    /// assert!(!hub.close_session("s").await.unwrap());
    /// # }
    /// ```
    pub async fn close_session(&self, id: &str) -> Result<bool, CloseError> {
        let id = SessionId::check_str(id).map_err(CloseError::InvalidSessionId)?;
        let core = &*self.core;
        if core.is_shut_down() {
            // Shutting down closed every session already.
            return Ok(false);
        }
        core.backend.close(Local(core), id).await
    }

    /// Evicts every session that has had no subscriber and no status for
    /// [`HubConfig::history_ttl`](crate::HubConfig::history_ttl), and drops expired history; returns how many sessions were
    /// evicted. The hub also does this by itself as it is used; call it to free memory at a
    /// time of your choosing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use status_messenger::{Hub, HubConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut config = HubConfig::default();
    /// config.history_ttl = Duration::from_secs(60);
    /// let hub = Hub::new(config).unwrap();
    /// hub.publish(Some("s"), "hi").unwrap();
    /// tokio::time::advance(Duration::from_secs(61)).await;
    /// assert_eq!(hub.evict_idle(), 1);
    /// assert_eq!(hub.stats().sessions, 0);
    /// # }
    /// ```
    pub fn evict_idle(&self) -> usize {
        self.core.sweep_now()
    }

    /// The hub's counters now: a few atomic loads, cheap at any time.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let _sub = hub.subscribe("s", None);
    /// let stats = hub.stats();
    /// assert_eq!((stats.sessions, stats.subscribers), (1, 1));
    /// ```
    pub fn stats(&self) -> HubStats {
        self.core.counters.snapshot()
    }

    /// Brings the hub's metrics in the `metrics` facade to its counters now, and returns the
    /// counters it brought them to (feature `metrics`).
    ///
    /// Statuses and deliveries change only the hub's own counters; the facade is handed what
    /// changed since it was last handed anything when this is called, when the hub sweeps its
    /// idle sessions, when the hub is dropped and at the other moments
    /// [Counting](crate::hub#counting) lists. Call it
    /// just before an exporter renders or sends, as the demo servers' `GET /metrics` does, and
    /// what it shows is the counters at that moment. Several hubs sharing a recorder add up.
    ///
    /// # Examples
    ///
    /// ```
    /// use metrics_exporter_prometheus::PrometheusBuilder;
    /// use status_messenger::Hub;
    ///
    /// let recorder = PrometheusBuilder::new().build_recorder();
    /// let prometheus = recorder.handle();
    /// let hub = metrics::with_local_recorder(&recorder, || Hub::new(Default::default())).unwrap();
    /// hub.publish(Some("s"), "one").unwrap();
    /// hub.publish(Some("s"), "two").unwrap();
    /// // `GET /metrics`: record, then render.
    /// assert_eq!(hub.record_metrics().accepted, 2);
    /// assert!(prometheus.render().contains("status_messenger_hub_accepted_total 2\n"));
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn record_metrics(&self) -> HubStats {
        self.core.counters.record()
    }

    /// Whether [`shutdown`](Hub::shutdown) has been called.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert!(!hub.is_shut_down());
    /// hub.shutdown().await;
    /// assert!(hub.is_shut_down());
    /// # }
    /// ```
    pub fn is_shut_down(&self) -> bool {
        self.core.is_shut_down()
    }

    /// Stops accepting, delivers what was accepted to live subscribers, then ends all streams.
    ///
    /// From the call on, [`publish`](Hub::publish) refuses (counted in
    /// [`HubStats::dropped_closed`](crate::HubStats::dropped_closed)), running [`consume`](Hub::consume) calls return, and every
    /// session is closed: each subscriber still gets the statuses accepted before, then its
    /// stream ends. Every task running here is asked to stop first, as by
    /// [`cancel_task`](Hub::cancel_task), and its `cancelling` reaches every stream here
    /// before it ends; with a shared backend it also goes to the store with what was
    /// accepted, so the other processes' subscribers get it. How the task ends reaches a
    /// stream only if its tool returns that soon. Returns once every consumer has returned; it does not wait for
    /// subscribers to read (one that never reads would hold it forever), nor for the tasks'
    /// tools to return. Calling it again does nothing more.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::hub::PublishError;
    /// use status_messenger::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let mut sub = hub.subscribe("s", None);
    /// hub.publish(Some("s"), "accepted before").unwrap();
    /// hub.shutdown().await;
    /// assert_eq!(hub.publish(Some("s"), "too late"), Err(PublishError::ShutDown));
    /// assert_eq!(sub.next().await.and_then(|e| e.seq()), Some(1));
    /// assert_eq!(sub.next().await, None);
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        let core = &*self.core;
        if core.stop_accepting() {
            // Told `cancelling` first, so that the change goes out with what was accepted.
            core.cancel_running_tasks();
            // What a backend accepted goes out before the streams end.
            core.backend.shutdown(Local(core)).await;
            core.close_sessions();
        }
        loop {
            let left = core.consumer_left.notified();
            let mut left = pin!(left);
            left.as_mut().enable();
            if core.consumers.load(Ordering::Acquire) == 0 {
                return;
            }
            left.await;
        }
    }
}
