//! The framework-free pieces of the WebSocket and Server-Sent Events endpoints, for servers on
//! any framework; the `axum` and `actix-web` features serve them ready-made.
//!
//! The endpoints of the [HTTP contract](#the-endpoints) are built from these, and so is a
//! server on another framework:
//!
//! - [`Frame::encode`]: the one place where an [`Event`](crate::Event) becomes its JSON frame
//!   (and its SSE message, [`Frame::write_sse`]).
//! - [`RequestInfo::resume_point`] and [`resume_point`]: where a stream resumes, from
//!   `Last-Event-ID`, `last_event_id` or `after`.
//! - [`SseStream`]: a subscription as an SSE body, with keep-alives and batched chunks.
//! - [`ws::forward`]: a subscription forwarded over any `Sink`/`Stream` of WebSocket frames,
//!   with batched writes, keep-alive frames, pings answered, cancel frames read and close frames.
//! - [`Endpoints`], [`RequestInfo`] and [`Refusal`]: which session a request may read, decided
//!   once for every framework ([`Endpoints::authorize`]), and [`Settings`].
//! - [`read_body`]: a request's body within a size and a time limit, refused with the
//!   contract's 413 (or 408, or 400) otherwise.
//! - [`CLIENT_JS`]: the browser client, an ES module, with its TypeScript declarations
//!   ([`CLIENT_TYPES`]).
//!
//! # The endpoints
//!
//! | method, path | what it does | answers |
//! | --- | --- | --- |
//! | `GET /ws?session=ID[&after=SEQ]` | a WebSocket of the session's statuses | 101, then frames |
//! | `GET /events?session=ID` | Server-Sent Events of them; resumes from `Last-Event-ID` (or `last_event_id`) | 200 `text/event-stream` |
//! | `POST /cancel?session=ID&task=ID` | asks that task to stop | 202 `{"task", "state"}` |
//! | `GET /status-messenger.js` | the browser client, an ES module | 200 `text/javascript` |
//!
//! - The session is the one the authorization hook names: by default the `session` query
//!   parameter, which must be a session the hub holds ([`session_from_query`]). Its
//!   [`Refusal`] (404 `{"error": "..."}` for an unknown or malformed session) is answered
//!   before any upgrade; then a resume point that is not a number is 400. On `/ws`, a request
//!   that is no WebSocket handshake is then 400 (no `Connection: Upgrade` and
//!   `Upgrade: websocket`, or no `Sec-WebSocket-Key` of 16 bytes in base64), and one of
//!   another version than 13 is 426 with `Sec-WebSocket-Version: 13`. Last, a resume point
//!   beyond the session's newest status is 400, with `"head": n` in the body
//!   ([`Refusal::beyond_head`]; checked where this process numbers the session's statuses, the
//!   in-memory hub: a shared backend's local head may trail its store).
//! - Statuses are `{"session": "ID", "seq": n, "text": "..."}`, with the optional fields `task`,
//!   `progress`, `level`, `key` and `data` when they are set ([`Frame`]); what a client cannot
//!   have is one `{"type": "gap", "from": a, "to": b}` (SSE: `event: gap`), and the stream goes
//!   on. Task updates are `{"type": "task", ...}` (SSE: `event: task`, no `id:`), and every
//!   stream starts with one for each task of the session still known.
//! - A stream that sent nothing for [`Settings::keep_alive`] (15 s) sends a keep-alive: on SSE
//!   a comment line with a `keepalive` event ([`SSE_KEEPALIVE`]), on the WebSocket the text
//!   frame `{"type": "keepalive"}`, so a page sees either (its watchdog's proof of life).
//! - WebSocket client frames are ignored, except `{"type": "cancel", "task": "ID"}`; pings are
//!   answered; a message (or a frame) over [`Settings::max_message_bytes`] (64 KiB) closes the
//!   socket (1009).
//! - `POST /cancel` reads no parameters from its body. After the authorization, a missing
//!   `task` parameter is 400; then a body over [`Settings::max_message_bytes`] (64 KiB) is
//!   answered 413 and one that has not arrived within [`Settings::write_timeout`] 408, before
//!   the task is touched.
//! - When the hub shuts down (or the session is closed), every WebSocket gets a close frame
//!   (1001, "going away") and every SSE response ends cleanly, after what was accepted before.
//!
//! # Examples
//!
//! The pieces on their own: a resume point read from a request, and a subscription's events
//! as SSE text.
//!
//! ```
//! use futures_util::StreamExt;
//! use status_messenger::web::{RequestInfo, Settings, SseStream};
//! use status_messenger::Hub;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::new(Default::default()).unwrap();
//! for text in ["one", "two", "three"] {
//!     hub.publish(Some("s1"), text).unwrap();
//! }
//! let mut headers = http::HeaderMap::new();
//! headers.insert("last-event-id", "2".parse().unwrap());
//! let request = RequestInfo::new(headers, Some("session=s1"));
//!
//! let after = request.resume_point().unwrap();
//! let mut body = SseStream::new(hub.subscribe("s1", after), &Settings::default());
//! body.next().await; // the retry hint
//! let chunk = body.next().await.unwrap();
//! assert!(chunk.starts_with("id: 3\ndata: "));
//! assert!(chunk.contains(r#""text":"three""#));
//! # }
//! ```

// # Layout
//
// `request` (RequestInfo, Refusal, the default hook), `body` (a body within limits), `resume` (resume points), `frame` (the
// one encoder, and the client's frames), `settings`, `sse` and `ws` (the two stream shapes),
// `endpoints` (the endpoints as one value) and `cancel` (the one place a cancel goes).

mod body;
mod cancel;
mod client;
mod endpoints;
mod frame;
#[cfg_attr(
    not(any(feature = "axum", feature = "actix-web")),
    allow(dead_code, reason = "used by the integrations")
)]
pub(crate) mod handshake;
mod request;
mod resume;
mod settings;
mod signal;
mod sse;
pub mod ws;

/// Sets `socket`'s `TCP_USER_TIMEOUT` (Linux and Android; nothing elsewhere), so that the
/// kernel drops a connection whose sent bytes stay unread (unacknowledged, or behind a zero
/// window) for `timeout`: how the integrations drop a client that stopped reading where no
/// write of theirs waits with a deadline.
#[cfg(any(feature = "axum", feature = "actix-web"))]
pub(crate) fn drop_stalled_after(socket: socket2::SockRef<'_>, timeout: std::time::Duration) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(error) = socket.set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(
            target: "status_messenger::web",
            %error,
            "TCP_USER_TIMEOUT not set: a client that stops reading keeps its connection"
        );
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (socket, timeout);
}

pub use self::body::read_body;
pub use self::client::{CLIENT_CONTENT_TYPE, CLIENT_JS, CLIENT_TYPES};
pub use self::endpoints::Endpoints;
#[cfg_attr(
    not(any(feature = "axum", feature = "actix-web")),
    allow(unused_imports, reason = "used by the integrations")
)]
pub(crate) use self::endpoints::StreamGuard;
#[cfg_attr(
    not(feature = "actix-web"),
    allow(unused_imports, reason = "used by the actix-web integration")
)]
pub(crate) use self::frame::{plain_status_len, write_plain_status, JsonOut};
pub use self::frame::{Frame, FrameKind, KEEPALIVE_FRAME, SSE_KEEPALIVE};
pub use self::request::{session_from_query, Refusal, RequestInfo};
pub use self::resume::{parse_seq, resume_point, ResumeError};
pub use self::settings::Settings;
pub use self::signal::shutdown_signal;
pub use self::sse::SseStream;
