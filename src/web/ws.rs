//! A subscription forwarded to a WebSocket: [`forward`], over any `Sink` and `Stream` of
//! frames, with [`Outgoing`] and [`Incoming`] as the frames it speaks.
//!
//! # Invariants
//!
//! - Events are read out of the subscription only as the sink takes them: at most
//!   [`Settings::write_batch`] ahead of a flush, so a slow client holds one batch, and the
//!   hub's cursor (not a queue) keeps the rest.
//! - The loop sends a close frame whenever it ends on its own (1001 when the subscription
//!   ended, 1009 for an oversized client frame, 1000 in answer to the client's close), and
//!   none when the connection itself failed.
//! - Every write to the sink (a burst of at most [`Settings::write_batch`] frames and its
//!   flush, a pong, a keep-alive, a close) finishes within [`Settings::write_timeout`] or ends
//!   the loop, so a client that stops reading holds its socket's write buffer for at most that
//!   long, however much it sends.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::time::Instant;

use super::frame::ClientFrame;
use super::{cancel, Frame, Settings, KEEPALIVE_FRAME};
use crate::{Hub, Subscription};

/// Close code when the subscription ended (the hub shut down, or the session was closed):
/// "going away".
///
/// # Examples
///
/// ```
/// use status_messenger::web::ws::CLOSE_GOING_AWAY;
/// assert_eq!(CLOSE_GOING_AWAY, 1001); // RFC 6455, section 7.4.1
/// ```
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a client frame over [`Settings::max_message_bytes`]: "message too big".
///
/// # Examples
///
/// ```
/// use status_messenger::web::ws::CLOSE_TOO_BIG;
/// assert_eq!(CLOSE_TOO_BIG, 1009); // RFC 6455, section 7.4.1
/// ```
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code in answer to the client's close: "normal closure".
///
/// # Examples
///
/// ```
/// use status_messenger::web::ws::CLOSE_NORMAL;
/// assert_eq!(CLOSE_NORMAL, 1000); // RFC 6455, section 7.4.1
/// ```
pub const CLOSE_NORMAL: u16 = 1000;

/// A frame [`forward`] writes; map it to your framework's message type.
///
/// # Examples
///
/// ```
/// use status_messenger::web::ws::{Outgoing, CLOSE_GOING_AWAY};
///
/// // What an integration does with each one, here into tungstenite-like tuples.
/// fn map(frame: Outgoing) -> (&'static str, Vec<u8>) {
///     match frame {
///         Outgoing::Text(text) => ("text", text.into_bytes()),
///         Outgoing::Pong(payload) => ("pong", payload),
///         Outgoing::Close { code, reason } => ("close", [&code.to_be_bytes()[..], reason.as_bytes()].concat()),
///         _ => ("unknown", Vec::new()),
///     }
/// }
/// let close = map(Outgoing::Close { code: CLOSE_GOING_AWAY, reason: "going away" });
/// assert_eq!(close.0, "close");
/// assert_eq!(&close.1[..2], &[0x03, 0xe9]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outgoing {
    /// A text frame: a status, a gap or a keep-alive, as JSON.
    Text(String),
    /// The answer to a client's ping, for frameworks that do not answer pings by themselves.
    Pong(Vec<u8>),
    /// A close frame; the loop sends nothing after it.
    Close {
        /// The close code ([`CLOSE_GOING_AWAY`], [`CLOSE_TOO_BIG`], [`CLOSE_NORMAL`]).
        code: u16,
        /// A short reason, at most 123 bytes.
        reason: &'static str,
    },
}

