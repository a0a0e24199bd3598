//! The stream a subscriber reads: a cursor into its session's log, and one into its task
//! changes.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::core::Core;
use super::state::Session;
use super::{Event, SessionId};

/// Statuses copied out of the log per lock; bounds the per-subscriber copy.
const BATCH: usize = 32;

/// A subscriber's stream of one session's [`Event`]s, from [`Hub::subscribe`](super::Hub::subscribe).
///
/// It starts with the state of every task the session remembers ([`Event::Task`], oldest
/// first), then the history after the point it starts from, then live statuses, with each
/// task change placed after the statuses numbered up to its
/// [`last_seq`](super::TaskUpdate::last_seq). A session without tasks has no task updates.
///
/// `Stream<Item = Event> + Send + Unpin + 'static`. It reads its session's shared history by
/// cursor instead of owning a queue, so one that is never polled holds no status of its own and
/// never slows the hub, the other subscribers or other sessions. When it falls more than
/// [`subscriber_buffer`](super::HubConfig::subscriber_buffer) statuses behind, or what it has not
/// read left history, it gets one [`Event::Gap`] naming what it missed and goes on. It ends
/// (`None`) after the session is closed or the hub shut down and it has read what was accepted
/// before; a subscription refused by [`Hub::subscribe`](super::Hub::subscribe) ends at once.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Event, Hub, HubConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(HubConfig::default()).unwrap();
/// let mut sub = hub.subscribe("s1", None);
/// hub.publish(Some("s1"), "hello").unwrap();
/// match sub.next().await {
///     Some(Event::Status(status)) => assert_eq!((status.seq(), status.text()), (1, "hello")),
///     other => panic!("unexpected {other:?}"),
/// }
/// assert_eq!(sub.last_seq(), 1);
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct Subscription {
    live: Option<Live>,
    session: Option<SessionId>,
    cursor: u64,
    /// The number of the last task change handed over or folded into the first updates.
    task_cursor: u64,
}

struct Live {
    hub: Arc<Core>,
    session: Arc<Session>,
    slot: usize,
    buf: VecDeque<Event>,
    /// Statuses handed out since the last flush into the shared counter.
    unflushed: u64,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("session", &self.session)
            .field("last_seq", &self.cursor)
            .field("live", &self.live.is_some())
            .finish()
    }
}

impl Subscription {
    /// Joins `session`, whose subscriber count the caller already raised; reads after `after`.
    pub(crate) fn join(hub: Arc<Core>, session: Arc<Session>, after: u64) -> Self {
        let (slot, buf, task_cursor) = {
            let mut state = session.lock();
            let slot = state.join();
            // Under the same lock, so no change falls between these states and the cursor.
            let buf: VecDeque<Event> = state.tasks.snapshot().map(Event::Task).collect();
            (slot, buf, state.tasks.last_change())
        };
        Self {
            session: Some(session.id.clone()),
            cursor: after,
            task_cursor,
            live: Some(Live {
                hub,
                session,
                slot,
                buf,
                unflushed: 0,
            }),
        }
    }

    /// A subscription that ends at once.
    pub(crate) fn ended(session: Option<SessionId>, after: u64) -> Self {
        Self {
            live: None,
            session,
            cursor: after,
            task_cursor: 0,
        }
    }

    /// The session this subscription reads (`None` only when it was refused for an invalid id).
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert_eq!(hub.subscribe("s1", None).session().map(|id| id.as_str()), Some("s1"));
    /// ```
    pub fn session(&self) -> Option<&SessionId> {
        self.session.as_ref()
    }

    /// The last sequence number this subscription has handed out or reported in a gap (the
    /// `after` it started from until then). Resume from it with
    /// [`Hub::subscribe`](super::Hub::subscribe)`(session, Some(last_seq))`.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert_eq!(hub.subscribe("s1", Some(7)).last_seq(), 7);
    /// ```
    pub fn last_seq(&self) -> u64 {
        self.cursor
    }

