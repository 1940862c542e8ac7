//! `X-Request-Id`: a caller's id is kept (and used as the audit log's correlation id) only
//! when it is 1 to 128 visible ASCII characters; any other, or more than one, is dropped so
//! that the request-id layer gives the request a fresh UUID, which the response carries.
//! Replacing rather than refusing: the id only helps to find a request in the logs, and a
//! revoke must not fail over a badly formed one.

use axum::extract::Request;
use axum::http::HeaderName;

/// Longest request id kept.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a caller's request id is kept: 1 to [`MAX_REQUEST_ID_CHARS`] visible ASCII
/// characters (no spaces, no control characters).
pub fn acceptable(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_CHARS).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// Drops an unacceptable `X-Request-Id` (or several), so that a fresh one is made.
pub async fn drop_unacceptable(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut ids = headers.get_all(&X_REQUEST_ID).iter();
    let keep = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => acceptable(id.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        tracing::debug!("X-Request-Id replaced: one id of 1 to 128 visible ASCII characters is kept");
        headers.remove(&X_REQUEST_ID);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_in_length_and_characters() {
        assert!(acceptable(b"req-7a5c5b6e"));
        assert!(acceptable("x".repeat(MAX_REQUEST_ID_CHARS).as_bytes()));
        assert!(!acceptable("x".repeat(MAX_REQUEST_ID_CHARS + 1).as_bytes()));
        assert!(!acceptable(b""));
        assert!(!acceptable(b"two words"));
        assert!(!acceptable(b"tab\there"));
        assert!(!acceptable("caf\u{e9}".as_bytes()));
    }
}
