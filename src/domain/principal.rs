//! Who a caller is and what it may do: API-key roles and Keystone roles, both turned into
//! capabilities scoped to projects. Pure rules; no I/O. What a Keystone token says, and the
//! role map applied to it, are `keystone`; who a caller is for separation of duties, `subject`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::keystone::{ApproverScope, KeystoneIdentity, RoleMap};
use super::subject::Subject;

/// What an API key may do. Roles are flat: each names one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Files share requests and cancels its own.
    Requester,
    /// Approves or denies share requests.
    Approver,
    /// Reads everything, changes nothing.
    Auditor,
    /// Does everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Requester, Role::Approver, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Requester => "requester",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`: expected requester, approver, auditor or admin"))
    }
}

/// One thing a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// File share requests of the scope's images; cancel and revoke them.
    Request,
    /// Accept or reject shares made to the scope's projects.
    Consume,
    /// Read the scope's requests and shares.
    Read,
    /// Approve or deny requests of the scope's images.
    Approve,
    /// Read everything.
    Audit,
    /// Everything, including keys, policies and webhooks.
    Admin,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Request => "requester",
            Capability::Consume => "consumer",
            Capability::Read => "reader",
            Capability::Approve => "approver",
            Capability::Audit => "auditor",
            Capability::Admin => "admin",
        }
    }
}

/// Where a capability holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every project (an unrestricted key, a cloud-wide role).
    Everywhere,
    /// One Keystone project, by id.
    Project(String),
    /// The projects of one Keystone domain, by id.
    Domain(String),
}

/// What a caller may read, when not everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readable {
    pub projects: Vec<String>,
    pub domains: Vec<String>,
}

impl Readable {
    fn covers(&self, project: Option<&str>, domain: Option<&str>) -> bool {
        project.is_some_and(|p| self.projects.iter().any(|x| x == p))
            || domain.is_some_and(|d| self.domains.iter().any(|x| x == d))
    }
}

/// A capability within a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub capability: Capability,
    pub scope: Scope,
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key with its role, as made by `keys create`.
    ApiKey { role: Role },
    /// A Keystone token, validated against Keystone.
    Keystone(KeystoneIdentity),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable, unique name: what the audit log and `requested_by` show. An API key's name,
    /// or `keystone:<user id>` for a Keystone user.
    pub name: String,
    pub credential: Credential,
    pub grants: Vec<Grant>,
}

fn grant(capability: Capability, scope: Scope) -> Grant {
    Grant { capability, scope }
}

/// `capabilities` in each of `projects`, or everywhere when there are none.
fn scoped(capabilities: &[Capability], projects: &[String]) -> Vec<Grant> {
    if projects.is_empty() {
        return capabilities.iter().map(|&c| grant(c, Scope::Everywhere)).collect();
    }
    projects
        .iter()
        .flat_map(|p| capabilities.iter().map(|&c| grant(c, Scope::Project(p.clone()))))
        .collect()
}

impl Principal {
    /// An API key. `projects` restrict it; none means every project. A requester key for
    /// projects is also their consumer; an approver key for projects decides only their images.
    pub fn api_key(name: String, role: Role, projects: &[String]) -> Self {
        use Capability::*;
        let grants = match role {
            Role::Requester if projects.is_empty() => scoped(&[Request, Read], projects),
            Role::Requester => scoped(&[Request, Consume, Read], projects),
            Role::Approver => {
                let mut grants = scoped(&[Approve], projects);
                grants.push(grant(Read, Scope::Everywhere));
                grants
            }
            Role::Auditor => vec![grant(Audit, Scope::Everywhere)],
            Role::Admin => vec![grant(Admin, Scope::Everywhere)],
        };
        Principal {
            name,
            credential: Credential::ApiKey { role },
            grants,
        }
    }

