//! Where a stream resumes: a status seq from `Last-Event-ID`, `last_event_id` or `after`.

use std::fmt;

/// A resume point that is not a status seq: which parameter, so the 400 answer can say so.
///
/// # Examples
///
/// ```
/// use status_messenger::web::parse_seq;
///
/// let error = parse_seq("after", "1.5").unwrap_err();
/// assert_eq!(error.parameter(), "after");
/// assert_eq!(error.to_string(), "`after` must be a non-negative integer (a status seq)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResumeError {
    parameter: &'static str,
}

impl ResumeError {
    /// The header or query parameter that was wrong: `Last-Event-ID`, `last_event_id` or
    /// `after`.
    ///
    /// # Examples
    ///
    /// ```
    /// let error = status_messenger::web::resume_point(Some("x"), None, None).unwrap_err();
    /// assert_eq!(error.parameter(), "Last-Event-ID");
    /// ```
    pub fn parameter(&self) -> &'static str {
        self.parameter
    }
}

impl fmt::Display for ResumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` must be a non-negative integer (a status seq)",
            self.parameter
        )
    }
}

impl std::error::Error for ResumeError {}

/// Reads one resume point: a status seq, surrounding whitespace allowed.
///
/// # Errors
///
/// A [`ResumeError`] naming `parameter` when `text` is not a non-negative integer that fits in
/// `u64`.
///
/// # Examples
///
/// ```
/// use status_messenger::web::parse_seq;
///
/// assert_eq!(parse_seq("after", " 42 "), Ok(42));
/// assert!(parse_seq("after", "-1").is_err());
/// assert!(parse_seq("after", "18446744073709551616").is_err());
/// ```
pub fn parse_seq(parameter: &'static str, text: &str) -> Result<u64, ResumeError> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| ResumeError { parameter })
}

/// Where a stream resumes, from what the request gives: the `Last-Event-ID` header wins (an
/// `EventSource` sends it with the newest id on its own reconnects, while a query may be older),
/// then the `last_event_id` query parameter, then `after`. Empty values count as absent; `None`
/// means from the start of history.
///
/// [`RequestInfo::resume_point`](super::RequestInfo::resume_point) does the same for a whole
/// request.
///
/// # Errors
///
/// A [`ResumeError`] for the first value given (in that order) that is not a status seq.
///
/// # Examples
///
/// ```
/// use status_messenger::web::resume_point;
///
/// assert_eq!(resume_point(None, None, None), Ok(None));
/// assert_eq!(resume_point(Some("25"), Some("5"), None), Ok(Some(25)));
/// assert_eq!(resume_point(Some(" "), Some("5"), Some("1")), Ok(Some(5)));
/// assert_eq!(resume_point(None, None, Some("7")), Ok(Some(7)));
/// assert_eq!(resume_point(None, Some("abc"), Some("7")).unwrap_err().parameter(), "last_event_id");
/// ```
pub fn resume_point(
    last_event_id_header: Option<&str>,
    last_event_id: Option<&str>,
    after: Option<&str>,
) -> Result<Option<u64>, ResumeError> {
    fn given(value: Option<&str>) -> Option<&str> {
        value.filter(|v| !v.trim().is_empty())
    }
    if let Some(value) = given(last_event_id_header) {
        return parse_seq("Last-Event-ID", value).map(Some);
    }
    if let Some(value) = given(last_event_id) {
        return parse_seq("last_event_id", value).map(Some);
    }
    given(after)
        .map(|value| parse_seq("after", value))
        .transpose()
}
