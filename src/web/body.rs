//! A request's body read within a size and a time limit: [`read_body`].

use std::future::poll_fn;
use std::pin::pin;
use std::time::Duration;

use futures_core::Stream;

use super::Refusal;

/// Reads a request's body of at most `limit` bytes that ends within `timeout`, or says why not
/// with the [`Refusal`] to answer. `body` is the body as a stream of byte chunks, whatever the
/// framework: axum's `Body::into_data_stream()`, actix-web's `web::Payload`, or
/// `http_body_util::BodyDataStream` around a hyper body. Needs a tokio runtime with time
/// enabled, as every server on axum or actix-web has.
///
/// - `content_length` is the request's `Content-Length` header, if it has one. A length over
///   `limit` is refused with 413 before anything is read. A value that is not a number is not
///   trusted either way: the body is read and counted (the HTTP server has refused a
///   malformed length before a handler runs).
/// - A body that passes `limit` as it streams in is refused with 413 at the chunk that passes
///   it; nothing more is read.
/// - A body that has not ended within `timeout` is refused with 408, so a client that
///   announces a body and never sends it holds the handler for `timeout` at most.
/// - A chunk that cannot be read (the connection broke, a malformed chunked encoding) is
///   refused with 400, with the error's text.
///
/// At most `limit` bytes are held, and a declared length sets aside at most 8 KiB before the
/// bytes come, so a client that announces a large body and sends nothing holds little.
/// `POST /cancel` checks its body the same way (counting it, not keeping it), with
/// [`Settings::max_message_bytes`](super::Settings::max_message_bytes) and
/// [`Settings::write_timeout`](super::Settings::write_timeout) (each at least its minimum).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use status_messenger::web::read_body;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let parts: [Result<&[u8], std::io::Error>; 2] = [Ok(br#"{"steps""#), Ok(b": 3}")];
/// let chunks = || futures_util::stream::iter(parts.iter().map(|part| part.as_deref()));
/// let second = Duration::from_secs(1);
///
/// let body = read_body(None, chunks(), 64 * 1024, second).await.unwrap();
/// assert_eq!(body, br#"{"steps": 3}"#);
///
/// // Over the limit: by its Content-Length, or as it streams in.
/// let refusal = read_body(Some("100000"), chunks(), 64 * 1024, second).await.unwrap_err();
/// assert_eq!(refusal.status(), 413);
/// assert_eq!(read_body(None, chunks(), 10, second).await.unwrap_err().status(), 413);
///
/// // Announced and never sent.
/// let never = futures_util::stream::pending::<Result<&[u8], std::io::Error>>();
/// let refusal = read_body(Some("12"), never, 64 * 1024, Duration::from_millis(10)).await;
/// assert_eq!(refusal.unwrap_err().status(), 408);
/// # }
/// ```
pub async fn read_body<S, B, E>(
    content_length: Option<&str>,
    body: S,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, Refusal>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut read = Vec::new();
    take_body(content_length, body, limit, timeout, Some(&mut read)).await?;
    Ok(read)
}

/// The most room set aside for a body before its bytes come: a client's `Content-Length`
/// alone reserves no more than this, however large the limit.
const FIRST_ROOM: usize = 8 * 1024;

/// [`read_body`]'s checks and refusals; the bytes go to `keep`, or are only counted without
/// it (a body that carries nothing, as `POST /cancel`'s, then holds no memory).
pub(crate) async fn take_body<S, B, E>(
    content_length: Option<&str>,
    body: S,
    limit: usize,
    timeout: Duration,
    mut keep: Option<&mut Vec<u8>>,
) -> Result<(), Refusal>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let too_large = || Refusal::new(413, format!("the request body is over {limit} bytes"));
    let declared = content_length.and_then(|length| length.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        if let Some(keep) = keep.as_deref_mut() {
            // Within `limit`, as checked above; and no more than a little before bytes come.
            let declared = declared.map_or(0, |length| usize::try_from(length).unwrap_or(limit));
            keep.reserve(declared.min(FIRST_ROOM));
        }
        let mut seen = 0usize;
        let mut body = pin!(body);
        while let Some(chunk) = poll_fn(|cx| body.as_mut().poll_next(cx)).await {
            let chunk = chunk.map_err(|error| {
                Refusal::bad_request(format!("unreadable request body: {error}"))
            })?;
            let chunk = chunk.as_ref();
            if chunk.len() > limit - seen {
                return Err(too_large());
            }
            seen += chunk.len();
            if let Some(keep) = keep.as_deref_mut() {
                keep.extend_from_slice(chunk);
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| Err(Refusal::new(408, "the request body did not arrive in time")))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<&'static [u8], String>> {
        futures_util::stream::iter(parts.iter().map(|part| Ok(*part)).collect::<Vec<_>>())
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_413() {
        let body = read_body(None, chunks(&[b"abc", b"de"]), 5, SECOND).await;
        assert_eq!(body.unwrap(), b"abcde");
        let refusal = read_body(None, chunks(&[b"abc", b"def"]), 5, SECOND).await;
        let refusal = refusal.unwrap_err();
        assert_eq!(refusal.status(), 413);
        assert_eq!(refusal.message(), "the request body is over 5 bytes");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_before_any_chunk_is_read() {
        let body =
            futures_util::stream::poll_fn(|_| -> std::task::Poll<Option<Result<&[u8], String>>> {
                unreachable!("the body is not read")
            });
        let refusal = read_body(Some(" 6 "), body, 5, SECOND).await.unwrap_err();
        assert_eq!(refusal.status(), 413);
    }

    #[tokio::test]
    async fn a_declared_length_that_lies_is_not_trusted() {
        // Shorter than what comes: what comes is counted.
        let refusal = read_body(Some("1"), chunks(&[b"abcdef"]), 5, SECOND).await;
        assert_eq!(refusal.unwrap_err().status(), 413);
        // Not a number (or past `u64`): the body is read and counted.
        let body = read_body(Some("many"), chunks(&[b"ab"]), 5, SECOND).await;
        assert_eq!(body.unwrap(), b"ab");
        let refusal = read_body(
            Some("18446744073709551616"),
            chunks(&[b"abcdef"]),
            5,
            SECOND,
        );
        assert_eq!(refusal.await.unwrap_err().status(), 413);
    }

    #[tokio::test]
    async fn an_unreadable_chunk_is_400_with_its_error() {
        let body = futures_util::stream::iter([Ok(&b"ab"[..]), Err("connection reset")]);
        let refusal = read_body(None, body, 5, SECOND).await.unwrap_err();
        assert_eq!(refusal.status(), 400);
        assert_eq!(
            refusal.message(),
            "unreadable request body: connection reset"
        );
    }

    #[tokio::test]
    async fn a_body_only_counted_is_refused_alike_and_keeps_nothing() {
        let counted = take_body(None, chunks(&[b"abc", b"de"]), 5, SECOND, None).await;
        assert_eq!(counted, Ok(()));
        let over = take_body(Some("6"), chunks(&[]), 5, SECOND, None).await;
        assert_eq!(over.unwrap_err().status(), 413);
        let streamed = take_body(None, chunks(&[b"abc", b"def"]), 5, SECOND, None).await;
        assert_eq!(streamed.unwrap_err().status(), 413);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_end_in_time_is_408() {
        let body = futures_util::stream::iter([Ok::<_, String>(&b"ab"[..])])
            .chain(futures_util::stream::pending());
        let refusal = read_body(None, body, 5, SECOND).await.unwrap_err();
        assert_eq!(refusal.status(), 408);
        assert_eq!(refusal.message(), "the request body did not arrive in time");
    }
}
