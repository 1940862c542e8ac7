//! The history reads, timed at one connection against a running broker, each beside its
//! baseline in the same run: the same `db` functions the handler calls (so the same SQL),
//! called straight on one Postgres connection. What the API adds to that is the HTTP round
//! trip, the API key's lookup and the JSON. The two take turns, sample by sample, so both see
//! the same machine, and take turns going first, so both meet pages not yet cached. Samples are drawn at random from the loaded data: images, projects,
//! principals, moments in the three years, and cursors deep in the data.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use glance_share_broker::db::{self, audit::EventFilter, audit::LogReader};
use glance_share_broker::domain::access::Change;
use glance_share_broker::domain::filters::{RequestFilter, ShareFilter};
use glance_share_broker::domain::{Action, Outcome, RequestStatus, ShareState};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use strum::VariantArray;
use uuid::Uuid;

/// One read, as the API takes it and as the database answers it.
#[derive(Debug, Clone)]
enum Read {
    /// `GET /healthz`: the HTTP round trip alone.
    Health,
    ImageAccess {
        image: Uuid,
        at: DateTime<Utc>,
    },
    ProjectHistory {
        project: String,
        after: i64,
    },
    Events {
        filter: EventFilter,
        after: i64,
    },
    Requests {
        filter: RequestFilter,
        before: Option<Uuid>,
    },
    Shares {
        filter: ShareFilter,
        before: Option<Uuid>,
    },
}

/// The page size the lists are read with (the API's default).
const LIMIT: i64 = 50;

impl Read {
    fn path(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let path = match self {
            Read::Health => return "/healthz".into(),
            Read::ImageAccess { image, at } => {
                q.append_pair("at", &time(at));
                format!("/v1/images/{image}/access")
            }
            Read::ProjectHistory { project, after } => {
                seq_cursor(&mut q, *after);
                format!("/v1/projects/{project}/access-history")
            }
            Read::Events { filter, after } => {
                let pairs = [
                    ("image_id", filter.image_id.map(|i| i.to_string())),
                    ("project_id", filter.project_id.clone()),
                    ("actor", filter.actor.clone()),
                    ("action", filter.action.clone()),
                    ("after", filter.after.as_ref().map(time)),
                    ("before", filter.before.as_ref().map(time)),
                ];
                for (name, value) in pairs {
                    if let Some(value) = value {
                        q.append_pair(name, &value);
                    }
                }
                seq_cursor(&mut q, *after);
                "/v1/audit-events".into()
            }
            Read::Requests { filter, before } => {
                let pairs = [
                    ("status", filter.status.map(|s| s.to_string())),
                    ("image_id", filter.image_id.map(|i| i.to_string())),
                    ("project_id", filter.project_id.clone()),
                    ("requested_by", filter.requested_by.clone()),
                    ("created_after", filter.created_after.as_ref().map(time)),
                    ("created_before", filter.created_before.as_ref().map(time)),
                ];
                for (name, value) in pairs {
                    if let Some(value) = value {
                        q.append_pair(name, &value);
                    }
                }
                id_cursor(&mut q, *before);
                "/v1/share-requests".into()
            }
            Read::Shares { filter, before } => {
                let pairs = [
                    ("state", filter.state.map(|s| s.to_string())),
                    ("image_id", filter.image_id.map(|i| i.to_string())),
                    ("project_id", filter.project_id.clone()),
                    ("requested_by", filter.requested_by.clone()),
                ];
                for (name, value) in pairs {
                    if let Some(value) = value {
                        q.append_pair(name, &value);
                    }
                }
                id_cursor(&mut q, *before);
                "/v1/shares".into()
            }
        };
        let query = q.finish();
        if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        }
    }

    /// What the handler asks the database, on `pool` (one connection); returns the rows read.
    async fn baseline(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let log = || LogReader::primary(pool);
        Ok(match self {
            Read::Health => sqlx::query("select 1").execute(pool).await?.rows_affected() as usize,
            Read::ImageAccess { image, at } => {
                let filter = EventFilter {
                    image_id: Some(*image),
                    before: Some(*at + chrono::Duration::microseconds(1)),
                    ..access_events()
                };
                let events: Vec<_> = db::audit::stream(log(), filter, 0).try_collect().await?;
                events.len()
            }
            Read::ProjectHistory { project, after } => {
                let filter = EventFilter {
                    member_project_id: Some(project.clone()),
                    ..access_events()
                };
                db::audit::page(&log(), &filter, *after, LIMIT + 1).await?.len()
            }
            Read::Events { filter, after } => db::audit::page(&log(), filter, *after, LIMIT + 1).await?.len(),
            Read::Requests { filter, before } => {
                let mut conn = pool.acquire().await?;
                let rows = db::share_requests::list(&mut *conn, None, filter, *before, LIMIT + 1).await?;
                let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
                db::shares::of_requests(&mut *conn, &ids).await?;
                db::share_requests::approvals_of(&mut *conn, &ids).await?;
                rows.len()
            }
            Read::Shares { filter, before } => db::shares::list(pool, None, filter, *before, LIMIT + 1).await?.len(),
        })
    }
}

