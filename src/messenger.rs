//! The messenger: one channel from status producers to one consumer.
//!
//! This module holds the port of the Python original: the task-local
//! [`CURRENT_WEBSOCKET_SESSION_ID`], the free functions over a default [`Messenger`], and the
//! [`StatusStream`] a broadcaster consumes.
//!
//! ```
//! use futures_util::StreamExt;
//! use status_messenger::messenger::{self, CURRENT_WEBSOCKET_SESSION_ID};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! messenger::setup_status_messenger_async();
//! CURRENT_WEBSOCKET_SESSION_ID
//!     .scope(Some("s1".to_owned()), async { messenger::add_status_message("hi") })
//!     .await;
//! let update = messenger::stream_status_updates().next().await;
//! assert_eq!(update, Some((Some("s1".to_owned()), "hi".to_owned())));
//! # }
//! ```
//!
//! # Defaults
//!
//! The free functions ([`add_status_message`], [`stream_status_updates`],
//! [`try_stream_status_updates`]) use the *scoped default* of the current thread where one is
//! set, and the *global* messenger otherwise, as `tracing` does with its dispatchers:
//!
//! - [`with_default`] sets a scoped default for the length of a closure, [`set_default`] until
//!   the returned [`DefaultGuard`] drops, and [`Messenger::scope`] for every poll of a future.
//!   The session-carrying helpers ([`spawn`](crate::spawn),
//!   [`spawn_blocking`](crate::spawn_blocking), [`SessionContext`](crate::SessionContext))
//!   carry it to the thread or task where the work runs.
//! - [`setup_status_messenger_async`] creates the global messenger (idempotent), or
//!   [`set_global_default`] installs one of your own, once.
//!
//! Scoped defaults let two servers, or two tests, share a process without sharing a channel;
//! nothing global is set as a side effect. Libraries should not set the global messenger:
//! that choice belongs to the application.
//!
//! ```
//! use futures_util::StreamExt;
//! use status_messenger::{messenger, Messenger};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mine = Messenger::new();
//! messenger::with_default(&mine, || messenger::add_status_message("to mine"));
//! assert_eq!(mine.stream().next().await, Some((None, "to mine".to_owned())));
//! // Nothing went to a global messenger (none was set up).
//! assert!(messenger::global_messenger().is_none());
//! # }
//! ```

// # Invariants
//
// - A [`Messenger`] owns both ends of its channel for as long as it lives (`Shared` keeps a
//   sender and a receiver), so a send on the channel cannot fail and a message waits in the
//   channel until a consumer takes it.
// - At most one [`StatusStream`] consumes at a time: `Shared::stream_taken` is set by the one
//   stream that receives through `Shared::receiver` and cleared when it is dropped, after its
//   waker has been forgotten and what it had taken but not yielded has been parked in
//   `Shared::leftover`. A stream takes a message only when it yields it (or, from direct
//   delivery's switch, into its buffer), so a dropped stream takes nothing with it: the next one
//   yields the leftover first (it is older than anything still in the channel), then the
//   channel, in order.
// - The consumer is woken only when it sleeps. A stream that finds the channel empty yields to
//   the runtime a few times (`YIELDS_BEFORE_SLEEP`), then registers its waker, sets
//   `Shared::parked` and looks again; a send pushes, then reads `parked`, and only the sender
//   that clears it wakes the stream. A SeqCst fence sits between the write and the read on both
//   sides (the store-buffering pattern), so either the stream's second look finds the message
//   or the sender sees the flag: no wake-up is lost, and a stream that is awake costs a sender
//   one read of a flag that stays in its cache. Waking on every send instead (flume's signal
//   per message) put a cross-thread wake-up, and a lock the consumer shares with the
//   producers, on most sends. The count of received messages, which the stream writes per
//   message, has a cache line of its own, so that the flag's line does not move to the
//   consumer's core and back on every send.
// - Direct delivery (`Hub::attach`) is on from the moment a switch sets `Shared::direct_set`
//   (under the write side of `Shared::direct`) until it is cleared, again under the write
//   side. A send reads the flag first: while it is set the send runs under the read side and
//   hands the message to the direct consumer, so the switch, which drains the leftover and the
//   channel under the write side, is neither overtaken nor left behind by it. While it is
//   clear the send takes no lock: it pushes into the channel and reads the flag again after
//   the fence above. The switch sets the flag, fences, then drains, so either its drain finds
//   the message or the sender sees the flag and, under the write side (after the switch),
//   hands what is in the channel to the direct consumer itself before it returns; nothing sent
//   before a send returns is left in the channel behind a direct consumer, and a sender's next
//   message (direct) cannot overtake it. A message the direct consumer gives back (its target
//   gone) goes to `Shared::leftover`, after what waits there, for the next stream. The direct
//   consumer holds the stream meanwhile, so the one-consumer rule holds. The lock is sharded
//   by thread (`crate::sync::ShardedLock`): a direct send takes only its own thread's shard,
//   so producers do not share a lock word; the rare switch takes every shard.
// - The channel is crossbeam's unbounded one: lock-free, so neither a producer preempted in a
//   send nor the consumer holds the others up. tokio's unbounded list channel lets a producer
//   that was preempted between reserving a slot and writing it hold back the shared tail
//   pointer, and every other producer then walks the block list from there: with 100 tool
//   threads on 2 cores it fell to about 60,000 messages/s. Model builds swap in a stand-in for
//   it (`crate::sync::channel`), and `loom/` checks the stream hand-off, the wake-up protocol,
//   the direct-delivery switch above and a sender's own hand-over after a late push in every
//   interleaving within its bounds.
// - The scoped default is a thread-local `RefCell` (`SCOPED`). It is borrowed mutably only to
//   swap a messenger in or out, with no other code running meanwhile, and shared only for one
//   hand-over by a free function. A change can thus meet a borrow only when it is made by code
//   running inside a hand-over (a `tracing` subscriber, a metrics recorder); it is then skipped
//   and logged rather than panicking. A replaced messenger is dropped after the borrow ends:
//   dropping the last handle of one may run a hub's teardown, which may add a status.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::status::StatusMessage;
use crate::sync::channel;
use crate::sync::{
    fence, lock, read, thread_cell, write, Arc, AtomicBool, AtomicU64, CachePadded, Mutex,
    ShardedLock, TaskWaker,
};
use crate::task;

tokio::task_local! {
    /// The session id of the client whose work the current task is doing.
    ///
    /// This is the task-local that [`add_status_message`] reads, the counterpart of the Python
    /// original's `current_websocket_session_id_var`. Set it with
    /// [`with_session_id`](crate::with_session_id) (or `CURRENT_WEBSOCKET_SESSION_ID.scope`),
    /// and carry it into other threads and tasks with [`SessionContext`](crate::SessionContext),
    /// [`spawn_blocking`](crate::spawn_blocking) or [`spawn`](crate::spawn): tokio does not
    /// carry task-locals across those boundaries by itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::messenger::CURRENT_WEBSOCKET_SESSION_ID;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let seen = CURRENT_WEBSOCKET_SESSION_ID
    ///     .scope(Some("session-1".to_owned()), async {
    ///         CURRENT_WEBSOCKET_SESSION_ID.with(|id| id.clone())
    ///     })
    ///     .await;
    /// assert_eq!(seen.as_deref(), Some("session-1"));
    /// // Outside any scope the task-local is not set at all.
    /// assert!(CURRENT_WEBSOCKET_SESSION_ID.try_with(|_| ()).is_err());
    /// # }
    /// ```
    pub static CURRENT_WEBSOCKET_SESSION_ID: Option<String>;
}

/// One status message as it travels through the channel: the session it belongs to (`None`
/// when it was added outside any session) and its text.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Messenger, StatusUpdate};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let messenger = Messenger::new();
/// messenger.send(Some("s1".to_owned()), "hello");
/// let update: StatusUpdate = messenger.stream().next().await.unwrap();
/// assert_eq!(update, (Some("s1".to_owned()), "hello".to_owned()));
/// # }
/// ```
pub type StatusUpdate = (Option<String>, String);

