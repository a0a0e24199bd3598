//! The endpoints as one value, before a framework serves them: [`Endpoints`].
//!
//! # Invariants
//!
//! - Authorization runs before anything else a request causes: before the resume point is
//!   acted on, before any subscription, before any upgrade. A refused request changes nothing.
//! - Every stream the endpoints open holds a [`StreamGuard`] until it has ended, so
//!   [`Endpoints::streams_closed`] can tell a server when its goodbyes are sent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::Notify;

use super::{cancel, session_from_query, Refusal, RequestInfo, Settings};
use crate::{Hub, SessionId, Subscription};

type Authorized = Result<SessionId, Refusal>;
type SyncHook = dyn Fn(&RequestInfo) -> Authorized + Send + Sync;
type AsyncHook =
    dyn Fn(RequestInfo) -> Pin<Box<dyn Future<Output = Authorized> + Send>> + Send + Sync;

#[derive(Clone)]
enum Authorizer {
    /// [`session_from_query`].
    Query,
    Sync(Arc<SyncHook>),
    Async(Arc<AsyncHook>),
}

/// The endpoints `/ws`, `/events`, `/cancel` and `/status-messenger.js` of one hub, with their
/// authorization and [`Settings`]; `Endpoints::router` (feature `axum`) and
/// `Endpoints::configure` (feature `actix-web`) serve them.
///
/// By default the `session` query parameter names the session and the session must exist
/// ([`session_from_query`]): the id is the capability, as in the demo. Give
/// [`authorize`](Endpoints::authorize) a function of the request to tie sessions to users.
/// Cheap to clone: clones share the hub, the hook and the count of open streams.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use status_messenger::web::Endpoints;
/// use status_messenger::Hub;
///
/// let hub = Hub::new(Default::default()).unwrap();
/// let endpoints = Endpoints::new(hub)
///     .keep_alive(Duration::from_secs(20))
///     .max_message_bytes(16 * 1024);
/// assert_eq!(endpoints.settings().keep_alive, Duration::from_secs(20));
/// assert_eq!(endpoints.open_streams(), 0);
/// ```
#[derive(Clone)]
pub struct Endpoints {
    hub: Hub,
    settings: Settings,
    authorizer: Authorizer,
    streams: Arc<Streams>,
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let authorizer = match self.authorizer {
            Authorizer::Query => "session query parameter",
            Authorizer::Sync(_) | Authorizer::Async(_) => "the application's",
        };
        f.debug_struct("Endpoints")
            .field("hub", &self.hub)
            .field("settings", &self.settings)
            .field("authorizer", &authorizer)
            .field("open_streams", &self.open_streams())
            .finish()
    }
}

impl Endpoints {
    /// The endpoints of `hub`, with the default authorization and [`Settings::default`].
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = status_messenger::web::Endpoints::new(hub.clone());
    /// assert_eq!(endpoints.hub().stats(), hub.stats());
    /// ```
    pub fn new(hub: Hub) -> Endpoints {
        Endpoints {
            hub,
            settings: Settings::default(),
            authorizer: Authorizer::Query,
            streams: Arc::default(),
        }
    }

