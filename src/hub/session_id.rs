//! What names a session: [`SessionId`], checked once where an id enters the hub, and
//! [`InvalidSessionId`], why an id was refused.
//!
//! # Invariants
//!
//! - A [`SessionId`] is 1 to [`MAX_SESSION_ID_BYTES`] bytes long with no control character;
//!   it can only be made by [`SessionId::new`] (or the conversions that call it) and, inside
//!   the crate, from an id already checked, so code that holds one never checks it again.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The longest session id the hub accepts, in bytes.
///
/// Valid ids are 1 to `MAX_SESSION_ID_BYTES` bytes long and contain no control character.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::MAX_SESSION_ID_BYTES;
/// use status_messenger::SessionId;
///
/// assert!(SessionId::new("a".repeat(MAX_SESSION_ID_BYTES)).is_ok());
/// assert!(SessionId::new("a".repeat(MAX_SESSION_ID_BYTES + 1)).is_err());
/// ```
pub const MAX_SESSION_ID_BYTES: usize = 256;

/// A session id the hub accepts: 1 to [`MAX_SESSION_ID_BYTES`] bytes, no control character.
///
/// Cheap to clone (a shared string). Every hub operation that takes a `&str` id checks it once
/// into a `SessionId`; make one yourself to check an id where it enters your server (a query
/// parameter, a cookie) and to hand it on without checking again. It dereferences to `str`.
///
/// # Examples
///
/// ```
/// use status_messenger::SessionId;
///
/// let id = SessionId::new("user-1").unwrap();
/// assert_eq!(id.as_str(), "user-1");
/// assert_eq!(id, "user-1");
/// assert_eq!(&*id, "user-1");
/// assert!(SessionId::new("").is_err());
/// assert!(SessionId::new("line\nbreak").is_err());
/// let parsed: SessionId = "abc".parse().unwrap();
/// assert_eq!(parsed.len(), 3);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// Checks `id` and makes it a `SessionId`.
    ///
    /// # Errors
    ///
    /// [`InvalidSessionId`] when it is empty, longer than [`MAX_SESSION_ID_BYTES`], or has a
    /// control character.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::SessionId;
    ///
    /// assert!(SessionId::new("9f86d081884c7d65").is_ok());
    /// let error = SessionId::new("tab\there").unwrap_err();
    /// assert_eq!(error.to_string(), "invalid session id: has a control character");
    /// ```
    pub fn new(id: impl AsRef<str> + Into<Arc<str>>) -> Result<SessionId, InvalidSessionId> {
        check(id.as_ref())?;
        Ok(SessionId(id.into()))
    }

    /// The id as text.
    ///
    /// # Examples
    ///
    /// ```
    /// let id = status_messenger::SessionId::new("s1").unwrap();
    /// assert_eq!(id.as_str(), "s1");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks a borrowed id without allocating; the hub's hot path uses it.
    pub(crate) fn check_str(id: &str) -> Result<&str, InvalidSessionId> {
        check(id).map(|()| id)
    }

    /// The shared string, for code that keys maps by it.
    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "used by shared backends")
    )]
    pub(crate) fn into_shared(self) -> Arc<str> {
        self.0
    }

    /// Wraps an id already checked (one that came out of [`SessionId::check_str`]).
    pub(crate) fn from_checked(id: &str) -> SessionId {
        debug_assert!(check(id).is_ok(), "unchecked session id");
        SessionId(Arc::from(id))
    }
}

fn check(id: &str) -> Result<(), InvalidSessionId> {
    if id.is_empty() {
        return Err(InvalidSessionId { reason: "is empty" });
    }
    if id.len() > MAX_SESSION_ID_BYTES {
        return Err(InvalidSessionId {
            reason: "is longer than 256 bytes",
        });
    }
    // The usual hex or UUID id is printable ASCII: one pass over the bytes settles it, on the
    // path every status takes. The pass has no early exit, so it runs many bytes a step
    // instead of a branch per byte. Anything else is decoded to find control characters.
    let outside_printable = id.bytes().fold(0u8, |any, byte| {
        any | u8::from(byte.wrapping_sub(b' ') > b'~' - b' ')
    });
    if outside_printable == 0 {
        return Ok(());
    }
    let control = if id.is_ascii() {
        id.bytes().any(|byte| byte.is_ascii_control())
    } else {
        id.chars().any(char::is_control)
    };
    if control {
        return Err(InvalidSessionId {
            reason: "has a control character",
        });
    }
    Ok(())
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Deref for SessionId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for SessionId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for SessionId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl std::str::FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        SessionId::new(id)
    }
}

impl TryFrom<&str> for SessionId {
    type Error = InvalidSessionId;

    fn try_from(id: &str) -> Result<Self, Self::Error> {
        SessionId::new(id)
    }
}

impl TryFrom<String> for SessionId {
    type Error = InvalidSessionId;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        SessionId::new(id)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0.to_string()
    }
}

/// A session id that [`SessionId::new`] refused, and why.
///
/// # Examples
///
/// ```
/// let error = status_messenger::SessionId::new("").unwrap_err();
/// assert_eq!(error.reason(), "is empty");
/// assert_eq!(error.to_string(), "invalid session id: is empty");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InvalidSessionId {
    reason: &'static str,
}

impl InvalidSessionId {
    /// What is wrong with the id.
    ///
    /// # Examples
    ///
    /// ```
    /// let error = status_messenger::SessionId::new("a".repeat(300)).unwrap_err();
    /// assert_eq!(error.reason(), "is longer than 256 bytes");
    /// ```
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid session id: {}", self.reason)
    }
}

impl std::error::Error for InvalidSessionId {}
