use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A share request as a caller files it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequestInput {
    /// The Glance image to share (a UUID).
    #[schema(format = Uuid, example = "7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa")]
    pub image_id: String,
    /// Target projects: Keystone project ids (32 hex digits or a UUID) or project names.
    #[schema(min_items = 1, example = json!(["2f0c6b8a9d3e4c1f8a7b6c5d4e3f2a1b"]))]
    pub targets: Vec<String>,
    /// The region of the image, one of the cloud's (refused with 422 otherwise: the cloud's
    /// catalog, not this schema, names them); the broker's default region when omitted.
    #[serde(default)]
    #[schema(example = "RegionOne")]
    pub region: Option<String>,
    /// Why the share is needed (at most 1,000 characters).
    #[schema(min_length = 1, max_length = 1000, example = "CI runners need the golden image")]
    pub reason: String,
    /// When the shares end on their own; must be in the future (a time already past is
    /// refused with 422, the one rule of this body a schema cannot state).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Accept each share for the consumer as soon as it is granted. Only when the approval
    /// policy allows it: otherwise the request is denied by the policy once validated.
    #[serde(default)]
    pub auto_accept: bool,
}

/// One rule a field broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// Where the bad value is, as a JSON path such as `targets[2]`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Bounds that come from configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most targets in one request (Glance's `image_member_quota` defaults to 128).
    pub max_targets: usize,
    /// The region used when a request names none.
    pub default_region: String,
}

pub const MAX_REASON_CHARS: usize = 1000;

/// Why a free text (a reason, a comment) is refused, if it is: longer than
/// [`MAX_REASON_CHARS`], or holding a NUL character, which Postgres text cannot store.
pub fn free_text_problem(text: &str) -> Option<String> {
    if text.chars().count() > MAX_REASON_CHARS {
        Some(format!("at most {MAX_REASON_CHARS} characters"))
    } else if text.contains('\0') {
        Some("must not contain the NUL character (\\u0000)".into())
    } else {
        None
    }
}
pub const MAX_PROJECT_NAME_CHARS: usize = 64;
const MAX_REGION_CHARS: usize = 255;

/// A target project, as far as the broker can tell without asking Keystone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Keystone project id: 32 hex digits, or a UUID.
    ProjectId(String),
    /// A project name, resolved to an id by the worker.
    ProjectName(String),
}

