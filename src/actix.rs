//! The endpoints on [actix-web](https://docs.rs/actix-web/4): [`configure`] serves `GET /ws`,
//! `GET /events`, `POST /cancel` and `GET /status-messenger.js` of one hub, as the
//! [`web`](crate::web#the-endpoints) module describes them.
//!
//! `configure(hub)` is what `App::configure` (and `Scope::configure`, to mount the endpoints
//! under a prefix) takes; its state lives on its own resources, so it does not clash with the
//! application's. [`Endpoints`] sets the authorization hook (the same one as on axum) and the
//! streams' settings, and tells when every stream has said goodbye.
//!
//! WebSockets go through [actix-ws](https://docs.rs/actix-ws) (the handshake and the client's
//! messages, fragmented or not); a frame whose header claims more than
//! [`Settings::max_message_bytes`](crate::web::Settings::max_message_bytes), or one that takes
//! its fragmented message past it, closes the socket (1009) and ends the connection before its
//! payload is read, once the close frame has been handed to the socket. The frames sent are
//! encoded into one buffer of at most
//! [`Settings::write_buffer_bytes`](crate::web::Settings::write_buffer_bytes) that the response
//! body hands to actix whole, so a burst of statuses leaves in one write, as on axum, and each
//! status is still its own WebSocket message. Server-Sent Events
//! are a streaming body of the library's `SseStream`.
//!
//! # Server settings
//!
//! Serve with `HttpServer::h1_allow_half_closed(false)`: by default actix keeps a connection
//! whose client has closed it (a FIN) until the next write to it fails, so a closed SSE stream
//! stays subscribed until its next keep-alive, 15 to 30 s later. A browser never half-closes
//! a request it still waits for.
//!
//! Serve with `HttpServer::on_connect(endpoints.on_connect())` ([`Endpoints::on_connect`]):
//! actix polls a response body only while its write buffer has room, so without it the
//! connection of a client that never reads is never dropped, not even once its WebSocket
//! stream has ended after [`Settings::write_timeout`](crate::web::Settings::write_timeout);
//! with it the kernel gives the connection up after that timeout.
//!
//! # A complete server
//!
//! A tool that reports its steps and stops when asked, a route that starts it as a task of a
//! session, the endpoints, and a shutdown that says goodbye on every stream. actix's own
//! signal handling is turned off: its SIGINT stops the server at once, without waiting for
//! connections, and its SIGTERM waits for them while the hub still serves every stream, so
//! neither would send the goodbyes. (actix's `web::block` pool knows nothing of sessions;
//! [`Task::run`](crate::Task::run) carries the task's session and cancel to it. It is one pool
//! per actix worker, and each of its threads keeps what it freed in its allocator's cache: a
//! server with many tools at once can share one [`BlockingPool`](crate::BlockingPool) among
//! its workers instead, as the crate's actix demo, `examples/actix_demo.rs`, does.)
//!
//! ```no_run
//! use actix_web::{web, App, HttpResponse, HttpServer};
//! use status_messenger::web::{shutdown_signal, Endpoints, Refusal};
//! use status_messenger::{add_status, is_cancelled, Hub, HubConfig, StatusMessage};
//! fn tool() { // synchronous code that never sees the session nor its task
//!     for step in 1..=5 {
//!         if is_cancelled() { return; } // a Stop on the page, or `POST /cancel`
//!         add_status(StatusMessage::new(format!("step {step}/5")).progress(step, 5));
//!         std::thread::sleep(std::time::Duration::from_millis(200));
//!     }
//! }
//!
//! async fn start_task(hub: web::Data<Hub>, id: web::Path<String>) -> Result<HttpResponse, Refusal> {
//!     if !hub.session_exists(&id).await.unwrap_or(false) {
//!         return Err(Refusal::not_found("unknown session"));
//!     }
//!     let task = hub.start_task(&id).map_err(|e| Refusal::from_start_task(&e))?;
//!     let answer = HttpResponse::Accepted().json(serde_json::json!({ "task": task.id() }));
//!     actix_web::rt::spawn(web::block(move || task.run(tool)));
//!     Ok(answer)
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let hub = Hub::new(HubConfig::default())?;
//!     hub.attach_global()?; // add_status goes to this hub
//!     hub.open_session("demo").await?; // or `hub.create_session()`, one per page
//!     let endpoints = Endpoints::new(hub.clone());
//!     let on_connect = endpoints.on_connect(); // see "Server settings", as is the next line
//!     let app = { let endpoints = endpoints.clone(); move || App::new()
//!         .app_data(web::Data::new(hub.clone()))
//!         .route("/api/sessions/{id}/tasks", web::post().to(start_task))
//!         .configure(endpoints.configure()) };
//!     let server = HttpServer::new(app).h1_allow_half_closed(false).on_connect(on_connect)
//!         .disable_signals().bind("127.0.0.1:3000")?.run();
//!     let handle = server.handle();
//!     actix_web::rt::spawn(async move { // on Ctrl-C or SIGTERM: goodbyes, then stop
//!         shutdown_signal().await;
//!         endpoints.shutdown(std::time::Duration::from_secs(5)).await;
//!         handle.stop(true).await;
//!     });
//!     Ok(server.await?)
//! }
//! ```
//!
//! # Examples
//!
//! In actix's test harness: an unknown session is refused before any upgrade, and an SSE
//! response carries the session's statuses and ends when the hub shuts down.
//!
//! ```
//! use actix_web::{test, App};
//! use status_messenger::Hub;
//!
//! # #[actix_web::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new(Default::default())?;
//! hub.open_session("s1").await?;
//! let app = test::init_service(App::new().configure(status_messenger::actix::configure(hub.clone()))).await;
//!
//! let refused = test::call_service(&app, test::TestRequest::get().uri("/ws?session=nobody").to_request()).await;
//! assert_eq!(refused.status(), 404);
//!
//! hub.publish(Some("s1"), "Searching...")?;
//! let events = test::call_service(&app, test::TestRequest::get().uri("/events?session=s1").to_request()).await;
//! assert_eq!(events.headers().get("content-type").unwrap(), "text/event-stream");
//! hub.shutdown().await;
//! let body = test::read_body(events).await;
//! assert_eq!(body, "retry: 1000\n\nid: 1\ndata: {\"session\":\"s1\",\"seq\":1,\"text\":\"Searching...\"}\n\n");
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{dev, web, FromRequest, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, ProtocolError};
use futures_core::Stream;
use futures_util::StreamExt;