    /// Whether the stream may still yield items (`false` once it ended or when it was refused).
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let sub = hub.subscribe("s1", None);
    /// assert!(sub.is_live());
    /// # let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// runtime.block_on(hub.close_session("s1")).unwrap();
    /// assert!(sub.is_live()); // still live until it has read what the session held
    /// assert!(!hub.subscribe("", None).is_live()); // an invalid id is refused
    /// ```
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// The session's newest seq, where this process numbers every status of it (the
    /// in-memory backend); `None` with a shared backend, or once the stream ended.
    #[cfg_attr(
        not(feature = "web"),
        allow(dead_code, reason = "used by the endpoints")
    )]
    pub(crate) fn head_if_numbered_here(&self) -> Option<u64> {
        let live = self.live.as_ref()?;
        if !live.hub.backend.numbers_here() {
            return None;
        }
        let head = live.session.lock().log.head();
        Some(head)
    }

    /// Items copied out of history and not yet handed out: at most a small batch of statuses
    /// (32), besides, right after the subscription starts, one task frame for each task of
    /// the session still remembered (at most `HubConfig::task_capacity`).
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let sub = hub.subscribe("s1", None);
    /// for i in 0..10_000 {
    ///     hub.publish(Some("s1"), format!("status {i}")).unwrap();
    /// }
    /// // A subscription that is not polled holds nothing of its own.
    /// assert_eq!(sub.queued(), 0);
    /// ```
    pub fn queued(&self) -> usize {
        self.live.as_ref().map_or(0, |live| live.buf.len())
    }

    /// Leaves the session: counts what was handed out, frees the waker slot, and frees a
    /// closed session's log when this was its last reader.
    fn finish(&mut self) {
        let Some(mut live) = self.live.take() else {
            return;
        };
        live.flush();
        let (freed, forgotten) = {
            let mut state = live.session.lock();
            state.leave(live.slot);
            if state.end.is_some() && state.members() == 0 {
                (state.log.clear(), state.tasks.clear())
            } else {
                (0, 0)
            }
        };
        let counters = &live.hub.counters;
        counters.retained.sub(freed);
        counters.tasks.sub(forgotten);
        live.session
            .last_activity_ms
            .store(live.hub.clock.now_ms(), Ordering::Relaxed);
        let before = live.session.subscribers.fetch_sub(1, Ordering::Release);
        if before == 1 {
            {
                // A subscriber that came meanwhile finds the same statuses, only made anew
                // from the records: hot or cold changes what a read costs, never what it reads.
                let mut state = live.session.lock();
                if live.session.subscribers.load(Ordering::Relaxed) == 0 {
                    state.log.cool_all();
                }
            }
            live.hub.backend.interest(&live.session.id);
            live.hub.room_may_have_freed();
        }
        debug_assert!(before > 0, "subscriber count went below zero");
        counters.subscribers.sub(1);
    }
}

impl Live {
    fn flush(&mut self) {
        self.hub.counters.delivered.add(self.unflushed);
        self.unflushed = 0;
    }

    /// Hands out the next buffered item. It is counted where it lies and moved out once, so
    /// the item (64 bytes) is copied straight into the caller's result, not field by field
    /// through a temporary.
    #[inline]
    fn pop(&mut self) -> Option<Event> {
        match self.buf.front()? {
            Event::Status(_) => self.unflushed += 1,
            Event::Gap(gap) => {
                let counters = &self.hub.counters;
                counters.gaps.add(1);
                counters.lagged.add(gap.len());
                tracing::debug!(
                    target: "status_messenger::hub",
                    session = %gap.session(),
                    from = gap.from(),
                    to = gap.to(),
                    "subscriber missed statuses; gap reported"
                );
            }
            Event::Task(_) => {}
        }
        let event = self.buf.pop_front();
        if self.buf.is_empty() {
            self.flush();
        }
        event
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        let Some(live) = this.live.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(event) = live.pop() {
            return Poll::Ready(Some(event));
        }
        let config = &live.hub.config;
        // The subscription's own copy of the id (always set while live): the session's sits
        // on a cache line reading does not otherwise touch.
        let id = this.session.as_ref().unwrap_or(&live.session.id);
        let mut state = live.session.lock();
        let read = state.log.read(
            this.cursor,
            config.subscriber_buffer as u64,
            BATCH,
            id,
            &mut live.buf,
        );
        this.cursor = read.cursor;
        state
            .tasks
            .merge(id, &mut this.task_cursor, this.cursor, &mut live.buf);
        if live.buf.is_empty() {
            if state.end.is_some() {
                drop(state);
                this.finish();
                return Poll::Ready(None);
            }
            state.park(live.slot, cx.waker());
            return Poll::Pending;
        }
        drop(state);
        Poll::Ready(live.pop())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.live {
            Some(live) => (live.buf.len(), None),
            None => (0, Some(0)),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.finish();
    }
}
