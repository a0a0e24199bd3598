//! The endpoints on [axum](https://docs.rs/axum/0.8): [`router`] serves `GET /ws`,
//! `GET /events`, `POST /cancel` and `GET /status-messenger.js` of one hub, as the
//! [`web`](crate::web#the-endpoints) module describes them.
//!
//! The router has its state applied: merge it into your application, or nest it under a
//! prefix (`Router::new().nest("/live", router(hub))`, and `base: "/live"` for the browser
//! client). [`Endpoints`] sets the authorization hook and the streams' settings, and tells when
//! every stream has said goodbye.
//!
//! It is built on axum's own pieces: [`WebSocketUpgrade`] (with its frame and message limits,
//! so an oversized frame is refused as it arrives) and [`Sse`] with [`KeepAlive`].
//!
//! # A complete server
//!
//! A tool that reports its steps and stops when asked, a route that starts it as a task of a
//! session, the endpoints, and a shutdown that says goodbye on every stream (a page with
//! `import { connect } from "/status-messenger.js"` follows the session, and its
//! `stream.cancel(task)` stops the tool):
//!
//! ```no_run
//! use axum::{extract::{Path, State}, http::StatusCode, routing::post, serve::ListenerExt, Json, Router};
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
//! type Started = (StatusCode, Json<serde_json::Value>); // 202 and {"task": ID}
//! async fn start_task(State(hub): State<Hub>, Path(id): Path<String>) -> Result<Started, Refusal> {
//!     if !hub.session_exists(&id).await.unwrap_or(false) {
//!         return Err(Refusal::not_found("unknown session"));
//!     }
//!     let task = hub.start_task(&id).map_err(|e| Refusal::from_start_task(&e))?;
//!     let answer = (StatusCode::ACCEPTED, Json(serde_json::json!({ "task": task.id() })));
//!     // The task carries its session and its cancel to the blocking thread.
//!     tokio::task::spawn_blocking(move || task.run(tool));
//!     Ok(answer)
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let hub = Hub::new(HubConfig::default())?;
//!     hub.attach_global()?; // add_status goes to this hub
//!     hub.open_session("demo").await?; // or `hub.create_session()`, one per page
//!     let endpoints = Endpoints::new(hub.clone());
//!     let app = Router::new()
//!         .route("/api/sessions/{id}/tasks", post(start_task))
//!         .with_state(hub)
//!         .merge(endpoints.router());
//!     // A client that stops reading is dropped after the write timeout, SSE included.
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?.tap_io(endpoints.on_accept());
//!     // On Ctrl-C or SIGTERM: goodbyes on every stream (axum does not wait for WebSockets).
//!     let grace = std::time::Duration::from_secs(5);
//!     let stop = async move { shutdown_signal().await; endpoints.shutdown(grace).await; };
//!     Ok(axum::serve(listener, app).with_graceful_shutdown(stop).await?)
//! }
//! ```
//!
//! # Examples
//!
//! The endpoints on a free port: a WebSocket gets the session's statuses, an unknown session is
//! refused before any upgrade, and shutting the hub down closes the socket.
//!
//! ```
//! use futures_util::StreamExt;
//! use status_messenger::Hub;
//! use tokio_tungstenite::tungstenite::Message;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new(Default::default())?;
//! hub.open_session("s1").await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let app = status_messenger::axum::router(hub.clone());
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! hub.publish(Some("s1"), "Searching...")?;
//! let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?session=s1")).await?;
//! let Some(Ok(Message::Text(frame))) = ws.next().await else { panic!() };
//! assert_eq!(frame.as_str(), r#"{"session":"s1","seq":1,"text":"Searching..."}"#);
//!
//! let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?session=nobody")).await;
//! let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else { panic!() };
//! assert_eq!(response.status(), 404);
//!
//! hub.shutdown().await;
//! let Some(Ok(Message::Close(Some(close)))) = ws.next().await else { panic!() };
//! assert_eq!(u16::from(close.code), 1001);
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::future::ready;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{Sink, Stream, StreamExt};

use crate::web::handshake;
use crate::web::ws::{self, Incoming, Outgoing};
pub use crate::web::Endpoints;
use crate::web::{
    Frame, Refusal, RequestInfo, StreamGuard, CLIENT_CONTENT_TYPE, CLIENT_JS, KEEPALIVE_FRAME,
};
use crate::{Hub, Subscription};

/// Bytes a WebSocket reader makes room for per read. Clients send nothing but the odd cancel
/// frame, and the reader clears this room on every poll, so tungstenite's 128 KiB default cost
/// a 128 KiB memset per socket each time frames were written; larger frames still arrive, over
/// several reads.
const READ_BUFFER_BYTES: usize = 1024;

