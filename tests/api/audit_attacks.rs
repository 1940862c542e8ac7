//! The audit log against the application's own database role (`gsb_app`), as an attacker who
//! holds the broker's database credentials would try it: turning the seal (a SECURITY DEFINER
//! function) against the log through a temporary table, inserting events that claim to be
//! sealed, forging checkpoints; and the broker still doing its whole job as that role.

use glance_share_broker::db;
use glance_share_broker::startup::Application;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{PROJ_B, TestApp, request_body, serve_args, spawn_app};

/// A connection to the test's database as the application's role.
pub(crate) async fn as_app_role(app: &TestApp) -> PgConnection {
    let url = format!("{}?options=-c%20role%3Dgsb_app", app.database_url);
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let current: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(current, "gsb_app");
    conn
}

/// The attack of issue 10: a temporary `audit_events` whose trigger, fired by `audit_seal`
/// (which runs as its owner, a superuser), disables the audit triggers, rewrites a sealed
/// event, and hands the application's role the right to delete the log; then the deletion.
/// Each step runs on its own; returns the errors met, in order.
async fn temp_table_attack(conn: &mut PgConnection) -> Vec<String> {
    let steps = [
        "create temp table audit_events (seq bigint, digest bytea, chain_pos bigint, prev_hash bytea, hash bytea)",
        "create function pg_temp.rewrite() returns trigger language plpgsql as $f$
         begin
             alter table public.audit_events disable trigger user;
             update public.audit_events set reason = 'rewritten' where chain_pos = 1;
             grant update, delete, truncate on public.audit_events to gsb_app;
             return new;
         end $f$",
        "create trigger rewrite before update on pg_temp.audit_events
             for each row execute function pg_temp.rewrite()",
        "insert into pg_temp.audit_events (seq, digest) values (1, sha256('x'))",
        "select audit_seal(1)",
        "delete from public.audit_events",
    ];
    let mut errors = Vec::new();
    for step in steps {
        if let Err(e) = sqlx::query(step).execute(&mut *conn).await {
            errors.push(e.to_string());
        }
    }
    errors
}