/// A frame or event from the client, as [`forward`] needs to know it; map your framework's
/// messages and read errors to it.
///
/// # Examples
///
/// ```
/// use status_messenger::web::ws::Incoming;
///
/// // A framework whose read errors say whether the frame was too large.
/// fn map(read: Result<&str, &str>) -> Incoming {
///     match read {
///         Ok(text) => Incoming::Text(text.to_owned()),
///         Err("too large") => Incoming::TooLarge,
///         Err(_) => Incoming::Failed,
///     }
/// }
/// assert_eq!(map(Err("too large")), Incoming::TooLarge);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A text frame: read for a cancel frame `{"type": "cancel", "task": "ID"}`, else ignored.
    Text(String),
    /// A ping to answer with [`Outgoing::Pong`]. Frameworks that answer pings themselves (axum)
    /// map pings to [`Incoming::Pinged`] instead.
    Ping(Vec<u8>),
    /// A ping the framework answered by itself (axum, through tungstenite): the loop flushes
    /// the socket, so the answer leaves within [`Settings::write_timeout`] or the socket is
    /// dropped ([`Ended::Stalled`]).
    Pinged,
    /// The client's close frame: the loop answers it and ends. A framework that answers it by
    /// itself (tungstenite queues the answer, then refuses another close) may refuse the loop's
    /// close frame: the loop then closes the sink, which sends the framework's.
    Close,
    /// The client sent a frame over the size limit; the loop closes with [`CLOSE_TOO_BIG`].
    TooLarge,
    /// The connection failed; the loop ends without a close frame.
    Failed,
    /// Anything else (binary frames, pongs): ignored.
    Other,
}

/// How [`forward`] ended.
///
/// # Examples
///
/// ```
/// use status_messenger::web::ws::Ended;
///
/// assert_ne!(Ended::HubClosed, Ended::Disconnected);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ended {
    /// The subscription ended (the session was closed or the hub shut down); a close frame
    /// [`CLOSE_GOING_AWAY`] was sent.
    HubClosed,
    /// The client closed the socket; its close was answered.
    ClientClosed,
    /// The client sent a frame over the limit; a close frame [`CLOSE_TOO_BIG`] was sent.
    TooLarge,
    /// The connection failed, or the sink refused a frame.
    Disconnected,
    /// A frame was not written within [`Settings::write_timeout`]: the client stopped reading.
    /// No close frame could be sent; dropping the socket closes the connection.
    Stalled,
}

/// Forwards `subscription` to a WebSocket until one side ends: each event as one text frame
/// ([`Frame::encode`]), every event ready at once written before one flush (up to
/// [`Settings::write_batch`]), a [`KEEPALIVE_FRAME`] when nothing was written for
/// [`Settings::keep_alive`], pings answered, cancel frames acted on for the subscription's own
/// session (through `hub`), other client frames ignored, and a close frame when it ends on its
/// own (see [`Ended`]). A write (a burst and its flush, a pong, a keep-alive, a close) that
/// does not finish within [`Settings::write_timeout`] ends it ([`Ended::Stalled`]).
///
/// `sink` takes [`Outgoing`] frames and `incoming` yields [`Incoming`] ones: wrap your
/// framework's socket with `SinkExt::with` and `StreamExt::map`. Refuse oversized frames in the
/// framework, as they arrive, and map that error to [`Incoming::TooLarge`]. Needs a tokio
/// runtime with time enabled.
///
/// # Examples
///
/// Over channels standing for a socket:
///
/// ```
/// use status_messenger::web::ws::{forward, Ended, Incoming, Outgoing, CLOSE_GOING_AWAY};
/// use status_messenger::web::Settings;
/// use status_messenger::Hub;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.publish(Some("s"), "working").unwrap();
/// let (to_client, mut client) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
/// let (from_client, from_client_rx) = tokio::sync::mpsc::unbounded_channel::<Incoming>();
/// let sink = Box::pin(futures_util::sink::unfold(to_client, |tx, frame: Outgoing| async move {
///     tx.send(frame).map(|()| tx)
/// }));
/// let incoming = futures_util::stream::unfold(from_client_rx, |mut rx| async move {
///     rx.recv().await.map(|frame| (frame, rx))
/// });
/// let subscription = hub.subscribe("s", None);
/// let task = tokio::spawn({
///     let hub = hub.clone();
///     async move { forward(&hub, subscription, sink, incoming, &Settings::default()).await }
/// });
/// let Some(Outgoing::Text(frame)) = client.recv().await else { panic!() };
/// assert_eq!(frame, r#"{"session":"s","seq":1,"text":"working"}"#);
///
/// from_client.send(Incoming::Ping(b"hi".to_vec())).unwrap();
/// assert_eq!(client.recv().await, Some(Outgoing::Pong(b"hi".to_vec())));
///
/// hub.shutdown().await;
/// let closed = Outgoing::Close { code: CLOSE_GOING_AWAY, reason: "going away" };
/// assert_eq!(client.recv().await, Some(closed));
/// assert_eq!(task.await.unwrap(), Ended::HubClosed);
/// # }
/// ```
pub async fn forward<Tx, Rx>(
    hub: &Hub,
    subscription: Subscription,
    sink: Tx,
    incoming: Rx,
    settings: &Settings,
) -> Ended
where
    Tx: Sink<Outgoing> + Unpin,
    Rx: Stream<Item = Incoming>,
{
    let socket = Joined {
        sink,
        incoming: pin!(incoming),
    };
    forward_socket(hub, subscription, socket, settings).await
}

