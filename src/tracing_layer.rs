//! A `tracing` bridge: [`StatusLayer`] turns the `tracing` events an application marks into
//! statuses of the session they happen in, so tool code already instrumented with `tracing`
//! reports to the user without calling this crate.
//!
//! # Which events
//!
//! An event becomes a status when all of these hold:
//!
//! - it is **marked**: its target is `status` (or starts with `status::`), as in
//!   `tracing::info!(target: "status", pages = 3, "Reading pages")`, or it has a field named
//!   `status` whose value is not `false`, as in
//!   `tracing::warn!(status = true, "Rate limited, retrying")` (any other value marks it too;
//!   `status = false` leaves it in the logs). Both names can be changed
//!   ([`StatusLayer::target`], [`StatusLayer::field`]). Marking by target suits a
//!   module that reports everything it logs; marking by field picks single events out of
//!   ordinary logging. Nothing else is ever turned into a status, so debug logging never
//!   reaches a user's page by accident.
//! - it happens **inside a session**: where [`current_session_id`](crate::current_session_id)
//!   is set, which the crate's context carries across threads. Elsewhere the layer does
//!   nothing.
//! - it is not the crate's own (targets `status_messenger*`), so a status never makes another.
//!
//! # What the status holds
//!
//! - its text: the event's message (empty when it has none);
//! - its [`Level`]: `error` for `ERROR`, `warn` for `WARN`, `info` for the rest;
//! - its data: the event's other fields as one JSON object (numbers and booleans as JSON
//!   numbers and booleans, except a float that is NaN or infinite, which JSON cannot hold:
//!   `null`; everything else, `?debug` and `%display` values included, as strings), without
//!   the marker field; no data when there are no such fields;
//! - inside a [`Task`](crate::Task), the task's id, like any status added there.
//!
//! The status goes to the current messenger (the scoped default, else the global one), as
//! [`add_status`](crate::add_status) would send it, or to the messenger given with
//! [`StatusLayer::with_messenger`].
//!
//! The layer looks only at the events it is handed; filters on it or on the subscriber apply
//! as usual (an event disabled at `INFO` never reaches it).
//!
//! It is a layer like any other: `tracing_subscriber::registry().with(StatusLayer::new())`,
//! beside the application's own `fmt` layer. This crate turns on only tracing-subscriber's
//! `std` feature, so an application that builds its subscriber that way depends on
//! `tracing-subscriber` itself with the `registry` feature (and `fmt`, `env-filter` as it
//! uses them).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::json;
use crate::messenger::CURRENT_WEBSOCKET_SESSION_ID;
use crate::{JsonData, Level, Messenger, StatusMessage};

/// A `tracing_subscriber` layer that turns marked events inside a session into statuses of
/// that session; see the [module docs](self) for which events and what the statuses hold.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::tracing_layer::StatusLayer;
/// use status_messenger::{Event, Hub, Level, Messenger, SessionContext};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// let messenger = Messenger::new();
/// hub.attach(&messenger).unwrap();
/// let subscriber = tracing_subscriber::registry().with(StatusLayer::new());
///
/// tracing::subscriber::with_default(subscriber, || {
///     SessionContext::new("user-1").with_messenger(&messenger).run(|| {
///         // Tool code that only knows `tracing`:
///         tracing::info!(target: "status", pages = 3, "Reading pages");
///         tracing::warn!(status = true, retry_in_ms = 500, "Rate limited");
///         tracing::info!("ordinary logging stays in the logs");
///         tracing::info!(status = false, "and so does this");
///     });
///     tracing::info!(target: "status", "outside any session: nothing");
/// });
///
/// let mut page = hub.subscribe("user-1", None);
/// let Some(Event::Status(first)) = page.next().await else { panic!() };
/// assert_eq!((first.text(), first.level()), ("Reading pages", Some(Level::Info)));
/// assert_eq!(first.data().map(|d| d.as_str()), Some(r#"{"pages":3}"#));
/// let Some(Event::Status(second)) = page.next().await else { panic!() };
/// assert_eq!((second.text(), second.level()), ("Rate limited", Some(Level::Warn)));
/// assert_eq!(second.data().map(|d| d.as_str()), Some(r#"{"retry_in_ms":500}"#));
/// assert_eq!(hub.stats().accepted, 2);
/// # }
/// ```
#[derive(Clone)]
pub struct StatusLayer {
    target: Cow<'static, str>,
    field: Cow<'static, str>,
    messenger: Option<Messenger>,
}

impl fmt::Debug for StatusLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusLayer")
            .field("target", &self.target)
            .field("field", &self.field)
            .field("messenger", &self.messenger)
            .finish()
    }
}

impl Default for StatusLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusLayer {
    /// A layer marking events by the target `status` or the field `status`, sending to the
    /// current messenger.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = status_messenger::tracing_layer::StatusLayer::new();
    /// assert_eq!((layer.marker_target(), layer.marker_field()), ("status", "status"));
    /// ```
    pub fn new() -> Self {
        Self {
            target: Cow::Borrowed("status"),
            field: Cow::Borrowed("status"),
            messenger: None,
        }
    }

