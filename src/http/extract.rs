//! Extractors whose every rejection is a problem+json answer: JSON bodies, query strings,
//! ids in paths, the caller's identity and the conditional/idempotency headers.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::net::SocketAddr;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use uuid::Uuid;

use super::middleware::PrincipalRateLimit;
use super::pagination::{Cursor, Paging};
use super::{ApiError, AppState};
use crate::db;
use crate::domain::{Capability, Credential, FieldError, Initiator, Principal, Subject};

/// A JSON body, checked for content type, size, syntax and shape. Keeps the parsed document
/// so an `Idempotency-Key` can compare requests by meaning, not by whitespace.
pub struct Json<T> {
    pub value: T,
    pub document: Value,
}

/// A deserialization failure as a validation problem naming the field. serde names a
/// missing or unknown field in its message rather than in the path, so look there too.
fn field_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>, whole: &str) -> ApiError {
    let message = e.inner().to_string();
    let field = match e.path().to_string() {
        p if p == "." => message.split('`').nth(1).unwrap_or(whole).to_owned(),
        p => p,
    };
    ApiError::Validation(vec![FieldError::new(field, message)])
}

/// Like [`Json`], but an empty body stands for `T::default()`.
pub struct OptionalJson<T>(pub Json<T>);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<(HeaderMap, Bytes), ApiError> {
    let headers = req.headers().clone();
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(super::BODY_LIMIT_BYTES)
        } else {
            ApiError::MalformedBody(rejection.body_text())
        }
    })?;
    Ok((headers, bytes))
}

fn parse<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<Json<T>, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as `Content-Type: application/json`".into(),
        ));
    }
    let document: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::MalformedBody(format!("the body is not valid JSON: {e}")))?;
    let value = serde_path_to_error::deserialize(&document).map_err(|e| field_error(e, "body"))?;
    Ok(Json { value, document })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (headers, bytes) = read_body(req, state).await?;
        parse(&headers, &bytes)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (headers, bytes) = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(Json {
                value: T::default(),
                document: Value::Null,
            }));
        }
        parse(&headers, &bytes).map(OptionalJson)
    }
}

/// A query string, with unknown parameters refused and bad values named.
pub struct Query<T>(pub T);

/// `query` as a `T`, each bad value named.
fn from_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    // Postgres text cannot hold NUL: refuse it here rather than fail in a query.
    if let Some((field, _)) = form_urlencoded::parse(query.as_bytes()).find(|(_, v)| v.contains('\0')) {
        return Err(ApiError::field(&field, "must not contain NUL characters"));
    }
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| field_error(e, "query"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        from_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// The part of a list's query string that is not the resource's filter: where to start,
/// how many, and for some lists in what form.
pub trait PageQuery: DeserializeOwned {
    /// The query parameters it reads.
    const PARAMETERS: &'static [&'static str];
}

impl<C: DeserializeOwned> PageQuery for Paging<C> {
    const PARAMETERS: &'static [&'static str] = &["cursor", "limit"];
}

/// A list's query string: the resource's filter `F` and the page asked for `P`, each
/// checked as a [`Query`] is (a parameter neither knows is refused).
pub struct Listing<F, P = Paging<Cursor>> {
    pub filter: F,
    pub paging: P,
}

impl<S: Send + Sync, F: DeserializeOwned, P: PageQuery> FromRequestParts<S> for Listing<F, P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let (mut paging, mut filter) = (
            form_urlencoded::Serializer::new(String::new()),
            form_urlencoded::Serializer::new(String::new()),
        );
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let part = if P::PARAMETERS.contains(&key.as_ref()) {
                &mut paging
            } else {
                &mut filter
            };
            part.append_pair(&key, &value);
        }
        Ok(Listing {
            filter: from_query(&filter.finish())?,
            paging: from_query(&paging.finish())?,
        })
    }
}

/// The resource id in the path: a UUID, or a clear 422.
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::field("id", e.body_text()))?;
        Uuid::try_parse(&raw)
            .map(Id)
            .map_err(|_| ApiError::field("id", "must be a UUID"))
    }
}

