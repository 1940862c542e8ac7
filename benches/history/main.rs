//! History at scale: a database of years of requests, shares and audit events, and what the
//! broker's history queries cost on it. `scripts/bench.sh` (section `history`) runs both:
//!
//!   cargo bench --bench history -- load <database-url>
//!       migrates the (empty) database, partitions the log by month, and loads
//!       BENCH_HISTORY_EVENTS audit events (default 10,000,000) and a share request for every
//!       ten, with their shares and approvals, over BENCH_HISTORY_CONNECTIONS connections
//!       (default 2); sealed, checkpointed, vacuumed
//!   cargo bench --bench history -- measure <broker-url> <auditor-key> <database-url>
//!       latency of the history reads at one connection, each beside its baseline:
//!       BENCH_HISTORY_SAMPLES each (default 300), BENCH_HISTORY_READS to pick some by name
//!
//! Each prints `RESULT` lines of `key=value` pairs. `cargo test --all-targets` runs this with
//! no arguments: it prints this usage and does nothing (`tests/api/history.rs` loads a small
//! history and checks it).

mod load;
mod measure;

use std::time::Instant;

use glance_share_broker::db;
use sqlx::postgres::PgPoolOptions;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.replace([',', '_'], "")
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// Lays the empty log out as a broker installed before the history began would have it: a
/// partition for every month of the three years and the next two (what the broker's
/// maintenance makes, month by month), instead of the one partition the migration makes of
/// an empty log (every event before next month, as for a log from before partitioning). The
/// reads then meet what they meet in such a cloud: dozens of partitions, pruned by time.
const PARTITION_BY_MONTH: &str = r#"
do $$
declare
    first regclass;
    month timestamptz := audit_month(now() - interval '3 years', -1);
    name text;
begin
    select b.partition into first from audit_partitions() b where b.from_at is null and not b.is_default;
    if first is not null then
        execute format('alter table audit_events detach partition %s', first);
        execute format('drop table %s', first);
    end if;
    while month < audit_month(now(), 3) loop
        name := 'audit_events_' || to_char(month at time zone 'UTC', 'YYYY_MM');
        if not exists (select 1 from audit_partitions() b where b.from_at = month) then
            execute format('create table %I (like audit_events including defaults including constraints)', name);
            perform audit_partition_conform(name::regclass);
            execute format('alter table audit_events attach partition %I for values from (%L) to (%L)',
                name, month, audit_month(month, 1));
        end if;
        month := audit_month(month, 1);
    end loop;
end;
$$"#;

async fn run_load(url: &str) {
    let size = load::Size::of_events(env_number("BENCH_HISTORY_EVENTS", 10_000_000));
    let connections = env_number("BENCH_HISTORY_CONNECTIONS", 2) as usize;
    let pool = PgPoolOptions::new()
        .max_connections(connections as u32 + 2)
        .connect(url)
        .await
        .expect("Postgres answers at the database URL");
    db::MIGRATOR.run(&pool).await.expect("migrations apply");
    let existing: i64 = sqlx::query_scalar("select count(*) from audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(existing, 0, "the loader fills an empty database");
    sqlx::raw_sql(PARTITION_BY_MONTH)
        .execute(&pool)
        .await
        .expect("the empty log is laid out by month");
    let started = Instant::now();
    let loaded = load::load(&pool, size, connections).await.expect("the history loads");
    let total = started.elapsed().as_secs_f64();
    let bytes: i64 = sqlx::query_scalar("select pg_database_size(current_database())")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "RESULT bench=history-load events={} requests={} shares={} approvals={} first={} last={} connections={connections} \
         load_secs={:.1} seal_tail_secs={:.1} vacuum_secs={:.1} total_secs={total:.1} events_per_sec={:.0} database_mb={}",
        loaded.events,
        loaded.requests,
        loaded.shares,
        loaded.approvals,
        loaded.first_event.format("%Y-%m-%d"),
        loaded.last_event.format("%Y-%m-%d"),
        loaded.load.as_secs_f64(),
        loaded.seal_tail.as_secs_f64(),
        loaded.vacuum.as_secs_f64(),
        loaded.events as f64 / (loaded.load + loaded.seal_tail).as_secs_f64(),
        bytes / 1_048_576,
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["load", url] => run_load(url).await,
        ["measure", broker, key, url] => {
            let samples = env_number("BENCH_HISTORY_SAMPLES", 300) as usize;
            let only: Vec<String> = std::env::var("BENCH_HISTORY_READS")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            measure::measure(broker, key, url, samples, &only).await;
        }
        _ => println!("history bench: `load <database-url>` or `measure <broker-url> <auditor-key> <database-url>`"),
    }
}