/// The name under which messages without a session are logged, as in the Python original.
const UNKNOWN_SESSION: &str = "UnknownSession";

/// What one status carries through the channel besides where it comes from: its text alone
/// (what [`add_status_message`] sends), or a [`StatusMessage`] with fields. The message is held
/// by value: its fields are boxed already, and a second box per status cost an allocation and a
/// free on every status with fields that a direct consumer took; the channel boxes it
/// ([`Queued`]), so that its items stay small.
#[derive(Debug)]
pub(crate) enum Payload {
    Text(String),
    /// A status with fields (its task, if any, travels in the [`Origin`]).
    Message(StatusMessage),
}

impl Payload {
    /// `message`'s task, and the message in its cheapest form.
    pub(crate) fn from_message(message: StatusMessage) -> (Option<task::TaskRef>, Payload) {
        let (text, fields, task) = message.into_parts();
        let payload = match fields {
            Some(fields) => Payload::Message(StatusMessage::from_parts(text, Some(fields), None)),
            None => Payload::Text(text),
        };
        (task, payload)
    }

    pub(crate) fn text(&self) -> &str {
        match self {
            Payload::Text(text) => text,
            Payload::Message(message) => message.text(),
        }
    }

    pub(crate) fn into_text(self) -> String {
        match self {
            Payload::Text(text) => text,
            Payload::Message(message) => message.into_text(),
        }
    }

    /// The whole status, added in `task` if any.
    pub(crate) fn into_message(self, task: Option<task::TaskRef>) -> StatusMessage {
        let mut message = match self {
            Payload::Text(text) => StatusMessage::new(text),
            Payload::Message(message) => message,
        };
        message.set_task(task);
        message
    }
}

/// Where a status in the channel comes from: no session, a session, or a task (whose session
/// it is). A status added in a task carries the task instead of a copy of its session's id, so
/// it costs no more than a plain one; the variants fit in the space of the `Option<String>`
/// they replaced.
#[derive(Debug)]
pub(crate) enum Origin {
    NoSession,
    Session(String),
    Task(task::TaskRef),
}

impl Origin {
    /// `task` if the status was added in one (its session needs no copy: the task has it),
    /// else the session `owned` gives, if any.
    fn new(task: Option<task::TaskRef>, owned: impl FnOnce() -> Option<String>) -> Self {
        match (task, owned) {
            (Some(task), _) => Origin::Task(task),
            (None, owned) => match owned() {
                Some(session) => Origin::Session(session),
                None => Origin::NoSession,
            },
        }
    }

    fn session(&self) -> Option<&str> {
        match self {
            Origin::NoSession => None,
            Origin::Session(session) => Some(session),
            Origin::Task(task) => Some(task.session.as_str()),
        }
    }

    fn task(&self) -> Option<&task::TaskRef> {
        match self {
            Origin::Task(task) => Some(task),
            _ => None,
        }
    }

    /// The session and task, taken apart.
    fn into_parts(self) -> (Option<String>, Option<task::TaskRef>) {
        match self {
            Origin::NoSession => (None, None),
            Origin::Session(session) => (Some(session), None),
            Origin::Task(task) => (Some(task.session.to_string()), Some(task)),
        }
    }
}

/// A [`Payload`] as it waits in the channel: a status with fields boxed, so that an item stays
/// as small as the `(Option<String>, String)` it replaced and plain statuses cost what they
/// did. Direct delivery hands the payload over as it is, never boxed.
#[derive(Debug)]
pub(crate) enum Queued {
    Text(String),
    Message(Box<StatusMessage>),
}

impl From<Payload> for Queued {
    fn from(payload: Payload) -> Self {
        match payload {
            Payload::Text(text) => Queued::Text(text),
            Payload::Message(message) => Queued::Message(Box::new(message)),
        }
    }
}

impl From<Queued> for Payload {
    fn from(queued: Queued) -> Self {
        match queued {
            Queued::Text(text) => Payload::Text(text),
            Queued::Message(message) => Payload::Message(*message),
        }
    }
}

/// One item of the channel.
pub(crate) type Item = (Origin, Queued);

/// State shared between a [`Messenger`], its clones and the stream consuming its channel.
#[derive(Debug)]
struct Shared {
    sender: channel::Sender<Item>,
    /// Kept so the channel stays open; the live stream receives through it.
    receiver: channel::Receiver<Item>,
    /// Set while a stream consumes the channel.
    stream_taken: AtomicBool,
    /// Set by the live stream when it found the channel empty and is about to sleep; cleared
    /// by the one sender that wakes it (see the module invariants).
    parked: AtomicBool,
    /// The live stream's waker, registered before it sets `parked`.
    consumer: TaskWaker,
    /// Messages a dropped stream had drained from the channel but not yielded, then those a
    /// direct consumer gave back; the next stream yields them first. Locked only when a stream
    /// starts or ends and when a direct consumer gives a message back.
    leftover: Mutex<VecDeque<Item>>,
    /// Messages handed out by streams so far, across every stream this messenger has had. On
    /// a cache line of its own: the stream writes it for every message, and a line it shared
    /// with `parked` or the sender would move to the stream's core and back on every send.
    received: CachePadded<AtomicU64>,
    /// Messages handed to a direct consumer so far, counted by the senders' threads, each on
    /// a line of its own: one shared counter took a locked add on a line that every sender's
    /// core pulled from the others, on every status.
    received_direct: ShardedCount,
    /// Streams refused because another one was consuming.
    refused_streams: AtomicU64,
    /// Set while messages go straight to a consumer instead of through the channel: from
    /// the moment a switch starts until direct delivery ends. A send reads it before and after
    /// it puts a message in the channel, so that the read side of `direct` is taken only while
    /// direct delivery may be on (see the module invariants).
    direct_set: AtomicBool,
    /// The direct consumer, if any; read-locked by sends only while `direct_set` is set.
    direct: ShardedLock<Option<Direct>>,
}

/// Takes one message (its session, its task, the status) on the sender's thread, or gives it
/// back when its target is gone.
pub(crate) type Deliver =
    Box<dyn Fn(Option<&str>, Option<&task::TaskRef>, Payload) -> Result<(), Payload> + Send + Sync>;

/// A consumer that takes messages on the sender's own thread, so nothing waits in the channel.
///
/// It keeps the messenger's stream, so no other consumer can start meanwhile; `deliver` gives a
/// message back when its target is gone, and the message then goes into the channel.
struct Direct {
    deliver: Deliver,
    /// Held, never read: it marks the channel as consumed until direct delivery ends.
    _stream: StatusStream,
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

impl Shared {
    /// The live stream's side of the wake-up protocol (see the module invariants), after it
    /// found the channel empty: registers `cx`'s waker, says so in `parked`, and looks once
    /// more. `None` means the stream sleeps until a sender wakes it.
    fn park(&self, cx: &Context<'_>) -> Option<Item> {
        self.consumer.register(cx.waker());
        // Release: the sender that clears the flag (an acquiring swap) sees the waker. Here and
        // below read-modify-writes, not stores: they cost nothing per message (a stream parks
        // at most once per wake-up), and with plain stores loom reports lost wake-ups (its
        // model orders a store against a sender's concurrent swap more loosely than this
        // protocol needs), so the models check the protocol as it runs.
        self.parked.swap(true, Ordering::AcqRel);
        // Orders the flag before the second look, against the sender's fence between its
        // push and its read of the flag.
        fence(Ordering::SeqCst);
        let item = self.receiver.try_recv().ok()?;
        // Awake after all: spare the next sender a wake-up.
        self.parked.swap(false, Ordering::Relaxed);
        Some(item)
    }