/// [`forward`] over one socket that both takes [`Outgoing`] frames and yields [`Incoming`]
/// ones, for frameworks whose socket is one object (axum's): no split into halves that share
/// it through a lock, which every frame of a burst would take.
pub(crate) async fn forward_socket<S: Socket>(
    hub: &Hub,
    mut subscription: Subscription,
    mut socket: S,
    settings: &Settings,
) -> Ended {
    let session = subscription.session().cloned();
    let keep_alive = settings.effective_keep_alive();
    let batch = settings.effective_write_batch();
    let limit = settings.effective_write_timeout();
    let mut last_write = Instant::now();
    let mut idle = pin!(tokio::time::sleep_until(last_write + keep_alive));
    loop {
        // `select!` drops the futures of every branch before it runs the chosen one, so the
        // read of the socket is not in flight while a branch writes to it.
        tokio::select! {
            event = subscription.next() => {
                let Some(event) = event else {
                    return close(&mut socket, limit, CLOSE_GOING_AWAY, "going away", Ended::HubClosed).await;
                };
                // Write what is already waiting, then flush once: one system call for a burst,
                // and one deadline for it, not a timer per frame.
                let burst = async {
                    feed(&mut socket, &event).await?;
                    for _ in 1..batch {
                        let Some(Some(event)) = subscription.next().now_or_never() else {
                            // Nothing more ready now, or the end, which the next turn sees.
                            break;
                        };
                        feed(&mut socket, &event).await?;
                    }
                    socket.flush().await
                };
                match within(limit, burst).await {
                    Ok(written) => last_write = written,
                    Err(ended) => return ended,
                }
            }
            frame = socket.next() => match frame {
                Some(Incoming::Text(text)) => {
                    if let (Some(ClientFrame::Cancel { task }), Some(session)) =
                        (ClientFrame::parse(&text), &session)
                    {
                        // A cancel of a task that is not this session's is ignored, as the
                        // contract says; `POST /cancel` is where a caller learns why.
                        if let Err(error) = cancel::cancel(hub, session, &task).await {
                            tracing::debug!(target: "status_messenger::web", %error, task, "cancel frame ignored");
                        }
                    }
                }
                Some(Incoming::Ping(payload)) => {
                    if let Err(ended) = within(limit, socket.send(Outgoing::Pong(payload))).await {
                        return ended;
                    }
                }
                Some(Incoming::Pinged) => {
                    // The framework queued the answer; it must leave within the limit, or a
                    // client that pings and never reads would have the answers pile up.
                    if let Err(ended) = within(limit, socket.flush()).await {
                        return ended;
                    }
                }
                Some(Incoming::Close) => {
                    return close(&mut socket, limit, CLOSE_NORMAL, "", Ended::ClientClosed).await;
                }
                Some(Incoming::TooLarge) => {
                    return close(&mut socket, limit, CLOSE_TOO_BIG, "message too big", Ended::TooLarge).await;
                }
                Some(Incoming::Failed) | None => return Ended::Disconnected,
                Some(Incoming::Other) => {}
            },
            () = &mut idle => {
                let now = Instant::now();
                let due = last_write + keep_alive;
                if now >= due {
                    let keepalive = socket.send(Outgoing::Text(KEEPALIVE_FRAME.to_owned()));
                    match within(limit, keepalive).await {
                        Ok(written) => last_write = written,
                        Err(ended) => return ended,
                    }
                    idle.as_mut().reset(last_write + keep_alive);
                } else {
                    // Something was written since the timer was armed: wait from then.
                    idle.as_mut().reset(due);
                }
            }
        }
    }
}

