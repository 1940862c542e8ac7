//! The approval policy file (`--policy-file`): read at start, reloaded on SIGHUP, and every
//! load, in force or refused, recorded in the audit log.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sqlx::PgPool;

use crate::config::WorkerArgs;
use crate::db;
use crate::domain::policy::{Policy, SharedPolicy};
use crate::domain::{Action, Outcome};
use crate::tasks::Tasks;

/// The approval policy from `--policy-file`, reloaded on SIGHUP; none: one approver each.
/// Every load, at start and on each SIGHUP, in force or refused, is recorded in the audit
/// log as `update/policy` (the file's digest and rule names), as `observer`.
pub(super) async fn approval_policy(
    args: &WorkerArgs,
    pool: &PgPool,
    observer: &str,
    tasks: &Tasks,
) -> anyhow::Result<SharedPolicy> {
    let Some(path) = &args.policy_file else {
        return Ok(SharedPolicy::default());
    };
    let loaded = PolicySource::load(path);
    audit_policy(pool, observer, "start", path, loaded.as_ref().map(|s| &s.loaded)).await;
    let source = loaded?;
    let policy = source.policy();
    let (pool, observer, stop) = (pool.clone(), observer.to_owned(), tasks.stopping());
    tasks.spawn(async move {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                return tracing::warn!(error = %e, "cannot listen for SIGHUP: the approval policy will not reload");
            }
        };
        while stop.run_until_cancelled(hangups.recv()).await.flatten().is_some() {
            let reloaded = source.reload();
            if let Err(e) = &reloaded {
                tracing::error!(
                    error = format!("{e:#}"),
                    "approval policy not reloaded: keeping the policy in force"
                );
            }
            audit_policy(&pool, &observer, "reload", &source.path, reloaded.as_ref()).await;
        }
    });
    Ok(policy)
}

/// Records a load of the policy file (`trigger`: `start` or `reload`) in the audit log: in
/// force, with its digest and rule names, or refused, with why. A failure to record is
/// logged; the policy in force is what was decided either way.
pub async fn audit_policy(
    pool: &PgPool,
    observer: &str,
    trigger: &str,
    path: &Path,
    loaded: Result<&PolicyVersion, &anyhow::Error>,
) {
    let actor = crate::domain::Initiator::service("policy-file");
    let path_text = path.display().to_string();
    let (outcome, reason, details) = match loaded {
        Ok(version) => (
            Outcome::Success,
            None,
            serde_json::json!({
                "trigger": trigger,
                "path": path_text,
                "digest": version.digest,
                "rules": version.rules,
            }),
        ),
        Err(e) => (
            Outcome::Failure,
            Some(format!("{e:#}")),
            serde_json::json!({
                "trigger": trigger,
                "path": path_text,
                // The file as it is now (it may have been unreadable).
                "digest": std::fs::read(path).ok().map(|bytes| PolicyVersion::digest_of(&bytes)),
            }),
        ),
    };
    let event = db::audit::NewEvent {
        outcome,
        reason: reason.as_deref(),
        details,
        ..db::audit::NewEvent::attempt(&actor, Action::Policy)
    };
    if let Err(e) = crate::events::record_alone(pool, observer, event).await {
        tracing::error!(error = %e, "recording the approval policy's load in the audit log failed");
    }
}

/// Which policy a load put in force: the SHA-256 of the file (hex) and its rules' names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub digest: String,
    pub rules: Vec<String>,
}

impl PolicyVersion {
    fn digest_of(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }
}

/// The approval policy file: read at start (a bad file stops the start) and on [`Self::reload`],
/// which checks the whole file before it replaces the policy in force.
pub struct PolicySource {
    path: PathBuf,
    policy: SharedPolicy,
    /// What was read at start.
    pub loaded: PolicyVersion,
}

impl PolicySource {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let (policy, loaded) = Self::read(path)?;
        tracing::info!(path = %path.display(), rules = policy.rules.len(), digest = %loaded.digest, "approval policy loaded");
        Ok(PolicySource {
            path: path.to_owned(),
            policy: SharedPolicy::new(policy),
            loaded,
        })
    }

    /// The policy in force, as every holder sees it (reloads included).
    pub fn policy(&self) -> SharedPolicy {
        self.policy.clone()
    }

    /// Reads the file again; the policy in force is replaced only by a valid one. Returns
    /// which one is now in force.
    pub fn reload(&self) -> anyhow::Result<PolicyVersion> {
        let (policy, version) = Self::read(&self.path)?;
        tracing::info!(path = %self.path.display(), rules = policy.rules.len(), digest = %version.digest, "approval policy reloaded");
        self.policy.replace(policy);
        Ok(version)
    }

    fn read(path: &Path) -> anyhow::Result<(Policy, PolicyVersion)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the approval policy {} (GSB_POLICY_FILE)", path.display()))?;
        let policy = Policy::parse(&path.to_string_lossy(), &text)
            .map_err(|e| anyhow::anyhow!("the approval policy {} is refused: {e}", path.display()))?;
        let version = PolicyVersion {
            digest: PolicyVersion::digest_of(text.as_bytes()),
            rules: policy.rules.iter().map(|rule| rule.name.clone()).collect(),
        };
        Ok((policy, version))
    }
}
