//! Structured statuses: [`StatusMessage`], a status's text with optional fields (progress, level,
//! key, JSON data), and the field types.
//!
//! # Invariants
//!
//! - A [`JsonData`] holds one valid JSON value, compact (no whitespace between tokens, so no
//!   newline): it can only be made by [`JsonData::new`] (which checks and compacts), from a
//!   `serde_json::Value`, or by this crate from text it wrote itself.
//! - A [`StatusMessage`] with no field set holds no allocation beyond its text: the fields are
//!   boxed, so plain statuses stay as cheap as `add_status_message`'s.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::json;
use crate::task::TaskRef;

/// How important a status is; the contract's `"level"` field.
///
/// # Examples
///
/// ```
/// use status_messenger::Level;
///
/// assert_eq!(Level::Warn.as_str(), "warn");
/// assert_eq!("error".parse::<Level>(), Ok(Level::Error));
/// assert!("loud".parse::<Level>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Level {
    /// `"info"`: ordinary progress.
    Info,
    /// `"warn"`: something the user may want to know (a retry, a slow source).
    Warn,
    /// `"error"`: something failed (the task may still go on).
    Error,
}

impl Level {
    /// The name the contract uses: `"info"`, `"warn"` or `"error"`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::Level::Info.as_str(), "info");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`Level`]; from `str::parse`.
///
/// # Examples
///
/// ```
/// let error = "loud".parse::<status_messenger::Level>().unwrap_err();
/// assert_eq!(error.to_string(), "unknown level (expected info, warn or error)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownLevel;

impl fmt::Display for UnknownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown level (expected info, warn or error)")
    }
}

impl std::error::Error for UnknownLevel {}

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "info" => Ok(Level::Info),
            "warn" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            _ => Err(UnknownLevel),
        }
    }
}

/// How far along a task is: `current` of `total` steps; the contract's
/// `"progress": {"current": c, "total": t}`.
///
/// # Examples
///
/// ```
/// let progress = status_messenger::Progress::new(3, 10);
/// assert_eq!((progress.current(), progress.total()), (3, 10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Progress {
    current: u64,
    total: u64,
}

impl Progress {
    /// `current` of `total` steps. Neither is checked against the other: a tool that learns
    /// of more work may report `current > total` for a while.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::Progress::new(1, 2).total(), 2);
    /// ```
    pub fn new(current: u64, total: u64) -> Self {
        Self { current, total }
    }

    /// Steps done.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::Progress::new(4, 5).current(), 4);
    /// ```
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Steps in all.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::Progress::new(4, 5).total(), 5);
    /// ```
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// One JSON value, checked and compact: a status's `data`.
///
/// The crate needs no JSON library for it: [`JsonData::new`] checks the text (RFC 8259, at
/// most 128 levels deep, no lone surrogate) and drops the whitespace between tokens, so the
/// text can be put into a frame as it is, on one line. With the `serde_json` feature it also
/// converts from and to `serde_json::Value`. Cheap to clone (a shared string).
///
/// # Examples
///
/// ```
/// use status_messenger::JsonData;
///
/// let data = JsonData::new(r#"{ "url": "https://example.com", "pages": [1, 2] }"#).unwrap();
/// assert_eq!(data.as_str(), r#"{"url":"https://example.com","pages":[1,2]}"#);
/// assert!(JsonData::new("{not json}").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonData(Arc<str>);

impl JsonData {
    /// Checks that `text` is one JSON value and keeps it compact.
    ///
    /// # Errors
    ///
    /// [`InvalidJson`] saying what is wrong and where.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::JsonData;
    ///
    /// assert_eq!(JsonData::new(" [1, 2] ").unwrap().as_str(), "[1,2]");
    /// let error = JsonData::new("[1, 2").unwrap_err();
    /// assert_eq!(error.offset(), 5);
    /// ```
    pub fn new(text: &str) -> Result<JsonData, InvalidJson> {
        json::compact(text)
            .map(|compact| JsonData(Arc::from(compact)))
            .map_err(|invalid| InvalidJson {
                reason: invalid.reason,
                offset: invalid.at,
            })
    }

