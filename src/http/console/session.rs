//! Console sessions. The cookie holds 32 random bytes and nothing else; from them come the
//! row's key (a SHA-256), the key that seals the caller's credential in the row
//! (XChaCha20-Poly1305) and the session's CSRF token. The database never sees the secret,
//! the browser never sees the credential. Each request unseals the credential and builds the
//! [`Caller`] exactly as the API does from the same header, so the console can never do
//! more than the API lets that person do, and a token Keystone no longer takes (expired,
//! revoked) or a revoked key ends the session.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::pages;
use crate::db::{self, console_sessions::StoredSession};
use crate::http::extract::Caller;
use crate::http::{ApiError, AppState};

/// The session cookie.
pub const COOKIE: &str = "gsb_console";
/// The sign-in form's own CSRF cookie (there is no session yet to tie a token to).
pub const SIGN_IN_COOKIE: &str = "gsb_console_sign_in";
/// Where the console lives; its cookies are sent nowhere else.
pub const PATH: &str = "/console";
/// Longest a session lasts when signed in with an API key (a Keystone token's own expiry
/// ends the others sooner).
pub const MAX_HOURS: i64 = 8;

/// How a person signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Keystone,
    ApiKey,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Keystone => "keystone",
            Kind::ApiKey => "api_key",
        }
    }
}

/// A cookie's secret: 32 random bytes.
pub struct Secret([u8; 32]);

impl Secret {
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Secret(bytes)
    }

    fn parse(cookie: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(cookie).ok()?;
        Some(Secret(bytes.try_into().ok()?))
    }

    pub fn encoded(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    fn derive(&self, label: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(b"glance-share-broker console/")
            .chain_update(label.as_bytes())
            .chain_update([0])
            .chain_update(self.0)
            .finalize()
            .into()
    }

    /// The row's key.
    pub fn id_hash(&self) -> [u8; 32] {
        self.derive("id")
    }

    /// The token every form of this session carries.
    pub fn csrf(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.derive("csrf"))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.derive("seal")))
    }
}

/// Whether `given` is `expected`, in time that does not depend on where they differ.
pub fn same_token(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// `Set-Cookie` for `name`: HttpOnly, SameSite=Strict, Secure, scoped to `path`; an empty
/// value with `Max-Age=0` removes it.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
    let cookie = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict; Secure");
    HeaderValue::try_from(cookie).expect("cookie values are base64url")
}

/// Records a session for `credential` and returns its secret (for the cookie).
pub async fn begin(
    state: &AppState,
    kind: Kind,
    credential: &SecretString,
    principal: &str,
    expires_at: DateTime<Utc>,
) -> Result<Secret, ApiError> {
    let secret = Secret::random();
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = secret
        .cipher()
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: credential.expose_secret().as_bytes(),
                aad: kind.as_str().as_bytes(),
            },
        )
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("sealing a console session failed")))?;
    let stored = StoredSession {
        kind: kind.as_str().to_owned(),
        sealed_credential: sealed,
        nonce: nonce.to_vec(),
        principal: principal.to_owned(),
        expires_at,
    };
    db::console_sessions::insert(&state.pool, &secret.id_hash(), &stored).await?;
    Ok(secret)
}

/// A signed-in person: the API's [`Caller`] for their credential, and their session.
pub struct SignedIn {
    pub caller: Caller,
    pub csrf: String,
    pub id_hash: [u8; 32],
}

/// What a request without a live session gets: the sign-in page (and the cookie removed).
pub fn to_sign_in(expired: bool) -> Response {
    let to = if expired {
        "/console/sign-in?expired=1"
    } else {
        "/console/sign-in"
    };
    let mut response = Redirect::to(to).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(COOKIE, "", PATH, 0));
    response
}

/// The credential a stored session holds, unsealed with the cookie's secret.
fn unseal(secret: &Secret, stored: &StoredSession) -> Option<(Kind, SecretString)> {
    let kind = match stored.kind.as_str() {
        "keystone" => Kind::Keystone,
        "api_key" => Kind::ApiKey,
        _ => return None,
    };
    let nonce: [u8; 24] = stored.nonce.as_slice().try_into().ok()?;
    let plain = secret
        .cipher()
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &stored.sealed_credential,
                aad: kind.as_str().as_bytes(),
            },
        )
        .ok()?;
    Some((kind, SecretString::from(String::from_utf8(plain).ok()?)))
}

