//! The browser client, embedded: what `GET /status-messenger.js` serves.

/// The browser client `status-messenger.js`: a dependency-free ES module (`client/` in the
/// repository) that follows a session over WebSocket or SSE, reconnects with backoff and
/// jitter, resumes after the last seq it saw and reports every seq it cannot have as a gap.
/// The integrations serve it as `GET /status-messenger.js` with `text/javascript`.
///
/// ```js
/// import { connect } from "/status-messenger.js";
/// const stream = connect({ session: id, onStatus(frame) { /* ... */ }, onGap({ from, to }) {} });
/// ```
///
/// # Examples
///
/// ```
/// let js = status_messenger::web::CLIENT_JS;
/// assert!(js.contains("export function connect"));
/// ```
pub const CLIENT_JS: &str = include_str!("../../client/status-messenger.js");

/// The client's TypeScript declarations, `status-messenger.d.ts`, for a build that wants the
/// types of [`CLIENT_JS`].
///
/// # Examples
///
/// ```
/// assert!(status_messenger::web::CLIENT_TYPES.contains("export function connect"));
/// ```
pub const CLIENT_TYPES: &str = include_str!("../../client/status-messenger.d.ts");

/// The `Content-Type` of [`CLIENT_JS`].
///
/// # Examples
///
/// ```
/// assert!(status_messenger::web::CLIENT_CONTENT_TYPE.starts_with("text/javascript"));
/// ```
pub const CLIENT_CONTENT_TYPE: &str = "text/javascript; charset=utf-8";
