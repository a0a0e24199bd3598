//! What an endpoint knows of a request before it answers: [`RequestInfo`], and how it says no:
//! [`Refusal`].
//!
//! # Invariants
//!
//! - A [`RequestInfo`] owns its headers and its decoded query pairs, so an authorization hook
//!   may keep it past the handler (an async hook does) and no framework type leaks into it.
//! - A [`Refusal`]'s status is always answered as a 4xx or 5xx: [`Refusal::status`] maps
//!   anything else to 500, so a hook cannot make an endpoint answer a success by mistake.

use std::borrow::Cow;
use std::fmt;

use http::HeaderMap;

use super::resume::{self, ResumeError};
use crate::hub::{CancelError, LookupError, OpenError, StartTaskError, SubscribeError};
use crate::{Hub, SessionId};

/// The parts of a request that decide who may read which session: headers (with cookies) and
/// the query string, decoded.
///
/// The integrations build one for every request to `/ws`, `/events` and `/cancel` and hand it
/// to the authorization hook ([`Endpoints::authorize`](super::Endpoints::authorize)); a server
/// on another framework builds one with [`RequestInfo::new`]. The query is decoded once, by
/// `serde_urlencoded` (`+` and percent escapes), and looked up by name; the first value of a
/// name wins.
///
/// # Examples
///
/// ```
/// use status_messenger::web::RequestInfo;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("cookie", "theme=dark; user=alice".parse().unwrap());
/// headers.insert("last-event-id", "7".parse().unwrap());
/// let request = RequestInfo::new(headers, Some("session=s%201&after=3&session=ignored"));
/// assert_eq!(request.query("session"), Some("s 1"));
/// assert_eq!(request.cookie("user"), Some("alice"));
/// assert_eq!(request.header("last-event-id"), Some("7"));
/// assert_eq!(request.resume_point(), Ok(Some(7)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    headers: HeaderMap,
    query: Vec<(String, String)>,
}

impl RequestInfo {
    /// A request with these headers and this query string (what follows `?`, undecoded).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::RequestInfo;
    ///
    /// let request = RequestInfo::new(http::HeaderMap::new(), Some("a=1&b=x+y"));
    /// assert_eq!((request.query("a"), request.query("b")), (Some("1"), Some("x y")));
    /// assert_eq!(RequestInfo::new(http::HeaderMap::new(), None).query("a"), None);
    /// ```
    pub fn new(headers: HeaderMap, query: Option<&str>) -> RequestInfo {
        // Decoding into owned pairs cannot fail: invalid UTF-8 is replaced, not refused.
        let query = query
            .and_then(|raw| serde_urlencoded::from_str::<Vec<(String, String)>>(raw).ok())
            .unwrap_or_default();
        RequestInfo { headers, query }
    }

    /// Every header of the request.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::RequestInfo;
    ///
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert(http::header::AUTHORIZATION, "Bearer t0k3n".parse().unwrap());
    /// let request = RequestInfo::new(headers, None);
    /// assert!(request.headers().contains_key(http::header::AUTHORIZATION));
    /// ```
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of header `name` (any case), when it is visible ASCII.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::RequestInfo;
    ///
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-user", "alice".parse().unwrap());
    /// let request = RequestInfo::new(headers, None);
    /// assert_eq!(request.header("X-User"), Some("alice"));
    /// assert_eq!(request.header("x-other"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The first value of query parameter `name`, decoded.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::RequestInfo;
    ///
    /// let request = RequestInfo::new(http::HeaderMap::new(), Some("session=..%2F..%2Fetc"));
    /// assert_eq!(request.query("session"), Some("../../etc"));
    /// ```
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every query parameter, decoded, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::RequestInfo;
    ///
    /// let request = RequestInfo::new(http::HeaderMap::new(), Some("a=1&a=2"));
    /// let pairs: Vec<(&str, &str)> = request.query_pairs().collect();
    /// assert_eq!(pairs, [("a", "1"), ("a", "2")]);
    /// ```
    pub fn query_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of cookie `name` from the `Cookie` headers, surrounding quotes removed.
    ///
    /// Cookie values are not decoded (RFC 6265 defines no decoding); a signed or encrypted
    /// cookie is checked by the application.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::RequestInfo;
    ///
    /// let mut headers = http::HeaderMap::new();
    /// headers.append("cookie", "a=1; user=\"bob\"".parse().unwrap());
    /// headers.append("cookie", "b=2".parse().unwrap());
    /// let request = RequestInfo::new(headers, None);
    /// assert_eq!(request.cookie("user"), Some("bob"));
    /// assert_eq!(request.cookie("b"), Some("2"));
    /// assert_eq!(request.cookie("c"), None);
    /// ```
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|line| line.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| key.trim() == name)
            .map(|(_, value)| {
                let value = value.trim();
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
            })
    }

    /// Where a stream resumes: the `Last-Event-ID` header (what `EventSource` sends on its own
    /// reconnects, so the newest), else the `last_event_id` query parameter, else `after`;
    /// `None` when none is given (or each is empty): from the start of history.
    ///
    /// # Errors
    ///
    /// A [`ResumeError`] naming the first one given that is not a non-negative integer.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::RequestInfo;
    ///
    /// let query = |q| RequestInfo::new(http::HeaderMap::new(), Some(q));
    /// assert_eq!(query("after=5").resume_point(), Ok(Some(5)));
    /// assert_eq!(query("last_event_id=9&after=5").resume_point(), Ok(Some(9)));
    /// assert_eq!(query("after=").resume_point(), Ok(None));
    /// assert_eq!(query("after=-1").resume_point().unwrap_err().parameter(), "after");
    /// ```
    pub fn resume_point(&self) -> Result<Option<u64>, ResumeError> {
        let header = match self.headers.get("last-event-id") {
            // A header that is not text is as wrong as one that is not a number.
            Some(value) => Some(value.to_str().unwrap_or("\u{fffd}")),
            None => None,
        };
        resume::resume_point(header, self.query("last_event_id"), self.query("after"))
    }
}

