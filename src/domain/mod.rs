//! The broker's vocabulary: principals and roles, share requests and their validation,
//! share states. Pure data and rules: nothing here imports axum, sqlx or reqwest.

pub mod access;
pub mod address;
pub mod audit;
mod canonical;
pub mod decisions;
pub mod drift;
pub mod filters;
mod fitness;
pub mod impact;
mod keystone;
pub mod policy;
mod principal;
mod share;
mod share_request;
mod states;
mod subject;
pub mod webhook;

pub use audit::{
    Action, AnchorMismatch, ArchivedPrefix, BrokenLink, ChainHead, ChainLink, ChainReport, ChainState, Checkpoint,
    CheckpointMismatch, Initiator, Outcome, UnsealedEvent, Verification,
};
pub use canonical::canonical_json;
pub use fitness::{
    ImageFacts, ImageShape, Warning, WarningCode, unfit as fitness_refusal, warnings as fitness_warnings,
};
pub use keystone::{ApproverScope, KeystoneIdentity, RoleMap};
pub use principal::{Capability, Credential, Grant, Principal, Readable, Role, Scope};
pub use share::{MAX_SCHEDULE_AHEAD_DAYS, REJECTED_BY_CONSUMER, Refusal, Trigger, schedule_problem};
pub use share_request::{
    FieldError, Limits, MAX_PROJECT_NAME_CHARS, MAX_REASON_CHARS, NewShareRequest, ShareRequestInput, Target,
    catalog_region, free_text_problem,
};
pub use states::{RequestStatus, RevokeCause, ShareState, Validation};
pub use subject::Subject;
