//! The audit log partitioned by month: where events land, the partitions made ahead and the
//! protections every partition gets, archiving old partitions (the file, its record, the
//! rest still verifying), what archiving refuses, what the application's role cannot do,
//! and a database that held events before it was partitioned.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Utc};
use glance_share_broker::db;
use glance_share_broker::db::audit::archive::{ArchiveError, ArchiveRecord, ArchiveRequest, archive, verify_file};
use glance_share_broker::db::audit::partitions::{ensure, list};
use glance_share_broker::domain::audit::parse_archive_line;
use glance_share_broker::domain::{Action, Initiator};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::migrate::Migrator;
use sqlx::{Acquire, PgPool};
use uuid::Uuid;

use crate::audit::{insert_by_hand, legacy_event, refused};
use crate::audit_attacks::as_app_role;
use crate::helpers::{PROJ_B, TestApp, fresh_database, spawn_app};

const BIN: &str = env!("CARGO_BIN_EXE_glance-share-broker");

/// The first migration of partitioning: the ones before it made the log unpartitioned.
const PARTITIONING: i64 = 20261203000001;

/// The first instant of the UTC month `offset` months after the current one.
fn month(offset: u32) -> DateTime<Utc> {
    let now = Utc::now();
    let first = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap() + Months::new(offset);
    first.and_hms_opt(0, 0, 0).unwrap().and_utc()
}

/// The name of the monthly partition of the month `offset` months after the current one.
fn monthly(offset: u32) -> String {
    format!("audit_events_{}", month(offset).format("%Y_%m"))
}