    /// Decides, for each request to `/ws`, `/events` and `/cancel`, which session the caller
    /// may use, or refuses it; it runs before any upgrade, so a refused request opens nothing.
    /// It replaces the default (the `session` query parameter, which must exist): the session
    /// it returns is used as it is. A stream (`/ws`, `/events`) opens it if it does not exist
    /// yet; `POST /cancel` does not, and answers 404 for a task of a session the hub does not
    /// hold.
    ///
    /// # Examples
    ///
    /// A login cookie names the user, and the application knows which sessions are whose (a
    /// real one checks a signed or server-side session cookie):
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::sync::{Arc, Mutex};
    /// use status_messenger::web::{Endpoints, Refusal, RequestInfo};
    /// use status_messenger::{Hub, SessionId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Session id -> the user it belongs to, filled where the application creates sessions.
    /// let owners: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    /// owners.lock().unwrap().insert("s-alice".into(), "alice".into());
    /// owners.lock().unwrap().insert("s-bob".into(), "bob".into());
    ///
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let endpoints = Endpoints::new(hub).authorize(move |request: &RequestInfo| {
    ///     let user = request.cookie("user").ok_or(Refusal::unauthorized("log in first"))?;
    ///     let session = request.query("session").ok_or(Refusal::not_found("no session"))?;
    ///     match owners.lock().unwrap().get(session) {
    ///         Some(owner) if owner == user => {
    ///             SessionId::new(session).map_err(|_| Refusal::not_found("no session"))
    ///         }
    ///         Some(_) => Err(Refusal::forbidden("not your session")),
    ///         None => Err(Refusal::not_found("unknown session")),
    ///     }
    /// });
    ///
    /// let request = |cookie: &str, query: &str| {
    ///     let mut headers = http::HeaderMap::new();
    ///     headers.insert("cookie", cookie.parse().unwrap());
    ///     RequestInfo::new(headers, Some(query))
    /// };
    /// let own = endpoints.authorize_request(request("user=alice", "session=s-alice")).await;
    /// assert_eq!(own.unwrap(), "s-alice");
    /// let other = endpoints.authorize_request(request("user=alice", "session=s-bob")).await;
    /// assert_eq!(other.unwrap_err().status(), 403);
    /// let anonymous = endpoints.authorize_request(request("theme=dark", "session=s-bob")).await;
    /// assert_eq!(anonymous.unwrap_err().status(), 401);
    /// # }
    /// ```
    pub fn authorize<F>(mut self, authorize: F) -> Endpoints
    where
        F: Fn(&RequestInfo) -> Result<SessionId, Refusal> + Send + Sync + 'static,
    {
        self.authorizer = Authorizer::Sync(Arc::new(authorize));
        self
    }

    /// Like [`authorize`](Endpoints::authorize), for a decision that has to wait (a session
    /// store, a database): `authorize` gets the request and returns a future of the answer.
    ///
    /// # Examples
    ///
    /// The default check, written out: the session must exist in the hub.
    ///
    /// ```
    /// use status_messenger::web::{session_from_query, Endpoints, RequestInfo};
    /// use status_messenger::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// hub.open_session("s1").await.unwrap();
    /// let endpoints = Endpoints::new(hub.clone()).authorize_async(move |request: RequestInfo| {
    ///     let hub = hub.clone();
    ///     async move { session_from_query(&hub, &request).await }
    /// });
    /// let request = |q| RequestInfo::new(http::HeaderMap::new(), Some(q));
    /// assert!(endpoints.authorize_request(request("session=s1")).await.is_ok());
    /// assert_eq!(endpoints.authorize_request(request("session=s2")).await.unwrap_err().status(), 404);
    /// # }
    /// ```
    pub fn authorize_async<F, Fut>(mut self, authorize: F) -> Endpoints
    where
        F: Fn(RequestInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SessionId, Refusal>> + Send + 'static,
    {
        self.authorizer = Authorizer::Async(Arc::new(move |request| Box::pin(authorize(request))));
        self
    }

    /// Sets every knob at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::{Endpoints, Settings};
    ///
    /// let mut settings = Settings::default();
    /// settings.write_batch = 64;
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert_eq!(Endpoints::new(hub).settings_from(settings).settings().write_batch, 64);
    /// ```
    pub fn settings_from(mut self, settings: Settings) -> Endpoints {
        self.settings = settings;
        self
    }

    /// Sets [`Settings::keep_alive`] (default 15 s).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = status_messenger::web::Endpoints::new(hub).keep_alive(Duration::from_secs(5));
    /// assert_eq!(endpoints.settings().keep_alive, Duration::from_secs(5));
    /// ```
    pub fn keep_alive(mut self, every: Duration) -> Endpoints {
        self.settings.keep_alive = every;
        self
    }

    /// Sets [`Settings::max_message_bytes`] (default 64 KiB).
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = status_messenger::web::Endpoints::new(hub).max_message_bytes(1024);
    /// assert_eq!(endpoints.settings().max_message_bytes, 1024);
    /// ```
    pub fn max_message_bytes(mut self, bytes: usize) -> Endpoints {
        self.settings.max_message_bytes = bytes;
        self
    }

    /// Sets [`Settings::write_batch`] (default 256).
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = status_messenger::web::Endpoints::new(hub).write_batch(32);
    /// assert_eq!(endpoints.settings().write_batch, 32);
    /// ```
    pub fn write_batch(mut self, frames: usize) -> Endpoints {
        self.settings.write_batch = frames;
        self
    }

    /// Sets [`Settings::write_timeout`] (default 10 s).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = status_messenger::web::Endpoints::new(hub).write_timeout(Duration::from_secs(2));
    /// assert_eq!(endpoints.settings().write_timeout, Duration::from_secs(2));
    /// ```
    pub fn write_timeout(mut self, limit: Duration) -> Endpoints {
        self.settings.write_timeout = limit;
        self
    }

    /// The hub these endpoints serve.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = status_messenger::web::Endpoints::new(hub);
    /// assert!(!endpoints.hub().is_shut_down());
    /// ```
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The streams' settings.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = status_messenger::web::Endpoints::new(hub);
    /// assert_eq!(endpoints.settings(), &status_messenger::web::Settings::default());
    /// ```
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The session `request` may use, by the authorization hook (the default, or the one given
    /// to [`authorize`](Endpoints::authorize)): what the integrations ask first, and what a
    /// server on another framework asks to keep the same rules.
    ///
    /// # Errors
    ///
    /// The hook's [`Refusal`].
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::{Endpoints, RequestInfo};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = Endpoints::new(hub);
    /// let request = RequestInfo::new(http::HeaderMap::new(), Some("session=never-opened"));
    /// assert_eq!(endpoints.authorize_request(request).await.unwrap_err().status(), 404);
    /// # }
    /// ```
    pub async fn authorize_request(&self, request: RequestInfo) -> Result<SessionId, Refusal> {
        match &self.authorizer {
            Authorizer::Query => session_from_query(&self.hub, &request).await,
            Authorizer::Sync(authorize) => authorize(&request),
            Authorizer::Async(authorize) => authorize(request).await,
        }
    }

    /// Streams (WebSockets and SSE responses) these endpoints and their clones have open now.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert_eq!(status_messenger::web::Endpoints::new(hub).open_streams(), 0);
    /// ```
    pub fn open_streams(&self) -> usize {
        self.streams.open.load(Ordering::Acquire)
    }

    /// Resolves once no stream of these endpoints is open. After [`Hub::shutdown`], every
    /// stream ends with a close frame or a clean end; await this (with a time limit: a client
    /// that stops reading holds its socket) before the process exits, so that they are sent.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = status_messenger::web::Endpoints::new(hub.clone());
    /// hub.shutdown().await;
    /// let limit = std::time::Duration::from_secs(5);
    /// assert!(tokio::time::timeout(limit, endpoints.streams_closed()).await.is_ok());
    /// # }
    /// ```
    pub fn streams_closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let streams = Arc::clone(&self.streams);
        async move {
            loop {
                let closed = streams.closed.notified();
                let mut closed = std::pin::pin!(closed);
                closed.as_mut().enable();
                if streams.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                closed.await;
            }
        }
    }

    /// Shuts the hub down ([`Hub::shutdown`]: every stream says goodbye, every task started
    /// here is asked to stop) and waits up to `grace` for every stream of these endpoints to
    /// have ended ([`streams_closed`](Endpoints::streams_closed)); returns how many were still
    /// open then (0: every goodbye was handed to its socket). A client that stops reading
    /// holds its stream until [`Settings::write_timeout`] has passed, so `grace` bounds the
    /// wait.
    ///
    /// What a server's shutdown runs before it stops serving: on axum, in the future given to
    /// `with_graceful_shutdown` (axum does not wait for upgraded WebSockets, so without it
    /// their close frames are lost when the process exits); on actix-web, before
    /// `ServerHandle::stop` (with actix's own signal handling turned off, as its SIGINT stops
    /// at once without waiting for connections).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    ///
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = status_messenger::web::Endpoints::new(hub.clone());
    /// assert_eq!(endpoints.shutdown(Duration::from_secs(5)).await, 0);
    /// assert!(hub.is_shut_down());
    /// # }
    /// ```
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.hub.shutdown().await;
        if tokio::time::timeout(grace, self.streams_closed())
            .await
            .is_ok()
        {
            return 0;
        }
        let left = self.open_streams();
        tracing::warn!(
            target: "status_messenger::web",
            left,
            ?grace,
            "streams still open after the shutdown grace"
        );
        left
    }

    /// Authorizes a stream's request and reads its resume point: the session and where it
    /// resumes, or the refusal to answer (authorization first: 404 before 400).
    #[cfg_attr(
        not(any(feature = "axum", feature = "actix-web")),
        allow(dead_code, reason = "used by the integrations")
    )]
    pub(crate) async fn admit(&self, request: RequestInfo) -> Result<Admitted, Refusal> {
        let after = request.resume_point();
        let session = self.authorize_request(request).await?;
        Ok(Admitted {
            session,
            after: after?,
        })
    }