/// The access reports' filter (`http::access_report`): the changes of access that happened.
fn access_events() -> EventFilter {
    EventFilter {
        actions: Change::ACTIONS.map(|a| a.to_string()).to_vec(),
        outcome: Some(Outcome::Success),
        ..EventFilter::default()
    }
}

fn seq_cursor(q: &mut form_urlencoded::Serializer<String>, after: i64) {
    if after > 0 {
        q.append_pair("cursor", &URL_SAFE_NO_PAD.encode(after.to_be_bytes()));
    }
}

fn id_cursor(q: &mut form_urlencoded::Serializer<String>, before: Option<Uuid>) {
    if let Some(id) = before {
        q.append_pair("cursor", &URL_SAFE_NO_PAD.encode(id.as_bytes()));
    }
}

/// What the samples are drawn from.
struct Data {
    images: Vec<Uuid>,
    projects: Vec<String>,
    requesters: Vec<String>,
    requests: Vec<Uuid>,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    head: i64,
}

impl Data {
    async fn sample(pool: &PgPool) -> Result<Data, sqlx::Error> {
        let (first, last, head): (DateTime<Utc>, DateTime<Utc>, i64) =
            sqlx::query_as("select min(occurred_at), max(occurred_at), max(chain_pos) from audit_events")
                .fetch_one(pool)
                .await?;
        Ok(Data {
            images: some(pool, "select image_id from share_requests order by random() limit 1000").await?,
            projects: some(
                pool,
                "select project_id from shares where project_id is not null order by random() limit 1000",
            )
            .await?,
            requesters: some(
                pool,
                "select requested_by from share_requests order by random() limit 1000",
            )
            .await?,
            requests: some(pool, "select id from share_requests order by random() limit 1000").await?,
            first,
            last,
            head,
        })
    }

    fn moment(&self, rng: &mut StdRng) -> DateTime<Utc> {
        let span = (self.last - self.first).num_microseconds().unwrap_or(1).max(1);
        self.first + chrono::Duration::microseconds(rng.random_range(0..span))
    }

    /// A cursor deep in the log (half of the reads start from the beginning).
    fn place(&self, rng: &mut StdRng) -> i64 {
        if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(1..=self.head.max(1))
        }
    }

    fn request_cursor(&self, rng: &mut StdRng) -> Option<Uuid> {
        rng.random_bool(0.5)
            .then(|| *self.requests.choose(rng).expect("requests were loaded"))
    }

    /// A read of `kind` at random.
    fn draw(&self, kind: Kind, rng: &mut StdRng) -> Read {
        let image = *self.images.choose(rng).expect("images were loaded");
        let project = self.projects.choose(rng).expect("projects were loaded").clone();
        let requester = self.requesters.choose(rng).expect("requesters were loaded").clone();
        match kind {
            Kind::Health => Read::Health,
            Kind::ImageAccess => Read::ImageAccess {
                image,
                at: self.moment(rng),
            },
            Kind::ProjectHistory => Read::ProjectHistory {
                project,
                after: self.place(rng),
            },
            Kind::EventsByImage
            | Kind::EventsByProject
            | Kind::EventsByActor
            | Kind::EventsByAction
            | Kind::EventsByDay => {
                let mut filter = EventFilter::default();
                match kind {
                    Kind::EventsByImage => filter.image_id = Some(image),
                    Kind::EventsByProject => filter.project_id = Some(project),
                    Kind::EventsByActor => {
                        let actors = [
                            requester.as_str(),
                            "worker",
                            "approvals-workflow",
                            "expiry",
                            "ops-admin",
                        ];
                        filter.actor = Some((*actors.choose(rng).expect("actors")).to_owned());
                    }
                    Kind::EventsByAction => {
                        filter.action = Some(Action::VARIANTS.choose(rng).expect("actions").to_string());
                    }
                    _ => {
                        let from = self.moment(rng);
                        (filter.after, filter.before) = (Some(from), Some(from + chrono::Duration::days(1)));
                    }
                }
                let after = if kind == Kind::EventsByDay { 0 } else { self.place(rng) };
                Read::Events { filter, after }
            }
            Kind::Requests => {
                let mut filter = RequestFilter::default();
                match rng.random_range(0..5) {
                    0 => filter.status = Some(*RequestStatus::VARIANTS.choose(rng).expect("statuses")),
                    1 => filter.image_id = Some(image),
                    2 => filter.project_id = Some(project),
                    3 => filter.requested_by = Some(requester),
                    _ => {
                        let from = self.moment(rng);
                        (filter.created_after, filter.created_before) =
                            (Some(from), Some(from + chrono::Duration::days(7)));
                    }
                }
                Read::Requests {
                    filter,
                    before: self.request_cursor(rng),
                }
            }
            Kind::Shares => {
                let mut filter = ShareFilter::default();
                match rng.random_range(0..4) {
                    0 => filter.state = Some(*ShareState::VARIANTS.choose(rng).expect("states")),
                    1 => filter.image_id = Some(image),
                    2 => filter.project_id = Some(project),
                    _ => filter.requested_by = Some(requester),
                }
                Read::Shares {
                    filter,
                    before: self.request_cursor(rng),
                }
            }
        }
    }
}

