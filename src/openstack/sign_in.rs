//! A person signing in with a password (the browser console): Keystone issues a token
//! scoped to the project they name. The password goes to Keystone only, in the body of one
//! request, and is never logged or kept.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::call_span;
use super::client::{OpenStack, Service, error_of};
use super::error::CallError;

/// A project-scoped token Keystone issued to a person.
pub struct SignedIn {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Issued {
    token: IssuedToken,
}

#[derive(Deserialize)]
struct IssuedToken {
    expires_at: DateTime<Utc>,
}

impl OpenStack {
    /// A token for `user` (by name, in `domain`, a domain name) scoped to `project` (by name,
    /// in the same domain); `None` when Keystone refuses the credentials or the scope.
    pub async fn sign_in(
        &self,
        user: &str,
        password: &SecretString,
        project: &str,
        domain: &str,
        request_id: &str,
    ) -> Result<Option<SignedIn>, CallError> {
        let what = "sign in";
        let (http, auth_url) = self.anonymous();
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"name": domain}, "password": password.expose_secret()}}},
            "scope": {"project": {"name": project, "domain": {"name": domain}}}}});
        let request = http
            .post(format!("{auth_url}/auth/tokens"))
            .header("x-openstack-request-id", request_id)
            .query(&[("nocatalog", "1")])
            .json(&body)
            .build()
            .map_err(|e| CallError::transport(what, &e))?;
        let response = call_span::execute(http, Service::Keystone, what, request)
            .await
            .map_err(|e| CallError::transport(what, &e))?;
        match response.status() {
            // Wrong password, unknown user or project, or no role on it: all one answer.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => {
                Ok(None)
            }
            s if s.is_success() => {
                let token = response
                    .headers()
                    .get("x-subject-token")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| SecretString::from(v.to_owned()))
                    .ok_or_else(|| CallError::permanent(None, "Keystone returned no X-Subject-Token"))?;
                let issued: Issued = response.json().await.map_err(|e| CallError::transport(what, &e))?;
                Ok(Some(SignedIn {
                    token,
                    expires_at: issued.token.expires_at,
                }))
            }
            _ => Err(error_of(what, response).await),
        }
    }
}