/// What the log looks like to the superuser: (chain_pos, reason) of each event, whether
/// every audit trigger is enabled, and whether `gsb_app` may UPDATE, DELETE or TRUNCATE it.
async fn log_state(app: &TestApp) -> (Vec<(Option<i64>, Option<String>)>, bool, bool) {
    let events = sqlx::query_as("select chain_pos, reason from audit_events order by seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let enabled: bool = sqlx::query_scalar(
        "select bool_and(tgenabled = 'O') from pg_trigger
         where tgrelid in ('public.audit_events'::regclass, 'public.audit_checkpoints'::regclass)
           and not tgisinternal",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let writable: bool = sqlx::query_scalar(
        "select has_table_privilege('gsb_app', 'public.audit_events', 'update')
             or has_table_privilege('gsb_app', 'public.audit_events', 'delete')
             or has_table_privilege('gsb_app', 'public.audit_events', 'truncate')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    (events, enabled, writable)
}

async fn assert_chain_holds(app: &TestApp) {
    let report = db::audit::verify(&app.pool, "test").await.unwrap();
    assert!(report.ok, "{report:?}");
}

/// Files a request (one event) and seals it.
async fn one_sealed_event(app: &TestApp) {
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    assert!(db::audit::seal_all(&app.pool).await.unwrap());
}

#[tokio::test]
async fn a_temporary_audit_events_table_cannot_turn_the_seal_against_the_log() {
    let app = spawn_app().await;
    one_sealed_event(&app).await;
    let before = log_state(&app).await;
    assert!(before.1 && !before.2, "{before:?}");

    let errors = temp_table_attack(&mut as_app_role(&app).await).await;

    assert!(
        errors
            .first()
            .is_some_and(|e| e.contains("permission denied to create temporary tables")),
        "the application's role has no TEMP: {errors:?}"
    );
    assert_eq!(log_state(&app).await, before, "nothing rewritten: {errors:?}");
    assert_chain_holds(&app).await;
}

#[tokio::test]
async fn the_seal_ignores_a_temporary_audit_events_table_even_where_temp_is_granted() {
    let app = spawn_app().await;
    one_sealed_event(&app).await;
    // A database whose administrator granted TEMP back: the seal's own search_path and
    // schema-qualified names must hold alone.
    let database: String = sqlx::query_scalar("select current_database()::text")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    sqlx::query(&format!("grant temporary on database {database} to gsb_app"))
        .execute(&app.pool)
        .await
        .unwrap();
    // An unsealed event for the seal to find, as the broker's writers leave them.
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    let written = log_state(&app).await.0.len();
    let mut attacker = as_app_role(&app).await;

    let errors = temp_table_attack(&mut attacker).await;

    let (events, enabled, writable) = log_state(&app).await;
    assert!(enabled && !writable, "{errors:?}");
    assert!(
        events.iter().all(|(_, reason)| reason.as_deref() != Some("rewritten")),
        "{events:?}"
    );
    assert_eq!(events.len(), written, "nothing deleted: {errors:?}");
    assert!(
        errors.last().unwrap().contains("permission denied"),
        "the delete: {errors:?}"
    );
    let decoy: Option<i64> = sqlx::query_scalar("select chain_pos from pg_temp.audit_events")
        .fetch_one(&mut attacker)
        .await
        .unwrap();
    assert_eq!(decoy, None, "the seal never touched the temporary table");
    assert_chain_holds(&app).await;
}

/// The sealed head: (chain_pos, hash).
async fn head(app: &TestApp) -> (i64, Vec<u8>) {
    sqlx::query_as(
        "select chain_pos, hash from audit_events where chain_pos is not null order by chain_pos desc limit 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// An insert of an event that claims the place after the head, with a link that holds.
fn forged_sealed_insert(pos: i64, prev: &[u8]) -> String {
    format!(
        "insert into audit_events (id, occurred_at, action, outcome, initiator, target, observer, details,
             digest, chain_pos, prev_hash, hash)
         values (gen_random_uuid(), now(), 'revoke', 'success', '{{\"kind\": \"service\", \"name\": \"worker\"}}',
             '{{}}', 'forged', '{{}}', sha256('forged'), {pos}, '\\x{prev}'::bytea,
             sha256('\\x{prev}'::bytea || int8send({pos}::bigint) || sha256('forged')))",
        prev = hex::encode(prev)
    )
}

#[tokio::test]
async fn an_event_that_claims_to_be_sealed_is_refused_for_every_role() {
    let app = spawn_app().await;
    one_sealed_event(&app).await;
    let (pos, hash) = head(&app).await;
    let forged = forged_sealed_insert(pos + 1, &hash);

    let error = sqlx::query(&forged)
        .execute(&mut as_app_role(&app).await)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("only audit_seal seals"), "{error}");
    // Nor can it switch the triggers off for its session, the way replication does.
    let error = sqlx::query("set session_replication_role = replica")
        .execute(&mut as_app_role(&app).await)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("permission denied"), "{error}");
    let error = sqlx::query(&forged).execute(&app.pool).await.unwrap_err().to_string();
    assert!(error.contains("only audit_seal seals"), "even the superuser: {error}");

    assert_eq!(head(&app).await.0, pos, "no forged place in the chain");
    assert_chain_holds(&app).await;
}