/// The values of one column `sql` selects.
async fn some<T>(pool: &PgPool, sql: &'static str) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql).fetch_all(pool).await
}

/// The reads measured, each with its target p99.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Health,
    ImageAccess,
    ProjectHistory,
    EventsByImage,
    EventsByProject,
    EventsByActor,
    EventsByAction,
    EventsByDay,
    Requests,
    Shares,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Health,
        Kind::ImageAccess,
        Kind::ProjectHistory,
        Kind::EventsByImage,
        Kind::EventsByProject,
        Kind::EventsByActor,
        Kind::EventsByAction,
        Kind::EventsByDay,
        Kind::Requests,
        Kind::Shares,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Health => "healthz",
            Kind::ImageAccess => "image_access_at",
            Kind::ProjectHistory => "project_access_history",
            Kind::EventsByImage => "audit_events_by_image",
            Kind::EventsByProject => "audit_events_by_project",
            Kind::EventsByActor => "audit_events_by_actor",
            Kind::EventsByAction => "audit_events_by_action",
            Kind::EventsByDay => "audit_events_by_day",
            Kind::Requests => "share_requests_filtered",
            Kind::Shares => "shares_filtered",
        }
    }

    /// The target for the p99, in milliseconds.
    fn target_ms(self) -> Option<f64> {
        match self {
            Kind::Health => None,
            Kind::ImageAccess | Kind::ProjectHistory => Some(20.0),
            _ => Some(10.0),
        }
    }
}

/// The `q`th quantile of `sorted`, in milliseconds.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// The baseline of `read`: how long it took, and the rows it read.
async fn time_baseline(read: &Read, pool: &PgPool) -> (Duration, usize) {
    let started = Instant::now();
    let rows = read.baseline(pool).await.expect("the baseline query runs");
    (started.elapsed(), rows)
}

/// Times `samples` reads of every kind (`only`: of these kinds) against `broker` and the
/// database, and prints a `RESULT` line for each kind. Returns whether every target was met.
pub async fn measure(broker: &str, key: &str, database_url: &str, samples: usize, only: &[String]) -> bool {
    // The broker's own pool, so the same session settings (`db::pool`: no JIT).
    let pool = db::pool(database_url.parse().expect("a database URL"), 1);
    let data = Data::sample(&pool).await.expect("the loaded data can be sampled");
    // One connection: no pool beyond one idle connection, requests one after another.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .http1_only()
        .build()
        .expect("a client");
    let mut rng = StdRng::seed_from_u64(15);
    let mut all_met = true;
    for kind in Kind::ALL {
        if !only.is_empty() && !only.iter().any(|o| o == kind.name()) {
            continue;
        }
        let (mut api, mut sql) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
        let mut rows = 0;
        let mut slowest = (Duration::ZERO, String::new());
        // Not counted: the connection's statements are prepared, the pages cached.
        let warm_up = samples / 10 + 1;
        for n in 0..samples + warm_up {
            let read = data.draw(kind, &mut rng);
            let url = format!("{broker}{}", read.path());
            // Whichever goes first may find the read's pages outside the cache: the API and
            // the baseline take turns going first.
            let mut baseline = None;
            if n % 2 == 1 {
                baseline = Some(time_baseline(&read, &pool).await);
            }
            let started = Instant::now();
            let response = client
                .get(&url)
                .bearer_auth(key)
                .send()
                .await
                .expect("the broker answers");
            let status = response.status();
            let body = response.bytes().await.expect("the broker sends the body");
            let took = started.elapsed();
            assert!(
                status.is_success(),
                "GET {url}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
            let (baseline, read_rows) = match baseline {
                Some(timed) => timed,
                None => time_baseline(&read, &pool).await,
            };
            if n >= warm_up {
                if took > slowest.0 {
                    slowest = (took, read.path());
                }
                api.push(took);
                sql.push(baseline);
                rows += read_rows;
            }
        }
        api.sort();
        sql.sort();
        let p99 = quantile(&api, 0.99);
        let verdict = match kind.target_ms() {
            Some(target) if p99 <= target => format!("target_p99_ms={target} PASS"),
            Some(target) => {
                all_met = false;
                format!("target_p99_ms={target} FAIL")
            }
            None => "(the HTTP round trip alone)".into(),
        };
        println!(
            "RESULT bench=history-read read={} samples={samples} connections=1 api_p50_ms={:.2} api_p99_ms={p99:.2} \
             api_max_ms={:.2} sql_p50_ms={:.2} sql_p99_ms={:.2} rows_per_read={:.1} {verdict} load={} slowest={}",
            kind.name(),
            quantile(&api, 0.5),
            quantile(&api, 1.0),
            quantile(&sql, 0.5),
            quantile(&sql, 0.99),
            rows as f64 / samples as f64,
            load_average(),
            slowest.1,
        );
    }
    all_met
}