    /// The sender's side, after a push: what is left to do. `Wake` when the live stream
    /// sleeps and this sender is the one to wake it (once); `Switching` when a switch to direct
    /// delivery has begun, which may have drained the channel before the push.
    fn after_push(&self) -> AfterPush {
        // Orders the push before the reads of both flags, against the fences of `park` and of
        // `Messenger::set_direct` between their flag and their look at the channel: either
        // they see the message or this sender sees their flag.
        fence(Ordering::SeqCst);
        if self.direct_set.load(Ordering::Relaxed) {
            return AfterPush::Switching;
        }
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::Acquire) {
            return AfterPush::Wake;
        }
        AfterPush::Done
    }
}

/// How many counters [`ShardedCount`] spreads its count over.
const COUNT_SHARDS: usize = 4;

/// A count that threads add to concurrently: each thread adds to one of a few counters, each
/// on its own cache line, and a read sums them.
#[derive(Debug)]
struct ShardedCount {
    shards: [CachePadded<AtomicU64>; COUNT_SHARDS],
}

impl Default for ShardedCount {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
        }
    }
}

impl ShardedCount {
    fn add_one(&self) {
        self.shards[thread_cell(COUNT_SHARDS)].fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// What a sender does after its push (see `Shared::after_push`).
enum AfterPush {
    Done,
    Wake,
    Switching,
}

/// A channel from status producers (any thread, any task) to one consumer stream.
///
/// The free functions ([`add_status_message`], [`stream_status_updates`], ...) are a thin
/// default over one `Messenger`: the current thread's scoped default ([`with_default`],
/// [`set_default`], [`Messenger::scope`]), else the global one. Make your own instance where
/// you want isolation instead, for example one per test or one per server in a process, and
/// make it the scoped default where code calls the free functions. Clones share the same
/// channel.
///
/// # Memory
///
/// The channel is unbounded on purpose: [`add_status_message`](Messenger::add_status_message)
/// is called from synchronous tool code that must never block or fail, so the only bound is the
/// consumer keeping up. The consumer should do nothing slow per message: hand each one to a
/// bounded per-session structure such as the `hub` module's `Hub`, which bounds memory and
/// signals loss. [`StatusStream::pending`] tells how many messages wait in the channel.
/// [`Hub::attach`](crate::Hub::attach) removes the channel from the path altogether: each
/// message is published into the hub on the sender's thread, so none wait however many
/// producers run at once.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Messenger, SessionContext};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let messenger = Messenger::new();
/// let mut updates = messenger.stream();
///
/// let producer = messenger.clone();
/// std::thread::spawn(move || {
///     SessionContext::new("s1").run(|| producer.add_status_message("working"));
/// })
/// .join()
/// .unwrap();
///
/// assert_eq!(
///     updates.next().await,
///     Some((Some("s1".to_owned()), "working".to_owned()))
/// );
/// # }
/// ```
#[derive(Clone)]
pub struct Messenger {
    shared: Arc<Shared>,
}

impl fmt::Debug for Messenger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Messenger")
            .field("received", &self.received())
            .field("stream_live", &self.stream_live())
            .finish()
    }
}

impl Default for Messenger {
    fn default() -> Self {
        Self::new()
    }
}

impl Messenger {
    /// Creates a messenger with a new channel. Needs no runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// let messenger = status_messenger::Messenger::new();
    /// assert_eq!(messenger.stream().pending(), 0);
    /// ```
    pub fn new() -> Self {
        let (sender, receiver) = channel::unbounded();
        Self {
            shared: Arc::new(Shared {
                sender,
                receiver,
                stream_taken: AtomicBool::new(false),
                parked: AtomicBool::new(false),
                consumer: TaskWaker::default(),
                leftover: Mutex::new(VecDeque::new()),
                received: CachePadded::new(AtomicU64::new(0)),
                received_direct: ShardedCount::default(),
                refused_streams: AtomicU64::new(0),
                direct_set: AtomicBool::new(false),
                direct: ShardedLock::new(None),
            }),
        }
    }

    /// Runs `fut` with this messenger as the scoped default on every poll, wherever it is
    /// polled: the free functions ([`add_status_message`] and the stream functions) inside it
    /// use this messenger. The future counterpart of [`with_default`], like `tracing`'s
    /// `WithDispatch`.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::{add_status_message, with_session_id, Messenger};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let messenger = Messenger::new();
    /// let task = messenger.scope(with_session_id("s1", async {
    ///     add_status_message("before the await");
    ///     tokio::task::yield_now().await;
    ///     add_status_message("after it");
    /// }));
    /// tokio::spawn(task).await.unwrap();
    ///
    /// let updates: Vec<_> = messenger.stream().take(2).map(|(_, text)| text).collect().await;
    /// assert_eq!(updates, ["before the await", "after it"]);
    /// # }
    /// ```
    pub fn scope<F: Future>(&self, fut: F) -> WithMessenger<F> {
        WithMessenger::new(Some(self.clone()), TaskSlot::Keep, fut)
    }

    /// Whether `self` and `other` share one channel (one is a clone of the other).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::Messenger;
    ///
    /// let messenger = Messenger::new();
    /// assert!(messenger.same_channel(&messenger.clone()));
    /// assert!(!messenger.same_channel(&Messenger::new()));
    /// ```
    pub fn same_channel(&self, other: &Messenger) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The address of the shared channel state: equal for clones, for hashing by identity.
    pub(crate) fn channel_id(&self) -> *const () {
        Arc::as_ptr(&self.shared).cast()
    }

    /// Sends `message` for the current session, read from
    /// [`CURRENT_WEBSOCKET_SESSION_ID`] (`None` where it is not set).
    ///
    /// Never blocks, never awaits, never panics; works from any thread, with or without a
    /// runtime. The message is recorded with `tracing` at debug level.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::Messenger;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let messenger = Messenger::new();
    /// messenger.add_status_message("no session here");
    /// let mut updates = messenger.stream();
    /// assert_eq!(updates.next().await, Some((None, "no session here".to_owned())));
    /// # }
    /// ```
    pub fn add_status_message(&self, message: impl Into<String>) {
        self.add_payload(Payload::Text(message.into()));
    }

    /// Sends `status`, a text with optional fields, for the current session, as
    /// [`add_status_message`](Messenger::add_status_message) sends a text.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::{Level, Messenger, SessionContext, StatusMessage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let messenger = Messenger::new();
    /// SessionContext::new("s1").run(|| {
    ///     messenger.add_status(StatusMessage::new("slow source").level(Level::Warn));
    /// });
    /// let (session, status) = messenger.stream().into_messages().next().await.unwrap();
    /// assert_eq!(session.as_deref(), Some("s1"));
    /// assert_eq!((status.text(), status.get_level()), ("slow source", Some(Level::Warn)));
    /// # }
    /// ```
    pub fn add_status(&self, status: StatusMessage) {
        // The task is the sender's context's, never the builder's.
        let (_none, payload) = Payload::from_message(status);
        self.add_payload(payload);
    }

    /// Sends `payload` for the current session, in the current task if any.
    fn add_payload(&self, payload: Payload) {
        let mut payload = Some(payload);
        // The task is borrowed where it lies, not cloned: no reference count goes up and down
        // per status. Where its slot cannot be read (the thread is being torn down), `payload`
        // is still `Some` below and goes out in no task.
        let _unreadable = task::with_current(|task| self.add_payload_in(task, &mut payload));
        if payload.is_some() {
            self.add_payload_in(None, &mut payload);
        }
    }

    /// Sends what `payload` holds (taking it) for the current session, in `task` if any.
    fn add_payload_in(&self, task: Option<&task::TaskRef>, payload: &mut Option<Payload>) {
        // A direct consumer reads the id where it lies, without a copy per message. Where the
        // task-local is not set, `try_with` fails, `payload` is still `Some`, and it goes out
        // below with no session: nothing is lost by ignoring that error.
        let _not_set = CURRENT_WEBSOCKET_SESSION_ID.try_with(|id| {
            if let Some(payload) = payload.take() {
                // A task belongs to its session: a status sent to another one (a session set
                // inside the task) is that session's alone.
                let task = task.filter(|task| id.as_deref() == Some(task.session.as_str()));
                self.dispatch(id.as_deref(), task, || id.clone(), payload);
            }
        });
        if let Some(payload) = payload.take() {
            self.dispatch(None, None, || None, payload);
        }
    }

