//! Recording what happened: an audit event and the webhook deliveries that announce it,
//! together in the caller's transaction. The one way `http`, `worker` and `startup` record
//! events. `db::audit` stores events and `db::webhooks` queues deliveries; neither imports
//! the other, and this module, above both, calls each in turn.

use sqlx::{PgConnection, PgPool};

use crate::db::audit::{Event, NewEvent};
use crate::db::{self};

/// Appends an unsealed event inside `tx` and queues the webhook deliveries that announce it.
pub async fn record(tx: &mut PgConnection, observer: &str, event: NewEvent<'_>) -> Result<Event, sqlx::Error> {
    let mut stored = record_all(tx, observer, vec![event]).await?;
    Ok(stored.remove(0))
}

/// Appends several events inside `tx` in one insert (a worker's batch), in their order, and
/// queues their webhook deliveries. An event that names no correlation id gets the request id
/// `tx` carries (`db::jobs::carry_origin`): what the worker records because of a call
/// carries that call's id.
pub async fn record_all(
    tx: &mut PgConnection,
    observer: &str,
    events: Vec<NewEvent<'_>>,
) -> Result<Vec<Event>, sqlx::Error> {
    let carried = if events.iter().any(|e| e.correlation_id.is_none()) {
        db::jobs::carried_request_id(&mut *tx).await?
    } else {
        None
    };
    let events: Vec<NewEvent<'_>> = events
        .into_iter()
        .map(|e| NewEvent {
            correlation_id: e.correlation_id.or(carried.as_deref()),
            ..e
        })
        .collect();
    let stored = db::audit::insert_all(tx, observer, events).await?;
    db::webhooks::announce(tx, &stored).await?;
    Ok(stored)
}

/// Records an event in a transaction of its own: for what changes nothing in the database
/// (a policy reloaded from its file) or was refused.
pub async fn record_alone(pool: &PgPool, observer: &str, event: NewEvent<'_>) -> Result<Event, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let stored = record(&mut tx, observer, event).await?;
    tx.commit().await?;
    Ok(stored)
}
