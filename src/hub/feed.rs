//! Feeding a hub: consuming a stream of updates, or attaching to a messenger so statuses are
//! published on the sender's own thread.
//!
//! # Invariants
//!
//! - Every running `consume` is counted (`ConsumerGuard`, also when its future is dropped), so
//!   `shutdown` can wait until none runs.
//! - At most one messenger is attached to a hub, and an attached messenger hands its messages
//!   to no other consumer; a shutdown detaches it, also one that attached while the shutdown
//!   ran.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use futures_core::Stream;
use tokio::task::JoinHandle;

use super::core::Core;
use super::Hub;
use crate::messenger::Payload;
use crate::sync::lock;
use crate::task::TaskRef;
use crate::StatusMessage;

impl Hub {
    /// Drives a stream of updates into the hub until it ends or the hub shuts down.
    ///
    /// Each `(session, text)` is [`publish`](Hub::publish)ed in order. Texts carry no fields
    /// and no task: to keep a messenger's, consume its
    /// [`into_messages`](crate::StatusStream::into_messages) with
    /// [`consume_messages`](Hub::consume_messages), or [`attach`](Hub::attach) it. When the hub shuts down,
    /// this stops taking items at once and returns; what the stream still holds stays in it (a
    /// [`StatusStream`](crate::StatusStream) gives its receiver back to the messenger when
    /// dropped). Idle sessions are swept as it goes. It holds no lock across an await.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let updates = futures_util::stream::iter(vec![
    ///     (Some("s1".to_owned()), "a".to_owned()),
    ///     (None, "b".to_owned()),
    /// ]);
    /// hub.consume(updates).await;
    /// let stats = hub.stats();
    /// assert_eq!((stats.accepted, stats.dropped_no_session), (1, 1));
    /// # }
    /// ```
    pub async fn consume<S>(&self, updates: S)
    where
        S: Stream<Item = (Option<String>, String)> + Send,
    {
        self.feed(updates, |text| (None, Payload::Text(text))).await;
    }

    /// Drives a stream of whole statuses into the hub until it ends or the hub shuts down, as
    /// [`consume`](Hub::consume) drives texts: each keeps its fields and task id, and the
    /// statuses of a cancelled task are refused. Consume a messenger this way
    /// (`hub.consume_messages(messenger.stream().into_messages())`), or
    /// [`attach`](Hub::attach) it.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::{Event, Hub, Messenger, SessionContext, StatusMessage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let messenger = Messenger::new();
    /// let consumer = tokio::spawn({
    ///     let (hub, updates) = (hub.clone(), messenger.stream().into_messages());
    ///     async move { hub.consume_messages(updates).await }
    /// });
    /// SessionContext::new("s1").run(|| {
    ///     messenger.add_status(StatusMessage::new("half way").progress(5, 10));
    /// });
    /// let Some(Event::Status(status)) = hub.subscribe("s1", None).next().await else { panic!() };
    /// assert_eq!(status.progress().map(|p| p.current()), Some(5));
    /// hub.shutdown().await;
    /// consumer.await.unwrap();
    /// # }
    /// ```
    pub async fn consume_messages<S>(&self, updates: S)
    where
        S: Stream<Item = (Option<String>, StatusMessage)> + Send,
    {
        self.feed(updates, Payload::from_message).await;
    }

