//! Who a caller is for separation of duties: one person or one service. Pure.

use std::fmt;

/// One person or one service, as separation of duties tells them apart. A Keystone user is
/// its user id, whichever credential it calls with: its own token, or a service's key acting
/// for it (`X-On-Behalf-Of`, resolved through Keystone). A key acting for nobody is itself.
/// Stored as text: the user id, or `key:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A Keystone user, by id.
    User(String),
    /// An API key acting for nobody, by name.
    Key(String),
    /// A user named in `X-On-Behalf-Of` before the broker resolved names to users (rows
    /// written then): it matches nobody, so it can never pass a separation-of-duties check.
    Unresolved(String),
}

impl Subject {
    const KEY: &'static str = "key:";
    const UNRESOLVED: &'static str = "unresolved:";

    /// The subject as stored in the database.
    pub fn parse(stored: &str) -> Subject {
        if let Some(name) = stored.strip_prefix(Self::KEY) {
            Subject::Key(name.to_owned())
        } else if let Some(name) = stored.strip_prefix(Self::UNRESOLVED) {
            Subject::Unresolved(name.to_owned())
        } else {
            Subject::User(stored.to_owned())
        }
    }

    /// Whether both stand for the same known person or key; an unresolved subject is nobody's.
    pub fn same_as(&self, other: &Subject) -> bool {
        !matches!(self, Subject::Unresolved(_)) && self == other
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(id) => f.write_str(id),
            Subject::Key(name) => write!(f, "{}{name}", Self::KEY),
            Subject::Unresolved(name) => write!(f, "{}{name}", Self::UNRESOLVED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Principal, Role};

    #[test]
    fn a_subject_is_a_user_id_or_a_key_and_never_a_name() {
        for stored in ["8d6f1c2e", "key:portal", "unresolved:erin"] {
            assert_eq!(Subject::parse(stored).to_string(), stored);
        }
        assert_eq!(Subject::parse("key:portal"), Subject::Key("portal".into()));
        let erin = Subject::parse("unresolved:erin");
        assert!(
            !erin.same_as(&erin),
            "an unresolved subject matches nobody, not even itself"
        );
        let portal = Principal::api_key("portal".into(), Role::Requester, &[]);
        assert_eq!(portal.subject(), Subject::Key("portal".into()));
        assert_ne!(portal.subject(), Subject::User("portal".into()));
    }
}
