//! A subscription as a Server-Sent Events body: [`SseStream`].
//!
//! # Invariants
//!
//! - It reads at most [`Settings::write_batch`] events per item, and only when its consumer
//!   polls it: what it holds is one chunk, and a slow client slows only its own reads.
//! - The keep-alive timer is armed against the time of the last write and re-armed lazily, so
//!   a busy stream touches no timer per chunk.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use super::{Frame, Settings, SSE_KEEPALIVE};
use crate::Subscription;

/// A [`Subscription`] as the body of a `text/event-stream` response, for any framework that
/// takes a `Stream` of text chunks.
///
/// It starts with a `retry:` hint ([`Settings::sse_retry`]), then writes each event as one
/// message ([`Frame::write_sse`]), every event that is ready at once in one chunk (up to
/// [`Settings::write_batch`]), and a keep-alive ([`SSE_KEEPALIVE`]) when it has written
/// nothing for [`Settings::keep_alive`]. It ends, cleanly, when the subscription ends: the
/// session was closed or the hub shut down. Serve it with `Content-Type: text/event-stream`,
/// `Cache-Control: no-cache` and `X-Accel-Buffering: no`.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::web::{Settings, SseStream};
/// use status_messenger::Hub;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.publish(Some("s"), "one").unwrap();
/// hub.publish(Some("s"), "two").unwrap();
/// let mut body = SseStream::new(hub.subscribe("s", None), &Settings::default());
/// assert_eq!(body.next().await.unwrap(), "retry: 1000\n\n");
/// // Both statuses were ready: one chunk.
/// let chunk = body.next().await.unwrap();
/// assert!(chunk.starts_with("id: 1\ndata: {\"session\":\"s\",\"seq\":1,\"text\":\"one\"}\n\nid: 2\n"));
/// hub.shutdown().await;
/// assert_eq!(body.next().await, None);
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct SseStream {
    subscription: Subscription,
    retry: Option<String>,
    keep_alive: Duration,
    batch: usize,
    idle: Pin<Box<Sleep>>,
    last_write: Instant,
    ended: bool,
}

impl fmt::Debug for SseStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseStream")
            .field("subscription", &self.subscription)
            .field("keep_alive", &self.keep_alive)
            .field("ended", &self.ended)
            .finish()
    }
}

impl SseStream {
    /// The body for `subscription`, with `settings`' keep-alive, batch and retry hint. Needs a
    /// tokio runtime with time enabled when polled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use futures_util::StreamExt;
    /// use status_messenger::web::{Settings, SseStream, SSE_KEEPALIVE};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let mut settings = Settings::default();
    /// settings.keep_alive = Duration::from_secs(5);
    /// let mut body = SseStream::new(hub.subscribe("quiet", None), &settings);
    /// body.next().await; // the retry hint
    /// let started = tokio::time::Instant::now();
    /// assert_eq!(body.next().await.as_deref(), Some(SSE_KEEPALIVE));
    /// assert_eq!(started.elapsed(), Duration::from_secs(5));
    /// # }
    /// ```
    pub fn new(subscription: Subscription, settings: &Settings) -> SseStream {
        let keep_alive = settings.effective_keep_alive();
        let now = Instant::now();
        SseStream {
            subscription,
            retry: Some(format!("retry: {}\n\n", settings.sse_retry.as_millis())),
            keep_alive,
            batch: settings.effective_write_batch(),
            idle: Box::pin(tokio::time::sleep_until(now + keep_alive)),
            last_write: now,
            ended: false,
        }
    }

    /// The subscription it reads.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::{Settings, SseStream};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let body = SseStream::new(hub.subscribe("s", Some(4)), &Settings::default());
    /// assert_eq!(body.subscription().last_seq(), 4);
    /// # }
    /// ```
    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }
}

impl Stream for SseStream {
    type Item = String;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        let this = self.get_mut();
        if let Some(retry) = this.retry.take() {
            return Poll::Ready(Some(retry));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let mut chunk = String::new();
        let mut read = 0;
        while read < this.batch {
            match Pin::new(&mut this.subscription).poll_next(cx) {
                Poll::Ready(Some(event)) => {
                    read += 1;
                    if let Some(frame) = Frame::encode(&event) {
                        frame.write_sse(&mut chunk);
                    }
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if !chunk.is_empty() {
            this.last_write = Instant::now();
            return Poll::Ready(Some(chunk));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        if read == this.batch {
            // A whole batch of kinds this version skips: come back without waiting.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            if this.idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let due = this.last_write + this.keep_alive;
            if now >= due {
                this.last_write = now;
                this.idle.as_mut().reset(now + this.keep_alive);
                return Poll::Ready(Some(SSE_KEEPALIVE.to_owned()));
            }
            this.idle.as_mut().reset(due);
        }
    }
}