use crate::sync::TaskWaker;
use crate::web::handshake;
use crate::web::ws::{self, Incoming};
pub use crate::web::Endpoints;
use crate::web::{Refusal, RequestInfo, SseStream, StreamGuard, CLIENT_CONTENT_TYPE, CLIENT_JS};
use crate::{Hub, Subscription};

mod outbox;

/// The endpoints of `hub` with the default authorization (the `session` query parameter names
/// a session the hub holds) and [`Settings`](crate::web::Settings), as what `App::configure`
/// takes: `GET /ws`, `GET /events`, `POST /cancel` and `GET /status-messenger.js`. The same as
/// [`Endpoints::new`]`(hub).`[`configure`](Endpoints::configure)`()`.
///
/// # Examples
///
/// ```
/// use actix_web::{test, web, App};
///
/// # #[actix_web::main]
/// # async fn main() {
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// let app = App::new().service(web::scope("/live").configure(status_messenger::actix::configure(hub)));
/// let app = test::init_service(app).await;
/// let js = test::call_service(&app, test::TestRequest::get().uri("/live/status-messenger.js").to_request()).await;
/// assert_eq!(js.status(), 200);
/// # }
/// ```
pub fn configure(hub: Hub) -> impl FnOnce(&mut web::ServiceConfig) + Clone + Send + 'static {
    Endpoints::new(hub).configure()
}