    /// Hands `message` to the direct consumer if one is set, else puts it in the channel.
    pub(crate) fn dispatch(
        &self,
        session: Option<&str>,
        task: Option<&task::TaskRef>,
        owned_session: impl FnOnce() -> Option<String>,
        message: Payload,
    ) {
        tracing::debug!(
            target: "status_messenger",
            session = session.unwrap_or(UNKNOWN_SESSION),
            message = %message.text(),
            "status message"
        );
        if self.shared.direct_set.load(Ordering::Acquire) {
            self.dispatch_direct(session, task, owned_session, message);
            return;
        }
        // Direct delivery is off (or a switch has only just begun): into the channel, with no
        // lock. A switch that starts meanwhile is caught after the push (see
        // `Shared::after_push`).
        let sent = self
            .shared
            .sender
            .send((Origin::new(task.cloned(), owned_session), message.into()));
        self.after_send(sent);
    }

    /// `dispatch` while direct delivery may be on: under the read side of `direct`, so that a
    /// switch (under the write side) cannot overtake the message or leave it behind.
    fn dispatch_direct(
        &self,
        session: Option<&str>,
        task: Option<&task::TaskRef>,
        owned_session: impl FnOnce() -> Option<String>,
        message: Payload,
    ) {
        let guard = read(&self.shared.direct);
        let Some(direct) = guard.as_ref() else {
            // Ended (or a switch gave up) after the flag was read: into the channel, as usual.
            // Pushed under the lock, so a switch that starts next drains after this message;
            // the rest outside it, as `after_send` may take the write side.
            let sent = self
                .shared
                .sender
                .send((Origin::new(task.cloned(), owned_session), message.into()));
            drop(guard);
            self.after_send(sent);
            return;
        };
        match (direct.deliver)(session, task, message) {
            Ok(()) => {
                self.shared.received_direct.add_one();
            }
            // The target is gone: kept for the next consumer, after what waits already
            // (nothing goes into the channel while a direct consumer holds the stream, so the
            // next stream yields this before anything sent later).
            Err(message) => {
                lock(&self.shared.leftover)
                    .push_back((Origin::new(task.cloned(), owned_session), message.into()));
            }
        }
    }

    /// After a send into the channel: says so if it failed, hands the message on if a switch
    /// to direct delivery started meanwhile, and wakes the stream if it sleeps.
    fn after_send(&self, sent: Result<(), channel::SendError<Item>>) {
        // The receiver lives as long as `self.shared` (see the module invariants), so this
        // send cannot fail; the branch is kept so that a broken invariant is loud, not silent.
        debug_assert!(
            sent.is_ok(),
            "the messenger's own receiver keeps the channel open"
        );
        if sent.is_err() {
            tracing::error!(target: "status_messenger", "status channel closed; message dropped");
            return;
        }
        match self.shared.after_push() {
            AfterPush::Done => {}
            AfterPush::Wake => self.shared.consumer.wake(),
            AfterPush::Switching => self.hand_over_late_sends(),
        }
    }

    /// A send saw a switch to direct delivery begin after its message went into the channel,
    /// and the switch's drain may have missed it: hands the channel to the direct consumer
    /// before the send returns, so that the sender's next message (direct) cannot overtake it.
    #[cold]
    fn hand_over_late_sends(&self) {
        // The write side: one hand-over at a time, each message in channel order, and none
        // while the switch itself drains (it holds the write side until it is done).
        let direct = write(&self.shared.direct);
        let Some(direct) = direct.as_ref() else {
            // The switch gave up, or direct delivery has ended since: the message waits in the
            // channel for the next stream, after what the switch left (the stream's leftover).
            // A stream may already be live and asleep.
            if self.shared.parked.load(Ordering::Relaxed)
                && self.shared.parked.swap(false, Ordering::Acquire)
            {
                self.shared.consumer.wake();
            }
            return;
        };
        while let Ok((origin, message)) = self.shared.receiver.try_recv() {
            match (direct.deliver)(origin.session(), origin.task(), message.into()) {
                Ok(()) => {
                    self.shared.received_direct.add_one();
                }
                Err(message) => lock(&self.shared.leftover).push_back((origin, message.into())),
            }
        }
    }

    /// Routes every message straight to `deliver` from now on, after handing it what waits in
    /// the channel, in order. Fails while a stream consumes the channel.
    pub(crate) fn set_direct(&self, deliver: Deliver) -> Result<(), StreamError> {
        let mut direct = write(&self.shared.direct);
        let mut stream = self.try_stream()?;
        // A direct consumer holds the stream, so the stream just taken proves there is none.
        debug_assert!(direct.is_none(), "a direct consumer without the stream");
        // From here senders take the read side, which waits for this switch. One that read the
        // flag before it was set may still push into the channel; the fence pairs with the one
        // after its push (`Shared::after_push`): either the drain below finds its message, or
        // it sees the flag and hands the channel over itself, under the write side, after this
        // switch. A read-modify-write, as in `park`, so the models check the protocol as it runs.
        self.shared.direct_set.swap(true, Ordering::AcqRel);
        fence(Ordering::SeqCst);
        // This hands over everything sent before the switch: first what an earlier stream
        // drained but did not yield, then the channel.
        let buffered = stream
            .live
            .as_mut()
            .map(|live| std::mem::take(&mut live.buffer))
            .unwrap_or_default();
        let mut waiting = buffered
            .into_iter()
            .chain(std::iter::from_fn(|| self.shared.receiver.try_recv().ok()));
        while let Some((origin, message)) = waiting.next() {
            if let Err(message) = deliver(origin.session(), origin.task(), message.into()) {
                // The target went away while taking over: the rest stays, in order, for the
                // next consumer (dropping the stream parks its buffer as the leftover).
                let rest: VecDeque<Item> = std::iter::once((origin, message.into()))
                    .chain(waiting)
                    .collect();
                if let Some(live) = stream.live.as_mut() {
                    live.buffer = rest;
                }
                // Under the write side, so no sender is between its read of the flag and the
                // lock; a late sender finds no consumer and leaves its message in the channel.
                self.shared.direct_set.store(false, Ordering::Release);
                return Ok(());
            }
            self.shared.received_direct.add_one();
        }
        *direct = Some(Direct {
            deliver,
            _stream: stream,
        });
        Ok(())
    }

    /// Ends direct delivery: messages go into the channel again and a stream may take them.
    pub(crate) fn clear_direct(&self) {
        let old = {
            let mut direct = write(&self.shared.direct);
            // Under the write side: a sender that still sees the flag takes the read side after
            // this and finds no consumer, so its message goes into the channel.
            self.shared.direct_set.store(false, Ordering::Release);
            direct.take()
        };
        // Dropping the stream outside the lock gives the receiver back.
        drop(old);
    }

    /// [`set_direct`](Messenger::set_direct) for the model checks in `loom/`, which cannot
    /// reach `Hub::attach`; exists only in model builds.
    #[cfg(status_messenger_loom)]
    #[doc(hidden)]
    pub fn model_set_direct(
        &self,
        deliver: impl Fn(Option<&str>, String) -> Result<(), String> + Send + Sync + 'static,
    ) -> Result<(), StreamError> {
        // The models send text only.
        self.set_direct(Box::new(move |session, _task, payload: Payload| {
            deliver(session, payload.into_text()).map_err(Payload::Text)
        }))
    }

    /// [`clear_direct`](Messenger::clear_direct) for the model checks in `loom/`; exists only
    /// in model builds.
    #[cfg(status_messenger_loom)]
    #[doc(hidden)]
    pub fn model_clear_direct(&self) {
        self.clear_direct();
    }