    /// Text this crate wrote and knows to be compact JSON.
    #[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
    pub(crate) fn from_trusted(text: String) -> JsonData {
        debug_assert!(json::compact(&text).as_deref() == Ok(text.as_str()));
        JsonData(Arc::from(text))
    }

    /// The compact JSON text.
    ///
    /// # Examples
    ///
    /// ```
    /// let data = status_messenger::JsonData::new("true").unwrap();
    /// assert_eq!(data.as_str(), "true");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text's length in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::JsonData::new("[1, 2]").unwrap().len(), 5);
    /// ```
    #[allow(clippy::len_without_is_empty)] // a JSON value is never empty
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The value as a `serde_json::Value`.
    ///
    /// # Examples
    ///
    /// ```
    /// let data = status_messenger::JsonData::new(r#"{"a": 1}"#).unwrap();
    /// assert_eq!(data.to_value()["a"], 1);
    /// ```
    #[cfg(feature = "serde_json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde_json")))]
    pub fn to_value(&self) -> serde_json::Value {
        // The text is valid JSON (see the module invariants); `Null` would only mean a bug.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(feature = "serde_json")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde_json")))]
impl From<&serde_json::Value> for JsonData {
    /// Writes `value` as compact JSON.
    ///
    /// ```
    /// let data = status_messenger::JsonData::from(&serde_json::json!({"pages": 3}));
    /// assert_eq!(data.as_str(), r#"{"pages":3}"#);
    /// ```
    fn from(value: &serde_json::Value) -> Self {
        JsonData(Arc::from(value.to_string()))
    }
}

#[cfg(feature = "serde_json")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde_json")))]
impl From<serde_json::Value> for JsonData {
    /// Writes `value` as compact JSON.
    ///
    /// ```
    /// let data: status_messenger::JsonData = serde_json::json!([1, "two"]).into();
    /// assert_eq!(data.as_str(), r#"[1,"two"]"#);
    /// ```
    fn from(value: serde_json::Value) -> Self {
        JsonData::from(&value)
    }
}

impl FromStr for JsonData {
    type Err = InvalidJson;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JsonData::new(text)
    }
}

impl TryFrom<&str> for JsonData {
    type Error = InvalidJson;

    fn try_from(text: &str) -> Result<Self, Self::Error> {
        JsonData::new(text)
    }
}

impl fmt::Debug for JsonData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for JsonData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for JsonData {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A text that [`JsonData::new`] refused: what is wrong, and at which byte.
///
/// # Examples
///
/// ```
/// let error = status_messenger::JsonData::new("[1,]").unwrap_err();
/// assert_eq!(error.reason(), "expected a value");
/// assert_eq!(error.offset(), 3);
/// assert_eq!(error.to_string(), "invalid json: expected a value at byte 3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InvalidJson {
    reason: &'static str,
    offset: usize,
}

impl InvalidJson {
    /// What is wrong.
    ///
    /// # Examples
    ///
    /// ```
    /// let error = status_messenger::JsonData::new("").unwrap_err();
    /// assert_eq!(error.reason(), "expected a value, found the end");
    /// ```
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The byte offset in the text where it was found.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::JsonData::new("1 2").unwrap_err().offset(), 2);
    /// ```
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Display for InvalidJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid json: {} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for InvalidJson {}

/// The optional fields of a status, boxed so a plain status does not carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) progress: Option<Progress>,
    pub(crate) level: Option<Level>,
    pub(crate) key: Option<String>,
    pub(crate) data: Option<JsonData>,
}