/// An authenticated caller, with what the audit log needs to know about the call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub initiator: Initiator,
    pub request_id: Option<String>,
    /// The end user a service's key acts for (`X-On-Behalf-Of`), as the service named it.
    pub on_behalf_of: Option<String>,
    /// Who the caller stands for in separation-of-duties rules: the Keystone user a key acts
    /// for (resolved through Keystone), else the principal itself.
    pub subject: Subject,
}

impl Caller {
    /// Refuses the call unless the caller holds `capability` for some project (admins hold all).
    pub fn require(&self, capability: Capability) -> Result<(), ApiError> {
        if self.principal.may_somewhere(capability) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "this needs the {} role (the caller has `{}`)",
            capability.as_str(),
            self.principal.role_names()
        )))
    }
}

fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The principal behind `X-Auth-Token` (a Keystone token) or `Authorization: Bearer` (a key).
/// A request carrying more than one credential is refused: which one counts must never be
/// the caller's game (it once chose the rate-limit bucket).
async fn authenticate(state: &AppState, headers: &HeaderMap, request_id: &str) -> Result<Principal, ApiError> {
    let credentials =
        headers.get_all("x-auth-token").iter().count() + headers.get_all(header::AUTHORIZATION).iter().count();
    if credentials > 1 {
        return Err(ApiError::Unauthorized(
            "send one credential: either `Authorization: Bearer <key>` or `X-Auth-Token`, once",
        ));
    }
    if let Some(token) = headers.get("x-auth-token") {
        let token = token
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized("X-Auth-Token must be a Keystone token"))?;
        return state.tokens.principal(token, request_id).await;
    }
    let authorization = headers.get(header::AUTHORIZATION).ok_or(ApiError::Unauthorized(
        "send an API key as `Authorization: Bearer <key>`, or a Keystone token as `X-Auth-Token`",
    ))?;
    let key = authorization
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <key>`",
        ))?;
    db::api_keys::authenticate(&state.pool, key)
        .await?
        .ok_or(ApiError::Unauthorized("the API key is unknown or revoked"))
}

const ON_BEHALF_OF: &str = "X-On-Behalf-Of";

/// `X-On-Behalf-Of`: the end user a service's key acts for; only keys may name one. It is
/// resolved to a Keystone user by the caller, never compared as text.
fn on_behalf_of(headers: &HeaderMap, principal: &Principal) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("x-on-behalf-of") else {
        return Ok(None);
    };
    if !matches!(principal.credential, Credential::ApiKey { .. }) {
        return Err(ApiError::field(
            ON_BEHALF_OF,
            "only an API key may act on behalf of a user; a Keystone token already names its user",
        ));
    }
    match raw.to_str().map(str::trim) {
        Ok(user) if (1..=255).contains(&user.len()) && !user.chars().any(char::is_control) => Ok(Some(user.to_owned())),
        _ => Err(ApiError::field(
            ON_BEHALF_OF,
            "must name the user in 1 to 255 printable characters",
        )),
    }
}

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let request_id = header_text(&parts.headers, "x-request-id");
        // The call's own id, sent on as OpenStack's global request id.
        let openstack_request_id = request_id
            .clone()
            .unwrap_or_else(|| format!("req-{}", uuid::Uuid::new_v4()));
        let principal = authenticate(&state, &parts.headers, &openstack_request_id).await?;
        if let Some(PrincipalRateLimit(Some(limit))) = parts.extensions.get::<PrincipalRateLimit>() {
            limit.check(principal.subject().to_string())?;
        }
        let on_behalf_of = on_behalf_of(&parts.headers, &principal)?;
        let subject = match &on_behalf_of {
            Some(given) => Subject::User(state.tokens.user(ON_BEHALF_OF, given, &openstack_request_id).await?.id),
            None => principal.subject(),
        };
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let user_agent = header_text(&parts.headers, header::USER_AGENT);
        tracing::Span::current().record("principal", principal.name.as_str());
        Ok(Caller {
            initiator: Initiator::caller(&principal, on_behalf_of.clone(), address, user_agent),
            principal,
            request_id,
            on_behalf_of,
            subject,
        })
    }
}

/// `Idempotency-Key`, when sent.
pub struct IdempotencyKey(pub Option<String>);

const IDEMPOTENCY_KEY_MAX: usize = 255;

/// An optional header parameter of the spec, described once beside its extractor.
fn header_parameter(name: &str, description: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema.schema_type(Type::String)))
        .build()
}

/// A handler that takes [`IdempotencyKey`] lists it in `params(...)` of its `utoipa::path`.
impl IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_parameter(
            "Idempotency-Key",
            "Replays the first response to the same key and body",
            ObjectBuilder::new()
                .min_length(Some(1))
                .max_length(Some(IDEMPOTENCY_KEY_MAX))
                .pattern(Some("^[\\x21-\\x7E]+$")),
        )]
    }
}

impl IdempotencyKey {
    /// `raw` as a key: 1 to 255 visible ASCII characters.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        if (1..=IDEMPOTENCY_KEY_MAX).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Ok(IdempotencyKey(Some(raw.to_owned())));
        }
        Err(ApiError::field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        IdempotencyKey::parse(raw.to_str().unwrap_or_default())
    }
}

/// The ETag of a resource at `version`: what `If-Match` is compared with.
pub fn etag(version: i64) -> String {
    format!("\"v{version}\"")
}

/// `If-Match`, when sent: the ETags the caller expects the resource to have.
pub struct IfMatch(pub Option<String>);

impl IfMatch {
    /// Refuses the change when the resource's current ETag is not among those expected.
    pub fn check(&self, current: &str) -> Result<(), ApiError> {
        match &self.0 {
            None => Ok(()),
            Some(list)
                if entity_tags(list).is_some_and(|tags| tags.iter().any(|tag| *tag == "*" || *tag == current)) =>
            {
                Ok(())
            }
            Some(_) => Err(ApiError::PreconditionFailed),
        }
    }
}

/// A handler that takes [`IfMatch`] lists it in `params(...)`; the spec then gives the
/// operation its 412 (`CommonProblems`).
impl IntoParams for IfMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_parameter(
            "If-Match",
            "Only if the resource still has one of these ETags",
            ObjectBuilder::new(),
        )]
    }
}

/// The entity tags of an `If-Match` value (RFC 9110): `*`, or tags (`"..."`, weak ones
/// `W/"..."`, whose characters may include commas) separated by commas; `None` when malformed.
pub fn entity_tags(value: &str) -> Option<Vec<&str>> {
    let value = value.trim_matches([' ', '\t']);
    if value == "*" {
        return Some(vec!["*"]);
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        let start = rest;
        let body = rest.strip_prefix("W/").unwrap_or(rest).strip_prefix('"')?;
        let end = body.find('"')?;
        if !body[..end].bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b)) {
            return None;
        }
        let taken = start.len() - body.len() + end + 1;
        tags.push(&start[..taken]);
        rest = start[taken..].trim_start_matches([' ', '\t']);
        match rest.strip_prefix(',') {
            Some(next) => rest = next,
            None if rest.is_empty() => return Some(tags),
            None => return None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // An empty one says nothing: as if it were not sent.
        let value = header_text(&parts.headers, header::IF_MATCH).filter(|v| !v.trim().is_empty());
        if value.as_deref().is_some_and(|v| entity_tags(v).is_none()) {
            return Err(ApiError::field(
                "If-Match",
                "must be `*` or entity tags as the ETag header gives them (\"v3\"), comma-separated",
            ));
        }
        Ok(IfMatch(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_star_or_entity_tags_with_commas_inside_and_refuses_the_rest() {
        assert_eq!(entity_tags("*"), Some(vec!["*"]));
        assert_eq!(entity_tags("\"v3\""), Some(vec!["\"v3\""]));
        assert_eq!(
            entity_tags(r#"W/"^q"   ,  "}CKx,w",  "" , W/"0" "#),
            Some(vec![r#"W/"^q""#, r#""}CKx,w""#, r#""""#, r#"W/"0""#])
        );
        for bad in ["null", "v3", "\"v3", "\"v3\" \"v4\"", "\"v3\",", "W/v3", "\"a\"b\""] {
            assert_eq!(entity_tags(bad), None, "{bad}");
        }
        assert!(IfMatch(Some("\"v1\", \"v3\"".into())).check("\"v3\"").is_ok());
        assert!(IfMatch(Some("\"v1\"".into())).check("\"v3\"").is_err());
    }
}
