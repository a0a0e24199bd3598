//! A WebSocket's outgoing frames on actix-web: [`outbox`] gives the sink that the forwarding
//! loop writes to and the response body that actix reads from, around one byte buffer.
//!
//! actix-ws puts a channel of 32 messages between the two, so a burst of statuses crosses from
//! the forwarding task to the connection's task (and back, to wake the writer) once every 32
//! frames. Here each frame is encoded into the buffer as it is written, and the body hands the
//! whole buffer to actix as one chunk when it is polled: a burst of `write_batch` frames is one
//! chunk and one write to the socket, as on axum. Every frame is still its own WebSocket
//! message.
//!
//! # Invariants
//!
//! - A burst's frames are encoded into the sink's own staging buffer, without the lock, and
//!   handed to the shared buffer under it once, at the flush (or when the staging room runs
//!   out): one lock per burst, not two per frame. The sink looks at the shared buffer under the
//!   lock before the first frame of each burst, so a closed or gone body is seen then.
//! - The two buffers together hold at most `limit` bytes plus one frame: the sink is ready
//!   only while its staged bytes and the shared buffer's length as of its last look (which only
//!   the body shrinks, so the sum bounds the real one) are below `limit`, so a client that does
//!   not read holds that much and the writer waits (and its write timeout runs), as it waits
//!   on axum's write buffer.
//! - Once closed (a close frame was written, the sink was closed or the [`BodyOpen`] guard
//!   dropped) nothing more is encoded; the body ends after handing out what was written.
//! - Once the body is gone (the connection ended), every write fails, so the loop ends.
//! - Wakers are stored under the lock and woken after it is released.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::{Bytes, BytesMut};
use futures_core::Stream;
use futures_util::Sink;

use crate::sync::{lock, Mutex};
use crate::web::ws::{Incoming, Outgoing, Socket};
use crate::web::{plain_status_len, write_plain_status, JsonOut};

/// The error of a write to a socket whose connection has ended.
#[derive(Debug)]
pub(super) struct Gone;

/// The smallest room made for a chunk: a few frames.
const MIN_CHUNK_BYTES: usize = 512;
/// The most room made for a chunk at once: a larger burst grows the buffer as it comes, so a
/// thousand sockets that each once sent a large burst do not each set aside that much again.
const MAX_CHUNK_ROOM: usize = 16 * 1024;

struct State {
    buf: BytesMut,
    /// How large the last chunk was: the room made for the next, so a burst is encoded
    /// without growing the buffer frame by frame.
    last_chunk: usize,
    limit: usize,
    closed: bool,
    gone: bool,
    /// The body's task, waiting for frames.
    body: Option<Waker>,
    /// The writer's task, waiting for room.
    writer: Option<Waker>,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        let body = state.body.take();
        drop(state);
        if let Some(body) = body {
            body.wake();
        }
    }
}

/// The sink of a WebSocket's frames, encoded as they are written.
pub(super) struct OutboxSink {
    shared: Arc<Shared>,
    staging: Staging,
}

/// The sink's own side: what it encoded since its last hand-over to the shared buffer.
struct Staging {
    /// Frames encoded since the last hand-over, not yet the body's.
    staged: BytesMut,
    /// The shared buffer's length as of the last hand-over: at least what it holds now.
    handed: usize,
    /// The room made for the next burst: the size of the body's last chunk, as last seen.
    room: usize,
    /// A copy of the shared state's `limit`.
    limit: usize,
    /// A close frame is staged: nothing more is taken, and the hand-over closes the body.
    closing: bool,
}

impl Staging {
    /// Moves the staged frames to the shared buffer (the caller wakes the body as needed) and
    /// takes a new look at it.
    fn hand_over(&mut self, state: &mut State) {
        if !self.staged.is_empty() {
            let staged = std::mem::take(&mut self.staged);
            if state.buf.is_empty() {
                state.buf = staged;
            } else {
                state.buf.extend_from_slice(&staged);
            }
        }
        if self.closing {
            state.closed = true;
        }
        self.handed = state.buf.len();
        self.room = state.last_chunk.clamp(
            MIN_CHUNK_BYTES,
            MAX_CHUNK_ROOM.min(self.limit).max(MIN_CHUNK_BYTES),
        );
    }
}

/// The WebSocket's response body: the frames written to its [`OutboxSink`], a chunk at a
/// time. It keeps actix-ws's own body (never polled) until it is dropped, as actix-ws's
/// message stream learns from that body's end that the connection ended.
pub(super) struct OutboxBody {
    shared: Arc<Shared>,
    _replaced: BoxBody,
}

