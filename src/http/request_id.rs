//! A call's request id: the caller's `X-OpenStack-Request-ID` when it has oslo's format
//! (`req-<uuid>`), else the caller's `X-Request-Id` when it is 1 to 128 visible ASCII
//! characters, else a new `req-<uuid>`. An id of any other form, or more than one, is dropped
//! so that a fresh one is made. Replacing rather than refusing: the id only helps to find a
//! request in the logs, and a revoke must not fail over a badly formed one.
//!
//! The response carries the id in both headers. It is the audit log's correlation id of the
//! call's events, travels with the jobs the call queues (`db::jobs::carry_origin`), and
//! is sent to Keystone and Glance as `X-OpenStack-Request-ID`, OpenStack's global request id.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use tower_http::request_id::{MakeRequestId, RequestId};

/// Longest request id kept.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// OpenStack's request id header (oslo.middleware), which OpenStack services take as the
/// global request id of a call between services.
pub const X_OPENSTACK_REQUEST_ID: HeaderName = HeaderName::from_static("x-openstack-request-id");

/// Whether `id` has the form oslo gives request ids, and accepts as a global request id:
/// `req-` and a UUID in lower-case hex with hyphens.
pub fn is_oslo(id: &[u8]) -> bool {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let Some(uuid) = id.strip_prefix(b"req-") else {
        return false;
    };
    let mut parts = uuid.split(|b| *b == b'-');
    GROUPS.iter().all(|len| {
        parts
            .next()
            .is_some_and(|p| p.len() == *len && p.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)))
    }) && parts.next().is_none()
}

/// Makes ids in oslo's format, `req-<uuid>`, for calls that bring none.
#[derive(Clone, Copy, Default)]
pub struct MakeOsloRequestId;

impl MakeRequestId for MakeOsloRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("req-{}", uuid::Uuid::new_v4());
        Some(RequestId::new(
            HeaderValue::from_str(&id).expect("an oslo id is a header value"),
        ))
    }
}

/// Takes a single `X-OpenStack-Request-ID` of oslo's format as the call's id (in place of any
/// `X-Request-Id`); drops one of any other form.
pub async fn adopt_openstack_id(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut ids = headers.get_all(&X_OPENSTACK_REQUEST_ID).iter();
    match (ids.next(), ids.next()) {
        (None, _) => {}
        (Some(id), None) if is_oslo(id.as_bytes()) => {
            let id = id.clone();
            headers.insert(X_REQUEST_ID, id);
        }
        _ => {
            tracing::debug!("X-OpenStack-Request-ID ignored: one id of the form req-<uuid> is taken");
            headers.remove(&X_OPENSTACK_REQUEST_ID);
        }
    }
    request
}

/// Echoes the call's id as `X-OpenStack-Request-ID` too.
pub async fn echo_openstack_id(mut response: Response) -> Response {
    if let Some(id) = response.headers().get(&X_REQUEST_ID).cloned() {
        response.headers_mut().insert(X_OPENSTACK_REQUEST_ID, id);
    }
    response
}

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
    fn oslo_request_ids_are_req_and_a_lower_case_uuid() {
        assert!(is_oslo(b"req-7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa"));
        for not in [
            &b"7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa"[..],
            b"req-7A5C5B6E-3F5D-4A57-9B0E-51C6A3B7F0AA",
            b"req-7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0a",
            b"req-7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa-",
            b"req-7a5c5b6e3f5d4a579b0e51c6a3b7f0aa",
            b"req-",
            b"req-7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0ag",
        ] {
            assert!(!is_oslo(not), "{}", String::from_utf8_lossy(not));
        }
        let made = MakeOsloRequestId
            .make_request_id(&axum::http::Request::new(()))
            .unwrap();
        assert!(is_oslo(made.header_value().as_bytes()));
    }

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