    /// Whether messages go straight to a consumer (see `Hub::attach`) instead of the channel.
    ///
    /// # Examples
    ///
    /// ```
    /// let messenger = status_messenger::Messenger::new();
    /// assert!(!messenger.is_direct());
    /// ```
    pub fn is_direct(&self) -> bool {
        read(&self.shared.direct).is_some()
    }

    /// Sends `message` for an explicitly named session, for code that knows it.
    ///
    /// Behaves like [`add_status_message`](Messenger::add_status_message) otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::Messenger;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let messenger = Messenger::new();
    /// messenger.send(Some("s9".to_owned()), "explicit");
    /// let mut updates = messenger.stream();
    /// assert_eq!(updates.next().await, Some((Some("s9".to_owned()), "explicit".to_owned())));
    /// # }
    /// ```
    pub fn send(&self, session_id: Option<String>, message: impl Into<String>) {
        let session = session_id.as_deref();
        self.dispatch(
            session,
            None,
            || session_id.clone(),
            Payload::Text(message.into()),
        );
    }

    /// Takes the receiver as a stream, or says why it cannot.
    ///
    /// Only one stream at a time holds the receiver. When it is dropped the receiver goes back
    /// to the messenger, so the next stream (even on another runtime) resumes exactly where the
    /// last one stopped.
    ///
    /// # Errors
    ///
    /// [`StreamError::AlreadyConsumed`] while another stream is live; that stream is unaffected.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Messenger, StreamError};
    ///
    /// let messenger = Messenger::new();
    /// let first = messenger.try_stream().unwrap();
    /// assert_eq!(messenger.try_stream().unwrap_err(), StreamError::AlreadyConsumed);
    /// drop(first);
    /// assert!(messenger.try_stream().is_ok());
    /// ```
    pub fn try_stream(&self) -> Result<StatusStream, StreamError> {
        let taken = self.shared.stream_taken.compare_exchange(
            false,
            true,
            Ordering::Acquire,
            Ordering::Relaxed,
        );
        if taken.is_err() {
            self.shared.refused_streams.fetch_add(1, Ordering::Relaxed);
            return Err(StreamError::AlreadyConsumed);
        }
        let buffer = std::mem::take(&mut *lock(&self.shared.leftover));
        Ok(StatusStream {
            live: Some(Live {
                buffer,
                home: Arc::clone(&self.shared),
                idle_polls: 0,
            }),
        })
    }

    /// Takes the receiver as a stream; while another stream is live, returns one that ends at
    /// once (and logs a warning) without taking anything from the live one.
    ///
    /// Use [`try_stream`](Messenger::try_stream) to learn why no stream could be had.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::Messenger;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let messenger = Messenger::new();
    /// let live = messenger.stream();
    /// messenger.send(None, "kept for the live stream");
    /// let mut second = messenger.stream();
    /// assert_eq!(second.next().await, None);
    /// assert_eq!(live.pending(), 1);
    /// # }
    /// ```
    pub fn stream(&self) -> StatusStream {
        self.try_stream().unwrap_or_else(|error| {
            tracing::warn!(
                target: "status_messenger",
                %error,
                "a status stream is already live; this one ends at once"
            );
            StatusStream::ended()
        })
    }

    /// Messages handed to consumers so far, over every stream this messenger has had and
    /// every direct delivery ([`Hub::attach`](crate::Hub::attach)).
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let messenger = status_messenger::Messenger::new();
    /// messenger.send(None, "a");
    /// messenger.stream().next().await;
    /// assert_eq!(messenger.received(), 1);
    /// # }
    /// ```
    pub fn received(&self) -> u64 {
        let streamed = self.shared.received.load(Ordering::Relaxed);
        streamed.wrapping_add(self.shared.received_direct.sum())
    }

    /// Whether a stream currently holds the receiver.
    ///
    /// # Examples
    ///
    /// ```
    /// let messenger = status_messenger::Messenger::new();
    /// let stream = messenger.stream();
    /// assert!(messenger.stream_live());
    /// drop(stream);
    /// assert!(!messenger.stream_live());
    /// ```
    pub fn stream_live(&self) -> bool {
        self.shared.stream_taken.load(Ordering::Acquire)
    }

    /// Streams refused so far because another stream held the receiver.
    ///
    /// # Examples
    ///
    /// ```
    /// let messenger = status_messenger::Messenger::new();
    /// let _live = messenger.stream();
    /// let _ended = messenger.stream();
    /// assert_eq!(messenger.refused_streams(), 1);
    /// ```
    pub fn refused_streams(&self) -> u64 {
        self.shared.refused_streams.load(Ordering::Relaxed)
    }
}

/// Why no stream of status updates could be had.
///
/// # Examples
///
/// ```
/// use status_messenger::{try_stream_status_updates, StreamError};
///
/// // Before setup there is nothing to stream from.
/// let error = try_stream_status_updates().unwrap_err();
/// assert_eq!(error, StreamError::NotSetUp);
/// assert_eq!(error.to_string(), "the status messenger is not set up");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamError {
    /// The global messenger was not set up with [`setup_status_messenger_async`].
    NotSetUp,
    /// Another stream holds the receiver; only one consumer at a time.
    AlreadyConsumed,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamError::NotSetUp => "the status messenger is not set up",
            StreamError::AlreadyConsumed => "another status stream is already consuming messages",
        })
    }
}

impl std::error::Error for StreamError {}

/// The stream of `(session_id, message)` updates, in the order they were sent.
///
/// It is `Send`, `Unpin` and `'static`, so it can be moved into a broadcaster task. It never
/// ends while it holds the receiver (the messenger keeps a sender), and when dropped it gives
/// the receiver back, losing nothing. A stream created while another was live, or before the
/// global messenger was set up, ends at once.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::Messenger;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let messenger = Messenger::new();
/// messenger.send(None, "1");
/// messenger.send(None, "2");
/// let first: Vec<_> = messenger.stream().take(1).collect().await;
/// // The dropped stream gave the receiver back: "2" is still there.
/// let second: Vec<_> = messenger.stream().take(1).collect().await;
/// assert_eq!(first[0].1, "1");
/// assert_eq!(second[0].1, "2");
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct StatusStream {
    /// `None` for a stream that ends at once.
    live: Option<Live>,
}

/// What a consuming stream holds.
struct Live {
    /// Taken from the channel (or an earlier stream's leftover), not yet yielded; parked in
    /// `Shared::leftover` on drop.
    buffer: VecDeque<Item>,
    home: Arc<Shared>,
    /// Polls in a row that found the channel empty and yielded instead of sleeping.
    idle_polls: u32,
}

/// How many times in a row a stream that finds the channel empty yields to the runtime (waking
/// itself) before it sleeps. While producers are sending, the next message is usually a few
/// hundred nanoseconds away: a consumer that sleeps at once is woken again at once, and each
/// wake-up costs the sender a system call and the consumer a trip through the scheduler.
/// Yielding lets it take that message awake, and lets other tasks run meanwhile. 64 yields
/// are a few microseconds on an idle runtime, about as long as crossbeam's blocking receive
/// spins before it sleeps; with one producer thread, where the consumer keeps catching up,
/// runs with 64 measured as fast as those with 16 or faster, by less than the shared
/// benchmark machine's noise (see `benches/README.md`). Model builds sleep at once: a yield is
/// a plain self-wake, and the models check the sleep.
#[cfg(not(status_messenger_loom))]
const YIELDS_BEFORE_SLEEP: u32 = 64;
#[cfg(status_messenger_loom)]
const YIELDS_BEFORE_SLEEP: u32 = 0;

impl fmt::Debug for StatusStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusStream")
            .field("live", &self.is_live())
            .field("pending", &self.pending())
            .finish()
    }
}

impl StatusStream {
    fn ended() -> Self {
        Self { live: None }
    }

