//! The one place where an [`Event`] becomes a frame, and where a client's frame is read.
//!
//! # Invariants
//!
//! - [`Frame::encode`] is the only encoder of events: both integrations, the SSE stream and the
//!   WebSocket loop call it, so a new field or kind of event is added here once.
//! - A frame's JSON has no newline (serde_json escapes them), so it fits one SSE `data:` line.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::Event;

/// The text of a WebSocket keep-alive frame: browsers cannot see WebSocket pings, so an idle
/// stream sends this instead; clients ignore frame types they do not know.
///
/// # Examples
///
/// ```
/// let frame: serde_json::Value =
///     serde_json::from_str(status_messenger::web::KEEPALIVE_FRAME).unwrap();
/// assert_eq!(frame["type"], "keepalive");
/// ```
pub const KEEPALIVE_FRAME: &str = r#"{"type":"keepalive"}"#;

/// What an idle SSE stream sends: a comment line (`: keep-alive`), so proxies keep it open,
/// in one message with a `keepalive` event whose data is [`KEEPALIVE_FRAME`], because
/// `EventSource` never surfaces comments: the event is what lets a page tell an idle stream
/// from a stalled one, as the WebSocket frame does. `EventSource` delivers a named event only
/// to a listener for that name, so pages that do not listen for it never see it, and it has
/// no `id:`, so it moves no resume point.
///
/// # Examples
///
/// ```
/// use status_messenger::web::{KEEPALIVE_FRAME, SSE_KEEPALIVE};
///
/// assert!(SSE_KEEPALIVE.starts_with(": keep-alive\n"));
/// assert!(SSE_KEEPALIVE.contains("\nevent: keepalive\n"));
/// assert!(SSE_KEEPALIVE.ends_with(&format!("\ndata: {KEEPALIVE_FRAME}\n\n")));
/// assert!(!SSE_KEEPALIVE.contains("id:"));
/// ```
pub const SSE_KEEPALIVE: &str =
    ": keep-alive\nevent: keepalive\ndata: {\"type\":\"keepalive\"}\n\n";

/// What kind of event a [`Frame`] carries.
///
/// # Examples
///
/// ```
/// use status_messenger::web::{Frame, FrameKind};
/// use status_messenger::Hub;
/// use futures_util::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.publish(Some("s"), "hi").unwrap();
/// let event = hub.subscribe("s", None).next().await.unwrap();
/// assert_eq!(Frame::encode(&event).unwrap().kind(), FrameKind::Status);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// `{"session", "seq", "text"}` and the optional fields that are set.
    Status,
    /// `{"type": "gap", "session", "from", "to"}`.
    Gap,
    /// `{"type": "task", "session", "task", "state", "last_seq"}`, and `"message"` when the
    /// task has one.
    Task,
}

/// One event as the contract's JSON frame, serialized once for either transport.
///
/// A status is `{"session": "ID", "seq": n, "text": "..."}`, followed by those of its optional
/// fields that are set, in this order: `"task"` (the task that added it), `"progress":
/// {"current": c, "total": t}`, `"level"` (`"info"`, `"warn"`, `"error"`), `"key"` and `"data"`
/// (its JSON, as it is); a status without them is exactly the three-field frame. A gap is
/// `{"type": "gap", "session": "ID", "from": a, "to": b}`, a task update
/// `{"type": "task", "session": "ID", "task": "ID", "state": S, "last_seq": n}`. On a
/// WebSocket the JSON is one text frame; on SSE it is the `data:` line after an `id:` line (the
/// status's seq, or the gap's `to`, so that a resume moves past what was declared missing;
/// a task update has none) and, for a gap or a task update, `event: gap` or `event: task`.
///
/// A status with every field:
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::web::Frame;
/// use status_messenger::{Hub, JsonData, Level, StatusMessage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// let status = StatusMessage::new("page 3")
///     .progress(3, 10)
///     .level(Level::Warn)
///     .key("reading")
///     .data(JsonData::new(r#"{ "url": "https://example.com" }"#).unwrap());
/// hub.publish_message(Some("s"), status).unwrap();
/// let frame = Frame::encode(&hub.subscribe("s", None).next().await.unwrap()).unwrap();
/// assert_eq!(
///     frame.json(),
///     r#"{"session":"s","seq":1,"text":"page 3","progress":{"current":3,"total":10},"level":"warn","key":"reading","data":{"url":"https://example.com"}}"#
/// );
/// # }
/// ```
///
/// Statuses and gaps:
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::web::Frame;
/// use status_messenger::{Hub, HubConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut config = HubConfig::default();
/// config.history_capacity = 1;
/// let hub = Hub::new(config).unwrap();
/// hub.publish(Some("s"), "one").unwrap();
/// hub.publish(Some("s"), "two \"quoted\"").unwrap();
/// let mut sub = hub.subscribe("s", None);
///
/// let gap = Frame::encode(&sub.next().await.unwrap()).unwrap();
/// assert_eq!(gap.json(), r#"{"type":"gap","session":"s","from":1,"to":1}"#);
/// assert_eq!(gap.to_sse(), "id: 1\nevent: gap\ndata: {\"type\":\"gap\",\"session\":\"s\",\"from\":1,\"to\":1}\n\n");
///
/// let status = Frame::encode(&sub.next().await.unwrap()).unwrap();
/// assert_eq!(status.json(), r#"{"session":"s","seq":2,"text":"two \"quoted\""}"#);
/// assert_eq!((status.sse_id(), status.sse_event()), (Some(2), None));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    json: String,
    kind: FrameKind,
    id: Option<u64>,
}