    /// A Keystone user, its roles mapped by `map`. Project roles hold in the token's project.
    /// Cloud-wide roles (admin, auditor, an `everywhere` approver) hold only for a
    /// system-scoped token or one scoped to a project of `map.cloud_projects`: anyone else's
    /// `admin` is the admin of its own project or domain (a customer's), not the broker's.
    /// Elsewhere an approver role holds within the token's domain at most.
    pub fn keystone(identity: KeystoneIdentity, map: &RoleMap) -> Self {
        use Capability::*;
        let has = |names: &[String]| identity.roles.iter().any(|r| names.contains(r));
        let cloud_wide = identity.system || identity.scoped_to_any(&map.cloud_projects);
        let mut grants = Vec::new();
        if let Some(project) = &identity.project_id {
            let here = |c| grant(c, Scope::Project(project.clone()));
            if has(&map.member) {
                grants.extend([here(Request), here(Consume), here(Read)]);
            } else if has(&map.reader) {
                grants.push(here(Read));
            }
        }
        if has(&map.approver) {
            let domain = || identity.home_domain().map(|d| Scope::Domain(d.to_owned()));
            let scope = match map.approver_scope {
                ApproverScope::Everywhere if cloud_wide => Some(Scope::Everywhere),
                ApproverScope::Everywhere | ApproverScope::Domain => domain(),
                ApproverScope::Project => identity.project_id.clone().map(Scope::Project),
            };
            // A limited approver with no project or domain in its token decides nothing; it
            // reads what it decides.
            if let Some(scope) = scope {
                grants.extend([grant(Approve, scope.clone()), grant(Read, scope)]);
            }
        }
        if cloud_wide && has(&map.auditor) {
            grants.push(grant(Audit, Scope::Everywhere));
        }
        if cloud_wide && has(&map.admin) {
            grants.push(grant(Admin, Scope::Everywhere));
        }
        Principal {
            name: format!("keystone:{}", identity.user_id),
            credential: Credential::Keystone(identity),
            grants,
        }
    }

    /// Who the caller is for separation of duties, before any `X-On-Behalf-Of`.
    pub fn subject(&self) -> Subject {
        match &self.credential {
            Credential::Keystone(k) => Subject::User(k.user_id.clone()),
            Credential::ApiKey { .. } => Subject::Key(self.name.clone()),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.grants.iter().any(|g| g.capability == Capability::Admin)
    }

    /// Whether the caller holds `capability` for `project` (`None`: a project not known yet,
    /// which only an unrestricted grant covers). Admins hold everything.
    pub fn may(&self, capability: Capability, project: Option<&str>) -> bool {
        self.may_in(capability, project, None)
    }

    /// Like [`Self::may`], for a project whose domain is known too.
    pub fn may_in(&self, capability: Capability, project: Option<&str>, domain: Option<&str>) -> bool {
        self.is_admin()
            || self.grants.iter().any(|g| {
                g.capability == capability
                    && match &g.scope {
                        Scope::Everywhere => true,
                        Scope::Project(p) => Some(p.as_str()) == project,
                        Scope::Domain(d) => Some(d.as_str()) == domain,
                    }
            })
    }

    /// Whether the caller holds `capability` for some project.
    pub fn may_somewhere(&self, capability: Capability) -> bool {
        self.is_admin() || self.grants.iter().any(|g| g.capability == capability)
    }

    /// The projects for which the caller holds `capability`; `None` when it holds it everywhere.
    pub fn projects_for(&self, capability: Capability) -> Option<Vec<String>> {
        if self.may(capability, None) {
            return None;
        }
        Some(
            self.grants
                .iter()
                .filter(|g| g.capability == capability)
                .filter_map(|g| match &g.scope {
                    Scope::Project(p) => Some(p.clone()),
                    Scope::Everywhere | Scope::Domain(_) => None,
                })
                .collect(),
        )
    }

    /// The projects and domains whose requests and shares the caller may read; `None` means
    /// all of them.
    pub fn readable(&self) -> Option<Readable> {
        if self.may_somewhere(Capability::Audit) || self.may(Capability::Read, None) {
            return None;
        }
        let mut readable = Readable::default();
        for g in self.grants.iter().filter(|g| g.capability == Capability::Read) {
            match &g.scope {
                Scope::Project(p) => readable.projects.push(p.clone()),
                Scope::Domain(d) => readable.domains.push(d.clone()),
                Scope::Everywhere => {}
            }
        }
        Some(readable)
    }

    /// The projects whose requests and shares the caller may read; `None` means all of them.
    pub fn readable_projects(&self) -> Option<Vec<String>> {
        self.readable().map(|r| r.projects)
    }

    /// Whether the caller may see a request of `owner` (project, domain) filed by `requested_by`.
    pub fn sees_request(&self, owner: (Option<&str>, Option<&str>), requested_by: &str) -> bool {
        requested_by == self.name || self.readable().is_none_or(|r| r.covers(owner.0, owner.1))
    }

    /// Whether the caller may see a share to `project` (project, domain), its request as in
    /// [`Self::sees_request`].
    pub fn sees_share(
        &self,
        project: (Option<&str>, Option<&str>),
        owner: (Option<&str>, Option<&str>),
        requested_by: &str,
    ) -> bool {
        self.sees_request(owner, requested_by) || self.readable().is_some_and(|r| r.covers(project.0, project.1))
    }

    /// The caller's roles as the audit log shows them: the key's role, or the token's roles.
    pub fn role_names(&self) -> String {
        match &self.credential {
            Credential::ApiKey { role } => role.to_string(),
            Credential::Keystone(k) => k.roles.join(","),
        }
    }
}

#[cfg(test)]
#[path = "principal_tests.rs"]
mod tests;