    /// Marks events by this target instead (and targets starting with it and `::`).
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = status_messenger::tracing_layer::StatusLayer::new().target("agent::progress");
    /// assert_eq!(layer.marker_target(), "agent::progress");
    /// ```
    #[must_use]
    pub fn target(mut self, target: impl Into<Cow<'static, str>>) -> Self {
        self.target = target.into();
        self
    }

    /// Marks events by a field of this name instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = status_messenger::tracing_layer::StatusLayer::new().field("user_visible");
    /// assert_eq!(layer.marker_field(), "user_visible");
    /// ```
    #[must_use]
    pub fn field(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.field = name.into();
        self
    }

    /// Sends to `messenger` instead of the current one.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::tracing_layer::StatusLayer;
    /// use status_messenger::{Messenger, SessionContext};
    /// use tracing_subscriber::layer::SubscriberExt;
    ///
    /// let messenger = Messenger::new();
    /// let subscriber = tracing_subscriber::registry()
    ///     .with(StatusLayer::new().with_messenger(&messenger));
    /// tracing::subscriber::with_default(subscriber, || {
    ///     SessionContext::new("s1").run(|| tracing::info!(target: "status", "hello"));
    /// });
    /// assert_eq!(messenger.stream().pending(), 1);
    /// ```
    #[must_use]
    pub fn with_messenger(mut self, messenger: &Messenger) -> Self {
        self.messenger = Some(messenger.clone());
        self
    }

    /// The target that marks events.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::tracing_layer::StatusLayer::new().marker_target(), "status");
    /// ```
    pub fn marker_target(&self) -> &str {
        &self.target
    }

    /// The field name that marks events.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::tracing_layer::StatusLayer::new().marker_field(), "status");
    /// ```
    pub fn marker_field(&self) -> &str {
        &self.field
    }

    /// How `metadata` marks its events: by target, by a field (whose value may still say
    /// `false`), or not at all.
    fn marks(&self, metadata: &tracing::Metadata<'_>) -> Option<Marked> {
        let target = metadata.target();
        if target.starts_with("status_messenger") {
            return None;
        }
        let by_target = target
            .strip_prefix(&*self.target)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"));
        if by_target {
            Some(Marked::ByTarget)
        } else {
            metadata
                .fields()
                .field(&*self.field)
                .map(|_| Marked::ByField)
        }
    }
}

/// How an event is marked as a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marked {
    ByTarget,
    ByField,
}

thread_local! {
    /// Set while this thread turns an event into a status, so nothing it logs meanwhile
    /// becomes one.
    static CONVERTING: Cell<bool> = const { Cell::new(false) };
}

impl<S: Subscriber> Layer<S> for StatusLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let Some(marked) = self.marks(metadata) else {
            return;
        };
        let in_session = CURRENT_WEBSOCKET_SESSION_ID
            .try_with(Option::is_some)
            .unwrap_or(false);
        if !in_session
            || CONVERTING
                .try_with(|busy| busy.replace(true))
                .unwrap_or(true)
        {
            return;
        }
        let mut fields = Fields {
            marker: &self.field,
            message: String::new(),
            data: String::new(),
            marker_false: false,
        };
        event.record(&mut fields);
        if marked == Marked::ByField && fields.marker_false {
            // `status = false`: marked as not a status.
            let _ = CONVERTING.try_with(|busy| busy.set(false));
            return;
        }
        let level = match *metadata.level() {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            _ => Level::Info,
        };
        let mut status = StatusMessage::new(fields.message).level(level);
        if !fields.data.is_empty() {
            fields.data.push('}');
            status = status.data(JsonData::from_trusted(fields.data));
        }
        match &self.messenger {
            Some(messenger) => messenger.add_status(status),
            None => crate::add_status(status),
        }
        // Setting a thread-local that was readable just above cannot fail.
        let _ = CONVERTING.try_with(|busy| busy.set(false));
    }
}

/// Collects an event's message and its other fields as a JSON object's members.
struct Fields<'a> {
    marker: &'a str,
    message: String,
    /// `{"name":value,...` without the closing brace; empty while no field was added.
    data: String,
    /// Whether the marker field was the boolean `false`.
    marker_false: bool,
}

impl Fields<'_> {
    /// Starts the member for `field`; `false` for the message and the marker.
    fn member(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name == "message" || name == self.marker {
            return false;
        }
        self.data.push(if self.data.is_empty() { '{' } else { ',' });
        json::write_str(&mut self.data, name);
        self.data.push(':');
        true
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // The message is `format_args!`, whose Debug is the formatted text.
            let _ = write!(self.message, "{value:?}");
        } else if self.member(field) {
            json::write_str(&mut self.data, &format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if self.member(field) {
            json::write_str(&mut self.data, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.member(field) {
            json::write_str(&mut self.data, &value.to_string());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !value && field.name() == self.marker {
            self.marker_false = true;
        }
        if self.member(field) {
            self.data.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.member(field) {
            let _ = write!(self.data, "{value}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.member(field) {
            let _ = write!(self.data, "{value}");
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        if self.member(field) {
            let _ = write!(self.data, "{value}");
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        if self.member(field) {
            let _ = write!(self.data, "{value}");
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.member(field) {
            json::write_f64(&mut self.data, value);
        }
    }
}