/// The partition event `seq` is stored in.
async fn partition_of(pool: &PgPool, seq: i64) -> String {
    sqlx::query_scalar("select tableoid::regclass::text from audit_events where seq = $1")
        .bind(seq)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Writes an event that occurred at `at` (a writer whose clock says so); its seq and the
/// partition it went to.
async fn write_at(app: &TestApp, at: DateTime<Utc>) -> (i64, String) {
    let seq = insert_by_hand(&app.pool, &legacy_event(Utc::now() - at, json!({}))).await;
    (seq, partition_of(&app.pool, seq).await)
}

/// The first partition: the log from before partitioning, up to the first monthly one.
async fn first_partition(pool: &PgPool) -> String {
    sqlx::query_scalar("select partition::text from audit_partitions() where from_at is null and not is_default")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn partition_names(pool: &PgPool) -> Vec<String> {
    list(pool).await.unwrap().into_iter().map(|p| p.name).collect()
}

/// A pool on the test's database as the application's role.
async fn app_role_pool(app: &TestApp) -> PgPool {
    PgPool::connect(&format!("{}?options=-c%20role%3Dgsb_app", app.database_url))
        .await
        .unwrap()
}

async fn verify(app: &TestApp) -> Value {
    app.read("/v1/audit-events/verify").await
}

async fn sealed(app: &TestApp) {
    assert!(db::audit::seal_all(&app.pool).await.unwrap());
}

/// A fresh directory for archive files.
fn archive_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gsb-archive-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn request(before: DateTime<Utc>, file: &Path) -> ArchiveRequest {
    ArchiveRequest {
        before,
        file: file.to_owned(),
        drop: false,
        by: "test".into(),
    }
}

fn refusal(result: Result<ArchiveRecord, ArchiveError>) -> String {
    match result {
        Err(ArchiveError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn archives(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from audit_archives")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The hash of the event at `chain_pos`.
async fn hash_at(pool: &PgPool, chain_pos: i64) -> Vec<u8> {
    sqlx::query_scalar("select hash from audit_events where chain_pos = $1")
        .bind(chain_pos)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs the binary on `database`: (success, stdout, stderr).
fn run(database: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", database)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn events_land_in_the_partition_of_their_month_and_the_rest_in_the_default_one() {
    let app = spawn_app().await;
    let first = first_partition(&app.pool).await;
    assert_eq!(first, format!("audit_events_before_{}", month(1).format("%Y_%m")));
    // The broker's own writes this month (the keys `spawn_app` made, a filing).
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    let written: Vec<String> = sqlx::query_scalar("select distinct tableoid::regclass::text from audit_events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(written, std::slice::from_ref(&first));

    assert_eq!(write_at(&app, month(1) + Duration::days(14)).await.1, monthly(1));
    assert_eq!(write_at(&app, month(2)).await.1, monthly(2), "a month's first instant");
    // No partition takes a month years ahead (a writer's clock far off): the write still
    // succeeds, into the default partition.
    assert_eq!(write_at(&app, month(60)).await.1, "audit_events_default");
    // The application's role writes through the same table; a seq it names is overruled.
    let mut conn = as_app_role(&app).await;
    let mut tx = conn.begin().await.unwrap();
    let (seq, partition): (i64, String) = sqlx::query_as(
        "insert into audit_events (seq, id, occurred_at, action, outcome, initiator, target, observer, digest)
         values (1, gen_random_uuid(), $1, 'create', 'success', '{}', '{}', 'test', sha256('x'))
         returning seq, tableoid::regclass::text",
    )
    .bind(month(2) + Duration::days(3))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(partition, monthly(2));
    assert!(seq > 1, "numbered from the sequence, not by the writer: {seq}");
    tx.rollback().await.unwrap();

    sealed(&app).await;
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "one chain across the partitions: {report}");
    let events: i64 = sqlx::query_scalar("select count(*) from audit_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(report["events_checked"], events);
    assert_eq!(report["archived"], Value::Null);
}

/// Seals event `seq` by hand at place `chain_pos`, chained to the event before it there.
fn seal_at(seq: i64, chain_pos: i64) -> String {
    format!(
        "with before as (select hash from audit_events where chain_pos = {chain_pos} - 1)
         update audit_events e set chain_pos = {chain_pos}, prev_hash = before.hash,
             hash = sha256(before.hash || int8send({chain_pos}::bigint) || e.digest)
         from before where e.seq = {seq}"
    )
}

#[tokio::test]
async fn a_place_in_the_chain_is_given_once_across_partitions() {
    let app = spawn_app().await;
    sealed(&app).await;
    // Unsealed for the test: uncommitted, no sealer sees it.
    let mut tx = app.pool.begin().await.unwrap();
    let seq = insert_by_hand(
        &mut *tx,
        &legacy_event(Utc::now() - (month(1) + Duration::days(3)), json!({})),
    )
    .await;
    let partition: String = sqlx::query_scalar("select tableoid::regclass::text from audit_events where seq = $1")
        .bind(seq)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(partition, monthly(1));

    // Place 4 is held by an event of the first partition: no unique index spans the two,
    // and the seal guard refuses it, even to the owner with a link that holds.
    let mut savepoint = tx.begin().await.unwrap();
    refused(&mut savepoint, &seal_at(seq, 4), "wrong link").await;
    savepoint.rollback().await.unwrap();
    sqlx::query(&seal_at(seq, 5)).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(verify(&app).await["ok"], true);
}

#[tokio::test]
async fn the_coming_months_partitions_are_made_once_even_when_two_replicas_ask_at_once() {
    let app = spawn_app().await;
    let names = partition_names(&app.pool).await;
    let first = first_partition(&app.pool).await;
    // Made by the migration: this month (the first partition's last), the next two.
    assert_eq!(names, [first, monthly(1), monthly(2), "audit_events_default".into()]);

    let replica = app_role_pool(&app).await;
    let (one, other) = tokio::join!(ensure(&app.pool, 6), ensure(&replica, 6));
    let mut made = [one.unwrap(), other.unwrap()].concat();
    made.sort();
    assert_eq!(made, (3..=6).map(monthly).collect::<Vec<_>>());
    assert_eq!(
        ensure(&replica, 6).await.unwrap(),
        Vec::<String>::new(),
        "nothing left to make"
    );
    for partition in list(&app.pool).await.unwrap() {
        let Some(offset) = (1..=6).find(|o| monthly(*o) == partition.name) else {
            continue;
        };
        assert_eq!(
            (partition.from_at, partition.to_at),
            (Some(month(offset)), Some(month(offset + 1))),
            "{}",
            partition.name
        );
    }
    let (_, in_made) = write_at(&app, month(5) + Duration::hours(1)).await;
    assert_eq!(in_made, monthly(5));
    sealed(&app).await;
    assert_eq!(verify(&app).await["ok"], true);
}

#[tokio::test]
async fn a_month_whose_events_went_to_the_default_partition_is_skipped_and_the_others_made() {
    let app = spawn_app().await;
    let (seq, partition) = write_at(&app, month(4) + Duration::days(1)).await;
    assert_eq!(partition, "audit_events_default");

    assert_eq!(ensure(&app.pool, 5).await.unwrap(), [monthly(3), monthly(5)]);
    assert_eq!(ensure(&app.pool, 5).await.unwrap(), Vec::<String>::new());
    assert_eq!(
        partition_of(&app.pool, seq).await,
        "audit_events_default",
        "left where it is"
    );
    assert!(!partition_names(&app.pool).await.contains(&monthly(4)));
    sealed(&app).await;
    assert_eq!(verify(&app).await["ok"], true);
}

/// Whether `partition` has the statement trigger that refuses TRUNCATE.
async fn refuses_truncate(pool: &PgPool, partition: &str) -> bool {
    sqlx::query_scalar(
        "select exists (select 1 from pg_trigger where tgrelid = $1::regclass and tgname = 'audit_events_no_truncate')",
    )
    .bind(partition)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn every_partition_refuses_truncate_update_and_delete_to_the_owner_and_the_application_role() {
    let app = spawn_app().await;
    assert_eq!(ensure(&app.pool, 3).await.unwrap(), [monthly(3)]);
    // A partition made by hand: Postgres clones the row triggers, not the TRUNCATE one, and
    // the schema's default privileges give the application's role rights on it; the next
    // maintenance pass puts both right.
    sqlx::query(&format!(
        "create table audit_events_by_hand partition of audit_events for values from ('{}') to ('{}')",
        month(8).to_rfc3339(),
        month(9).to_rfc3339()
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    assert!(!refuses_truncate(&app.pool, "audit_events_by_hand").await);
    assert_eq!(ensure(&app.pool, 0).await.unwrap(), Vec::<String>::new());
    assert!(refuses_truncate(&app.pool, "audit_events_by_hand").await);
    // An event in every partition, so that row triggers have a row to refuse.
    for at in [
        month(1) + Duration::days(1),
        month(2) + Duration::days(1),
        month(3) + Duration::days(1),
        month(8) + Duration::days(1),
        month(60),
    ] {
        write_at(&app, at).await;
    }
    sealed(&app).await;
    let partitions = partition_names(&app.pool).await;
    assert_eq!(partitions.len(), 6, "{partitions:?}");
    let events: i64 = sqlx::query_scalar("select count(*) from audit_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let mut owner = app.pool.acquire().await.unwrap();
    let mut app_role = as_app_role(&app).await;
    for partition in &partitions {
        for sql in [
            format!("truncate {partition}"),
            format!("update {partition} set reason = 'rewritten'"),
            format!("delete from {partition}"),
        ] {
            refused(&mut owner, &sql, "append-only").await;
            refused(&mut app_role, &sql, "permission denied").await;
        }
        for sql in [
            format!("alter table audit_events detach partition {partition}"),
            format!("drop table {partition}"),
            format!("alter table {partition} disable trigger user"),
        ] {
            refused(&mut app_role, &sql, "must be owner").await;
        }
    }
    refused(
        &mut app_role,
        &format!(
            "create table audit_events_mine partition of audit_events for values from ('{}') to ('{}')",
            month(10).to_rfc3339(),
            month(11).to_rfc3339()
        ),
        "permission denied",
    )
    .await;
    refused(&mut app_role, "truncate audit_events", "permission denied").await;
    // Nor can it move the head the seal guard checks seals against.
    for sql in [
        "update audit_chain_head set chain_pos = chain_pos + 1",
        "delete from audit_chain_head",
        "insert into audit_chain_head values (0, sha256('forged'))",
    ] {
        refused(&mut app_role, sql, "permission denied").await;
    }
    refused(&mut owner, "truncate audit_chain_head", "append-only").await;

    assert_eq!(partition_names(&app.pool).await, partitions);
    let after: i64 = sqlx::query_scalar("select count(*) from audit_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(after, events);
    assert_eq!(verify(&app).await["ok"], true);
}

fn sha256_of(file: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(file).unwrap()).to_vec()
}

#[tokio::test]
async fn archiving_the_oldest_partition_writes_its_events_to_a_file_and_the_rest_still_verifies() {
    let app = spawn_app().await;
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    sealed(&app).await;
    let first = first_partition(&app.pool).await;
    let last: i64 = sqlx::query_scalar(&format!("select max(chain_pos) from {first}"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let last_hash = hash_at(&app.pool, last).await;
    for day in [1, 2] {
        write_at(&app, month(1) + Duration::days(day)).await;
    }
    let head = db::audit::checkpoint(&app.pool, "test").await.unwrap().unwrap();
    assert_eq!(head.chain_pos, last + 2);
    let file = archive_dir().join("first.ndjson");
    // The filing named PROJ_B: sealing entered it in the index of projects named as targets.
    let named = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from audit_event_targets where project = $1")
            .bind(PROJ_B)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(named().await, 1);

    let record = archive(&app.pool, &request(month(1), &file)).await.unwrap();
    assert_eq!(
        named().await,
        0,
        "the archived events leave the targets' index with them"
    );

    assert_eq!(record.partitions, std::slice::from_ref(&first));
    assert_eq!(
        (record.event_count, record.first_chain_pos, record.last_chain_pos),
        (last, Some(1), Some(last))
    );
    assert_eq!(record.first_prev_hash, Some(vec![0; 32]));
    assert_eq!(record.last_hash.as_ref(), Some(&last_hash));
    assert!(!record.dropped);
    assert!(record.archived_by.ends_with(" on test"), "{}", record.archived_by);
    assert_eq!(record.file_sha256, sha256_of(&file));
    let lines: Vec<_> = std::fs::read(&file)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| parse_archive_line(line).unwrap())
        .collect();
    assert_eq!(lines.len() as i64, last);
    assert_eq!(lines.last().unwrap().hash.as_ref(), Some(&last_hash));
    assert!(!partition_names(&app.pool).await.contains(&first), "detached");
    let kept: Option<String> = sqlx::query_scalar("select to_regclass($1)::text")
        .bind(&first)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept, Some(first.clone()), "a table of its own, not dropped");
    let taken: (i64, Vec<u8>) = sqlx::query_as("select chain_pos, hash from audit_checkpoints where taken_by = $1")
        .bind(format!("archive {}", record.id))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(taken, (last, last_hash.clone()), "a checkpoint at the archived head");

    // What remains verifies from the archived head on; checkpoints of archived places are
    // counted, not compared.
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], 2);
    assert_eq!(report["head"]["chain_pos"], last + 2);
    let archived = &report["archived"];
    assert_eq!(archived["head"]["chain_pos"], last);
    assert_eq!(archived["head"]["hash"], hex::encode(&last_hash));
    assert_eq!(
        (archived["archives"].as_i64(), archived["events"].as_i64()),
        (Some(1), Some(last))
    );
    assert!(archived["checkpoints"].as_i64().unwrap() >= 1, "{report}");
    assert_eq!(archived["gap"], Value::Null);
    let anchors = format!("/v1/audit-events/verify?expect={last}:{}", hex::encode(&last_hash));
    let anchored = app.read(&anchors).await;
    assert_eq!(anchored["ok"], true, "{anchored}");
    assert_eq!(anchored["archived"]["anchors"], 1);

    // The file checks against its record, from the library and the command line.
    let check = verify_file(&app.pool, &file).await.unwrap();
    assert!(check.ok(), "{check:?}");
    assert_eq!(check.events_checked, last);
    assert!(check.checkpoints_checked >= 1);
    let (ok, stdout, stderr) = run(&app.database_url, &["audit", "verify-archive", file.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("whole and unchanged"), "{stdout}");
    assert!(stdout.contains(&hex::encode(&record.file_sha256)), "{stdout}");
    let (ok, stdout, stderr) = run(&app.database_url, &["audit", "verify"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{last} events archived (1 archives) up to place {last}")),
        "{stdout}"
    );

    // The log goes on: this month's events now go to the default partition.
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    sealed(&app).await;
    let newest: i64 = sqlx::query_scalar("select max(seq) from audit_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(partition_of(&app.pool, newest).await, "audit_events_default");
    assert_eq!(verify(&app).await["ok"], true);

    // A file changed after it was written matches no record.
    let changed = file.with_file_name("changed.ndjson");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &changed,
        text.replacen("\"outcome\":\"success\"", "\"outcome\":\"failure\"", 1),
    )
    .unwrap();
    let check = verify_file(&app.pool, &changed).await.unwrap();
    assert!(!check.ok());
    assert!(check.mismatch.as_deref().unwrap().contains("SHA-256"), "{check:?}");
    let (ok, stdout, _) = run(
        &app.database_url,
        &["audit", "verify-archive", changed.to_str().unwrap()],
    );
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("MISMATCH"), "{stdout}");
}

#[tokio::test]
async fn archiving_two_months_with_drop_removes_their_tables_and_the_next_archive_follows_on() {
    let app = spawn_app().await;
    for offset in [1, 2] {
        write_at(&app, month(offset) + Duration::days(2)).await;
    }
    sealed(&app).await;
    let first = first_partition(&app.pool).await;
    let dir = archive_dir();
    let mut drop_them = request(month(2), &dir.join("one.ndjson"));
    drop_them.drop = true;

    let one = archive(&app.pool, &drop_them).await.unwrap();

    assert_eq!(one.partitions, [first.clone(), monthly(1)]);
    assert!(one.dropped);
    for name in [&first, &monthly(1)] {
        let gone: Option<String> = sqlx::query_scalar("select to_regclass($1)::text")
            .bind(name)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(gone, None, "{name} dropped");
    }
    // The next archive starts where this one ended.
    let two = archive(&app.pool, &request(month(3), &dir.join("two.ndjson")))
        .await
        .unwrap();
    assert_eq!(two.partitions, [monthly(2)]);
    assert_eq!(two.first_chain_pos, one.last_chain_pos.map(|last| last + 1));
    assert_eq!(two.first_prev_hash, one.last_hash);
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["archived"]["archives"], 2);
    assert_eq!(report["archived"]["head"]["chain_pos"], two.last_chain_pos.unwrap());
    assert_eq!(report["events_checked"], 0);
    for file in ["one.ndjson", "two.ndjson"] {
        assert!(verify_file(&app.pool, &dir.join(file)).await.unwrap().ok(), "{file}");
    }
    // With every event archived, the next one takes the place after the archived head.
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    sealed(&app).await;
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["head"]["chain_pos"], two.last_chain_pos.unwrap() + 1);
}

#[tokio::test]
async fn two_operators_archiving_at_once_record_the_partition_once() {
    let app = spawn_app().await;
    sealed(&app).await;
    let dir = archive_dir();
    let (one, other) = (
        request(month(1), &dir.join("one.ndjson")),
        request(month(1), &dir.join("other.ndjson")),
    );

    let (one, other) = tokio::join!(archive(&app.pool, &one), archive(&app.pool, &other));

    assert!(one.is_ok() != other.is_ok(), "exactly one archives: {one:?} {other:?}");
    let record = one.or(other).unwrap();
    assert_eq!(archives(&app.pool).await, 1);
    assert_eq!(record.event_count, 4);
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["archived"]["archives"], 1);
    assert!(verify_file(&app.pool, Path::new(&record.file_name)).await.unwrap().ok());
}

#[tokio::test]
async fn an_archive_is_refused_while_an_event_to_archive_is_unsealed() {
    let app = spawn_app().await;
    sealed(&app).await;
    // A stuck sealer: it holds the chain lock and seals nothing.
    let mut stuck = app.pool.begin().await.unwrap();
    sqlx::query("select pg_advisory_xact_lock(x'6175646974'::bigint)")
        .execute(&mut *stuck)
        .await
        .unwrap();
    let (seq, _) = write_at(&app, Utc::now()).await;
    let first = first_partition(&app.pool).await;
    let file = archive_dir().join("unsealed.ndjson");

    let why = refusal(archive(&app.pool, &request(month(1), &file)).await);

    assert!(
        why.contains(&format!("event {seq}")) && why.contains("not sealed"),
        "{why}"
    );
    assert!(!file.exists());
    assert!(partition_names(&app.pool).await.contains(&first), "still attached");
    assert_eq!(archives(&app.pool).await, 0);

    stuck.rollback().await.unwrap();
    sealed(&app).await;
    let record = archive(&app.pool, &request(month(1), &file)).await.unwrap();
    assert_eq!(record.event_count, 5);
    assert_eq!(verify(&app).await["ok"], true);
}

#[tokio::test]
async fn an_archive_is_refused_when_the_months_interleave_in_the_chain() {
    let app = spawn_app().await;
    // The next month's event is sealed before one of this month's: the first partition's
    // places are not the front of the chain.
    write_at(&app, month(1) + Duration::days(1)).await;
    sealed(&app).await;
    write_at(&app, Utc::now()).await;
    sealed(&app).await;
    let first = first_partition(&app.pool).await;
    let file = archive_dir().join("interleaved.ndjson");

    let why = refusal(archive(&app.pool, &request(month(1), &file)).await);

    assert!(
        why.contains("place 5") && why.contains(&monthly(1)) && why.contains("interleave"),
        "{why}"
    );
    assert!(!file.exists());
    assert!(partition_names(&app.pool).await.contains(&first));
    assert_eq!(archives(&app.pool).await, 0);
    // Together, the two months are the front of the chain.
    let record = archive(&app.pool, &request(month(2), &file)).await.unwrap();
    assert_eq!(record.partitions, [first, monthly(1)]);
    assert_eq!((record.event_count, record.last_chain_pos), (6, Some(6)));
    assert_eq!(verify(&app).await["ok"], true);
}

#[tokio::test]
async fn a_partition_detached_by_hand_without_an_archive_fails_verify() {
    let app = spawn_app().await;
    write_at(&app, month(1) + Duration::days(1)).await;
    sealed(&app).await;
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    sealed(&app).await;
    assert_eq!(verify(&app).await["ok"], true);

    sqlx::query(&format!("alter table audit_events detach partition {}", monthly(1)))
        .execute(&app.pool)
        .await
        .unwrap();

    let report = verify(&app).await;
    assert_eq!(report["ok"], false, "{report}");
    let broken = &report["first_broken_link"];
    assert_eq!(broken["field"], "chain_pos");
    assert_eq!(
        (broken["chain_pos"].as_i64(), broken["expected"].as_str()),
        (Some(6), Some("5"))
    );
    assert!(broken["detail"].as_str().unwrap().contains("missing"), "{report}");
    let (ok, stdout, _) = run(&app.database_url, &["audit", "verify"]);
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("BROKEN LINK at place 6"), "{stdout}");
}

#[tokio::test]
async fn the_application_role_can_neither_archive_nor_record_an_archive() {
    let app = spawn_app().await;
    let replica = app_role_pool(&app).await;
    let first = first_partition(&app.pool).await;
    let file = archive_dir().join("by-the-app.ndjson");

    match archive(&replica, &request(month(1), &file)).await {
        Err(ArchiveError::Database(e)) => assert!(e.to_string().contains("permission denied"), "{e}"),
        other => panic!("the application's role archived: {other:?}"),
    }
    let mut conn = as_app_role(&app).await;
    refused(
        &mut conn,
        "insert into audit_archives (id, archived_by, before, partitions, dropped, file_name, file_sha256, event_count)
         values (gen_random_uuid(), 'forger', now(), '{}', false, 'f', sha256('f'), 0)",
        "permission denied",
    )
    .await;
    refused(&mut conn, "delete from audit_archives", "permission denied").await;
    // Nor write the index of projects named at filing: only sealing (as the owner) does, so
    // a project's page can neither be given an event nor lose one through it.
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    sealed(&app).await;
    for sql in [
        "insert into audit_event_targets (project, chain_pos, occurred_at) values ('forged', 1, now())",
        "delete from audit_event_targets",
        "update audit_event_targets set project = 'forged'",
        "truncate audit_event_targets",
    ] {
        refused(&mut conn, sql, "permission denied").await;
    }

    assert!(!file.exists());
    assert!(partition_names(&app.pool).await.contains(&first));
    assert_eq!(archives(&app.pool).await, 0);
    assert_eq!(verify(&app).await["ok"], true);
    // Nor can the owner change an archive's record once written.
    let mut owner = app.pool.acquire().await.unwrap();
    sealed(&app).await;
    archive(&app.pool, &request(month(1), &file)).await.unwrap();
    for sql in [
        "update audit_archives set event_count = 0",
        "delete from audit_archives",
        "truncate audit_archives",
    ] {
        refused(&mut owner, sql, "append-only").await;
    }
}

#[tokio::test]
async fn the_archive_command_refuses_a_month_not_begun_and_a_month_with_nothing_to_archive() {
    let app = spawn_app().await;
    let this_month = month(0).format("%Y-%m").to_string();
    let next_month = month(1).format("%Y-%m").to_string();

    let (ok, _, stderr) = run(&app.database_url, &["audit", "archive", "--before", &next_month]);
    assert!(!ok);
    assert!(stderr.contains("has not begun"), "{stderr}");
    let (ok, _, stderr) = run(&app.database_url, &["audit", "archive", "--before", &this_month]);
    assert!(!ok);
    assert!(
        stderr.contains("archive refused") && stderr.contains("nothing to archive"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&app.database_url, &["audit", "archive", "--before", "2027-13"]);
    assert!(!ok);
    assert!(stderr.contains("YYYY-MM"), "{stderr}");
    assert_eq!(archives(&app.pool).await, 0);
}

/// Writes one event through the write path and seals it; its seq.
async fn write_and_seal(pool: &PgPool) -> i64 {
    let initiator = Initiator::service("test");
    let mut tx = pool.begin().await.unwrap();
    let event = db::audit::insert(
        &mut tx,
        "test-broker",
        db::audit::NewEvent::attempt(&initiator, Action::Create),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(db::audit::seal_all(pool).await.unwrap());
    event.seq
}

#[tokio::test]
async fn a_log_written_before_partitioning_becomes_the_first_partition_unchanged_and_verifies() {
    let url = fresh_database().await;
    let pool = PgPool::connect(&url).await.unwrap();
    let before = Migrator {
        migrations: Cow::Owned(
            db::MIGRATOR
                .iter()
                .filter(|m| m.version < PARTITIONING)
                .cloned()
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    before.run(&pool).await.unwrap();
    for _ in 0..5 {
        write_and_seal(&pool).await;
    }
    // A writer whose clock ran three months ahead: the first partition covers it too.
    insert_by_hand(
        &pool,
        &legacy_event(Utc::now() - (month(3) + Duration::days(2)), json!({})),
    )
    .await;
    assert!(db::audit::seal_all(&pool).await.unwrap());
    let checkpoint: (i64, Vec<u8>) = sqlx::query_as("select * from audit_checkpoint('test')")
        .fetch_one(&pool)
        .await
        .unwrap();
    let rows = |pool: PgPool| async move {
        sqlx::query_as::<_, (i64, Uuid, Option<i64>, Option<Vec<u8>>)>(
            "select seq, id, chain_pos, hash from audit_events order by seq",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let old = rows(pool.clone()).await;

    db::MIGRATOR.run(&pool).await.unwrap();

    let kind: String = sqlx::query_scalar("select relkind::text from pg_class where oid = 'audit_events'::regclass")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kind, "p", "partitioned");
    assert_eq!(rows(pool.clone()).await, old, "every event as it was");
    let first = first_partition(&pool).await;
    assert_eq!(first, format!("audit_events_before_{}", month(4).format("%Y_%m")));
    let places: Vec<String> = sqlx::query_scalar("select distinct tableoid::regclass::text from audit_events")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(places, std::slice::from_ref(&first));
    // The months it covers get no partition of their own; the next ones do.
    assert_eq!(partition_names(&pool).await, [first, "audit_events_default".to_owned()]);
    assert_eq!(ensure(&pool, 5).await.unwrap(), [monthly(4), monthly(5)]);
    let sequence: Option<String> = sqlx::query_scalar("select pg_get_serial_sequence('audit_events', 'seq')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        sequence.as_deref(),
        Some("public.audit_events_seq"),
        "owned by the whole log"
    );

    let report = db::audit::verify(&pool, "test").await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, old.len() as i64);
    assert_eq!(
        report.checkpoints_checked, 1,
        "the checkpoint taken before partitioning"
    );
    assert!(report.checkpoint_mismatch.is_none());
    assert_eq!(checkpoint.0, old.len() as i64);
    // Writing goes on where it stopped: new numbers, the next places.
    let next = write_and_seal(&pool).await;
    assert!(next > old.iter().map(|r| r.0).max().unwrap());
    let report = db::audit::verify(&pool, "test").await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.head.unwrap().chain_pos, old.len() as i64 + 1);
}