/// What [`forward_socket`] writes to and reads from: [`Outgoing`] frames in, [`Incoming`] ones
/// out, and statuses, which a socket may write itself.
pub(crate) trait Socket: Sink<Outgoing> + Stream<Item = Incoming> + Unpin {
    /// Writes `status`'s frame, after `poll_ready`, if this socket encodes statuses itself
    /// (straight into its own buffer, with no `String` per frame); `None` when it does not,
    /// and the loop sends the frame as [`Outgoing::Text`].
    fn start_send_status(
        self: Pin<&mut Self>,
        status: &crate::Status,
    ) -> Option<Result<(), Self::Error>> {
        let _ = status;
        None
    }
}

/// A sink and a stream of the client's frames, as one socket for [`forward_socket`].
struct Joined<Tx, Rx> {
    sink: Tx,
    incoming: Rx,
}

impl<Tx, Rx> Sink<Outgoing> for Joined<Tx, Rx>
where
    Tx: Sink<Outgoing> + Unpin,
    Rx: Unpin,
{
    type Error = Tx::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.sink).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), Self::Error> {
        Pin::new(&mut self.sink).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.sink).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.sink).poll_close(cx)
    }
}

impl<Tx, Rx> Socket for Joined<Tx, Rx>
where
    Tx: Sink<Outgoing> + Unpin,
    Rx: Stream<Item = Incoming> + Unpin,
{
}

impl<Tx, Rx> Stream for Joined<Tx, Rx>
where
    Tx: Unpin,
    Rx: Stream<Item = Incoming> + Unpin,
{
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        Pin::new(&mut self.incoming).poll_next(cx)
    }
}

/// Runs one write to the sink: when it finished (a clock read at most), [`Ended::Disconnected`]
/// if the sink refused it, [`Ended::Stalled`] if it did not finish within `limit`.
///
/// Most writes finish on their first poll (the socket takes the burst at once), and those need
/// no timer: the deadline, counted from before that poll, is armed only if the write waits.
async fn within<E>(
    limit: Duration,
    write: impl Future<Output = Result<(), E>>,
) -> Result<Instant, Ended> {
    let started = Instant::now();
    let mut write = pin!(write);
    let finished = match write.as_mut().now_or_never() {
        Some(result) => result.map(|()| started),
        None => match tokio::time::timeout_at(started + limit, write).await {
            Ok(result) => result.map(|()| Instant::now()),
            Err(_) => return Err(Ended::Stalled),
        },
    };
    finished.map_err(|_| Ended::Disconnected)
}

async fn feed<S: Socket>(socket: &mut S, event: &crate::Event) -> Result<(), S::Error> {
    futures_util::future::poll_fn(|cx| Pin::new(&mut *socket).poll_ready(cx)).await?;
    let mut socket = Pin::new(socket);
    if let crate::Event::Status(status) = event {
        if let Some(sent) = socket.as_mut().start_send_status(status) {
            return sent;
        }
    }
    match Frame::encode(event) {
        Some(frame) => socket.start_send(Outgoing::Text(frame.into_json())),
        // A kind of event this version does not know: clients would skip it anyway.
        None => Ok(()),
    }
}

async fn close<Tx>(
    sink: &mut Tx,
    limit: Duration,
    code: u16,
    reason: &'static str,
    ended: Ended,
) -> Ended
where
    Tx: Sink<Outgoing> + Unpin,
{
    match within(limit, sink.send(Outgoing::Close { code, reason })).await {
        Ok(_) => {}
        // A framework that answers a client's close by itself (tungstenite queues the reply as
        // the close arrives, and then refuses a close of ours) still holds that reply: closing
        // the sink flushes it out, so the client's close is answered all the same.
        Err(Ended::Disconnected) if ended == Ended::ClientClosed => {
            return match within(limit, sink.close()).await {
                Ok(_) => ended,
                Err(failed) => failed,
            };
        }
        Err(failed) => return failed,
    }
    // Flushes the close frame out; a peer that is already gone changes nothing now.
    if within(limit, sink.close()).await.is_err() {
        tracing::debug!(target: "status_messenger::web", "the socket failed while closing");
    }
    ended
}