/// The endpoints of `hub` with the default authorization (the `session` query parameter names
/// a session the hub holds) and [`Settings`](crate::web::Settings): `GET /ws`, `GET /events`,
/// `POST /cancel` and `GET /status-messenger.js`. The same as
/// [`Endpoints::new`]`(hub).`[`router`](Endpoints::router)`()`.
///
/// # Examples
///
/// ```
/// use axum::Router;
/// use status_messenger::Hub;
///
/// let hub = Hub::new(Default::default()).unwrap();
/// let app: Router = Router::new()
///     .route("/healthz", axum::routing::get(|| async { "ok" }))
///     .nest("/live", status_messenger::axum::router(hub));
/// # let _ = app;
/// ```
pub fn router<S>(hub: Hub) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Endpoints::new(hub).router()
}

impl Endpoints {
    /// These endpoints as an axum [`Router`] with its state applied (feature `axum`): merge it
    /// into an application or nest it under a prefix.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use status_messenger::web::Endpoints;
    /// use status_messenger::Hub;
    ///
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let endpoints = Endpoints::new(hub).keep_alive(Duration::from_secs(10));
    /// let app: axum::Router = endpoints.router();
    /// assert_eq!(endpoints.open_streams(), 0);
    /// # let _ = app;
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/ws", get(ws_handler))
            .route("/events", get(events_handler))
            .route("/cancel", post(cancel_handler))
            .route("/status-messenger.js", get(client_handler))
            .with_state(Arc::new(self.clone()))
    }
}

impl Endpoints {
    /// What to do with each accepted connection (feature `axum`), for
    /// `axum::serve(listener.tap_io(endpoints.on_accept()), app)` (axum's `ListenerExt`), or for
    /// a server's own accept loop: on Linux it sets the socket's `TCP_USER_TIMEOUT` to
    /// [`Settings::write_timeout`](crate::web::Settings::write_timeout), so a client that
    /// stops reading is dropped once the kernel has held its unread bytes that long.
    ///
    /// A WebSocket sees such a client itself (its writes have a deadline), but an SSE response
    /// is written by hyper, which stops asking for more once the socket is full: without this
    /// an SSE client that never reads keeps its connection and its subscription for as long as
    /// it stays connected. Elsewhere than Linux (and Android) it does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::serve::ListenerExt;
    /// use status_messenger::web::Endpoints;
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let endpoints = Endpoints::new(status_messenger::Hub::new(Default::default()).unwrap());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = listener.local_addr()?;
    /// let app: axum::Router = endpoints.router();
    /// let listener = listener.tap_io(endpoints.on_accept());
    /// tokio::spawn(async move { axum::serve(listener, app).await });
    ///
    /// let mut socket = tokio::net::TcpStream::connect(addr).await?;
    /// socket.write_all(b"GET /status-messenger.js HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    /// let mut head = [0u8; 12];
    /// socket.read_exact(&mut head).await?;
    /// assert_eq!(&head, b"HTTP/1.1 200");
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn on_accept(&self) -> impl FnMut(&mut tokio::net::TcpStream) + Send + Sync + 'static {
        let timeout = self.settings().effective_write_timeout();
        move |stream| crate::web::drop_stalled_after(socket2::SockRef::from(&*stream), timeout)
    }
}

/// A refusal as axum answers it: its status, `Content-Type: application/json` and the body
/// `{"error": "..."}`, with `Retry-After` when it has one, as the endpoints answer theirs. So a
/// route of the application that refuses as the contract does returns `Result<_, Refusal>`.
///
/// # Examples
///
/// ```
/// use axum::response::IntoResponse;
/// use status_messenger::web::Refusal;
///
/// let response = Refusal::unavailable("busy").with_retry_after(1).into_response();
/// assert_eq!(response.status(), 503);
/// assert_eq!(response.headers()["content-type"], "application/json");
/// assert_eq!(response.headers()["retry-after"], "1");
/// ```
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refused(&self)
    }
}

fn refused(refusal: &Refusal) -> Response {
    let status =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        refusal.body(),
    )
        .into_response();
    if let Some(seconds) = refusal.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if refusal.status() == 426 {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(handshake::WEBSOCKET_VERSION),
        );
    }
    response
}