/// An endpoint's refusal: the HTTP status and the message of its `{"error": "..."}` body.
///
/// What an authorization hook returns instead of a session; every refusal is answered before
/// any upgrade, with `Content-Type: application/json`.
///
/// # Examples
///
/// ```
/// use status_messenger::web::Refusal;
///
/// let refusal = Refusal::forbidden("not your session");
/// assert_eq!(refusal.status(), 403);
/// assert_eq!(refusal.message(), "not your session");
/// assert_eq!(refusal.body(), r#"{"error":"not your session"}"#);
/// assert_eq!(Refusal::new(200, "not a refusal").status(), 500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    status: u16,
    message: Cow<'static, str>,
    retry_after: Option<u64>,
    head: Option<u64>,
}

impl Refusal {
    /// A refusal with `status` (a 4xx or 5xx; any other is answered as 500) and `message`.
    ///
    /// # Examples
    ///
    /// ```
    /// let refusal = status_messenger::web::Refusal::new(429, "slow down");
    /// assert_eq!((refusal.status(), refusal.message()), (429, "slow down"));
    /// ```
    pub fn new(status: u16, message: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            retry_after: None,
            head: None,
        }
    }

    /// The refusal of a session [`Hub::open_session`] (or [`Hub::create_session`]) did not
    /// open: 404 for an invalid id, 500 when there were no random bytes for a new id, else 503,
    /// with `Retry-After` (whole seconds, rounded up) when the error says when to try again: a
    /// backend known to be away, or a session table full of sessions in use.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::OpenError;
    /// use status_messenger::web::Refusal;
    ///
    /// let full = Refusal::from_open_error(&OpenError::TooManySessions);
    /// assert_eq!(full.status(), 503);
    /// assert!(full.retry_after().is_some_and(|seconds| seconds >= 1));
    /// assert_eq!(Refusal::from_open_error(&OpenError::ShutDown).retry_after(), None);
    /// assert_eq!(Refusal::from_open_error(&OpenError::NoRandomness).status(), 500);
    /// ```
    pub fn from_open_error(error: &OpenError) -> Refusal {
        match error {
            OpenError::InvalidSessionId(_) => Refusal::not_found(error.to_string()),
            OpenError::NoRandomness => Refusal::new(500, error.to_string()),
            _ => Refusal::unavailable(error.to_string()).retry_after_of(error.retry_after()),
        }
    }

    /// The refusal when [`Hub::session_exists`] could not tell: 404 for an invalid id, else 503,
    /// with `Retry-After` (whole seconds, rounded up) when the error says when to try again.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use status_messenger::hub::{BackendError, LookupError};
    /// use status_messenger::web::Refusal;
    ///
    /// let away = BackendError::new("redis", "connection refused")
    ///     .with_retry_after(Duration::from_millis(250));
    /// let refusal = Refusal::from_lookup_error(&LookupError::Backend(away));
    /// assert_eq!((refusal.status(), refusal.retry_after()), (503, Some(1)));
    /// ```
    pub fn from_lookup_error(error: &LookupError) -> Refusal {
        match error {
            LookupError::InvalidSessionId(_) => Refusal::not_found(error.to_string()),
            _ => Refusal::unavailable(error.to_string()).retry_after_of(error.retry_after()),
        }
    }

    /// The refusal of a cancel [`Hub::cancel_task`] could not do: 404 for an unknown session or
    /// a task that is not the session's, else 503, with `Retry-After` (whole seconds, rounded
    /// up) when the error says when to try again.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::CancelError;
    /// use status_messenger::web::Refusal;
    ///
    /// assert_eq!(Refusal::from_cancel_error(&CancelError::UnknownTask).status(), 404);
    /// ```
    pub fn from_cancel_error(error: &CancelError) -> Refusal {
        if error.is_not_found() {
            Refusal::not_found(error.to_string())
        } else {
            Refusal::unavailable(error.to_string()).retry_after_of(error.retry_after())
        }
    }

    /// `Retry-After` from a wait, rounded up to whole seconds (at least 1), when there is one.
    fn retry_after_of(self, wait: Option<std::time::Duration>) -> Refusal {
        match wait {
            Some(wait) => {
                let seconds = wait
                    .as_secs()
                    .saturating_add(u64::from(wait.subsec_nanos() > 0));
                self.with_retry_after(seconds.max(1))
            }
            None => self,
        }
    }

    /// The refusal of a task [`Hub::start_task`] did not start, as the endpoints answer it:
    /// 429 with `Retry-After: 1` when the session runs its most tasks at once (or remembers
    /// only running ones), 503 with `Retry-After: 1` when the hub does, 404 for an invalid
    /// session id or one being closed, 503 for too many sessions or a hub shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::StartTaskError;
    /// use status_messenger::web::Refusal;
    ///
    /// let busy = Refusal::from_start_task(&StartTaskError::SessionBusy);
    /// assert_eq!((busy.status(), busy.retry_after()), (429, Some(1)));
    /// assert!(busy.body().contains("running at once"));
    /// let full = Refusal::from_start_task(&StartTaskError::HubBusy);
    /// assert_eq!((full.status(), full.retry_after()), (503, Some(1)));
    /// ```
    pub fn from_start_task(error: &StartTaskError) -> Refusal {
        let message = error.to_string();
        match error {
            StartTaskError::SessionBusy | StartTaskError::TooManyTasks => {
                Refusal::new(429, message).with_retry_after(TASK_RETRY_AFTER_SECS)
            }
            StartTaskError::HubBusy => {
                Refusal::unavailable(message).with_retry_after(TASK_RETRY_AFTER_SECS)
            }
            StartTaskError::InvalidSessionId(_) | StartTaskError::SessionClosed => {
                Refusal::not_found(message)
            }
            StartTaskError::TooManySessions => Refusal::unavailable(message)
                .retry_after_of(OpenError::TooManySessions.retry_after()),
            _ => Refusal::unavailable(message),
        }
    }

    /// The refusal of a subscription [`Hub::try_subscribe`] did not make: 404 for an invalid
    /// id, else 503, with `Retry-After` when the session table is full of sessions in use.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::SubscribeError;
    /// use status_messenger::web::Refusal;
    ///
    /// let full = Refusal::from_subscribe_error(&SubscribeError::TooManySessions);
    /// assert_eq!(full.status(), 503);
    /// assert!(full.retry_after().is_some_and(|seconds| seconds >= 1));
    /// assert_eq!(Refusal::from_subscribe_error(&SubscribeError::ShutDown).retry_after(), None);
    /// ```
    pub fn from_subscribe_error(error: &SubscribeError) -> Refusal {
        match error {
            SubscribeError::InvalidSessionId(_) => Refusal::not_found("unknown session"),
            SubscribeError::TooManySessions => Refusal::unavailable(error.to_string())
                .retry_after_of(OpenError::TooManySessions.retry_after()),
            _ => Refusal::unavailable(error.to_string()),
        }
    }

    /// The same refusal, telling the client to try again after `seconds`: the integrations
    /// answer it with a `Retry-After` header.
    ///
    /// # Examples
    ///
    /// ```
    /// let refusal = status_messenger::web::Refusal::unavailable("busy").with_retry_after(5);
    /// assert_eq!(refusal.retry_after(), Some(5));
    /// ```
    pub fn with_retry_after(mut self, seconds: u64) -> Refusal {
        self.retry_after = Some(seconds);
        self
    }

    /// Seconds after which the client may try again (the `Retry-After` header), if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::web::Refusal::not_found("no").retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The refusal of a resume point beyond the session's newest status `head`: 400, with
    /// `"head": head` in the body so the client can resume from there.
    ///
    /// # Examples
    ///
    /// ```
    /// let refusal = status_messenger::web::Refusal::beyond_head(50, 3);
    /// assert_eq!(refusal.status(), 400);
    /// assert_eq!(refusal.head(), Some(3));
    /// let body: serde_json::Value = serde_json::from_str(&refusal.body()).unwrap();
    /// assert_eq!(body["head"], 3);
    /// assert_eq!(body["error"], "resume point 50 is beyond the session's newest status, 3");
    /// ```
    pub fn beyond_head(after: u64, head: u64) -> Refusal {
        let mut refusal = Refusal::bad_request(format!(
            "resume point {after} is beyond the session's newest status, {head}"
        ));
        refusal.head = Some(head);
        refusal
    }

    /// The session's newest status seq, for a refused resume point beyond it.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::web::Refusal::bad_request("no").head(), None);
    /// ```
    pub fn head(&self) -> Option<u64> {
        self.head
    }

    /// 400 Bad Request.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::web::Refusal::bad_request("no").status(), 400);
    /// ```
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(400, message)
    }

    /// 401 Unauthorized: the caller is not known (no or a bad login cookie, say).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::web::Refusal::unauthorized("log in").status(), 401);
    /// ```
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(401, message)
    }

    /// 403 Forbidden: the caller is known and may not read that session.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::web::Refusal::forbidden("no").status(), 403);
    /// ```
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(403, message)
    }

    /// 404 Not Found: an unknown or malformed session (what the default hook answers).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::web::Refusal::not_found("unknown session").status(), 404);
    /// ```
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(404, message)
    }

    /// 503 Service Unavailable: the answer cannot be known now (a shared backend is away).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::web::Refusal::unavailable("later").status(), 503);
    /// ```
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(503, message)
    }

    /// The HTTP status to answer: the one given when it is 400..=599, else 500.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::web::Refusal;
    ///
    /// assert_eq!(Refusal::new(418, "teapot").status(), 418);
    /// assert_eq!(Refusal::new(99, "nonsense").status(), 500);
    /// ```
    pub fn status(&self) -> u16 {
        if (400..=599).contains(&self.status) {
            self.status
        } else {
            500
        }
    }

    /// The message, for the `error` field of the body.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(status_messenger::web::Refusal::not_found("gone").message(), "gone");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body: `{"error": message}`, with `"head"` for a resume point beyond it.
    ///
    /// # Examples
    ///
    /// ```
    /// let body = status_messenger::web::Refusal::bad_request("say \"please\"").body();
    /// assert_eq!(body, r#"{"error":"say \"please\""}"#);
    /// ```
    pub fn body(&self) -> String {
        error_body(&self.message, self.head)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused with {}: {}", self.status(), self.message)
    }
}