    /// Whether this stream consumes the channel (`false` for a stream that ends at once).
    ///
    /// # Examples
    ///
    /// ```
    /// let messenger = status_messenger::Messenger::new();
    /// let live = messenger.stream();
    /// let ended = messenger.stream();
    /// assert!(live.is_live());
    /// assert!(!ended.is_live());
    /// ```
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Messages waiting for this stream (0 for a stream that ends at once).
    ///
    /// # Examples
    ///
    /// ```
    /// let messenger = status_messenger::Messenger::new();
    /// let stream = messenger.stream();
    /// messenger.send(None, "a");
    /// messenger.send(None, "b");
    /// assert_eq!(stream.pending(), 2);
    /// ```
    pub fn pending(&self) -> usize {
        self.live
            .as_ref()
            .map_or(0, |live| live.buffer.len() + live.home.receiver.len())
    }
}

impl Stream for StatusStream {
    type Item = StatusUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_item(cx).map(|item| {
            item.map(|(origin, payload)| {
                (origin.into_parts().0, Payload::from(payload).into_text())
            })
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.live {
            Some(_) => (self.pending(), None),
            None => (0, Some(0)),
        }
    }
}

impl StatusStream {
    /// This stream as one of whole statuses: `(session, StatusMessage)`, each with its fields
    /// and task id, where this stream yields the text alone. The receiver stays held, and goes
    /// back to the messenger when the returned stream is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::{Messenger, StatusMessage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let messenger = Messenger::new();
    /// messenger.add_status(StatusMessage::new("3 of 10").progress(3, 10));
    /// messenger.add_status_message("plain");
    /// let mut messages = messenger.stream().into_messages();
    /// let (_, first) = messages.next().await.unwrap();
    /// assert_eq!(first.get_progress().map(|p| p.current()), Some(3));
    /// let (_, second) = messages.next().await.unwrap();
    /// assert_eq!((second.text(), second.get_progress()), ("plain", None));
    /// # }
    /// ```
    pub fn into_messages(self) -> StatusMessages {
        StatusMessages { inner: self }
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let Some(live) = self.live.as_mut() else {
            return Poll::Ready(None);
        };
        let next = match live.buffer.pop_front() {
            Some(item) => item,
            None => match live.home.receiver.try_recv() {
                Ok(item) => item,
                Err(_empty) if live.idle_polls < YIELDS_BEFORE_SLEEP => {
                    live.idle_polls += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Err(_empty) => match live.home.park(cx) {
                    Some(item) => item,
                    None => return Poll::Pending,
                },
            },
        };
        live.idle_polls = 0;
        // Only the one consuming stream writes this counter (`stream_taken` orders one
        // consumer after the next), so a plain load and store suffices and keeps a locked
        // read-modify-write off the per-message path.
        let received = live.home.received.load(Ordering::Relaxed);
        live.home.received.store(received + 1, Ordering::Relaxed);
        Poll::Ready(Some(next))
    }
}

/// A [`StatusStream`] yielding whole statuses, `(session, StatusMessage)`: text, fields and
/// task id; from [`StatusStream::into_messages`]. `Send`, `Sync`, `Unpin` and `'static` like
/// the stream it wraps, and like it, dropping it gives the receiver back.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Messenger, StatusMessages};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let messenger = Messenger::new();
/// messenger.send(Some("s1".to_owned()), "hi");
/// let mut messages: StatusMessages = messenger.stream().into_messages();
/// let (session, status) = messages.next().await.unwrap();
/// assert_eq!((session.as_deref(), status.text()), (Some("s1"), "hi"));
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct StatusMessages {
    inner: StatusStream,
}

impl StatusMessages {
    /// The stream of texts this wraps, back.
    ///
    /// # Examples
    ///
    /// ```
    /// let messenger = status_messenger::Messenger::new();
    /// let stream = messenger.stream().into_messages().into_inner();
    /// assert!(stream.is_live());
    /// ```
    pub fn into_inner(self) -> StatusStream {
        self.inner
    }
}

impl Stream for StatusMessages {
    type Item = (Option<String>, StatusMessage);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_item(cx).map(|item| {
            item.map(|(origin, payload)| {
                let (session, task) = origin.into_parts();
                (session, Payload::from(payload).into_message(task))
            })
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl Drop for StatusStream {
    fn drop(&mut self) {
        let Some(live) = self.live.take() else {
            return;
        };
        let Live { buffer, home, .. } = live;
        // Forget this stream's waker and park what it took but did not yield before the next
        // stream may start.
        home.parked.store(false, Ordering::Relaxed);
        home.consumer.forget();
        {
            let mut leftover = lock(&home.leftover);
            // This stream took the leftover when it started and only one stream lives at a
            // time; what is there now a direct consumer gave back while it held this stream,
            // all of it sent after what the buffer holds.
            let given_back = std::mem::replace(&mut *leftover, buffer);
            leftover.extend(given_back);
        }
        debug_assert!(
            home.stream_taken.load(Ordering::Relaxed),
            "a live stream without the stream flag"
        );
        home.stream_taken.store(false, Ordering::Release);
    }
}

static GLOBAL: OnceLock<Messenger> = OnceLock::new();
// std's atomics even in model builds: loom's cannot be statics, and no model touches these.
static DROPPED_BEFORE_SETUP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static WARNED_BEFORE_SETUP: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

thread_local! {
    /// The messenger the free functions use on this thread instead of the global one (see the
    /// module invariants).
    static SCOPED: RefCell<Option<Messenger>> = const { RefCell::new(None) };
}

/// Creates the global messenger, once.
///
/// Idempotent and safe to call concurrently from many threads: every call returns the same
/// messenger, the one [`set_global_default`] installed if it ran first. Needs no runtime
/// handle; unlike the Python original, nothing binds the channel to one event loop, so it
/// keeps working across runtimes.
///
/// # Examples
///
/// ```
/// let a = status_messenger::setup_status_messenger_async();
/// let b = status_messenger::setup_status_messenger_async();
/// assert!(std::ptr::eq(a, b));
/// ```
pub fn setup_status_messenger_async() -> &'static Messenger {
    GLOBAL.get_or_init(Messenger::new)
}

/// Makes `messenger` the global one, for the whole process, if none is set yet.
///
/// The free functions fall back to it wherever no scoped default ([`with_default`],
/// [`set_default`], [`Messenger::scope`]) is set. [`setup_status_messenger_async`] returns it
/// from then on instead of creating one.
///
/// Libraries should not call this: the global messenger is the application's choice, and a
/// library that sets it makes the application's own call fail. Use a scoped default there.
///
/// # Errors
///
/// [`SetGlobalDefaultError`], carrying `messenger` back, when a global messenger is set
/// already, by an earlier call or by [`setup_status_messenger_async`].
///
/// # Examples
///
/// ```
/// use status_messenger::{global_messenger, set_global_default, Messenger};
///
/// let messenger = Messenger::new();
/// set_global_default(messenger.clone()).unwrap();
/// assert!(global_messenger().unwrap().same_channel(&messenger));
/// // Setup finds it instead of creating one.
/// assert!(status_messenger::setup_status_messenger_async().same_channel(&messenger));
///
/// let error = set_global_default(Messenger::new()).unwrap_err();
/// assert_eq!(error.to_string(), "a global status messenger is already set");
/// assert!(!error.into_inner().same_channel(&messenger));
/// ```
pub fn set_global_default(messenger: Messenger) -> Result<(), SetGlobalDefaultError> {
    GLOBAL
        .set(messenger)
        .map_err(|messenger| SetGlobalDefaultError { messenger })
}

/// Returned by [`set_global_default`] when a global messenger is set already.
///
/// # Examples
///
/// ```
/// use status_messenger::{set_global_default, setup_status_messenger_async, Messenger};
///
/// setup_status_messenger_async();
/// let refused = Messenger::new();
/// let error = set_global_default(refused.clone()).unwrap_err();
/// assert_eq!(error.to_string(), "a global status messenger is already set");
/// // The refused messenger comes back, still usable as a scoped default.
/// assert!(error.into_inner().same_channel(&refused));
/// ```
#[derive(Debug)]
pub struct SetGlobalDefaultError {
    messenger: Messenger,
}

impl SetGlobalDefaultError {
    /// The messenger that was not installed.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{set_global_default, Messenger};
    ///
    /// set_global_default(Messenger::new()).unwrap();
    /// let second = Messenger::new();
    /// let back = set_global_default(second.clone()).unwrap_err().into_inner();
    /// assert!(back.same_channel(&second));
    /// ```
    pub fn into_inner(self) -> Messenger {
        self.messenger
    }
}

impl fmt::Display for SetGlobalDefaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a global status messenger is already set")
    }
}

impl std::error::Error for SetGlobalDefaultError {}

/// The global messenger, if [`setup_status_messenger_async`] or [`set_global_default`] has
/// run. Scoped defaults do not change it.
///
/// # Examples
///
/// ```
/// let messenger = status_messenger::setup_status_messenger_async();
/// assert!(std::ptr::eq(status_messenger::global_messenger().unwrap(), messenger));
/// ```
pub fn global_messenger() -> Option<&'static Messenger> {
    GLOBAL.get()
}

/// Runs `f` with `messenger` as the scoped default of the current thread: the free functions
/// called inside it ([`add_status_message`], [`stream_status_updates`],
/// [`try_stream_status_updates`]) use `messenger` instead of the global one.
///
/// The previous default comes back when `f` returns or unwinds. Defaults nest; the innermost
/// wins. Work handed to other threads or tasks keeps the default only through the
/// session-carrying helpers ([`spawn_blocking`](crate::spawn_blocking),
/// [`spawn`](crate::spawn), [`SessionContext`](crate::SessionContext)); for a future polled
/// here use [`Messenger::scope`].
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{add_status_message, with_default, Messenger};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (outer, inner) = (Messenger::new(), Messenger::new());
/// with_default(&outer, || {
///     add_status_message("a");
///     with_default(&inner, || add_status_message("b"));
///     add_status_message("c");
/// });
/// let outer_texts: Vec<_> = outer.stream().take(2).map(|(_, text)| text).collect().await;
/// assert_eq!(outer_texts, ["a", "c"]);
/// assert_eq!(inner.stream().next().await.map(|(_, text)| text).as_deref(), Some("b"));
/// # }
/// ```
pub fn with_default<R>(messenger: &Messenger, f: impl FnOnce() -> R) -> R {
    // The guard puts the previous default back even if `f` unwinds.
    let _guard = set_default(messenger);
    f()
}

/// Makes `messenger` the scoped default of the current thread until the returned guard
/// drops, which puts the previous default back.
///
/// As in `tracing`, each guard restores the default it replaced, so drop guards in the
/// reverse order of their creation; dropping them out of order leaves a default that an
/// earlier guard replaced, never a broken state. The guard is not `Send`: the default belongs
/// to this thread, so do not hold it across an `.await` (use [`Messenger::scope`] for
/// futures).
///
/// # Examples
///
/// ```
/// use status_messenger::{add_status_message, set_default, Messenger};
///
/// let (first, second) = (Messenger::new(), Messenger::new());
/// let outer = set_default(&first);
/// {
///     let _inner = set_default(&second);
///     add_status_message("to second");
/// }
/// add_status_message("to first again");
/// drop(outer);
///
/// assert_eq!(first.stream().pending(), 1);
/// assert_eq!(second.stream().pending(), 1);
/// ```
#[must_use = "dropping the guard ends the default at once"]
pub fn set_default(messenger: &Messenger) -> DefaultGuard {
    DefaultGuard::install(messenger.clone()).unwrap_or_else(|_refused| DefaultGuard {
        prior: None,
        _this_thread: PhantomData,
    })
}

/// Ends the scoped default set by [`set_default`] when dropped, putting the previous one back.
///
/// # Examples
///
/// ```
/// use status_messenger::{add_status_message, set_default, Messenger};
///
/// let messenger = Messenger::new();
/// let guard: status_messenger::DefaultGuard = set_default(&messenger);
/// add_status_message("while the guard lives");
/// drop(guard);
/// assert_eq!(messenger.stream().pending(), 1);
/// ```
///
/// The default belongs to the thread that set it, so the guard cannot move to another:
///
/// ```compile_fail
/// let guard = status_messenger::set_default(&status_messenger::Messenger::new());
/// std::thread::spawn(move || drop(guard));
/// ```
#[must_use = "dropping the guard ends the default at once"]
#[derive(Debug)]
pub struct DefaultGuard {
    /// The default this guard replaced, put back on drop; `None` when it installed nothing.
    prior: Option<Option<Messenger>>,
    /// Not `Send`: dropped on another thread, it would change that thread's default.
    _this_thread: PhantomData<*const ()>,
}

impl DefaultGuard {
    /// Makes `messenger` this thread's scoped default, or gives it back when the default
    /// cannot change now (logged; see the module invariants).
    fn install(messenger: Messenger) -> Result<Self, Option<Messenger>> {
        let prior = replace_scoped(Some(messenger))?;
        Ok(Self {
            prior: Some(prior),
            _this_thread: PhantomData,
        })
    }