/// The request as the API would have received it from this person: the credential in the
/// header the API reads, every other credential (and the cookie) removed.
fn as_api_request(parts: &Parts, kind: Kind, credential: &SecretString) -> Option<Parts> {
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .body(())
        .ok()?;
    *request.extensions_mut() = parts.extensions.clone();
    let headers = request.headers_mut();
    for (name, value) in &parts.headers {
        if ![header::AUTHORIZATION, header::COOKIE].contains(name) && name != "x-auth-token" && name != "x-on-behalf-of"
        {
            headers.append(name, value.clone());
        }
    }
    let (name, value) = match kind {
        Kind::Keystone => (
            header::HeaderName::from_static("x-auth-token"),
            credential.expose_secret().to_owned(),
        ),
        Kind::ApiKey => (header::AUTHORIZATION, format!("Bearer {}", credential.expose_secret())),
    };
    let mut value = HeaderValue::try_from(value).ok()?;
    value.set_sensitive(true);
    headers.insert(name, value);
    Some(request.into_parts().0)
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let secret = cookie(&parts.headers, COOKIE)
            .and_then(|c| Secret::parse(&c))
            .ok_or_else(|| to_sign_in(false))?;
        let id_hash = secret.id_hash();
        let stored = db::console_sessions::find(&state.pool, &id_hash)
            .await
            .map_err(|e| pages::error_page(ApiError::from(e)))?
            .ok_or_else(|| to_sign_in(true))?;
        let Some((kind, credential)) = unseal(&secret, &stored) else {
            return Err(to_sign_in(true));
        };
        let mut api_parts = as_api_request(parts, kind, &credential).ok_or_else(|| to_sign_in(true))?;
        match Caller::from_request_parts(&mut api_parts, state).await {
            Ok(caller) => Ok(SignedIn {
                caller,
                csrf: secret.csrf(),
                id_hash,
            }),
            // The token expired or was revoked, or the key was: the session ends with it.
            Err(ApiError::Unauthorized(_)) => {
                db::console_sessions::delete(&state.pool, &id_hash)
                    .await
                    .map_err(|e| pages::error_page(ApiError::from(e)))?;
                Err(to_sign_in(true))
            }
            Err(other) => Err(pages::error_page(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(secret: &Secret, credential: &str, kind: Kind) -> StoredSession {
        let nonce = [7u8; 24];
        let sealed = secret
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: credential.as_bytes(),
                    aad: kind.as_str().as_bytes(),
                },
            )
            .unwrap();
        StoredSession {
            kind: kind.as_str().into(),
            sealed_credential: sealed,
            nonce: nonce.to_vec(),
            principal: "p".into(),
            expires_at: Utc::now(),
        }
    }

    #[test]
    fn only_the_cookie_that_sealed_a_credential_unseals_it() {
        let (mine, other) = (Secret::random(), Secret::random());
        let row = stored(&mine, "gsb_secret_key", Kind::ApiKey);
        let (kind, credential) = unseal(&mine, &row).unwrap();
        assert_eq!((kind, credential.expose_secret()), (Kind::ApiKey, "gsb_secret_key"));
        assert!(unseal(&other, &row).is_none());
        // The kind is bound to the ciphertext: relabelling the row breaks it.
        let relabelled = StoredSession {
            kind: "keystone".into(),
            ..row
        };
        assert!(unseal(&mine, &relabelled).is_none());
    }

    #[test]
    fn the_row_key_the_sealing_key_and_the_csrf_token_differ_and_round_trip_through_the_cookie() {
        let secret = Secret::random();
        let parsed = Secret::parse(&secret.encoded()).unwrap();
        assert_eq!(parsed.id_hash(), secret.id_hash());
        assert_eq!(parsed.csrf(), secret.csrf());
        assert_ne!(secret.id_hash(), secret.derive("seal"));
        assert_ne!(secret.csrf(), Secret::random().csrf());
        assert!(Secret::parse("short").is_none());
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("", "abc"));
    }

    #[test]
    fn cookies_are_found_by_exact_name_and_set_with_every_flag() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x_gsb_console=1; gsb_console=two"),
        );
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("two"));
        assert_eq!(cookie(&headers, SIGN_IN_COOKIE), None);
        let set = set_cookie(COOKIE, "v", PATH, 60);
        assert_eq!(
            set.to_str().unwrap(),
            "gsb_console=v; Path=/console; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
    }
}