    /// Subscribes an admitted stream, which counts as open until its guard is dropped.
    #[cfg_attr(
        not(any(feature = "axum", feature = "actix-web")),
        allow(dead_code, reason = "used by the integrations")
    )]
    pub(crate) fn subscribe(
        &self,
        admitted: &Admitted,
    ) -> Result<(Subscription, StreamGuard), Refusal> {
        let subscription = self
            .hub
            .try_subscribe(&admitted.session, admitted.after)
            .map_err(|error| Refusal::from_subscribe_error(&error))?;
        // A resume point past the newest status would wait silently for statuses numbered
        // below it that never come to it: say where the session is instead.
        if let (Some(after), Some(head)) = (admitted.after, subscription.head_if_numbered_here()) {
            if after > head {
                return Err(Refusal::beyond_head(after, head));
            }
        }
        Ok((subscription, self.guard()))
    }

    /// `POST /cancel`'s body, which carries nothing: read and counted, not kept, so that one over
    /// [`Settings::max_message_bytes`] is refused with 413 before the task is touched (the
    /// contract refuses every body over 64 KiB), and one that has not arrived within
    /// [`Settings::write_timeout`] with 408, so a client that never sends the body it
    /// announced holds nothing. `declared` is the request's `Content-Length`: a body declared
    /// too long is refused without reading any of it.
    async fn discard_body<S, B, E>(&self, declared: Option<&str>, body: S) -> Result<(), Refusal>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let limit = self.settings.effective_max_message_bytes();
        let timeout = self.settings.effective_write_timeout();
        // Counted, not kept: the body holds no memory while it comes.
        super::body::take_body(declared, body, limit, timeout, None).await
    }

    /// `POST /cancel`: the task and its state after the request, or the refusal.
    #[cfg_attr(
        not(any(feature = "axum", feature = "actix-web")),
        allow(dead_code, reason = "used by the integrations")
    )]
    pub(crate) async fn cancel<S, B, E>(
        &self,
        request: RequestInfo,
        body: S,
    ) -> Result<CancelAnswer, Refusal>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let task = request
            .query("task")
            .filter(|task| !task.is_empty())
            .map(str::to_owned);
        let declared = request.header("content-length").map(str::to_owned);
        let session = self.authorize_request(request).await?;
        let task = task.ok_or_else(|| Refusal::bad_request("missing `task` parameter"))?;
        self.discard_body(declared.as_deref(), body).await?;
        match cancel::cancel(&self.hub, &session, &task).await {
            Ok(state) => Ok(CancelAnswer { task, state }),
            Err(error) => Err(Refusal::from_cancel_error(&error)),
        }
    }

    fn guard(&self) -> StreamGuard {
        self.streams.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(Arc::clone(&self.streams))
    }
}

/// A stream request that passed authorization, with its resume point.
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    pub(crate) session: SessionId,
    pub(crate) after: Option<u64>,
}

/// The 202 answer of `POST /cancel`: `{"task": "...", "state": "..."}`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct CancelAnswer {
    pub(crate) task: String,
    pub(crate) state: &'static str,
}

#[derive(Debug, Default)]
struct Streams {
    open: AtomicUsize,
    closed: Notify,
}

/// Held by one open stream; dropping it counts the stream closed.
#[derive(Debug)]
pub(crate) struct StreamGuard(Arc<Streams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}