    /// Puts the previous default back and returns the messenger this guard had installed.
    fn end(mut self) -> Option<Messenger> {
        replace_scoped(self.prior.take()?).ok().flatten()
    }
}

impl Drop for DefaultGuard {
    fn drop(&mut self) {
        if let Some(prior) = self.prior.take() {
            // Dropped here, outside the thread-local's borrow (see the module invariants).
            let ended = replace_scoped(prior);
            drop(ended);
        }
    }
}

/// Puts `messenger` in this thread's scoped-default slot and returns what was there, or gives
/// `messenger` back when the slot cannot be changed now: inside a hand-over on this thread
/// (see the module invariants), or while the thread's locals are being destroyed.
fn replace_scoped(
    mut messenger: Option<Messenger>,
) -> Result<Option<Messenger>, Option<Messenger>> {
    let replaced = SCOPED
        .try_with(|slot| {
            let mut current = slot.try_borrow_mut().ok()?;
            Some(std::mem::replace(&mut *current, messenger.take()))
        })
        .ok()
        .flatten();
    match replaced {
        Some(previous) => Ok(previous),
        None => {
            tracing::error!(
                target: "status_messenger",
                "the scoped default messenger cannot change here (inside a status hand-over on \
                 this thread, or while the thread ends); it stays as it was"
            );
            Err(messenger)
        }
    }
}

/// This thread's scoped default, if one is set: a clone, for capturing it, never used per
/// message.
pub(crate) fn scoped_default() -> Option<Messenger> {
    SCOPED
        .try_with(|slot| slot.try_borrow().ok().and_then(|scoped| scoped.clone()))
        .ok()
        .flatten()
}

/// A future that runs with a messenger as the scoped default on every poll; returned by
/// [`Messenger::scope`] (and inside what [`SessionContext::wrap`](crate::SessionContext::wrap)
/// returns, where it also makes the context's task, or none, current on every poll).
///
/// It is `Send` when the inner future is. The inner future is boxed, one allocation per
/// wrapped future: polling it in place would take unsafe pin projection, which this crate
/// forbids.
///
/// # Examples
///
/// ```
/// use status_messenger::{add_status_message, Messenger, WithMessenger};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let messenger = Messenger::new();
/// let fut: WithMessenger<_> = messenger.scope(async { add_status_message("scoped") });
/// fut.await;
/// assert_eq!(messenger.stream().pending(), 1);
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct WithMessenger<F> {
    /// Swapped into this thread's slot for each poll and back out after it, so no reference
    /// count changes per poll; `None` leaves the polling thread's default as it is.
    messenger: Option<Messenger>,
    /// The task made current for each poll, swapped in and out the same way; `Keep` leaves
    /// the polling thread's as it is.
    task: TaskSlot,
    inner: Pin<Box<F>>,
}

/// What a [`WithMessenger`] does with the current task.
#[derive(Debug)]
pub(crate) enum TaskSlot {
    /// Leaves it as the polling thread has it.
    Keep,
    /// Makes this one current (`None`: no task).
    Set(Option<task::TaskRef>),
}

impl<F> WithMessenger<F> {
    pub(crate) fn new(messenger: Option<Messenger>, task: TaskSlot, fut: F) -> Self {
        Self {
            messenger,
            task,
            inner: Box::pin(fut),
        }
    }
}

impl<F> fmt::Debug for WithMessenger<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithMessenger")
            .field("messenger", &self.messenger)
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for WithMessenger<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // If the poll unwinds, dropping the guard still puts the previous task back.
        let entered = match std::mem::replace(&mut this.task, TaskSlot::Keep) {
            TaskSlot::Keep => None,
            TaskSlot::Set(task) => Some(task::Entered::new(task)),
        };
        let output = match this.messenger.take() {
            None => this.inner.as_mut().poll(cx),
            Some(messenger) => match DefaultGuard::install(messenger) {
                Ok(guard) => {
                    // If the poll unwinds, dropping the guard puts the previous default back.
                    let output = this.inner.as_mut().poll(cx);
                    this.messenger = guard.end();
                    output
                }
                Err(messenger) => {
                    this.messenger = messenger;
                    this.inner.as_mut().poll(cx)
                }
            },
        };
        if let Some(entered) = entered {
            this.task = TaskSlot::Set(entered.end());
        }
        output
    }
}