/// A status with optional fields beside its text: progress, level, key and JSON data; for
/// [`add_status`](crate::add_status).
///
/// A builder: each setter (`progress`, `level`, `key`, `data`) takes and returns the status,
/// and the getters are named `get_*`, as `std::process::Command`'s are.
///
/// [`add_status_message`](crate::add_status_message)`(text)` is `add_status(StatusMessage::new(text))`.
/// Each field is carried through the hub, its history and resume, and becomes the contract's
/// optional frame field of the same name; a client that does not know a field ignores it. A
/// status added inside a [`Task`](crate::Task) also carries the task's id.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{add_status, Event, Hub, JsonData, Level, Messenger, SessionContext};
/// use status_messenger::StatusMessage;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// let messenger = Messenger::new();
/// hub.attach(&messenger).unwrap();
///
/// SessionContext::new("s1").with_messenger(&messenger).run(|| {
///     add_status(
///         StatusMessage::new("Reading page 3 of 10")
///             .progress(3, 10)
///             .level(Level::Warn)
///             .key("reading")
///             .data(JsonData::new(r#"{"url": "https://example.com"}"#).unwrap()),
///     );
/// });
///
/// let Some(Event::Status(status)) = hub.subscribe("s1", None).next().await else { panic!() };
/// assert_eq!(status.text(), "Reading page 3 of 10");
/// assert_eq!(status.progress().map(|p| (p.current(), p.total())), Some((3, 10)));
/// assert_eq!(status.level(), Some(Level::Warn));
/// assert_eq!(status.key(), Some("reading"));
/// assert_eq!(status.data().map(|d| d.as_str()), Some(r#"{"url":"https://example.com"}"#));
/// # }
/// ```
#[derive(Clone, Default)]
pub struct StatusMessage {
    text: String,
    fields: Option<Box<Fields>>,
    /// Set by the messenger from the sender's context, never by the builder.
    task: Option<TaskRef>,
}