/// The status frame as serde writes it: what [`status_json`] must write, byte for byte.
#[cfg(test)]
#[derive(Serialize)]
struct StatusJson<'a> {
    session: &'a str,
    seq: u64,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

#[cfg(test)]
#[derive(Serialize)]
struct ProgressJson {
    current: u64,
    total: u64,
}

#[derive(Serialize)]
struct GapJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    session: &'a str,
    from: u64,
    to: u64,
}

#[derive(Serialize)]
struct TaskJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    session: &'a str,
    task: &'a str,
    state: &'static str,
    last_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

impl Frame {
    /// Encodes `event`; `None` for an event that has no frame (skip it, as clients skip frame
    /// types they do not know).
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::web::Frame;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s"), "hello").unwrap();
    /// let frame = Frame::encode(&hub.subscribe("s", None).next().await.unwrap()).unwrap();
    /// let json: serde_json::Value = serde_json::from_str(frame.json()).unwrap();
    /// assert_eq!((json["seq"].as_u64(), json["text"].as_str()), (Some(1), Some("hello")));
    /// # }
    /// ```
    ///
    /// A task update, as every subscription starts with:
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::web::{Frame, FrameKind};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let task = hub.start_task("s").unwrap();
    /// let id = task.id().to_owned();
    /// task.cancel();
    /// let frame = Frame::encode(&hub.subscribe("s", None).next().await.unwrap()).unwrap();
    /// assert_eq!(frame.kind(), FrameKind::Task);
    /// let expected = format!(
    ///     r#"{{"type":"task","session":"s","task":"{id}","state":"cancelling","last_seq":0}}"#
    /// );
    /// assert_eq!(frame.json(), expected);
    /// assert_eq!(frame.to_sse(), format!("event: task\ndata: {expected}\n\n"));
    /// # }
    /// ```
    pub fn encode(event: &Event) -> Option<Frame> {
        // Serializing strings and integers cannot fail; a failure would only drop the frame.
        match event {
            Event::Status(status) => Some(Frame {
                json: status_json(status),
                kind: FrameKind::Status,
                id: Some(status.seq()),
            }),
            Event::Gap(gap) => serde_json::to_string(&GapJson {
                kind: "gap",
                session: gap.session(),
                from: gap.from(),
                to: gap.to(),
            })
            .ok()
            .map(|json| Frame {
                json,
                kind: FrameKind::Gap,
                id: Some(gap.to()),
            }),
            // No id: a task frame is no resume point (every resume starts with the tasks).
            Event::Task(update) => serde_json::to_string(&TaskJson {
                kind: "task",
                session: update.session(),
                task: update.task(),
                state: update.state().as_str(),
                last_seq: update.last_seq(),
                message: update.message(),
            })
            .ok()
            .map(|json| Frame {
                json,
                kind: FrameKind::Task,
                id: None,
            }),
        }
    }