/// Sends `message` for the current session through the current thread's scoped default
/// messenger ([`with_default`], [`set_default`], [`Messenger::scope`]), else the global one.
///
/// The session id comes from [`CURRENT_WEBSOCKET_SESSION_ID`] (`None` where it is not set).
/// Never panics, never blocks, never awaits; works from async tasks, `spawn_blocking`
/// threads, plain threads, threads with no runtime at all, and after the runtime that consumed
/// the stream has shut down (the message waits for the next stream).
///
/// With no scoped default and before [`setup_status_messenger_async`] (or
/// [`set_global_default`]) the message is dropped: the first such drop logs a `tracing`
/// warning and every one is counted in [`dropped_before_setup`].
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{add_status_message, with_session_id};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// status_messenger::setup_status_messenger_async();
/// with_session_id("user-42", async { add_status_message("Searching the web...") }).await;
///
/// let mut updates = status_messenger::stream_status_updates();
/// assert_eq!(
///     updates.next().await,
///     Some((Some("user-42".to_owned()), "Searching the web...".to_owned()))
/// );
/// # }
/// ```
pub fn add_status_message(message: impl Into<String>) {
    add_payload(Payload::Text(message.into()));
}

/// What [`add_status_message`] and [`add_status`] do: the scoped default, else the global
/// messenger, else counted as dropped.
fn add_payload(payload: Payload) {
    let mut message = Some(payload);
    // Borrowed, not cloned: no reference count changes per message. Where no scoped default
    // is set, or the thread is being torn down, `message` is still `Some` below and goes to
    // the global messenger, so ignoring the access error loses nothing.
    let _torn_down = SCOPED.try_with(|slot| {
        let Ok(scoped) = slot.try_borrow() else {
            return;
        };
        if let Some(messenger) = scoped.as_ref() {
            if let Some(message) = message.take() {
                messenger.add_payload(message);
            }
        }
    });
    let Some(message) = message else {
        return;
    };
    match GLOBAL.get() {
        Some(messenger) => messenger.add_payload(message),
        None => {
            DROPPED_BEFORE_SETUP.fetch_add(1, Ordering::Relaxed);
            if !WARNED_BEFORE_SETUP.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    target: "status_messenger",
                    "add_status_message called with no scoped default and before \
                     setup_status_messenger_async; messages are dropped and counted until \
                     setup (warned once)"
                );
            }
        }
    }
}

/// Sends `status`, a text with optional fields (progress, level, key, JSON data), for the
/// current session through the current messenger, as [`add_status_message`] sends a text.
///
/// Inside a task ([`Task`](crate::Task)) the status also carries the task's id, and once the
/// task is cancelled the hub refuses it. Never panics, never blocks, never awaits.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{add_status, with_session_id, Event, Hub, Level, StatusMessage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.attach_global().unwrap();
/// with_session_id("user-1", async {
///     add_status(StatusMessage::new("Reading 3 of 10").progress(3, 10).key("read"));
///     add_status(StatusMessage::new("Source is slow").level(Level::Warn));
/// })
/// .await;
/// let mut page = hub.subscribe("user-1", None);
/// let Some(Event::Status(first)) = page.next().await else { panic!() };
/// assert_eq!((first.key(), first.progress().map(|p| p.total())), (Some("read"), Some(10)));
/// let Some(Event::Status(second)) = page.next().await else { panic!() };
/// assert_eq!(second.level(), Some(Level::Warn));
/// # }
/// ```
pub fn add_status(status: StatusMessage) {
    // The task is the sender's context's, never the builder's.
    let (_none, payload) = Payload::from_message(status);
    add_payload(payload);
}

/// Messages dropped because they were added with no scoped default and no global messenger
/// (before [`setup_status_messenger_async`] or [`set_global_default`]).
///
/// # Examples
///
/// ```
/// // Setup has not run in this process: messages are counted, not silently lost.
/// assert!(status_messenger::global_messenger().is_none());
/// status_messenger::add_status_message("too early");
/// assert_eq!(status_messenger::dropped_before_setup(), 1);
/// ```
pub fn dropped_before_setup() -> u64 {
    DROPPED_BEFORE_SETUP.load(Ordering::Relaxed)
}

/// The stream of `(session_id, message)` updates from the current thread's scoped default
/// messenger, else the global one.
///
/// One consumer at a time: while one stream is live, another call returns a stream that ends
/// at once (logged) and takes nothing from the first. Dropping the live stream gives the
/// receiver back, so a restarted broadcaster, even on a new runtime, resumes with nothing lost.
/// With no messenger to stream from (no scoped default, no setup) the stream ends at once.
/// [`try_stream_status_updates`] says why.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// status_messenger::setup_status_messenger_async();
/// status_messenger::add_status_message("hello");
/// let mut updates = status_messenger::stream_status_updates();
/// assert_eq!(updates.next().await, Some((None, "hello".to_owned())));
/// # }
/// ```
pub fn stream_status_updates() -> StatusStream {
    match current_messenger() {
        Some(messenger) => messenger.stream(),
        None => {
            tracing::warn!(
                target: "status_messenger",
                "stream_status_updates called with no scoped default and before \
                 setup_status_messenger_async; the stream ends at once"
            );
            StatusStream::ended()
        }
    }
}

/// Like [`stream_status_updates`], but says why no stream could be had.
///
/// # Errors
///
/// [`StreamError::NotSetUp`] with no scoped default and no global messenger;
/// [`StreamError::AlreadyConsumed`] while another stream is live.
///
/// # Examples
///
/// ```
/// use status_messenger::{try_stream_status_updates, StreamError};
///
/// status_messenger::setup_status_messenger_async();
/// let live = try_stream_status_updates().unwrap();
/// assert_eq!(try_stream_status_updates().unwrap_err(), StreamError::AlreadyConsumed);
/// drop(live);
/// ```
pub fn try_stream_status_updates() -> Result<StatusStream, StreamError> {
    current_messenger()
        .ok_or(StreamError::NotSetUp)?
        .try_stream()
}

/// The messenger the free functions use here: the scoped default, else the global one.
fn current_messenger() -> Option<Messenger> {
    scoped_default().or_else(|| GLOBAL.get().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_item_is_as_small_as_the_tuple_it_replaced() {
        assert_eq!(
            std::mem::size_of::<Item>(),
            std::mem::size_of::<(Option<String>, String)>()
        );
    }

    #[test]
    fn a_status_handed_over_directly_needs_no_box_of_its_own() {
        // The payload is the message itself: delivering one allocates nothing beyond what the
        // message holds (only the channel boxes it).
        assert_eq!(
            std::mem::size_of::<Payload>(),
            std::mem::size_of::<StatusMessage>()
        );
    }
}