impl StatusMessage {
    /// A status with `text` and no field.
    ///
    /// # Examples
    ///
    /// ```
    /// let status = status_messenger::StatusMessage::new("Thinking...");
    /// assert_eq!(status.text(), "Thinking...");
    /// assert_eq!(status.get_progress(), None);
    /// ```
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            fields: None,
            task: None,
        }
    }

    fn fields_mut(&mut self) -> &mut Fields {
        self.fields.get_or_insert_with(Box::default)
    }

    /// Sets the progress: `current` of `total` steps.
    ///
    /// # Examples
    ///
    /// ```
    /// let status = status_messenger::StatusMessage::new("step").progress(2, 5);
    /// assert_eq!(status.get_progress(), Some(status_messenger::Progress::new(2, 5)));
    /// ```
    #[must_use]
    pub fn progress(mut self, current: u64, total: u64) -> Self {
        self.fields_mut().progress = Some(Progress::new(current, total));
        self
    }

    /// Sets the level.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Level, StatusMessage};
    ///
    /// assert_eq!(StatusMessage::new("slow").level(Level::Warn).get_level(), Some(Level::Warn));
    /// ```
    #[must_use]
    pub fn level(mut self, level: Level) -> Self {
        self.fields_mut().level = Some(level);
        self
    }

    /// Sets the key: a later status of the session with the same key supersedes this one on
    /// screen (a client keeps the latest per key in place). At most 256 bytes are kept
    /// ([`MAX_KEY_BYTES`](crate::hub::MAX_KEY_BYTES)).
    ///
    /// # Examples
    ///
    /// ```
    /// let status = status_messenger::StatusMessage::new("3 of 10").key("download");
    /// assert_eq!(status.get_key(), Some("download"));
    /// ```
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.fields_mut().key = Some(key.into());
        self
    }

    /// Sets the JSON data: a [`JsonData`], or with the `serde_json` feature a
    /// `serde_json::Value`. Data longer than the hub's
    /// [`max_status_bytes`](crate::HubConfig::max_status_bytes) is left out (the status is
    /// kept, counted in [`HubStats::truncated`](crate::HubStats::truncated)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{JsonData, StatusMessage};
    ///
    /// let status = StatusMessage::new("found").data(JsonData::new(r#"{"hits": 3}"#).unwrap());
    /// assert_eq!(status.get_data().map(|d| d.as_str()), Some(r#"{"hits":3}"#));
    /// ```
    #[must_use]
    pub fn data(mut self, data: impl Into<JsonData>) -> Self {
        self.fields_mut().data = Some(data.into());
        self
    }

    /// The text.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::StatusMessage::new("hi").text(), "hi");
    /// ```
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text, taken out.
    ///
    /// # Examples
    ///
    /// ```
    /// let text: String = status_messenger::StatusMessage::new("hi").into_text();
    /// assert_eq!(text, "hi");
    /// ```
    pub fn into_text(self) -> String {
        self.text
    }

    /// The progress, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::StatusMessage;
    ///
    /// assert_eq!(StatusMessage::new("x").progress(1, 2).get_progress().map(|p| p.current()), Some(1));
    /// ```
    pub fn get_progress(&self) -> Option<Progress> {
        self.fields.as_ref().and_then(|f| f.progress)
    }

    /// The level, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::StatusMessage::new("x").get_level(), None);
    /// ```
    pub fn get_level(&self) -> Option<Level> {
        self.fields.as_ref().and_then(|f| f.level)
    }

    /// The key, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::StatusMessage::new("x").key("k").get_key(), Some("k"));
    /// ```
    pub fn get_key(&self) -> Option<&str> {
        self.fields.as_ref().and_then(|f| f.key.as_deref())
    }

    /// The data, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(status_messenger::StatusMessage::new("x").get_data().is_none());
    /// ```
    pub fn get_data(&self) -> Option<&JsonData> {
        self.fields.as_ref().and_then(|f| f.data.as_ref())
    }

    /// The id of the task it was added in, once a messenger has taken it (`None` for one made
    /// here and not sent, or sent outside any task).
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::{Hub, Messenger, StatusMessage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let messenger = Messenger::new();
    /// let task = hub.start_task("s1").unwrap();
    /// let id = task.id().to_owned();
    /// task.context().with_messenger(&messenger).run(|| messenger.add_status_message("step"));
    /// let (_, status) = messenger.stream().into_messages().next().await.unwrap();
    /// assert_eq!(status.task_id(), Some(id.as_str()));
    /// assert_eq!(StatusMessage::new("unsent").task_id(), None);
    /// # }
    /// ```
    pub fn task_id(&self) -> Option<&str> {
        self.task.as_ref().map(|task| &*task.id)
    }

    pub(crate) fn set_task(&mut self, task: Option<TaskRef>) {
        self.task = task;
    }

    /// Text, fields and task, taken apart.
    pub(crate) fn into_parts(self) -> (String, Option<Box<Fields>>, Option<TaskRef>) {
        (self.text, self.fields, self.task)
    }

    pub(crate) fn from_parts(
        text: String,
        fields: Option<Box<Fields>>,
        task: Option<TaskRef>,
    ) -> Self {
        Self { text, fields, task }
    }
}

impl fmt::Debug for StatusMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("StatusMessage");
        out.field("text", &self.text);
        if let Some(fields) = &self.fields {
            out.field("progress", &fields.progress)
                .field("level", &fields.level)
                .field("key", &fields.key)
                .field("data", &fields.data);
        }
        out.field("task", &self.task_id()).finish()
    }
}

/// Equal when text, fields and task id are equal.
impl PartialEq for StatusMessage {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.fields == other.fields && self.task_id() == other.task_id()
    }
}

impl Eq for StatusMessage {}

impl From<String> for StatusMessage {
    fn from(text: String) -> Self {
        StatusMessage::new(text)
    }
}

impl From<&str> for StatusMessage {
    fn from(text: &str) -> Self {
        StatusMessage::new(text)
    }
}