impl std::error::Error for Refusal {}

impl From<ResumeError> for Refusal {
    fn from(error: ResumeError) -> Refusal {
        Refusal::bad_request(error.to_string())
    }
}

/// `Retry-After` of a task refused for the running-task caps: tasks take seconds, so a second
/// is long enough not to spin and short enough not to keep a page waiting.
const TASK_RETRY_AFTER_SECS: u64 = 1;

/// `{"error": message}`, with `"head": n` when the refusal names the session's newest status.
fn error_body(message: &str, head: Option<u64>) -> String {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        error: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        head: Option<u64>,
    }
    // Serializing a string and a number cannot fail.
    serde_json::to_string(&Body {
        error: message,
        head,
    })
    .unwrap_or_default()
}

/// The default authorization: the `session` query parameter names the session, and the
/// session must be one `hub` holds now.
///
/// The session id in the query is the capability: whoever has it may read the session, as in
/// the demo. Give the endpoints your own hook to tie sessions to users instead
/// ([`Endpoints::authorize`](super::Endpoints::authorize)).
///
/// # Errors
///
/// [`Refusal::not_found`] for a missing, malformed or unknown session;
/// [`Refusal::unavailable`] when a shared backend cannot tell.
///
/// # Examples
///
/// ```
/// use status_messenger::web::{session_from_query, RequestInfo};
/// use status_messenger::Hub;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.open_session("s1").await.unwrap();
/// let request = |q| RequestInfo::new(http::HeaderMap::new(), Some(q));
/// assert_eq!(session_from_query(&hub, &request("session=s1")).await.unwrap(), "s1");
/// assert_eq!(session_from_query(&hub, &request("session=s2")).await.unwrap_err().status(), 404);
/// assert_eq!(session_from_query(&hub, &request("session=%00")).await.unwrap_err().status(), 404);
/// assert_eq!(session_from_query(&hub, &request("")).await.unwrap_err().status(), 404);
/// # }
/// ```
pub async fn session_from_query(hub: &Hub, request: &RequestInfo) -> Result<SessionId, Refusal> {
    let unknown = || Refusal::not_found("unknown session");
    let id = request
        .query("session")
        .ok_or_else(|| Refusal::not_found("unknown session: no `session` parameter"))?;
    let id = SessionId::new(id).map_err(|_| unknown())?;
    match hub.session_exists(&id).await {
        Ok(true) => Ok(id),
        Ok(false) | Err(LookupError::InvalidSessionId(_)) => Err(unknown()),
        Err(error) => Err(Refusal::from_lookup_error(&error)),
    }
}
