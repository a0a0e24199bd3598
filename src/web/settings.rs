//! The knobs of the endpoints' streams: [`Settings`].

use std::time::Duration;

/// How the endpoints' streams behave; the defaults suit a browser page behind ordinary proxies.
///
/// Fields below their minimum act as the minimum, and a keep-alive or write timeout over a
/// year as a year, so no value makes a stream panic or spin.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use status_messenger::web::Settings;
///
/// let settings = Settings::default();
/// assert_eq!(settings.keep_alive, Duration::from_secs(15));
/// assert_eq!(settings.max_message_bytes, 64 * 1024);
/// assert_eq!(settings.write_batch, 256);
/// assert_eq!(settings.write_buffer_bytes, 128 * 1024);
/// assert_eq!(settings.sse_retry, Duration::from_secs(1));
/// assert_eq!(settings.write_timeout, Duration::from_secs(10));
/// ```
///
/// Keep-alives that never come in practice: the longest interval is a year, not an overflow.
///
/// ```
/// use std::time::Duration;
/// use futures_util::StreamExt;
/// use status_messenger::web::{Settings, SseStream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut quiet = Settings::default();
/// quiet.keep_alive = Duration::MAX;
/// let hub = status_messenger::Hub::new(Default::default()).unwrap();
/// hub.publish(Some("s"), "one").unwrap();
/// let mut body = SseStream::new(hub.subscribe("s", None), &quiet);
/// body.next().await; // the retry hint
/// assert!(body.next().await.unwrap().contains(r#""text":"one""#));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// A stream that has sent nothing for this long sends a keep-alive: on SSE a comment with a
    /// `keepalive` event ([`SSE_KEEPALIVE`](super::SSE_KEEPALIVE)), on the WebSocket the text
    /// frame [`KEEPALIVE_FRAME`](super::KEEPALIVE_FRAME) (browsers see neither SSE comments nor
    /// WebSocket pings). Default 15 s, at least 1 ms, at most a year. Keep it under your proxies' idle timeout
    /// and well under the browser client's 30 s watchdog.
    pub keep_alive: Duration,
    /// Largest WebSocket message (and frame) a client may send; the integrations refuse a
    /// larger one as it arrives, without buffering it whole, and close the socket with code 1009.
    /// Default 64 KiB, at least 125 bytes. Clients send nothing but the odd cancel frame. It
    /// also bounds the body of `POST /cancel`, which carries nothing: a longer one is answered
    /// 413 before the task is touched (refused from its `Content-Length` when it has one,
    /// otherwise as it arrives).
    pub max_message_bytes: usize,
    /// Most frames written before one flush when many are ready at once (a reconnecting page
    /// replaying its history, a fast tool): one system call for a burst instead of one each.
    /// Default 256, at least 1. It bounds how much one stream reads out of the hub ahead of
    /// its socket.
    pub write_batch: usize,
    /// Bytes a WebSocket buffers before it writes to the socket; writing waits while the socket
    /// does not take them, so this (plus one frame) bounds what a slow client holds in memory.
    /// Default 128 KiB, at least 4 KiB, on axum and on actix-web alike.
    pub write_buffer_bytes: usize,
    /// The `retry:` hint an SSE stream starts with: how long an `EventSource` waits before it
    /// reconnects by itself. Default 1 s.
    pub sse_retry: Duration,
    /// Longest a WebSocket may take to write a frame out (a burst of statuses, at most
    /// [`write_batch`](Settings::write_batch) of them, with its flush; a keep-alive; the answer
    /// to a ping; a close): a socket that does not take it in this long belongs to a client
    /// that stopped reading, and is dropped ([`Ended::Stalled`](super::ws::Ended::Stalled)).
    /// With [`write_buffer_bytes`](Settings::write_buffer_bytes) it bounds what such a client
    /// holds, however many pings it sends. An SSE response has no write of its own to time:
    /// its connection is dropped by the kernel once its sent bytes have stayed unread this
    /// long, when the server sets it up on each connection (`TCP_USER_TIMEOUT`, Linux):
    /// `Endpoints::on_accept` on axum, `Endpoints::on_connect` on actix-web (the WebSocket's
    /// socket on actix-web too). It is also the longest `POST /cancel` waits for
    /// its body: one that has not arrived by then is answered 408, and the task is not
    /// touched. Default 10 s, at least 1 ms, at most a year.
    pub write_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keep_alive: Duration::from_secs(15),
            max_message_bytes: 64 * 1024,
            write_batch: 256,
            write_buffer_bytes: 128 * 1024,
            sse_retry: Duration::from_secs(1),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// The longest a stream's timer is set for: past it an `Instant` could overflow.
const LONGEST_TIMER: Duration = Duration::from_secs(365 * 24 * 60 * 60);

impl Settings {
    pub(crate) fn effective_keep_alive(&self) -> Duration {
        self.keep_alive
            .clamp(Duration::from_millis(1), LONGEST_TIMER)
    }

    #[cfg_attr(
        not(any(feature = "axum", feature = "actix-web")),
        allow(dead_code, reason = "used by the integrations")
    )]
    pub(crate) fn effective_max_message_bytes(&self) -> usize {
        self.max_message_bytes.max(125)
    }

    pub(crate) fn effective_write_timeout(&self) -> Duration {
        self.write_timeout
            .clamp(Duration::from_millis(1), LONGEST_TIMER)
    }

    pub(crate) fn effective_write_batch(&self) -> usize {
        self.write_batch.max(1)
    }

    #[cfg_attr(
        not(feature = "axum"),
        allow(dead_code, reason = "used by the axum endpoints")
    )]
    pub(crate) fn effective_write_buffer_bytes(&self) -> usize {
        self.write_buffer_bytes.max(4 * 1024)
    }
}