impl Endpoints {
    /// What actix-web's `HttpServer::on_connect` takes, so that a connection whose client
    /// stops reading is dropped (feature `actix-web`): it gives each TCP connection a
    /// `TCP_USER_TIMEOUT` of [`Settings::write_timeout`](crate::web::Settings::write_timeout).
    ///
    /// actix polls a response body only while its write buffer has room: once a client's
    /// socket is full nothing reaches actix from the handler, so a WebSocket (or any response)
    /// to a client that never reads would hold its connection and the bytes buffered for it
    /// forever. With the option, the kernel gives up on a connection whose sent data has not
    /// been taken for that long, and actix drops it on the failed write. It applies to every
    /// connection of the server, so a slow but reading client is not affected, only one that
    /// takes nothing for the whole timeout. On systems without the option (other than Linux
    /// and Android) and on connections that are not plain TCP it does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use status_messenger::web::Endpoints;
    ///
    /// # #[actix_web::main]
    /// # async fn main() -> std::io::Result<()> {
    /// let endpoints = Endpoints::new(status_messenger::Hub::new(Default::default()).unwrap());
    /// let app = endpoints.clone();
    /// let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(app.configure()))
    ///     .on_connect(endpoints.on_connect())
    ///     .workers(1)
    ///     .bind("127.0.0.1:0")?;
    /// let addr = server.addrs()[0];
    /// actix_web::rt::spawn(server.run());
    /// let head = actix_web::rt::task::spawn_blocking(move || {
    ///     let mut socket = std::net::TcpStream::connect(addr)?;
    ///     socket.write_all(b"GET /status-messenger.js HTTP/1.1\r\nHost: x\r\n\r\n")?;
    ///     let mut head = [0u8; 12];
    ///     socket.read_exact(&mut head)?;
    ///     std::io::Result::Ok(head)
    /// })
    /// .await??;
    /// assert_eq!(&head, b"HTTP/1.1 200");
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
    pub fn on_connect(
        &self,
    ) -> impl Fn(&dyn std::any::Any, &mut dev::Extensions) + Send + Sync + 'static {
        let timeout = self.settings().effective_write_timeout();
        move |connection, _| {
            if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                crate::web::drop_stalled_after(socket2::SockRef::from(stream), timeout);
            }
        }
    }

    /// These endpoints as what actix-web's `App::configure` and `Scope::configure` take
    /// (feature `actix-web`). `HttpServer::new` builds the app once per worker: call this in
    /// its factory (clones are cheap and share everything).
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_web::{test, App};
    /// use status_messenger::web::Endpoints;
    ///
    /// # #[actix_web::main]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let endpoints = Endpoints::new(hub);
    /// let app = test::init_service(App::new().configure(endpoints.configure())).await;
    /// let request = test::TestRequest::post().uri("/cancel?session=nobody&task=t").to_request();
    /// assert_eq!(test::call_service(&app, request).await.status(), 404);
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
    pub fn configure(&self) -> impl FnOnce(&mut web::ServiceConfig) + Clone + Send + 'static {
        let endpoints = web::Data::new(self.clone());
        move |config: &mut web::ServiceConfig| {
            config
                // actix routes `HEAD` only where asked to (axum sends it to the `GET`
                // handler), and leaves the body out of a `HEAD` answer itself.
                .service(
                    web::resource("/ws")
                        .app_data(endpoints.clone())
                        .get(ws_handler)
                        .head(ws_handler),
                )
                .service(
                    web::resource("/events")
                        .app_data(endpoints.clone())
                        .get(events_handler)
                        .head(events_handler),
                )
                .service(
                    web::resource("/cancel")
                        .app_data(endpoints)
                        .post(cancel_handler),
                )
                .service(
                    web::resource("/status-messenger.js")
                        .get(client_handler)
                        .head(client_handler),
                );
        }
    }
}

/// A refusal as actix-web answers it: its status, `Content-Type: application/json` and the
/// body `{"error": "..."}`, with `Retry-After` when it has one, as the endpoints answer
/// theirs. So a handler of the application that refuses as the contract does returns
/// `Result<_, Refusal>` and uses `?`.
///
/// # Examples
///
/// ```
/// use actix_web::ResponseError;
/// use status_messenger::web::Refusal;
///
/// let response = Refusal::unavailable("busy").with_retry_after(1).error_response();
/// assert_eq!(response.status(), 503);
/// assert_eq!(response.headers().get("content-type").unwrap(), "application/json");
/// assert_eq!(response.headers().get("retry-after").unwrap(), "1");
/// ```
impl actix_web::ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        refused(self)
    }
}

/// A refusal returned by a handler as it is; see its [`ResponseError`](actix_web::ResponseError)
/// impl.
///
/// # Examples
///
/// ```
/// use actix_web::{test, web, App};
/// use status_messenger::web::Refusal;
///
/// # #[actix_web::main]
/// # async fn main() {
/// let app = test::init_service(
///     App::new().route("/", web::get().to(|| async { Refusal::not_found("no such page") })),
/// )
/// .await;
/// let response = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
/// assert_eq!(response.status(), 404);
/// assert_eq!(test::read_body(response).await, r#"{"error":"no such page"}"#);
/// # }
/// ```
impl actix_web::Responder for Refusal {
    type Body = BoxBody;