    /// What kind of event it carries.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::web::{Frame, FrameKind};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mut config = status_messenger::HubConfig::default();
    /// # config.history_capacity = 1;
    /// # let hub = status_messenger::Hub::new(config).unwrap();
    /// hub.publish(Some("s"), "a").unwrap();
    /// hub.publish(Some("s"), "b").unwrap();
    /// let gap = hub.subscribe("s", None).next().await.unwrap();
    /// assert_eq!(Frame::encode(&gap).unwrap().kind(), FrameKind::Gap);
    /// # }
    /// ```
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// The JSON text: a WebSocket text frame, or an SSE `data:` line.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::web::Frame;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s"), "x").unwrap();
    /// let frame = Frame::encode(&hub.subscribe("s", None).next().await.unwrap()).unwrap();
    /// assert_eq!(frame.json(), r#"{"session":"s","seq":1,"text":"x"}"#);
    /// # }
    /// ```
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The JSON text, owned, for a transport that takes a `String` without copying it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::web::Frame;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s"), "x").unwrap();
    /// let frame = Frame::encode(&hub.subscribe("s", None).next().await.unwrap()).unwrap();
    /// let text: String = frame.into_json();
    /// assert!(text.starts_with('{'));
    /// # }
    /// ```
    pub fn into_json(self) -> String {
        self.json
    }

    /// The SSE `id:` of the frame: a status's seq, a gap's `to`; `None` for frames that carry
    /// no resume point.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::web::Frame;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s"), "x").unwrap();
    /// let frame = Frame::encode(&hub.subscribe("s", None).next().await.unwrap()).unwrap();
    /// assert_eq!(frame.sse_id(), Some(1));
    /// # }
    /// ```
    pub fn sse_id(&self) -> Option<u64> {
        self.id
    }

    /// The SSE `event:` name: `None` (a plain message) for a status, `"gap"` for a gap,
    /// `"task"` for a task update.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::web::Frame;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s"), "x").unwrap();
    /// let frame = Frame::encode(&hub.subscribe("s", None).next().await.unwrap()).unwrap();
    /// assert_eq!(frame.sse_event(), None);
    /// # }
    /// ```
    pub fn sse_event(&self) -> Option<&'static str> {
        match self.kind {
            FrameKind::Status => None,
            FrameKind::Gap => Some("gap"),
            FrameKind::Task => Some("task"),
        }
    }

    /// Appends the frame as one SSE message to `out`: `id:`, `event:` when it has one, `data:`,
    /// and the blank line that ends the message.
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::web::Frame;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s"), "x").unwrap();
    /// let frame = Frame::encode(&hub.subscribe("s", None).next().await.unwrap()).unwrap();
    /// let mut body = String::from(": hello\n\n");
    /// frame.write_sse(&mut body);
    /// assert_eq!(body, ": hello\n\nid: 1\ndata: {\"session\":\"s\",\"seq\":1,\"text\":\"x\"}\n\n");
    /// # }
    /// ```
    pub fn write_sse(&self, out: &mut String) {
        out.reserve(self.json.len() + 40);
        if let Some(id) = self.id {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "id: {id}");
        }
        if let Some(event) = self.sse_event() {
            out.push_str("event: ");
            out.push_str(event);
            out.push('\n');
        }
        out.push_str("data: ");
        out.push_str(&self.json);
        out.push_str("\n\n");
    }

    /// The frame as one SSE message (see [`write_sse`](Frame::write_sse)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # use status_messenger::web::Frame;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s"), "x").unwrap();
    /// let frame = Frame::encode(&hub.subscribe("s", None).next().await.unwrap()).unwrap();
    /// assert!(frame.to_sse().starts_with("id: 1\ndata: {"));
    /// # }
    /// ```
    pub fn to_sse(&self) -> String {
        let mut out = String::new();
        self.write_sse(&mut out);
        out
    }
}

/// A status's frame, the JSON serde would write for it (`StatusJson`, then `data` raw), written
/// straight into one buffer of the frame's size: this runs once per status per stream, and
/// serde's string writer checks and copies byte by byte, where most texts and every id need
/// no escape at all and are copied whole.
fn status_json(status: &crate::Status) -> String {
    // Written into a buffer of exactly its length where that is known (no string in it needs
    // an escape, which is the common case): a `String` whose capacity is its length becomes
    // `Bytes` (the WebSocket message) without a second allocation, a shared header with a
    // locked count, and a second free.
    if let Some(len) = plain_status_len(status) {
        let mut json = String::with_capacity(len);
        write_plain_status(&mut json, status);
        debug_assert_eq!(json.len(), len, "the length computed for a status frame");
        return json;
    }
    let mut json = String::with_capacity(
        status.session().len()
            + status.text().len()
            + status.task().map_or(0, str::len)
            + status.key().map_or(0, str::len)
            + status.data().map_or(0, |data| data.as_str().len())
            + 160,
    );
    write_status(&mut json, status, push_json_str);
    json
}

/// Where a status's JSON goes: a `String`, or a framework's byte buffer (the actix outbox
/// writes a frame's JSON straight behind its WebSocket header).
pub(crate) trait JsonOut {
    /// Appends `text` as it is.
    fn put(&mut self, text: &str);