#[tokio::test]
async fn a_forged_checkpoint_is_refused_and_a_checkpoint_records_the_real_head() {
    let app = spawn_app().await;
    one_sealed_event(&app).await;
    let (pos, hash) = head(&app).await;
    let mut conn = as_app_role(&app).await;

    let error = sqlx::query(
        "insert into audit_checkpoints (id, chain_pos, hash, taken_by)
         values (gen_random_uuid(), 1, sha256('forged'), 'attacker')",
    )
    .execute(&mut conn)
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("permission denied"), "{error}");

    // The one way in takes no head from the caller: it reads the sealed head itself.
    let taken: (i64, Vec<u8>) = sqlx::query_as("select * from audit_checkpoint('gsb_app')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(taken, (pos, hash));
    // Besides any the broker's own checkpoint task took at start (an earlier head, by its
    // instance name), exactly the one asked for.
    let checkpoints: Vec<(i64, String)> =
        sqlx::query_as("select chain_pos, taken_by from audit_checkpoints where taken_by <> 'test-broker'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(checkpoints, [(pos, "gsb_app".to_owned())]);
    for sql in [
        "update audit_checkpoints set hash = sha256('forged')",
        "delete from audit_checkpoints",
        "truncate audit_checkpoints",
    ] {
        let error = sqlx::query(sql).execute(&mut conn).await.unwrap_err().to_string();
        assert!(error.contains("permission denied"), "{sql}: {error}");
    }
    assert_chain_holds(&app).await;
}

#[tokio::test]
async fn the_application_role_has_no_temp_and_its_security_definer_functions_pin_their_search_path() {
    let app = spawn_app().await;
    let temp: bool = sqlx::query_scalar("select has_database_privilege('gsb_app', current_database(), 'temporary')")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!temp, "gsb_app may create temporary tables");
    // Nor objects of its own in the schema the functions search, nor move the event
    // numbers (USAGE, for nextval, is all it has on the sequence).
    let (create, setval): (bool, bool) = sqlx::query_as(
        "select has_schema_privilege('gsb_app', 'public', 'create'),
                has_sequence_privilege('gsb_app', 'public.audit_events_seq', 'update')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!create && !setval, "create on public: {create}, setval: {setval}");
    // Every SECURITY DEFINER function of the schema, and what it sets.
    let definers: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
        "select p.proname::text, p.proconfig from pg_proc p
         where p.pronamespace = 'public'::regnamespace and p.prosecdef order by 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let names: Vec<&str> = definers.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"audit_checkpoint") && names.contains(&"audit_seal"),
        "{names:?}"
    );
    // Any other, now or later, is held to the same rule.
    for (name, config) in &definers {
        assert_eq!(
            config.as_deref(),
            Some(&["search_path=pg_catalog, public, pg_temp".to_owned()][..]),
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_broker_running_as_the_application_role_files_seals_checkpoints_and_verifies() {
    let app = spawn_app().await;
    let url = format!("{}?options=-c%20role%3Dgsb_app", app.database_url);
    let restricted = Application::build(&serve_args(&url), None)
        .await
        .expect("starts as gsb_app");
    let (addr, pool) = (restricted.local_addr(), restricted.pool.clone());
    tokio::spawn(restricted.run_until(std::future::pending()));
    // A key made by the application's role: its creation is audited as that role.
    let (_, key) = db::api_keys::create(
        &pool,
        "restricted-portal",
        glance_share_broker::domain::Role::Requester,
        &[],
    )
    .await
    .unwrap();

    let response = app
        .client
        .post(format!("http://{addr}/v1/share-requests"))
        .bearer_auth(&key)
        .json(&request_body(&Uuid::new_v4().to_string(), &[PROJ_B]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(db::audit::seal_all(&pool).await.unwrap());
    // The broker's own checkpoint task (its first pass runs at start) may take this head
    // first; either way the application's role records exactly one checkpoint of it.
    let taken = db::audit::checkpoint(&pool, "restricted").await.unwrap();
    let report = db::audit::verify(&pool, "restricted").await.unwrap();
    assert!(report.ok, "{report:?}");
    let head = report.head.as_ref().expect("a sealed head").chain_pos;
    if let Some(taken) = taken {
        assert_eq!(head, taken.chain_pos);
    }
    let checkpoints: i64 = sqlx::query_scalar("select count(*) from audit_checkpoints where chain_pos = $1")
        .bind(head)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(checkpoints, 1);
    let response = app
        .client
        .get(format!("http://{addr}/v1/audit-events/verify"))
        .bearer_auth(&app.auditor)
        .send()
        .await
        .unwrap();
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
}
