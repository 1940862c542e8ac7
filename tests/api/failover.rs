//! A Postgres primary that dies under load, and the synchronous standby promoted in its
//! place: the broker, given both hosts in the libpq multi-host form, answers 503 while there
//! is no primary, serves again without a restart, and loses nothing it acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use glance_share_broker::db;
use reqwest::StatusCode;
use tokio::sync::Mutex;

use crate::helpers::spawn_app_at;
use crate::outages::{Load, file_until};
use crate::postgres::PrivatePostgres;

/// Waits until `primary` reports `standby` as its synchronous standby.
async fn until_synchronous(primary: &PrivatePostgres) {
    let pool = primary.pool().await;
    sqlx::query("alter system set synchronous_standby_names = 'standby'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("select pg_reload_conf()").execute(&pool).await.unwrap();
    for _ in 0..200 {
        let sync: Option<String> =
            sqlx::query_scalar("select sync_state from pg_stat_replication where application_name = 'standby'")
                .fetch_optional(&pool)
                .await
                .unwrap();
        if sync.as_deref() == Some("sync") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the standby never became synchronous");
}

#[tokio::test]
async fn a_failover_to_a_synchronous_standby_loses_no_acknowledged_request() {
    let primary = PrivatePostgres::create();
    let standby = PrivatePostgres::standby_of(&primary);
    until_synchronous(&primary).await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let app = Arc::new(spawn_app_at(&url, |_| {}).await);
    let (stop, load) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Load::default())));
    let writers = tokio::spawn(file_until(app.clone(), 8, stop.clone(), load.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let failed_at = Instant::now();
    primary.kill();
    // No primary: the standby refuses writes, and the broker says it is unavailable.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = app.try_file().await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    let promoted_at = Instant::now();
    standby.promote();
    let mut recovered = None;
    for _ in 0..300 {
        let answer = app.try_file().await;
        if answer.status() == StatusCode::CREATED {
            recovered = Some(promoted_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = recovered.expect("the broker serves again on the promoted standby, without a restart");
    eprintln!(
        "failover: primary killed, standby promoted {:?} later; the broker wrote again {recovered:?} after the promotion ({:?} after the primary died)",
        promoted_at - failed_at,
        failed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    writers.await.unwrap();

    let new_primary = standby.pool().await;
    let acknowledged = load.lock().await.assert_nothing_acknowledged_lost(&new_primary).await;
    let report = db::audit::verify(&new_primary, "failover test").await.unwrap();
    assert!(report.ok, "the audit chain verifies on the new primary: {report:?}");
    assert!(report.events_checked as usize > acknowledged, "{report:?}");
}

#[tokio::test]
async fn auditors_read_the_log_from_the_standby_the_read_url_names() {
    let primary = PrivatePostgres::create();
    let standby = PrivatePostgres::standby_of(&primary);
    let app = spawn_app_at(&primary.url(), |args| args.database_read_url = Some(standby.url())).await;
    let filed = app.try_file().await;
    assert_eq!(filed.status(), StatusCode::CREATED);
    let request_id = filed.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The standby replays the primary's log a moment later.
    let mut listed = false;
    for _ in 0..100 {
        let page: serde_json::Value = app
            .get(&app.auditor, &format!("/v1/audit-events?request_id={request_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["items"].as_array().is_some_and(|items| !items.is_empty()) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listed, "the filing's event reaches the auditor through the standby");

    standby.stop();
    let read = app.get(&app.auditor, "/v1/audit-events").send().await.unwrap();
    assert_eq!(
        read.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "audit reads go to the standby, which is down"
    );
    let write = app.try_file().await;
    assert_eq!(write.status(), StatusCode::CREATED, "filings still go to the primary");
}