    /// Appends `n` in decimal.
    fn put_u64(&mut self, n: u64) {
        self.put(itoa::Buffer::new().format(n));
    }
}

/// Counts what [`write_status`] would write, and whether a string in it needs an escape, so
/// that measuring a frame follows the writer field for field.
#[derive(Default)]
struct Measure {
    len: usize,
    escaped: bool,
}

impl JsonOut for Measure {
    fn put(&mut self, text: &str) {
        self.len += text.len();
    }

    fn put_u64(&mut self, n: u64) {
        self.len += decimal_len(n);
    }
}

/// Measures `text` as a JSON string written without escapes, noting whether it needs one.
fn measure_plain_json_str(out: &mut Measure, text: &str) {
    out.escaped |= needs_escape(text);
    out.len += text.len() + 2;
}

impl JsonOut for String {
    fn put(&mut self, text: &str) {
        self.push_str(text);
    }
}

/// Writes the JSON of `status`, which [`plain_status_len`] measured (none of its strings needs
/// an escape): exactly that many bytes.
pub(crate) fn write_plain_status<W: JsonOut>(out: &mut W, status: &crate::Status) {
    write_status(out, status, push_plain_json_str);
}

/// The status's JSON, its strings written by `push_str`.
fn write_status<W: JsonOut>(out: &mut W, status: &crate::Status, push_str: fn(&mut W, &str)) {
    out.put("{\"session\":");
    push_str(out, status.session());
    out.put(",\"seq\":");
    push_u64(out, status.seq());
    out.put(",\"text\":");
    push_str(out, status.text());
    if let Some(task) = status.task() {
        out.put(",\"task\":");
        push_str(out, task);
    }
    if let Some(progress) = status.progress() {
        out.put(",\"progress\":{\"current\":");
        push_u64(out, progress.current());
        out.put(",\"total\":");
        push_u64(out, progress.total());
        out.put("}");
    }
    if let Some(level) = status.level() {
        out.put(",\"level\":");
        push_str(out, level.as_str());
    }
    if let Some(key) = status.key() {
        out.put(",\"key\":");
        push_str(out, key);
    }
    if let Some(data) = status.data() {
        // [`JsonData`](crate::JsonData) text is already checked and compact (no newline
        // outside an escape), so it goes in as it is, with no second parse and no
        // `serde_json` raw-value feature.
        out.put(",\"data\":");
        out.put(data.as_str());
    }
    out.put("}");
}

/// The length of the status's JSON when none of its strings needs an escape, else `None`;
/// measured by [`write_status`] itself.
pub(crate) fn plain_status_len(status: &crate::Status) -> Option<usize> {
    let mut measure = Measure::default();
    write_status(&mut measure, status, measure_plain_json_str);
    (!measure.escaped).then_some(measure.len)
}

/// Digits of `n` in decimal.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Whether `text` needs an escape in a JSON string (a quote, a backslash, a control character).
fn needs_escape(text: &str) -> bool {
    // One pass over all the bytes, without an early exit, so that it runs a block at a time.
    text.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Appends `text`, which needs no escape, as a JSON string.
fn push_plain_json_str<W: JsonOut>(out: &mut W, text: &str) {
    out.put("\"");
    out.put(text);
    out.put("\"");
}

/// Appends `text` as a JSON string, escaped exactly as serde_json escapes it.
fn push_json_str<W: JsonOut>(out: &mut W, text: &str) {
    if needs_escape(text) {
        // Rare (a quote, a backslash, a control character): serde's own escapes.
        match serde_json::to_string(text) {
            Ok(quoted) => out.put(&quoted),
            // Serializing a string cannot fail.
            Err(_) => out.put("\"\""),
        }
    } else {
        push_plain_json_str(out, text);
    }
}

fn push_u64<W: JsonOut>(out: &mut W, n: u64) {
    out.put_u64(n);
}

/// A frame a client may send on the WebSocket that means something; every other is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientFrame {
    /// `{"type": "cancel", "task": "ID"}`: cancel that task of the socket's session.
    Cancel { task: String },
}

/// A client's JSON object as far as it is read: the two fields a cancel frame needs. Any
/// other field is skipped without being kept (serde's internally tagged enums buffer the
/// whole object first), so reading a frame of any length the socket lets through costs no
/// more memory than the frame.
#[derive(Deserialize)]
struct ClientJson<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    task: Option<String>,
}