impl Target {
    pub fn parse(raw: &str) -> Result<Target, String> {
        if is_project_id(raw) {
            return Ok(Target::ProjectId(raw.to_owned()));
        }
        if raw.trim().is_empty() {
            return Err("must be a project id or name, not blank".into());
        }
        if raw.chars().count() > MAX_PROJECT_NAME_CHARS {
            return Err(format!(
                "is neither a project id (32 hex digits or a UUID) nor a project name (at most {MAX_PROJECT_NAME_CHARS} characters)"
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Target::ProjectName(raw.to_owned()))
    }

    /// The target as written.
    pub fn as_str(&self) -> &str {
        match self {
            Target::ProjectId(s) | Target::ProjectName(s) => s,
        }
    }

    pub fn project_id(&self) -> Option<&str> {
        match self {
            Target::ProjectId(id) => Some(id),
            Target::ProjectName(_) => None,
        }
    }
}

fn is_project_id(s: &str) -> bool {
    (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())) || (s.len() == 36 && Uuid::try_parse(s).is_ok())
}

/// `asked` as the catalog spells it, when it is one of `regions` (the catalog's regions the
/// broker serves). Keystone region ids are case-sensitive: another spelling is refused, with
/// the right one named, rather than guessed.
pub fn catalog_region(asked: &str, regions: &[String]) -> Result<String, String> {
    let asked = asked.trim();
    if let Some(region) = regions.iter().find(|r| *r == asked) {
        return Ok(region.clone());
    }
    if regions.is_empty() {
        return Err("the broker's cloud has no Glance in its region (check the catalog and region_name)".into());
    }
    let known = regions.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ");
    let hint = match regions.iter().find(|r| r.eq_ignore_ascii_case(asked)) {
        Some(r) => format!(" (region names are case-sensitive: did you mean `{r}`?)"),
        None => String::new(),
    };
    Err(format!(
        "unknown region `{asked}`{hint}: the broker shares images in {known}"
    ))
}

/// A share request that passed every check the broker can make on its own.
#[derive(Debug, Clone)]
pub struct NewShareRequest {
    pub image_id: Uuid,
    pub region: String,
    pub targets: Vec<Target>,
    pub reason: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub auto_accept: bool,
}

impl NewShareRequest {
    /// Checks every field and reports every problem at once.
    pub fn parse(input: ShareRequestInput, limits: &Limits, now: DateTime<Utc>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();

        let image_id = match Uuid::try_parse(input.image_id.trim()) {
            Ok(id) => Some(id),
            Err(_) => {
                errors.push(FieldError::new("image_id", "must be a UUID"));
                None
            }
        };

        if input.targets.is_empty() {
            errors.push(FieldError::new("targets", "must name at least one project"));
        } else if input.targets.len() > limits.max_targets {
            errors.push(FieldError::new(
                "targets",
                format!(
                    "at most {} projects per request (Glance's member quota)",
                    limits.max_targets
                ),
            ));
        }
        let mut seen = HashSet::new();
        let mut targets = Vec::with_capacity(input.targets.len());
        for (i, raw) in input.targets.iter().enumerate() {
            match Target::parse(raw) {
                Err(reason) => errors.push(FieldError::new(format!("targets[{i}]"), reason)),
                Ok(_) if !seen.insert(raw.as_str()) => {
                    errors.push(FieldError::new(
                        format!("targets[{i}]"),
                        format!("`{raw}` is listed twice"),
                    ));
                }
                Ok(target) => targets.push(target),
            }
        }

        let reason = input.reason.trim().to_owned();
        if reason.is_empty() {
            errors.push(FieldError::new("reason", "is required: say why the share is needed"));
        } else if let Some(problem) = free_text_problem(&reason) {
            errors.push(FieldError::new("reason", problem));
        }

        // Surrounding spaces never make another region: stored trimmed, a region has one
        // spelling (the catalog's, once `catalog_region` has checked it).
        let region = match input.region.as_deref().map(str::trim) {
            None => limits.default_region.trim().to_owned(),
            Some(r) if r.is_empty() || r.chars().count() > MAX_REGION_CHARS || r.chars().any(char::is_control) => {
                errors.push(FieldError::new(
                    "region",
                    "must be a region name (1 to 255 printable characters)",
                ));
                String::new()
            }
            Some(r) => r.to_owned(),
        };

        if let Some(at) = input.expires_at
            && at <= now
        {
            errors.push(FieldError::new("expires_at", "must be in the future"));
        }

        match image_id {
            Some(image_id) if errors.is_empty() => Ok(NewShareRequest {
                image_id,
                region,
                targets,
                reason,
                expires_at: input.expires_at,
                auto_accept: input.auto_accept,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_targets: 3,
            default_region: "RegionOne".into(),
        }
    }

    fn input(targets: &[&str]) -> ShareRequestInput {
        ShareRequestInput {
            image_id: "7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa".into(),
            targets: targets.iter().map(|s| s.to_string()).collect(),
            region: None,
            reason: "build farm".into(),
            expires_at: None,
            auto_accept: false,
        }
    }

    fn fields(result: Result<NewShareRequest, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn ids_and_names_are_told_apart() {
        let hex = "2f0c6b8a9d3e4c1f8a7b6c5d4e3f2a1b";
        assert_eq!(Target::parse(hex), Ok(Target::ProjectId(hex.into())));
        let uuid = "7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa";
        assert_eq!(Target::parse(uuid), Ok(Target::ProjectId(uuid.into())));
        assert_eq!(Target::parse("proj-b"), Ok(Target::ProjectName("proj-b".into())));
        assert!(Target::parse("  ").is_err());
        assert!(Target::parse("a\u{7}b").is_err());
        assert!(Target::parse(&"x".repeat(65)).is_err());
        assert!(Target::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn a_valid_request_takes_the_default_region() {
        let req = NewShareRequest::parse(input(&["proj-b"]), &limits(), Utc::now()).unwrap();
        assert_eq!(req.region, "RegionOne");
        assert_eq!(req.targets, vec![Target::ProjectName("proj-b".into())]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut bad = input(&["proj-b", "proj-b", ""]);
        bad.image_id = "not-a-uuid".into();
        bad.reason = " ".into();
        bad.expires_at = Some(Utc::now() - Duration::minutes(1));
        let got = fields(NewShareRequest::parse(bad, &limits(), Utc::now()));
        assert_eq!(got, ["image_id", "targets[1]", "targets[2]", "reason", "expires_at"]);
    }

    #[test]
    fn targets_are_bounded() {
        assert_eq!(
            fields(NewShareRequest::parse(input(&[]), &limits(), Utc::now())),
            ["targets"]
        );
        let four = input(&["a", "b", "c", "d"]);
        assert_eq!(fields(NewShareRequest::parse(four, &limits(), Utc::now())), ["targets"]);
    }

    #[test]
    fn a_region_is_stored_trimmed() {
        let mut spaced = input(&["a"]);
        spaced.region = Some(" RegionOne ".into());
        assert_eq!(
            NewShareRequest::parse(spaced, &limits(), Utc::now()).unwrap().region,
            "RegionOne"
        );
        let mut blank = input(&["a"]);
        blank.region = Some("   ".into());
        assert_eq!(fields(NewShareRequest::parse(blank, &limits(), Utc::now())), ["region"]);
    }

    #[test]
    fn a_region_must_be_one_the_catalog_spells_exactly() {
        let regions = vec!["RegionOne".to_owned()];
        assert_eq!(catalog_region("RegionOne", &regions).unwrap(), "RegionOne");
        assert_eq!(catalog_region("RegionOne ", &regions).unwrap(), "RegionOne");
        let other_case = catalog_region("regionone", &regions).unwrap_err();
        assert!(other_case.contains("did you mean `RegionOne`"), "{other_case}");
        let unknown = catalog_region("Nowhere", &regions).unwrap_err();
        assert!(unknown.contains("`RegionOne`"), "{unknown}");
        assert!(catalog_region("RegionOne", &[]).is_err());
    }

    #[test]
    fn a_nul_in_the_reason_is_refused() {
        let mut nul = input(&["a"]);
        nul.reason = "a\0b".into();
        assert_eq!(fields(NewShareRequest::parse(nul, &limits(), Utc::now())), ["reason"]);
    }

    #[test]
    fn a_long_reason_is_refused() {
        let mut long = input(&["a"]);
        long.reason = "r".repeat(MAX_REASON_CHARS + 1);
        assert_eq!(fields(NewShareRequest::parse(long, &limits(), Utc::now())), ["reason"]);
    }
}
