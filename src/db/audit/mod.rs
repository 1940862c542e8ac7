//! The audit log in Postgres: [`write`] appends unsealed events inside the caller's
//! transaction, [`seal`] chains them, [`read`] lists them, [`verify`] checks the chain;
//! [`partitions`] keeps the monthly partitions made ahead, [`archive`] moves old ones out to
//! files with a record that keeps the rest verifiable. The
//! events, their digests and the chain's links are computed in `domain::audit`. Imports
//! `domain` and `db::share_requests` (what events are about); never `db::webhooks`:
//! announcing an event is `crate::events`'s.

pub mod archive;
pub mod partitions;
pub mod read;
pub mod seal;
pub mod state;
pub mod verify;
pub mod write;

pub use self::read::{EventFilter, LogReader, batches, for_request, page, stream};
pub use self::seal::{SEAL_BATCH, seal, seal_all, seal_all_waiting};
pub use self::state::state;
pub use self::verify::{UNSEALED_GRACE_SECS, checkpoint, verify, verify_anchored};
pub use self::write::{NewEvent, insert, insert_all};
pub use crate::domain::audit::{Event, GENESIS};