impl ClientFrame {
    /// Reads a client's text frame (at most the socket's message limit long); `None` for
    /// anything that is not a known frame.
    pub(crate) fn parse(text: &str) -> Option<ClientFrame> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let json: ClientJson<'_> = serde_json::from_str(text).ok()?;
        match (json.kind.as_deref(), json.task) {
            (Some("cancel"), Some(task)) => Some(ClientFrame::Cancel { task }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{status_json, ClientFrame, ProgressJson, StatusJson};
    use crate::{Event, Hub, JsonData, Level, StatusMessage};
    use futures_util::{FutureExt, StreamExt};

    /// The hand-written status encoder writes what serde writes, for texts that need every
    /// kind of escape and for the optional fields (the task's, set only by a tool's messenger,
    /// is the same string writer; the demo tests see it in frames).
    #[tokio::test]
    async fn status_frames_are_what_serde_writes() {
        let texts = [
            "plain",
            "",
            "quote \" and backslash \\",
            "controls \n\r\t\u{8}\u{c}\u{1}\u{1f} end",
            "unicode é 漢字 \u{7f} 🎉",
            "</script>",
        ];
        let mut exact = 0;
        // A session id that needs an escape, and one that does not (the common case).
        for session in ["s\"1", "s2"] {
            let hub = Hub::new(Default::default()).unwrap();
            for (i, text) in texts.iter().enumerate() {
                let mut message = StatusMessage::new(*text);
                if i % 2 == 1 {
                    message = message.progress(i as u64, 99).level(Level::Warn);
                }
                if i % 3 == 1 {
                    // Escaped only where the session id is too, so the other session's
                    // statuses 0, 1, 4 and 5 need no escape at all.
                    let quote = if session.contains('"') { "\"" } else { "" };
                    message = message.key(format!("k{quote}{i}"));
                }
                if i % 3 == 2 {
                    message = message.data(JsonData::new(r#"{"a": [1, "x"]}"#).unwrap());
                }
                hub.publish_message(Some(session), message).unwrap();
            }
            let mut subscription = hub.subscribe(session, None);
            let mut checked = 0;
            while let Some(Some(event)) = subscription.next().now_or_never() {
                let Event::Status(status) = event else {
                    continue;
                };
                let mut serde = serde_json::to_string(&StatusJson {
                    session: status.session(),
                    seq: status.seq(),
                    text: status.text(),
                    task: status.task(),
                    progress: status.progress().map(|p| ProgressJson {
                        current: p.current(),
                        total: p.total(),
                    }),
                    level: status.level().map(|level| level.as_str()),
                    key: status.key(),
                })
                .unwrap();
                if let Some(data) = status.data() {
                    // The data goes in last, as it is.
                    serde.pop();
                    serde.push_str(",\"data\":");
                    serde.push_str(data.as_str());
                    serde.push('}');
                }
                let json = status_json(&status);
                assert_eq!(json, serde);
                if super::plain_status_len(&status).is_some() {
                    // Exactly its length: the frame becomes a message without a second allocation.
                    assert_eq!(json.capacity(), json.len(), "{json}");
                    exact += 1;
                }
                checked += 1;
            }
            assert_eq!(checked, texts.len());
        }
        assert_eq!(
            exact, 4,
            "every plain status was written into a buffer of its length"
        );
    }

    #[test]
    fn client_frames() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"cancel","task":"t1"}"#),
            Some(ClientFrame::Cancel { task: "t1".into() })
        );
        assert_eq!(
            ClientFrame::parse(r#" {"task":"t1","type":"cancel","extra":1}"#),
            Some(ClientFrame::Cancel { task: "t1".into() })
        );
        // Escapes in the type, and a frame far longer than a cancel needs: still a cancel.
        let padded = format!(
            r#"{{"type":"can\u0063el","pad":"{}","task":"t2"}}"#,
            "x".repeat(60_000)
        );
        assert_eq!(
            ClientFrame::parse(&padded),
            Some(ClientFrame::Cancel { task: "t2".into() })
        );
        for ignored in [
            r#"{"type":"other"}"#,
            r#"{"type":"cancel"}"#,
            r#"{"type":"cancel","task":5}"#,
            r#"{"type":"cancel","task":null}"#,
            r#"{"type":"cancel","type":"cancel","task":"t1"}"#,
            r#"{"task":"t1"}"#,
            r#"{"type":"cancel","task":"t1"} trailing"#,
            "cancel",
            "",
            "{",
        ] {
            assert_eq!(ClientFrame::parse(ignored), None, "{ignored}");
        }
    }
}
