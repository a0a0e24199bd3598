//! What a WebSocket upgrade request must carry (RFC 6455, section 4.2.1), checked the same way
//! on every framework before its own handshake runs: [`check`].

use http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::HeaderMap;

use super::Refusal;

/// The only WebSocket version there is (RFC 6455): what a 426 answer's
/// `Sec-WebSocket-Version` names.
pub(crate) const WEBSOCKET_VERSION: &str = "13";

/// The refusal of a request to `/ws` that is no WebSocket handshake the endpoints can answer,
/// in the order a client can mend it: not an upgrade at all (400), a version other than 13
/// (426, which the integrations answer with `Sec-WebSocket-Version: 13`, as section 4.2.2
/// asks), a key that is not 16 bytes in base64 (400; axum would take any value).
pub(crate) fn check(headers: &HeaderMap) -> Result<(), Refusal> {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return Err(Refusal::bad_request(
            "expected a WebSocket upgrade request (`Connection: Upgrade`, `Upgrade: websocket`)",
        ));
    }
    let version = headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(|version| version.as_bytes().trim_ascii());
    if version != Some(WEBSOCKET_VERSION.as_bytes()) {
        return Err(Refusal::new(
            426,
            "unsupported WebSocket version: `Sec-WebSocket-Version` must be 13",
        ));
    }
    if !headers
        .get(SEC_WEBSOCKET_KEY)
        .is_some_and(|key| is_websocket_key(key.as_bytes()))
    {
        return Err(Refusal::bad_request(
            "`Sec-WebSocket-Key` must be 16 bytes in base64",
        ));
    }
    Ok(())
}

/// Whether `key` is what RFC 6455 (section 4.1) asks of a `Sec-WebSocket-Key`: 16 bytes in
/// base64, which is 22 characters of the alphabet and `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    let base64 = |byte: &u8| byte.is_ascii_alphanumeric() || *byte == b'+' || *byte == b'/';
    key.len() == 24 && key[..22].iter().all(base64) && &key[22..] == b"=="
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    const UPGRADE_PAIRS: [(&str, &str); 2] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
    ];

    #[test]
    fn a_browsers_handshake_passes() {
        let mut pairs = UPGRADE_PAIRS.to_vec();
        pairs.extend([
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert_eq!(check(&headers(&pairs)), Ok(()));
    }

    #[test]
    fn each_missing_piece_is_named_in_the_order_a_client_mends_it() {
        let status = |pairs: &[(&'static str, &'static str)]| check(&headers(pairs)).unwrap_err();
        let plain = status(&[]);
        assert_eq!(plain.status(), 400);
        assert!(plain
            .message()
            .starts_with("expected a WebSocket upgrade request"));
        assert_eq!(status(&[("upgrade", "websocket")]).status(), 400);
        let mut pairs = UPGRADE_PAIRS.to_vec();
        assert_eq!(status(&pairs).status(), 426, "no version");
        pairs.push(("sec-websocket-version", "8"));
        assert_eq!(status(&pairs).status(), 426, "version 8");
        pairs.pop();
        pairs.push(("sec-websocket-version", " 13 "));
        let key = status(&pairs);
        assert_eq!(
            (key.status(), key.message()),
            (400, "`Sec-WebSocket-Key` must be 16 bytes in base64")
        );
        pairs.push(("sec-websocket-key", "short=="));
        assert_eq!(status(&pairs).status(), 400);
    }
}
