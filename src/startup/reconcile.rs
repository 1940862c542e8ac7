//! `glance-share-broker reconcile`: one reconciliation pass from the command line, beside or
//! without running brokers (the jobs it queues are the same, one per image at a time), then
//! the findings the pass saw or resolved, one JSON object a line.

use crate::config::{ReconcileArgs, instance_name};
use crate::db;
use crate::tasks::Tasks;
use crate::worker::{Outcome, Worker};

use super::{approval_policy, connect, migrate, settings};

/// Queues the reconciliation of every managed image (or `--image-id`), runs the
/// reconciliations due until none is left, and prints what they found.
pub(super) async fn reconcile(args: ReconcileArgs) -> anyhow::Result<()> {
    let run = &args.worker;
    let cloud = settings::openstack(&run.worker)?;
    let tasks = Tasks::new();
    let pool = connect(&run.database, run.database.db_max_connections, Some(&tasks)).await?;
    migrate(&pool).await?;
    let instance = instance_name(&run.instance);
    let policy = approval_policy(&run.worker, &pool, &instance, &tasks).await?;
    let config = settings::worker_config(&run.worker, instance, policy);
    let started: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select now()").fetch_one(&pool).await?;
    let worker = Worker::new(pool.clone(), cloud, config);
    let queued = worker.queue_reconciles(args.image_id).await?;
    let mut ran = 0;
    while worker.reconcile_once().await? == Outcome::Ran {
        ran += 1;
    }
    let findings = db::drift::touched_since(&pool, started).await?;
    for finding in &findings {
        println!("{}", serde_json::to_string(finding)?);
    }
    // The pass's audit events take their place in the chain before the command ends: once
    // the background tasks have stopped (none writes after), even when a broker's sealer
    // holds the chain lock meanwhile.
    tasks.shutdown().await;
    if !db::audit::seal_all_waiting(&pool, 5).await? {
        tracing::warn!("the chain lock stayed taken: a running broker's sealer seals this pass's events");
    }
    let open = findings
        .iter()
        .filter(|f| f.state == crate::domain::drift::FindingState::Open)
        .count();
    eprintln!(
        "reconciled: {} images queued, {ran} reconciliations run, {open} open findings, {} resolved",
        queued.len(),
        findings.len() - open
    );
    Ok(())
}