    fn respond_to(self, _request: &HttpRequest) -> HttpResponse {
        refused(&self)
    }
}

fn refused(refusal: &Refusal) -> HttpResponse {
    let status =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response.content_type(ContentType::json());
    if let Some(seconds) = refusal.retry_after() {
        response.insert_header((header::RETRY_AFTER, seconds.to_string()));
    }
    if refusal.status() == 426 {
        response.insert_header((header::SEC_WEBSOCKET_VERSION, handshake::WEBSOCKET_VERSION));
    }
    response.body(refusal.body())
}

/// The request as the framework-free view: its headers (copied into `http` 1 types, which is
/// what the hook sees on every framework) and its query.
fn request_info(request: &HttpRequest) -> RequestInfo {
    let mut headers = http::HeaderMap::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let name = http::HeaderName::from_bytes(name.as_str().as_bytes());
        let value = http::HeaderValue::from_bytes(value.as_bytes());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    RequestInfo::new(headers, Some(request.query_string()))
}

async fn ws_handler(
    request: HttpRequest,
    body: web::Payload,
    endpoints: web::Data<Endpoints>,
) -> HttpResponse {
    let info = request_info(&request);
    // Checked here, answered after the session's refusal, which comes before anything else.
    let handshake = handshake::check(info.headers());
    let admitted = match endpoints.admit(info).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(&refusal),
    };
    if let Err(refusal) = handshake {
        return refused(&refusal);
    }
    let limit = endpoints.settings().effective_max_message_bytes();
    // actix-ws waits for a whole frame before it checks its size: the gate refuses an
    // oversized one from its header, before its payload is read.
    let gate: Pin<Box<dyn Stream<Item = Result<web::Bytes, PayloadError>>>> =
        Box::pin(FrameGate::new(body, limit));
    let mut gated = dev::Payload::Stream { payload: gate };
    let Ok(body) = web::Payload::from_request(&request, &mut gated).await else {
        return refused(&Refusal::bad_request("unreadable request body"));
    };
    let Ok((response, session, messages)) = actix_ws::handle(&request, body) else {
        return refused(&Refusal::bad_request(
            "expected a WebSocket upgrade request",
        ));
    };
    let (subscription, guard) = match endpoints.subscribe(&admitted) {
        Ok(opened) => opened,
        Err(refusal) => return refused(&refusal),
    };
    // actix-ws's session and body are replaced by the outbox: its frames go to the
    // connection as one chunk per burst, not through a channel of 32 messages.
    drop(session);
    // Continuations are joined into their message, so a cancel frame sent in fragments is
    // still one; the gate has refused any message over the limit before this buffers it.
    let messages = messages
        .max_frame_size(limit)
        .aggregate_continuations()
        .max_continuation_size(limit);
    let drop_connection = Arc::new(DropConnection::default());
    let write_buffer = endpoints.settings().effective_write_buffer_bytes();
    let (response, replaced) = response.into_parts();
    let (sink, body, body_open) = outbox::outbox(write_buffer, replaced);
    actix_web::rt::spawn(forward(
        endpoints.into_inner(),
        sink,
        body_open,
        messages,
        subscription,
        guard,
        Arc::clone(&drop_connection),
    ));
    response
        .set_body(DropsConnection {
            body: body.boxed(),
            drop_connection,
            close_written: false,
        })
        .map_into_boxed_body()
}