async fn ws_handler(State(endpoints): State<Arc<Endpoints>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let info = RequestInfo::new(parts.headers.clone(), parts.uri.query());
    let admitted = match endpoints.admit(info).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(&refusal),
    };
    if let Err(refusal) = handshake::check(&parts.headers) {
        return refused(&refusal);
    }
    let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
        return refused(&Refusal::bad_request(
            "expected a WebSocket upgrade request",
        ));
    };
    let (subscription, guard) = match endpoints.subscribe(&admitted) {
        Ok(opened) => opened,
        Err(refusal) => return refused(&refusal),
    };
    let settings = endpoints.settings();
    let limit = settings.effective_max_message_bytes();
    let write_buffer = settings.effective_write_buffer_bytes();
    // What the write buffer may hold while the socket does not take it: one buffer's worth,
    // plus room for the largest frame the hub can make (its text and its data each at most
    // `max_status_bytes`, every byte escaped as `\u00XX`, plus its fields). Past it
    // tungstenite refuses the frame (and keeps just the latest pong), so a client that never
    // reads cannot grow it.
    let max_frame = endpoints
        .hub()
        .config()
        .max_status_bytes
        .saturating_mul(12)
        .saturating_add(64 * 1024);
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(write_buffer)
        .max_write_buffer_size(write_buffer.saturating_add(max_frame))
        .on_upgrade(move |socket| forward(endpoints, socket, subscription, guard))
}

async fn forward(
    endpoints: Arc<Endpoints>,
    socket: WebSocket,
    subscription: Subscription,
    _guard: StreamGuard,
) {
    let ended = ws::forward_socket(
        endpoints.hub(),
        subscription,
        AxumSocket(socket),
        endpoints.settings(),
    )
    .await;
    tracing::debug!(target: "status_messenger::web", ?ended, "WebSocket stream ended");
}

/// axum's socket in the loop's own frames: one task owns it whole, reading and writing, so
/// its frames take no lock (`StreamExt::split` would share it between two halves).
struct AxumSocket(WebSocket);

impl Sink<Outgoing> for AxumSocket {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Outgoing) -> Result<(), Self::Error> {
        Pin::new(&mut self.0).start_send(outgoing(frame))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

impl ws::Socket for AxumSocket {}

impl Stream for AxumSocket {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|read| read.map(incoming))
    }
}

fn outgoing(frame: Outgoing) -> Message {
    match frame {
        Outgoing::Text(text) => Message::Text(text.into()),
        Outgoing::Pong(payload) => Message::Pong(payload.into()),
        Outgoing::Close { code, reason } => Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    }
}

fn incoming(read: Result<Message, axum::Error>) -> Incoming {
    match read {
        Ok(Message::Text(text)) => Incoming::Text(text.as_str().to_owned()),
        Ok(Message::Close(_)) => Incoming::Close,
        // tungstenite queues the pong by itself; the loop sees that it leaves.
        Ok(Message::Ping(_)) => Incoming::Pinged,
        Ok(_) => Incoming::Other,
        Err(error) => match error.into_inner().downcast::<tungstenite::Error>() {
            Ok(error) if matches!(*error, tungstenite::Error::Capacity(_)) => Incoming::TooLarge,
            _ => Incoming::Failed,
        },
    }
}

async fn events_handler(
    State(endpoints): State<Arc<Endpoints>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let info = RequestInfo::new(headers, query.as_deref());
    let opened = match endpoints.admit(info).await {
        Ok(admitted) => endpoints.subscribe(&admitted),
        Err(refusal) => Err(refusal),
    };
    let (subscription, guard) = match opened {
        Ok(opened) => opened,
        Err(refusal) => return refused(&refusal),
    };
    let settings = endpoints.settings();
    let retry = SseEvent::default().retry(settings.sse_retry);
    let events = subscription.filter_map(|event| ready(Frame::encode(&event).map(sse_event)));
    let stream = futures_util::stream::once(ready(retry))
        .chain(events)
        .map(move |event| {
            // The stream counts as open for as long as its body lives.
            let _open = &guard;
            Ok::<_, Infallible>(event)
        });
    // The same message as `SseStream`'s (`SSE_KEEPALIVE`): a comment for proxies and a
    // `keepalive` event for the page's watchdog.
    let keep_alive = KeepAlive::new()
        .interval(settings.effective_keep_alive())
        .event(
            SseEvent::default()
                .comment("keep-alive")
                .event("keepalive")
                .data(KEEPALIVE_FRAME),
        );
    (
        [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )],
        Sse::new(stream).keep_alive(keep_alive),
    )
        .into_response()
}

fn sse_event(frame: Frame) -> SseEvent {
    let mut event = SseEvent::default();
    if let Some(id) = frame.sse_id() {
        event = event.id(id.to_string());
    }
    if let Some(name) = frame.sse_event() {
        event = event.event(name);
    }
    event.data(frame.into_json())
}

async fn cancel_handler(
    State(endpoints): State<Arc<Endpoints>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    match endpoints
        .cancel(
            RequestInfo::new(headers, query.as_deref()),
            body.into_data_stream(),
        )
        .await
    {
        Ok(answer) => (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&answer).unwrap_or_default(),
        )
            .into_response(),
        Err(refusal) => refused(&refusal),
    }
}

async fn client_handler() -> Response {
    (
        [
            (header::CONTENT_TYPE, CLIENT_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CLIENT_JS,
    )
        .into_response()
}