    /// What both consume: each item's second part made a task and a payload by `payload`.
    async fn feed<S, T>(&self, updates: S, payload: fn(T) -> (Option<TaskRef>, Payload))
    where
        S: Stream<Item = (Option<String>, T)> + Send,
    {
        let core = &*self.core;
        let _consumer = ConsumerGuard::enter(core);
        let mut stop = pin!(core.stop.notified());
        stop.as_mut().enable();
        let mut updates = pin!(updates);
        let mut taken: u64 = 0;
        loop {
            let next = poll_fn(|cx| {
                if core.is_shut_down() || stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                updates.as_mut().poll_next(cx).map(|item| item.map(Some))
            })
            .await;
            match next {
                Some(Some((session, item))) => {
                    // Refusals are counted by the hub; the stream goes on.
                    let (task, payload) = payload(item);
                    let _counted = core.publish(session.as_deref(), task.as_ref(), payload);
                    taken += 1;
                    // A stream that is always ready must not starve the subscribers' tasks.
                    if taken % 256 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                // The stream ended, or the hub shut down.
                Some(None) | None => return,
            }
        }
    }

    /// Spawns [`consume`](Hub::consume) of the global messenger's
    /// [`stream_status_updates`](crate::stream_status_updates) on the current runtime, after
    /// [`setup_status_messenger_async`](crate::setup_status_messenger_async).
    ///
    /// If another consumer holds the global stream, the spawned task ends at once (logged).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does;
    /// [`try_spawn_global_consumer`](Hub::try_spawn_global_consumer) returns an error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::{add_status_message, with_session_id, Event, Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let consumer = hub.spawn_global_consumer();
    /// let mut page = hub.subscribe("user-7", None);
    /// with_session_id("user-7", async { add_status_message("Thinking...") }).await;
    /// let Some(Event::Status(status)) = page.next().await else { panic!() };
    /// assert_eq!(status.text(), "Thinking...");
    /// hub.shutdown().await;
    /// consumer.await.unwrap();
    /// # }
    /// ```
    pub fn spawn_global_consumer(&self) -> JoinHandle<()> {
        let updates = crate::setup_status_messenger_async()
            .stream()
            .into_messages();
        let hub = self.clone();
        tokio::spawn(async move { hub.consume_messages(updates).await })
    }

    /// Like [`spawn_global_consumer`](Hub::spawn_global_consumer), but returns an error instead
    /// of panicking outside a runtime.
    ///
    /// # Errors
    ///
    /// [`SpawnError::NoRuntime`](crate::SpawnError::NoRuntime) when no tokio runtime is running
    /// on this thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, SpawnError};
    ///
    /// let hub = Hub::new(Default::default()).unwrap();
    /// assert_eq!(hub.try_spawn_global_consumer().unwrap_err(), SpawnError::NoRuntime);
    /// ```
    pub fn try_spawn_global_consumer(&self) -> Result<JoinHandle<()>, crate::SpawnError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| crate::SpawnError::NoRuntime)?;
        let updates = crate::setup_status_messenger_async()
            .stream()
            .into_messages();
        let hub = self.clone();
        Ok(runtime.spawn(async move { hub.consume_messages(updates).await }))
    }

    /// Makes `messenger` hand every message straight to this hub, on the sender's own thread,
    /// instead of through its channel and a consuming task.
    ///
    /// What already waits in the channel is published first, in order. From then on
    /// [`add_status_message`](crate::Messenger::add_status_message) publishes as
    /// [`publish`](Hub::publish) does: no message waits in an unbounded channel, and no task has
    /// to be woken and scheduled before a subscriber is, which saves memory and latency when
    /// producers outpace a single consumer. The sender pays the publish (a few short locks,
    /// never an await). The hub holds the messenger's stream meanwhile, so no other consumer can
    /// take it; when the hub shuts down (or its last clone is dropped) messages go to the
    /// channel again and wait for the next consumer, as with [`consume`](Hub::consume).
    ///
    /// # Errors
    ///
    /// [`StreamError::AlreadyConsumed`](crate::StreamError::AlreadyConsumed) while a stream
    /// consumes the messenger (or another hub is attached to it).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, Messenger, SessionContext};
    ///
    /// let messenger = Messenger::new();
    /// messenger.send(Some("s1".to_owned()), "queued before");
    /// let hub = Hub::new(Default::default()).unwrap();
    /// hub.attach(&messenger).unwrap();
    /// assert!(messenger.is_direct());
    /// SessionContext::new("s1").run(|| messenger.add_status_message("straight in"));
    /// let stats = hub.stats();
    /// assert_eq!((stats.accepted, stats.sessions), (2, 1));
    /// assert!(hub.attach(&messenger).is_err());
    /// ```
    pub fn attach(&self, messenger: &crate::Messenger) -> Result<(), crate::StreamError> {
        let core = Arc::clone(&self.core);
        messenger.set_direct(Box::new(move |session, task, payload| {
            if core.is_shut_down() {
                // Being detached: the channel keeps it for the next consumer.
                return Err(payload);
            }
            // Refusals are counted by the hub, as for any publish.
            let _counted = core.publish(session, task, payload);
            Ok(())
        }))?;
        let previous = lock(&self.core.attached).replace(messenger.clone());
        if let Some(previous) = previous {
            previous.clear_direct();
        }
        // A shutdown that ran before the line above found nothing to detach.
        if self.core.is_shut_down() {
            self.core.detach();
        }
        Ok(())
    }

    /// [`attach`](Hub::attach)es the global messenger, after
    /// [`setup_status_messenger_async`](crate::setup_status_messenger_async): the alternative
    /// to [`spawn_global_consumer`](Hub::spawn_global_consumer) that needs no task.
    ///
    /// # Errors
    ///
    /// As [`attach`](Hub::attach).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{add_status_message, with_session_id, Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// hub.attach_global().unwrap();
    /// with_session_id("s1", async { add_status_message("hello") }).await;
    /// assert_eq!(hub.stats().accepted, 1);
    /// hub.shutdown().await;
    /// assert!(!status_messenger::global_messenger().unwrap().is_direct());
    /// # }
    /// ```
    pub fn attach_global(&self) -> Result<(), crate::StreamError> {
        self.attach(crate::setup_status_messenger_async())
    }
}

/// Counts a running `consume`, so `shutdown` can wait for it, even if it is cancelled.
struct ConsumerGuard<'a> {
    core: &'a Core,
}

impl<'a> ConsumerGuard<'a> {
    fn enter(core: &'a Core) -> Self {
        core.consumers.fetch_add(1, Ordering::AcqRel);
        Self { core }
    }
}

impl Drop for ConsumerGuard<'_> {
    fn drop(&mut self) {
        let before = self.core.consumers.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "consumer count went below zero");
        self.core.consumer_left.notify_waiters();
    }
}