async fn forward(
    endpoints: Arc<Endpoints>,
    sink: outbox::OutboxSink,
    body_open: outbox::BodyOpen,
    messages: actix_ws::AggregatedMessageStream,
    subscription: Subscription,
    _guard: StreamGuard,
    drop_connection: Arc<DropConnection>,
) {
    // `body_open` holds the response body open until the end is known, so it ends knowing
    // it. A close frame ends the body at once, so an oversized frame sets the flag as it
    // arrives.
    let too_large = Arc::clone(&drop_connection);
    let incoming = messages.map(move |read| {
        let frame = incoming(read);
        if frame == Incoming::TooLarge {
            too_large.set(DropCause::Oversized);
        }
        frame
    });
    let ended = ws::forward_socket(
        endpoints.hub(),
        subscription,
        outbox::OutboxSocket::new(sink, incoming),
        endpoints.settings(),
    )
    .await;
    if ended == ws::Ended::Stalled {
        // A client that stopped reading: the body errs at once, so actix drops the
        // connection and what is buffered for it, instead of waiting for a drain that a
        // client that never reads never lets happen.
        drop_connection.set(DropCause::Stalled);
    }
    drop(body_open);
    tracing::debug!(target: "status_messenger::web", ?ended, "WebSocket stream ended");
}

fn incoming(read: Result<AggregatedMessage, ProtocolError>) -> Incoming {
    match read {
        Ok(AggregatedMessage::Text(text)) => Incoming::Text(String::from(&*text)),
        Ok(AggregatedMessage::Ping(payload)) => Incoming::Ping(payload.to_vec()),
        Ok(AggregatedMessage::Close(_)) => Incoming::Close,
        Ok(AggregatedMessage::Binary(_) | AggregatedMessage::Pong(_)) => Incoming::Other,
        Err(ProtocolError::Overflow) => Incoming::TooLarge,
        Err(ProtocolError::Io(error))
            if matches!(
                error
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<PayloadError>()),
                Some(PayloadError::Overflow)
            ) =>
        {
            Incoming::TooLarge
        }
        Err(_) => Incoming::Failed,
    }
}

/// Why a WebSocket's connection is to be dropped, in a [`DropConnection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum DropCause {
    /// A client message (or frame) over the limit: the close frame (1009) goes out first.
    Oversized = 1,
    /// A write did not finish within the write timeout: the client stopped reading.
    Stalled = 2,
}

/// The flag the forwarding task sets for the WebSocket's response body (see
/// [`DropsConnection`]): the cause, and the body's task to wake so it sees it.
///
/// # Invariants
///
/// `cause` is 0 (keep the connection) or a [`DropCause`]; once set it only changes from
/// `Oversized` to `Stalled`, never back to 0.
#[derive(Debug, Default)]
struct DropConnection {
    cause: AtomicU8,
    body: TaskWaker,
}

impl DropConnection {
    fn set(&self, cause: DropCause) {
        self.cause.fetch_max(cause as u8, Ordering::AcqRel);
        self.body.wake();
    }

    fn cause(&self) -> Option<DropCause> {
        match self.cause.load(Ordering::Acquire) {
            1 => Some(DropCause::Oversized),
            2 => Some(DropCause::Stalled),
            _ => None,
        }
    }
}

/// The WebSocket's response body, which makes actix drop the connection (a body error is how
/// a handler does that): after the close frame has been written for an oversized message, as
/// actix would otherwise keep reading (and discarding) what the client sends; at once for a
/// client that stopped reading, whose socket may never drain.
///
/// actix drops what it has not yet written with the connection, and it writes only once the
/// body has nothing ready: so after the close frame the body answers `Pending` once (waking
/// itself) before its error, and the close frame goes to the socket first.
struct DropsConnection {
    body: BoxBody,
    drop_connection: Arc<DropConnection>,
    /// Set once the body has ended for an oversized message and yielded to a write.
    close_written: bool,
}

impl MessageBody for DropsConnection {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        // Registered before the flag is read, so a cause set in between still wakes this.
        self.drop_connection.body.register(cx.waker());
        if self.drop_connection.cause() == Some(DropCause::Stalled) {
            return Poll::Ready(Some(Err(
                "the WebSocket's client stopped reading: dropped after the write timeout".into(),
            )));
        }
        match Pin::new(&mut self.body).poll_next(cx) {
            Poll::Ready(None) => match self.drop_connection.cause() {
                Some(DropCause::Oversized) if !self.close_written => {
                    self.close_written = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(DropCause::Oversized) => Poll::Ready(Some(Err(
                    "the WebSocket was closed for an oversized message".into(),
                ))),
                Some(DropCause::Stalled) => Poll::Ready(Some(Err(
                    "the WebSocket's client stopped reading: dropped after the write timeout"
                        .into(),
                ))),
                None => Poll::Ready(None),
            },
            other => other,
        }
    }
}

