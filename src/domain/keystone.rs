//! Keystone tokens as the broker reads them: what a validated token says about its holder,
//! and which of its roles stand for which broker capabilities, where (`Principal::keystone`
//! applies them). Pure; no I/O; imports nothing of `principal`.

use std::str::FromStr;

/// Which requests a Keystone approver decides: those of any image, or only of images its
/// token's project owns, or only of images owned in its token's project's domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApproverScope {
    #[default]
    Everywhere,
    Project,
    Domain,
}

impl FromStr for ApproverScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "everywhere" => Ok(ApproverScope::Everywhere),
            "project" => Ok(ApproverScope::Project),
            "domain" => Ok(ApproverScope::Domain),
            other => Err(format!(
                "unknown approver scope `{other}`: expected everywhere, project or domain"
            )),
        }
    }
}

/// What a validated Keystone token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeystoneIdentity {
    pub user_id: String,
    /// For people reading logs only: a name never authorizes anything (names are reused
    /// across domains); rules compare [`Subject`]s.
    pub user_name: String,
    /// The project the token is scoped to; `None` for unscoped, domain- and system-scoped tokens.
    pub project_id: Option<String>,
    /// That project's name, and its domain's id and name.
    pub project_name: Option<String>,
    pub project_domain_id: Option<String>,
    pub project_domain_name: Option<String>,
    /// The domain a domain-scoped token is scoped to.
    pub domain_id: Option<String>,
    /// A system-scoped token (`system: {all: true}`): the cloud operator's scope.
    pub system: bool,
    /// The token's role names in that scope (implied roles included).
    pub roles: Vec<String>,
}

impl KeystoneIdentity {
    /// The domain the token's roles hold in: its project's domain, or the domain it is scoped to.
    pub fn home_domain(&self) -> Option<&str> {
        self.project_domain_id.as_deref().or(self.domain_id.as_deref())
    }

    /// Whether the token is scoped to one of `projects`, each a project id or
    /// `<project name>@<domain name>` (unique in Keystone: domain names are unique, and
    /// project names within a domain).
    pub(super) fn scoped_to_any(&self, projects: &[String]) -> bool {
        let Some(id) = self.project_id.as_deref() else {
            return false;
        };
        projects.iter().any(|p| match p.rsplit_once('@') {
            Some((name, domain)) => {
                self.project_name.as_deref() == Some(name) && self.project_domain_name.as_deref() == Some(domain)
            }
            None => p == id,
        })
    }
}

/// Which Keystone roles stand for which broker capabilities (configurable; see `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMap {
    /// Requester of the project's images and consumer of shares to the project.
    pub member: Vec<String>,
    /// Read-only on the project.
    pub reader: Vec<String>,
    /// Decides requests.
    pub approver: Vec<String>,
    /// Reads everything.
    pub auditor: Vec<String>,
    /// Everything.
    pub admin: Vec<String>,
    /// Where approver roles hold.
    pub approver_scope: ApproverScope,
    /// Projects whose tokens carry cloud-wide roles (admin, auditor, an `everywhere`
    /// approver), besides system-scoped tokens: ids or `<name>@<domain name>`.
    pub cloud_projects: Vec<String>,
}

impl Default for RoleMap {
    fn default() -> Self {
        RoleMap {
            member: vec!["member".into()],
            reader: vec!["reader".into()],
            approver: vec!["image_share_approver".into()],
            auditor: Vec::new(),
            admin: vec!["admin".into()],
            approver_scope: ApproverScope::Everywhere,
            cloud_projects: vec!["admin@Default".into()],
        }
    }
}