/// Keeps the body open while held; dropping it closes the body after what was written, so the
/// body ends only once the forwarding loop knows how it ended.
pub(super) struct BodyOpen {
    shared: Arc<Shared>,
}

impl Drop for BodyOpen {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// A sink and a body around one buffer of at most `limit` bytes (plus one frame); `replaced`
/// is actix-ws's own body, kept until this one is dropped.
pub(super) fn outbox(limit: usize, replaced: BoxBody) -> (OutboxSink, OutboxBody, BodyOpen) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: BytesMut::new(),
            last_chunk: MIN_CHUNK_BYTES,
            limit,
            closed: false,
            gone: false,
            body: None,
            writer: None,
        }),
    });
    (
        OutboxSink {
            shared: Arc::clone(&shared),
            staging: Staging {
                staged: BytesMut::new(),
                handed: 0,
                room: MIN_CHUNK_BYTES,
                limit,
                closing: false,
            },
        },
        OutboxBody {
            shared: Arc::clone(&shared),
            _replaced: replaced,
        },
        BodyOpen { shared },
    )
}

impl JsonOut for BytesMut {
    fn put(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

/// Writes `status` as a text frame straight into `buf`, header first, when its JSON's length
/// is known in advance (nothing in it needs an escape); `false`, writing nothing, otherwise.
fn encode_status(buf: &mut BytesMut, status: &crate::Status) -> bool {
    let Some(len) = plain_status_len(status) else {
        return false;
    };
    put_text_header(buf, len);
    let start = buf.len();
    write_plain_status(buf, status);
    debug_assert_eq!(buf.len() - start, len, "the length written in the header");
    true
}

/// The header of a server's final text frame of `len` bytes (RFC 6455, section 5.2: no mask,
/// the length in 7 bits, or 16, or 64), as actix-http's `Parser::write_message` writes it.
fn put_text_header(buf: &mut BytesMut, len: usize) {
    const FIN_TEXT: u8 = 0x81;
    match (u8::try_from(len), u16::try_from(len)) {
        (Ok(short @ 0..=125), _) => {
            buf.reserve(len + 2);
            buf.extend_from_slice(&[FIN_TEXT, short]);
        }
        (_, Ok(medium)) => {
            buf.reserve(len + 4);
            buf.extend_from_slice(&[FIN_TEXT, 126]);
            buf.extend_from_slice(&medium.to_be_bytes());
        }
        _ => {
            buf.reserve(len + 10);
            buf.extend_from_slice(&[FIN_TEXT, 127]);
            buf.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// The outbox's sink and the client's frames, as the one socket the forwarding loop drives:
/// a status is encoded straight into the sink's staging buffer, with no `String` per frame.
pub(super) struct OutboxSocket<Rx> {
    sink: OutboxSink,
    incoming: Rx,
}

impl<Rx> OutboxSocket<Rx> {
    pub(super) fn new(sink: OutboxSink, incoming: Rx) -> Self {
        Self { sink, incoming }
    }
}

impl<Rx: Unpin> Sink<Outgoing> for OutboxSocket<Rx> {
    type Error = Gone;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Pin::new(&mut self.sink).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Outgoing) -> Result<(), Gone> {
        Pin::new(&mut self.sink).start_send(frame)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Pin::new(&mut self.sink).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Pin::new(&mut self.sink).poll_close(cx)
    }
}

impl<Rx: Stream<Item = Incoming> + Unpin> Stream for OutboxSocket<Rx> {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        Pin::new(&mut self.incoming).poll_next(cx)
    }
}

impl<Rx: Stream<Item = Incoming> + Unpin> Socket for OutboxSocket<Rx> {
    fn start_send_status(self: Pin<&mut Self>, status: &crate::Status) -> Option<Result<(), Gone>> {
        let this = &mut self.get_mut().sink.staging;
        if this.closing {
            return Some(Err(Gone));
        }
        if this.staged.is_empty() {
            this.staged.reserve(this.room);
        }
        // Anything else goes the usual way: encoded to a `String`, then copied in.
        encode_status(&mut this.staged, status).then_some(Ok(()))
    }
}

fn encode(buf: &mut BytesMut, frame: Outgoing) -> bool {
    match frame {
        Outgoing::Text(text) => Parser::write_message(buf, text, OpCode::Text, true, false),
        Outgoing::Pong(payload) => Parser::write_message(buf, payload, OpCode::Pong, true, false),
        Outgoing::Close { code, reason } => {
            let reason = CloseReason {
                code: CloseCode::from(code),
                description: (!reason.is_empty()).then(|| reason.to_owned()),
            };
            Parser::write_close(buf, Some(reason), false);
            return true;
        }
    }
    false
}

impl Sink<Outgoing> for OutboxSink {
    type Error = Gone;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        let OutboxSink {
            shared,
            staging: this,
        } = self.get_mut();
        if this.closing {
            return Poll::Ready(Err(Gone));
        }
        // Within a burst, with room: no lock.
        if !this.staged.is_empty() && this.staged.len() + this.handed < this.limit {
            return Poll::Ready(Ok(()));
        }
        let mut state = lock(&shared.state);
        if state.gone || state.closed {
            return Poll::Ready(Err(Gone));
        }
        this.hand_over(&mut state);
        if state.buf.len() < state.limit {
            return Poll::Ready(Ok(()));
        }
        // Full: the body must take what is there before more is written.
        state.writer = Some(cx.waker().clone());
        let body = state.body.take();
        drop(state);
        if let Some(body) = body {
            body.wake();
        }
        Poll::Pending
    }

    fn start_send(self: Pin<&mut Self>, frame: Outgoing) -> Result<(), Gone> {
        let this = &mut self.get_mut().staging;
        if this.closing {
            return Err(Gone);
        }
        if this.staged.is_empty() {
            this.staged.reserve(this.room);
        }
        // A close frame is the last: the body ends after it.
        if encode(&mut this.staged, frame) {
            this.closing = true;
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        // Handed to the body, which actix polls as its connection's write buffer has room: the
        // frames are as far as a flush takes them (the buffer bounds what waits there).
        let OutboxSink {
            shared,
            staging: this,
        } = self.get_mut();
        let mut state = lock(&shared.state);
        if state.gone {
            this.staged = BytesMut::new();
            return Poll::Ready(Err(Gone));
        }
        this.hand_over(&mut state);
        let body = if state.buf.is_empty() {
            None
        } else {
            state.body.take()
        };
        drop(state);
        if let Some(body) = body {
            body.wake();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        // What is staged goes first; the body ends after it.
        let OutboxSink {
            shared,
            staging: this,
        } = self.get_mut();
        {
            let mut state = lock(&shared.state);
            if !state.gone {
                this.hand_over(&mut state);
            }
        }
        shared.close();
        Poll::Ready(Ok(()))
    }
}

impl MessageBody for OutboxBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let mut state = lock(&self.shared.state);
        if !state.buf.is_empty() {
            // The whole buffer, and no spare room kept: an idle socket holds no buffer.
            let chunk = std::mem::take(&mut state.buf).freeze();
            state.last_chunk = chunk.len();
            let writer = state.writer.take();
            drop(state);
            if let Some(writer) = writer {
                writer.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.body = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.gone = true;
        state.buf = BytesMut::new();
        let writer = state.writer.take();
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_http::ws::{OpCode, Parser};
    use actix_web::web::BytesMut;
    use futures_util::{FutureExt, StreamExt};

    use crate::web::Frame;
    use crate::{Event, Hub, StatusMessage};

    /// A status written straight into the buffer is the frame actix-http writes for its JSON,
    /// for a length of each header form (7, 16 and 64 bits) and their edges.
    #[test]
    fn statuses_are_the_frames_actix_writes_for_their_json() {
        let config = crate::HubConfig {
            max_status_bytes: 100_000,
            ..Default::default()
        };
        let hub = Hub::new(config).unwrap();
        // The JSON's length without its text, from a first status with none (the others'
        // `seq` has one digit too).
        hub.publish_message(Some("s"), StatusMessage::new("").progress(1, 2))
            .unwrap();
        let probe = hub
            .subscribe("s", None)
            .next()
            .now_or_never()
            .flatten()
            .unwrap();
        let base = Frame::encode(&probe).unwrap().into_json().len();
        let lengths = [base, 125, 126, 127, 65_535, 65_536, 70_000];
        for len in &lengths[1..] {
            let text = "x".repeat(len - base);
            hub.publish_message(Some("s"), StatusMessage::new(text).progress(1, 2))
                .unwrap();
        }
        let mut subscription = hub.subscribe("s", None);
        let mut written_lengths = Vec::new();
        while let Some(Some(event)) = subscription.next().now_or_never() {
            let Event::Status(status) = &event else {
                continue;
            };
            let json = Frame::encode(&event).unwrap().into_json();
            let mut expected = BytesMut::new();
            Parser::write_message(&mut expected, json.as_bytes(), OpCode::Text, true, false);
            let mut written = BytesMut::new();
            assert!(super::encode_status(&mut written, status));
            assert_eq!(written, expected, "a frame of {} bytes", json.len());
            written_lengths.push(json.len());
        }
        assert_eq!(written_lengths, lengths);
    }

    /// Frames written while the body is slow stay within `limit` bytes plus one frame, across
    /// the staging buffer and the shared one, and reach the body once each, in order.
    #[test]
    fn a_slow_body_bounds_what_waits_and_gets_every_frame_once() {
        use std::pin::Pin;
        use std::task::{Context, Poll, Waker};

        use actix_web::body::{BoxBody, MessageBody};
        use futures_util::Sink;

        use crate::web::ws::Outgoing;

        let limit = 4096;
        let (mut sink, mut body, _open) = super::outbox(limit, BoxBody::new(()));
        let mut cx = Context::from_waker(Waker::noop());
        let frames: Vec<String> = (0..200).map(|i| format!("{i:0>300}")).collect();
        let mut expected = BytesMut::new();
        for frame in &frames {
            Parser::write_message(&mut expected, frame.as_bytes(), OpCode::Text, true, false);
        }
        let frame_len = expected.len() / frames.len();
        let mut received = BytesMut::new();
        let mut next = 0;
        while next < frames.len() {
            // A burst until the sink says it is full, then the body takes one chunk.
            while next < frames.len() {
                match Pin::new(&mut sink).poll_ready(&mut cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => panic!("gone"),
                    Poll::Pending => break,
                }
                Pin::new(&mut sink)
                    .start_send(Outgoing::Text(frames[next].clone()))
                    .unwrap();
                next += 1;
                let waiting = super::lock(&sink.shared.state).buf.len() + sink.staging.staged.len();
                assert!(waiting <= limit + frame_len, "{waiting} bytes wait");
            }
            assert!(Pin::new(&mut sink).poll_flush(&mut cx).is_ready());
            if let Poll::Ready(Some(Ok(chunk))) = Pin::new(&mut body).poll_next(&mut cx) {
                received.extend_from_slice(&chunk);
            }
        }
        while let Poll::Ready(Some(Ok(chunk))) = Pin::new(&mut body).poll_next(&mut cx) {
            received.extend_from_slice(&chunk);
        }
        assert_eq!(received, expected);
    }

    /// A body dropped in the middle of a burst fails its flush and every later write: the
    /// frames staged before are not handed to anyone.
    #[test]
    fn a_body_dropped_mid_burst_fails_the_flush_and_later_writes() {
        use std::pin::Pin;
        use std::task::{Context, Poll, Waker};

        use actix_web::body::BoxBody;
        use futures_util::Sink;

        use crate::web::ws::Outgoing;

        let (mut sink, body, _open) = super::outbox(4096, BoxBody::new(()));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            assert!(matches!(
                Pin::new(&mut sink).poll_ready(&mut cx),
                Poll::Ready(Ok(()))
            ));
            Pin::new(&mut sink)
                .start_send(Outgoing::Text("x".into()))
                .unwrap();
        }
        drop(body);
        assert!(matches!(
            Pin::new(&mut sink).poll_flush(&mut cx),
            Poll::Ready(Err(_))
        ));
        assert!(sink.staging.staged.is_empty());
        assert!(super::lock(&sink.shared.state).buf.is_empty());
        assert!(matches!(
            Pin::new(&mut sink).poll_ready(&mut cx),
            Poll::Ready(Err(_))
        ));
    }

    /// A status with a string that needs an escape is left to the usual encoder.
    #[test]
    fn a_status_that_needs_an_escape_is_not_written_here() {
        let hub = Hub::new(Default::default()).unwrap();
        hub.publish(Some("s"), "say \"hi\"").unwrap();
        let event = hub
            .subscribe("s", None)
            .next()
            .now_or_never()
            .flatten()
            .unwrap();
        let Event::Status(status) = &event else {
            panic!("a status: {event:?}");
        };
        let mut written = BytesMut::new();
        assert!(!super::encode_status(&mut written, status));
        assert!(written.is_empty());
    }
}