/// The client's bytes on their way to actix-ws, read frame header by frame header
/// ([`Frames`]): a frame whose header claims more than the limit, or takes its fragmented
/// message past it, ends the stream with [`PayloadError::Overflow`] at once, and nothing more
/// is read from the connection.
///
/// # Invariants
///
/// After the overflow (or the end) `done` is set and `payload` is never polled again.
struct FrameGate {
    payload: web::Payload,
    frames: Frames,
    done: bool,
}

impl FrameGate {
    fn new(payload: web::Payload, limit: usize) -> FrameGate {
        FrameGate {
            payload,
            frames: Frames::new(u64::try_from(limit).unwrap_or(u64::MAX)),
            done: false,
        }
    }
}

/// Where a stream of WebSocket bytes is among its frames.
///
/// # Invariants
///
/// `header[..have]` is the start of the next frame's header while `remaining` is 0; otherwise
/// `remaining` payload bytes of the current frame are still to pass. `message` is what the
/// headers of the data message still unfinished (its last frame not yet seen) claimed in all,
/// at most `limit`; 0 between messages.
#[derive(Debug)]
struct Frames {
    limit: u64,
    header: [u8; 14],
    have: usize,
    remaining: u64,
    message: u64,
}

impl Frames {
    fn new(limit: u64) -> Frames {
        Frames {
            limit,
            header: [0; 14],
            have: 0,
            remaining: 0,
            message: 0,
        }
    }

    /// Follows the frames through `chunk`; `Err` once a header claims more than the limit,
    /// for its frame or for its message with the frames before it.
    fn pass(&mut self, chunk: &[u8]) -> Result<(), PayloadError> {
        let mut at = 0;
        while at < chunk.len() {
            if self.remaining > 0 {
                let left = u64::try_from(chunk.len() - at).unwrap_or(u64::MAX);
                let skip = self.remaining.min(left);
                self.remaining -= skip;
                // `skip` is at most what is left of the chunk, a usize.
                at += usize::try_from(skip).unwrap_or(chunk.len() - at);
                continue;
            }
            self.header[self.have] = chunk[at];
            self.have += 1;
            at += 1;
            if let Some(length) = frame_length(&self.header[..self.have]) {
                if length > self.limit {
                    return Err(PayloadError::Overflow);
                }
                let first = self.header[0];
                // Control frames (opcode 8 and up) may come between a message's fragments and
                // are not part of it; a continuation (opcode 0) adds to the message.
                if first & 0x08 == 0 {
                    let so_far = if first & 0x0f == 0 { self.message } else { 0 };
                    let message = so_far.saturating_add(length);
                    if message > self.limit {
                        return Err(PayloadError::Overflow);
                    }
                    let last = first & 0x80 != 0;
                    self.message = if last { 0 } else { message };
                }
                self.have = 0;
                self.remaining = length;
            }
        }
        Ok(())
    }
}

/// The payload length a complete WebSocket frame header claims (`None` while `header` is not
/// complete yet): RFC 6455 section 5.2.
fn frame_length(header: &[u8]) -> Option<u64> {
    let second = *header.get(1)?;
    let masked = second & 0x80 != 0;
    let (extended, short) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        short => (0, Some(u64::from(short))),
    };
    let complete = 2 + extended + if masked { 4 } else { 0 };
    if header.len() < complete {
        return None;
    }
    Some(short.unwrap_or_else(|| {
        header[2..2 + extended]
            .iter()
            .fold(0u64, |length, byte| (length << 8) | u64::from(*byte))
    }))
}

impl Stream for FrameGate {
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.payload).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match self.frames.pass(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(overflow) => {
                    self.done = true;
                    Poll::Ready(Some(Err(overflow)))
                }
            },
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

async fn events_handler(request: HttpRequest, endpoints: web::Data<Endpoints>) -> HttpResponse {
    let opened = match endpoints.admit(request_info(&request)).await {
        Ok(admitted) => endpoints.subscribe(&admitted),
        Err(refusal) => Err(refusal),
    };
    let (subscription, guard) = match opened {
        Ok(opened) => opened,
        Err(refusal) => return refused(&refusal),
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"));
    if request.method() == actix_web::http::Method::HEAD {
        // actix polls a `HEAD` answer's body to its end, only to write none of it: an SSE
        // stream would hold the request (and its subscription) open for as long as it lasts.
        drop((subscription, guard));
        return response.streaming(futures_util::stream::empty::<Result<web::Bytes, Infallible>>());
    }
    let body = SseStream::new(subscription, endpoints.settings()).map(move |chunk| {
        // The stream counts as open for as long as its body lives.
        let _open = &guard;
        Ok::<_, Infallible>(web::Bytes::from(chunk))
    });
    response.streaming(body)
}

async fn cancel_handler(
    request: HttpRequest,
    body: web::Payload,
    endpoints: web::Data<Endpoints>,
) -> HttpResponse {
    match endpoints.cancel(request_info(&request), body).await {
        Ok(answer) => HttpResponse::Accepted()
            .content_type(ContentType::json())
            .body(serde_json::to_string(&answer).unwrap_or_default()),
        Err(refusal) => refused(&refusal),
    }
}

async fn client_handler() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CLIENT_CONTENT_TYPE)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(CLIENT_JS)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{frame_length, Frames};

    /// A masked client frame header claiming `length` bytes, in the shortest form: a whole
    /// binary message.
    fn header(length: u64) -> Vec<u8> {
        frame_header(0x82, length)
    }

    /// A masked client frame header with the first byte `first` (FIN bit and opcode) claiming
    /// `length` bytes.
    fn frame_header(first: u8, length: u64) -> Vec<u8> {
        let mut header = vec![first];
        match length {
            0..=125 => header.push(0x80 | length as u8),
            126..=0xffff => {
                header.push(0x80 | 126);
                header.extend_from_slice(&(length as u16).to_be_bytes());
            }
            _ => {
                header.push(0x80 | 127);
                header.extend_from_slice(&length.to_be_bytes());
            }
        }
        header.extend_from_slice(&[1, 2, 3, 4]);
        header
    }

    /// What [`Frames`] says of `bytes` split at `cuts`, with the limit `limit`.
    fn gate(bytes: &[u8], cuts: &[usize], limit: u64) -> Result<(), ()> {
        let mut frames = Frames::new(limit);
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        points.push(bytes.len());
        let mut at = 0;
        for point in points {
            frames.pass(&bytes[at..point]).map_err(|_| ())?;
            at = point;
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn frame_length_reads_every_header_form(length in 0u64..=u64::MAX >> 1) {
            let header = header(length);
            prop_assert_eq!(frame_length(&header), Some(length));
            for cut in 0..header.len() {
                prop_assert_eq!(frame_length(&header[..cut]), None);
            }
        }

        #[test]
        fn frames_under_the_limit_pass_however_split_and_one_over_is_caught(
            lengths in proptest::collection::vec(0u64..300, 0..8),
            over in proptest::option::of(301u64..=u64::MAX >> 1),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut bytes = Vec::new();
            for length in &lengths {
                bytes.extend(header(*length));
                bytes.extend(std::iter::repeat_n(0u8, *length as usize));
            }
            if let Some(over) = over {
                bytes.extend(header(over));
            }
            prop_assert_eq!(gate(&bytes, &cuts, 300).is_err(), over.is_some());
        }

        #[test]
        fn a_fragmented_message_counts_whole_and_control_frames_between_do_not(
            messages in proptest::collection::vec(
                proptest::collection::vec((0u64..120, any::<bool>()), 1..6),
                1..5,
            ),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            // Each message: fragments of the given lengths, each followed by a ping if asked.
            let limit = 300;
            let mut bytes = Vec::new();
            let mut over = false;
            for fragments in &messages {
                let last = fragments.len() - 1;
                for (i, (length, ping)) in fragments.iter().enumerate() {
                    let opcode = if i == 0 { 0x01 } else { 0x00 };
                    let fin = if i == last { 0x80 } else { 0x00 };
                    bytes.extend(frame_header(fin | opcode, *length));
                    bytes.extend(std::iter::repeat_n(0u8, *length as usize));
                    if *ping {
                        bytes.extend(frame_header(0x89, 100));
                        bytes.extend(std::iter::repeat_n(0u8, 100));
                    }
                }
                over |= fragments.iter().map(|(length, _)| length).sum::<u64>() > limit;
            }
            prop_assert_eq!(gate(&bytes, &cuts, limit).is_err(), over);
        }
    }
}
