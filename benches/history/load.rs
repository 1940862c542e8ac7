//! The history loader: fills a migrated database with years of share requests, their shares
//! and approvals, and the audit events their lives recorded, as a broker that ran for years
//! on a cloud of thousands of projects would have left it. `benches/history` loads ten
//! million events with it; `tests/api/history.rs` loads a small history and checks it.
//!
//! **Events go through the write path.** Each event is built by the broker's own
//! constructors (`NewEvent::about_request`, `about_share`) with the details its handlers
//! and worker write, made an `Event` by `db::audit::write::prepare`, dated in the past (its
//! time, and a UUIDv7 id of that time), and stored by `db::audit::write::store`: the insert
//! the broker runs (one UNNEST statement per batch, as a worker's batch is), with the digest
//! computed there. They are written unsealed, and a sealer seals them while the load runs
//! with the real `audit_seal`, as the broker's sealer does; a checkpoint is taken at the
//! end. The log that results verifies like any other (`audit verify`).
//!
//! **Requests, shares and approvals are written in the state their lives ended in**, with
//! one UNNEST insert per table and batch, and the columns the write path sets (status,
//! decision, validation facts, grant and revoke bookkeeping, timestamps), instead of
//! through the dozen updates each life took (filing, validation, decision, grant,
//! acceptance, revoke). Replaying those would leave tens of millions of dead row versions
//! (which a broker of years has long vacuumed away) and take hours here; the unique
//! indexes and check constraints of the schema still hold every row.
//!
//! **Lives** are planned from a seeded generator, so a size always gives the same history:
//! requests filed uniformly over three years up to now, for ~100,000 images owned by
//! ~3,300 projects (at ten million events), to 1 to 8 target projects each; validated within
//! seconds (4% invalid), decided within hours (83% approved, a tenth of those by two
//! approvers; denied, cancelled, expired), granted within seconds of approval, accepted
//! within days (a tenth automatically), some rejected, a third revoked months later by a
//! person, or at the request's expiry. What lies after now has not happened yet: those
//! requests are still pending, those shares still in force. Two passes: the first counts
//! the events the lives record, so that the rest of the log (refused attempts, drift found
//! and resolved, keys and policy reloads) makes the total exactly the size asked for.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use glance_share_broker::db;
use glance_share_broker::db::audit::{Event, NewEvent, write};
use glance_share_broker::db::share_requests::ShareRequest;
use glance_share_broker::db::shares::Share;
use glance_share_broker::domain::{
    Action, FieldError, Initiator, Outcome, REJECTED_BY_CONSUMER, RequestStatus, RevokeCause, ShareState, Validation,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::types::Json;
use tokio::sync::mpsc;
use uuid::{NoContext, Timestamp, Uuid};

/// How much history to load.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Audit events, exactly.
    pub events: u64,
    /// Share requests, exactly (each with 1 to 8 shares).
    pub requests: u64,
}

impl Size {
    /// `events` events, and a request for every ten of them: ten million events, one million
    /// requests.
    pub fn of_events(events: u64) -> Size {
        Size {
            events,
            requests: (events / 10).max(1),
        }
    }

    fn images(self) -> u32 {
        (self.requests / 10).max(8) as u32
    }

    fn projects(self) -> u32 {
        (self.requests / 300).clamp(24, 20_000) as u32
    }
}

/// What was loaded, and how long each part took.
#[derive(Debug)]
pub struct Loaded {
    pub events: u64,
    pub requests: u64,
    pub shares: u64,
    pub approvals: u64,
    /// Generating, inserting and sealing (the sealer runs during the inserts).
    pub load: Duration,
    /// Sealing what was left when the last insert committed, and the checkpoint.
    pub seal_tail: Duration,
    /// `vacuum (analyze)` of the loaded tables: a broker of years has been autovacuumed.
    pub vacuum: Duration,
    pub first_event: DateTime<Utc>,
    pub last_event: DateTime<Utc>,
}

/// Events per insert: a worker's batch is 50; bigger batches only save round trips here.
const BATCH: usize = 2_000;
/// Events the concurrent sealer seals per transaction.
const SEAL_BATCH: i32 = 20_000;
const MICROS: i64 = 1_000_000;
const DAY: i64 = 86_400 * MICROS;
/// The history spans three years, up to the start of the load.
const SPAN: i64 = 3 * 365 * DAY;
const SEED: u64 = 0x6873_6272_6f6b_6572;
const OBSERVERS: [&str; 2] = ["broker-a", "broker-b"];

/// Loads `size` into `pool`'s database (migrated, empty) over `connections` inserting
/// connections, sealing and checkpointing it, and vacuums the tables.
pub async fn load(pool: &PgPool, size: Size, connections: usize) -> Result<Loaded, sqlx::Error> {
    let started = Instant::now();
    let now = Utc::now().trunc_subsecs(6).timestamp_micros();
    let world = World::new(size, now);
    let lives = count_lives(&world);
    assert!(
        lives <= size.events,
        "{} requests record {lives} events, more than the {} asked for: ask for more events per request",
        size.requests,
        size.events
    );

    let (batches, receiver) = mpsc::channel::<Batch>(connections * 2);
    let generator = std::thread::spawn(move || Generator::new(&world, lives).run(&world, &batches));
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let inserters: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (pool, receiver) = (pool.clone(), receiver.clone());
            tokio::spawn(async move {
                let mut counts = Counts::default();
                loop {
                    let next = receiver.lock().await.recv().await;
                    let Some(batch) = next else {
                        return Ok::<_, sqlx::Error>(counts);
                    };
                    counts.add(&batch);
                    insert(&pool, batch).await?;
                }
            })
        })
        .collect();
    let loading = tokio_util::sync::CancellationToken::new();
    let sealer = tokio::spawn(seal_while(pool.clone(), loading.clone()));
    let mut counts = Counts::default();
    for inserter in inserters {
        counts.merge(inserter.await.expect("an inserter does not panic")?);
    }
    let (first_event, last_event) = generator.join().expect("the generator does not panic");
    loading.cancel();
    sealer.await.expect("the sealer does not panic")?;
    let load = started.elapsed();

    let tail = Instant::now();
    // A seal may wait out its 2 s for the chain lock on a machine this busy; nothing is
    // lost, the next try goes on.
    assert!(
        db::audit::seal_all_waiting(pool, 30).await?,
        "the chain lock stays taken: something else seals this database"
    );
    db::audit::checkpoint(pool, "history loader").await?;
    let seal_tail = tail.elapsed();
    let vacuuming = Instant::now();
    sqlx::query("vacuum (analyze) audit_events, share_requests, shares, approvals")
        .execute(pool)
        .await?;
    Ok(Loaded {
        events: counts.events,
        requests: counts.requests,
        shares: counts.shares,
        approvals: counts.approvals,
        load,
        seal_tail,
        vacuum: vacuuming.elapsed(),
        first_event: time(first_event),
        last_event: time(last_event),
    })
}

/// Seals in the background until `loading` is cancelled, as the broker's sealer does.
async fn seal_while(pool: PgPool, loading: tokio_util::sync::CancellationToken) -> Result<(), sqlx::Error> {
    while !loading.is_cancelled() {
        if db::audit::seal(&pool, SEAL_BATCH).await? != Some(SEAL_BATCH) {
            tokio::select! {
                () = loading.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
    Ok(())
}

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).expect("a time within three years of now")
}

// ------------------------------------------------------------------------------- the world

/// The cloud the history happens in: images and their owners, projects, people.
struct World {
    size: Size,
    now: i64,
    images: Vec<(Uuid, u32)>,
    projects: u32,
}

impl World {
    fn new(size: Size, now: i64) -> World {
        let mut rng = StdRng::seed_from_u64(SEED);
        let projects = size.projects();
        let images = (0..size.images())
            .map(|_| (Uuid::from_u128(rng.random()), rng.random_range(0..projects)))
            .collect();
        World {
            size,
            now,
            images,
            projects,
        }
    }
}

/// A Keystone-like id (32 hex digits) for the `n`th thing of a kind.
fn keystone_id(kind: u64, n: u64) -> String {
    format!(
        "{:016x}{:016x}",
        mix(kind),
        mix(kind ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    )
}

/// splitmix64: spreads numbers over 64 bits.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn project_id(p: u32) -> String {
    keystone_id(1, u64::from(p))
}

fn domain_id(p: u32) -> String {
    if p % 4 == 0 {
        "default".into()
    } else {
        keystone_id(2, u64::from(p % 12))
    }
}

const IMAGE_NAMES: [&str; 8] = [
    "ubuntu-24.04-golden",
    "rhel-9.4-hardened",
    "debian-12-ci-runner",
    "windows-2022-base",
    "rocky-9-gpu",
    "cirros-0.6-test",
    "fedora-40-build",
    "sles-15-sap",
];

fn image_name(image: u32) -> String {
    format!("{}-{image:06}", IMAGE_NAMES[image as usize % IMAGE_NAMES.len()])
}

/// Someone who acts: a portal's API key acting for a user, a Keystone user, or the broker.
#[derive(Debug, Clone, Copy)]
enum Person {
    /// `portal-NN`, acting for user `k` of project `p`.
    Portal { portal: u32, p: u32, k: u32 },
    /// User `k` of project `p`, with its own Keystone token.
    User { p: u32, k: u32, role: &'static str },
    /// The approval workflow's key.
    Workflow,
    /// Approver `n`, a Keystone user of the cloud's operators.
    Approver { n: u32 },
    /// The cloud's admins' key.
    Admin,
}

impl Person {
    /// The member of a consumer project who answers its grants.
    fn consumer(p: u32) -> Person {
        Person::User {
            p,
            k: 0,
            role: "member",
        }
    }

    fn name(self) -> String {
        match self {
            Person::Portal { portal, .. } => format!("portal-{portal:02}"),
            Person::User { p, k, .. } => format!("user-{p:05}-{k}"),
            Person::Workflow => "approvals-workflow".into(),
            Person::Approver { n } => format!("approver-{n:02}"),
            Person::Admin => "ops-admin".into(),
        }
    }

    /// Who it is in separation-of-duties rules (`domain::Subject`).
    fn subject(self) -> String {
        match self {
            Person::Portal { p, k, .. } | Person::User { p, k, .. } => keystone_id(3, u64::from(p) * 16 + u64::from(k)),
            Person::Approver { n } => keystone_id(4, u64::from(n)),
            other => format!("key:{}", other.name()),
        }
    }

    fn on_behalf_of(self) -> Option<String> {
        match self {
            Person::Portal { p, k, .. } => Some(format!("user-{p:05}-{k}")),
            _ => None,
        }
    }

    /// As `Initiator::caller` records it, from an address of the cloud's.
    fn initiator(self, address: u32) -> Initiator {
        let address = Some(format!(
            "10.{}.{}.{}",
            20 + address % 8,
            (address >> 3) % 250,
            1 + (address >> 11) % 250
        ));
        let (kind, role, user_id, project, agent) = match self {
            Person::Portal { .. } => ("api_key", "requester", None, None, "self-service-portal/4.2"),
            Person::User { p, role, .. } => (
                "keystone_user",
                role,
                Some(self.subject()),
                Some(project_id(p)),
                "python-openstackclient/7.0",
            ),
            Person::Workflow => ("api_key", "approver", None, None, "approvals-workflow/1.9"),
            Person::Approver { .. } => ("keystone_user", "approver", Some(self.subject()), None, "Mozilla/5.0"),
            Person::Admin => ("api_key", "admin", None, None, "curl/8.5.0"),
        };
        Initiator {
            kind,
            name: self.name(),
            role: Some(role.into()),
            address,
            user_agent: Some(agent.into()),
            user_id,
            project,
            on_behalf_of: self.on_behalf_of(),
        }
    }
}

// ------------------------------------------------------------------------------- plans

/// How a request was decided.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// By one approver, or two (the first approval `pending`).
    Approved {
        first: (i64, Person),
        second: Option<(i64, Person)>,
    },
    Denied(i64, Person),
    Cancelled(i64),
    Expired(i64),
}

/// How the consumer accepted a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// In Glance; the worker's poll saw it.
    Seen,
    /// Through the broker.
    Here,
    /// The request asked for it.
    Auto,
}

/// Who ends a grant.
#[derive(Debug, Clone, Copy)]
enum Ender {
    /// A person revokes it.
    Person(Person),
    /// The consumer rejects it through the broker: a revoke, recorded as a rejection when done.
    Consumer,
    /// Its request's `expires_at` passed.
    Expiry,
}

#[derive(Debug, Clone)]
struct SharePlan {
    target: u32,
    grant: i64,
    allow: i64,
    failed: bool,
    accepted: Option<(i64, Answer)>,
    /// Asked, carried out, by whom.
    revoke: Option<(i64, i64, Ender)>,
}

/// One request's life, in times (microseconds since the epoch; what is after now has not
/// happened yet).
#[derive(Debug, Clone)]
struct Plan {
    n: u64,
    created: i64,
    image: u32,
    region: &'static str,
    requester: Person,
    expires_at: Option<i64>,
    auto_accept: bool,
    validated: (i64, bool),
    verdict: Verdict,
    shares: Vec<SharePlan>,
    /// The first grant also made the image shared, and guarded it.
    made_shared: bool,
    protected: bool,
}

/// What one event records (its time aside).
#[derive(Debug, Clone, Copy)]
enum Spec {
    Create,
    Validate,
    Approve { by: Person, last: bool },
    Deny(Person),
    Cancel,
    Expire,
    Visibility,
    Protect,
    Grant(usize),
    Allow(usize),
    Accept(usize),
    RejectAsked(usize),
    RevokeAsked(usize),
    Reject(usize),
    Revoked(usize),
}

/// Plans requests one after another, keeping one live share per image and project.
struct Planner<'w> {
    world: &'w World,
    rng: StdRng,
    /// (image, project) -> when the last share of it stopped being live (`i64::MAX`: never).
    live: HashMap<u64, i64>,
    next_created: f64,
    n: u64,
}

impl<'w> Planner<'w> {
    fn new(world: &'w World) -> Self {
        Planner {
            world,
            rng: StdRng::seed_from_u64(SEED + 1),
            live: HashMap::new(),
            next_created: (world.now - SPAN) as f64,
            n: 0,
        }
    }

    fn exp(&mut self, mean: i64) -> i64 {
        (-(mean as f64) * (1.0 - self.rng.random::<f64>()).ln()) as i64 + 1
    }

    fn between(&mut self, low: i64, high: i64) -> i64 {
        self.rng.random_range(low..high)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    /// The next request, or none when all are planned.
    fn next(&mut self) -> Option<Plan> {
        let world = self.world;
        if self.n >= world.size.requests {
            return None;
        }
        let n = self.n;
        self.n += 1;
        let created = self.next_created as i64;
        // Filed uniformly over the span: a Poisson process.
        self.next_created += -(SPAN as f64 / world.size.requests as f64) * (1.0 - self.rng.random::<f64>()).ln();
        let image = self.rng.random_range(0..world.images.len() as u32);
        let owner = world.images[image as usize].1;
        let region = if self.chance(0.2) { "RegionTwo" } else { "RegionOne" };
        let requester = if self.chance(0.55) {
            Person::Portal {
                portal: self.rng.random_range(1..25),
                p: owner,
                k: self.rng.random_range(0..4),
            }
        } else {
            Person::User {
                p: owner,
                k: self.rng.random_range(0..4),
                role: "requester",
            }
        };
        let wanted = match self.rng.random::<f64>() {
            x if x < 0.55 => 1,
            x if x < 0.78 => 2,
            x if x < 0.88 => 3,
            _ => self.rng.random_range(4..9),
        };
        let mut targets: Vec<u32> = Vec::new();
        for _ in 0..wanted * 8 {
            if targets.len() == wanted {
                break;
            }
            let p = self.rng.random_range(0..world.projects);
            let free = self.live.get(&key(image, p)).is_none_or(|until| *until <= created);
            if p != owner && free && !targets.contains(&p) {
                targets.push(p);
            }
        }
        if targets.is_empty() {
            // Every project tried holds a live share of the image: file for a new one.
            let p = (0..world.projects)
                .find(|p| *p != owner && self.live.get(&key(image, *p)).is_none_or(|until| *until <= created))
                .expect("some project holds no live share of the image");
            targets.push(p);
        }
        let expires_at = self.chance(0.12).then(|| created + self.between(30 * DAY, 180 * DAY));
        let auto_accept = self.chance(0.1);
        let validated = (created + self.between(200_000, 3 * MICROS), !self.chance(0.04));
        let decided = validated.0 + self.exp(3 * 3600 * MICROS);
        let approver = |planner: &mut Self| {
            if planner.chance(0.6) {
                Person::Workflow
            } else {
                Person::Approver {
                    n: planner.rng.random_range(1..41),
                }
            }
        };
        let verdict = match self.rng.random::<f64>() {
            x if x < 0.83 => {
                let first = (decided, approver(self));
                // A second approval comes from someone else (one approval per subject).
                let other = match first.1 {
                    Person::Workflow => Person::Approver {
                        n: self.rng.random_range(1..41),
                    },
                    _ => Person::Workflow,
                };
                let second = self.chance(0.1).then(|| (decided + self.exp(3600 * MICROS), other));
                Verdict::Approved { first, second }
            }
            x if x < 0.90 => Verdict::Denied(decided, approver(self)),
            x if x < 0.96 => Verdict::Cancelled(decided),
            _ => Verdict::Expired(created + 7 * DAY),
        };
        let approved_at = match verdict {
            Verdict::Approved { first, second } => second.map_or(first.0, |s| s.0),
            _ => i64::MAX / 2,
        };
        let mut at = approved_at + self.between(300_000, 2 * MICROS);
        let mut shares = Vec::new();
        for target in targets {
            let grant = at;
            let allow = grant + self.between(100_000, 1_500_000);
            at = allow;
            let failed = self.chance(0.015);
            let (accepted, rejected) = match self.rng.random::<f64>() {
                _ if auto_accept => (Some((allow, Answer::Auto)), None),
                x if x < 0.5 => (Some((allow + self.exp(DAY), Answer::Seen)), None),
                x if x < 0.72 => (Some((allow + self.exp(DAY), Answer::Here)), None),
                x if x < 0.77 => (None, Some(allow + self.exp(3 * DAY))),
                _ => (None, None),
            };
            let mut revoke = match rejected {
                Some(when) => Some((when, Ender::Consumer)),
                None if self.chance(0.35) => {
                    let by = if self.chance(0.8) { requester } else { Person::Admin };
                    Some((allow + self.exp(120 * DAY), Ender::Person(by)))
                }
                None => None,
            };
            // An expiry ends the grant when it comes first.
            if let Some(expiry) = expires_at
                && expiry > allow
                && revoke.is_none_or(|(asked, _)| expiry < asked)
            {
                revoke = Some((expiry + self.between(MICROS, 60 * MICROS), Ender::Expiry));
            }
            let done = self.between(300_000, 5 * MICROS);
            shares.push(SharePlan {
                target,
                grant,
                allow,
                failed,
                // An answer after the revoke was asked is never recorded.
                accepted: accepted.filter(|(when, _)| !failed && revoke.is_none_or(|(asked, _)| *when < asked)),
                revoke: revoke.filter(|_| !failed).map(|(asked, by)| (asked, asked + done, by)),
            });
        }
        let plan = Plan {
            n,
            created,
            image,
            region,
            requester,
            expires_at,
            auto_accept,
            validated,
            verdict,
            shares,
            made_shared: self.chance(0.15),
            protected: self.chance(0.3),
        };
        let events = plan.events(world.now);
        for (i, share) in plan.shares.iter().enumerate() {
            let ended = events
                .iter()
                .find(|(_, spec)| ends_share(&plan, *spec, i))
                .map_or(i64::MAX, |(at, _)| *at);
            self.live.insert(key(image, share.target), ended);
        }
        Some(plan)
    }
}

fn key(image: u32, project: u32) -> u64 {
    (u64::from(image) << 32) | u64::from(project)
}

/// Whether `spec` ends share `i`'s liveness (`share_is_live` turns false).
fn ends_share(plan: &Plan, spec: Spec, i: usize) -> bool {
    match spec {
        Spec::Validate => !plan.validated.1,
        Spec::Deny(_) | Spec::Cancel | Spec::Expire => true,
        Spec::Allow(s) => s == i && plan.shares[i].failed,
        Spec::Revoked(s) => s == i,
        _ => false,
    }
}

impl Plan {
    /// Every event of this life up to `now`, in time order.
    fn events(&self, now: i64) -> Vec<(i64, Spec)> {
        let mut events = vec![(self.created, Spec::Create), (self.validated.0, Spec::Validate)];
        if self.validated.1 {
            match self.verdict {
                Verdict::Approved { first, second } => {
                    events.push((
                        first.0,
                        Spec::Approve {
                            by: first.1,
                            last: second.is_none(),
                        },
                    ));
                    if let Some((at, by)) = second {
                        events.push((at, Spec::Approve { by, last: true }));
                    }
                    let first_grant = self.shares[0].grant;
                    if self.made_shared {
                        events.push((first_grant, Spec::Visibility));
                    }
                    if self.protected {
                        events.push((first_grant, Spec::Protect));
                    }
                    for (i, share) in self.shares.iter().enumerate() {
                        events.push((share.grant, Spec::Grant(i)));
                        events.push((share.allow, Spec::Allow(i)));
                        if let Some((at, _)) = share.accepted {
                            events.push((at, Spec::Accept(i)));
                        }
                        match share.revoke {
                            Some((asked, done, Ender::Consumer)) => {
                                events.extend([
                                    (asked, Spec::RejectAsked(i)),
                                    (done, Spec::Reject(i)),
                                    (done, Spec::Revoked(i)),
                                ]);
                            }
                            Some((asked, done, _)) => {
                                events.extend([(asked, Spec::RevokeAsked(i)), (done, Spec::Revoked(i))])
                            }
                            None => {}
                        }
                    }
                }
                Verdict::Denied(at, by) => events.push((at, Spec::Deny(by))),
                Verdict::Cancelled(at) => events.push((at, Spec::Cancel)),
                Verdict::Expired(at) => events.push((at, Spec::Expire)),
            }
        }
        events.retain(|(at, _)| *at <= now);
        // Stable: what happens at one instant keeps its order (a rejection before its revoke).
        events.sort_by_key(|(at, _)| *at);
        events
    }
}

/// The events all lives record, counted by planning them (cheap: nothing is built).
fn count_lives(world: &World) -> u64 {
    let mut planner = Planner::new(world);
    let mut events = 0;
    while let Some(plan) = planner.next() {
        events += plan.events(world.now).len() as u64;
    }
    events
}

// ------------------------------------------------------------------------------- lives

/// A request's rows as its life left them, and what its events need.
struct Life {
    plan: Plan,
    request: ShareRequest,
    shares: Vec<Share>,
    /// Extra share columns the `Share` type does not carry: made the image shared, revoke
    /// cause, revoke started.
    revokes: Vec<(Option<RevokeCause>, Option<DateTime<Utc>>)>,
    approvals: Vec<(Person, DateTime<Utc>)>,
    /// The X-Request-Id of the filing and of the decision.
    filed_by_call: String,
    decided_by_call: String,
}

fn call_id(rng: &mut StdRng) -> String {
    format!("req-{}", Uuid::from_u128(rng.random()).hyphenated())
}

impl Life {
    fn new(plan: Plan, world: &World, rng: &mut StdRng) -> Life {
        let now = world.now;
        let events = plan.events(now);
        let (image_id, owner) = world.images[plan.image as usize];
        let mut id = |at: i64| id_at(at, rng.random());
        let request_id = id(plan.created);
        let validated = events.iter().any(|(_, s)| matches!(s, Spec::Validate));
        let mut request = ShareRequest {
            id: request_id,
            image_id,
            region: plan.region.into(),
            reason: REASONS[plan.n as usize % REASONS.len()].into(),
            requested_by: plan.requester.name(),
            requested_by_subject: plan.requester.subject(),
            target_domains: None,
            status: RequestStatus::PendingApproval,
            expires_at: plan.expires_at.map(time),
            auto_accept: plan.auto_accept,
            decided_by: None,
            decided_at: None,
            decision_comment: None,
            on_behalf_of: plan.requester.on_behalf_of(),
            required_approvals: 1,
            policy_rule: None,
            // What the policy decided at validation (migration 20261203000005): people decide.
            policy_decision: validated.then(|| "require_approval".into()),
            version: 1,
            created_at: time(plan.created),
            updated_at: time(plan.created),
            validation: Validation::Pending,
            validated_at: None,
            validation_errors: Json(Vec::new()),
            validation_last_error: None,
            validation_warnings: Json(Vec::new()),
            image_name: None,
            image_owner: None,
            image_owner_domain: None,
            image_visibility: None,
        };
        if let Verdict::Approved { second: Some(_), .. } = plan.verdict {
            request.required_approvals = 2;
            request.policy_rule = Some("two-approvers-outside-domain".into());
        }
        if validated {
            request.validation = if plan.validated.1 {
                Validation::Passed
            } else {
                Validation::Failed
            };
            request.validated_at = Some(time(plan.validated.0));
            request.image_name = Some(image_name(plan.image));
            request.image_owner = Some(project_id(owner));
            request.image_owner_domain = Some(domain_id(owner));
            request.image_visibility = Some(if plan.made_shared { "private" } else { "shared" }.into());
            if !plan.validated.1 {
                request.status = RequestStatus::Invalid;
                request.validation_errors = Json(vec![FieldError {
                    field: "targets[0]".into(),
                    reason: "no such project in Keystone".into(),
                }]);
            }
        }
        let mut shares: Vec<Share> = plan
            .shares
            .iter()
            .map(|s| Share {
                id: id(plan.created),
                request_id,
                image_id,
                region: plan.region.into(),
                target: project_id(s.target),
                project_id: Some(project_id(s.target)),
                project_name: validated.then(|| format!("proj-{:05}", s.target)),
                project_domain: validated.then(|| domain_id(s.target)),
                state: if validated && !plan.validated.1 {
                    ShareState::Invalid
                } else {
                    ShareState::AwaitingApproval
                },
                last_error: None,
                granted_at: None,
                revoked_by: None,
                revoke_reason: None,
                revoke_effective_at: None,
                revoke_scheduled_from: None,
                adopted: false,
                image_name: None,
                image_owner: None,
                version: 1 + u64::from(validated) as i64,
                created_at: time(plan.created),
                updated_at: time(plan.created),
            })
            .collect();
        let mut revokes = vec![(None, None); shares.len()];
        let mut approvals = Vec::new();
        for (at, spec) in &events {
            let when = time(*at);
            request.updated_at = request.updated_at.max(when);
            match *spec {
                Spec::Create | Spec::Validate | Spec::Visibility | Spec::Protect => {}
                Spec::Approve { by, last } => {
                    approvals.push((by, when));
                    if last {
                        decide(&mut request, &mut shares, RequestStatus::Approved, Some(by), when);
                    }
                }
                Spec::Deny(by) => decide(&mut request, &mut shares, RequestStatus::Denied, Some(by), when),
                Spec::Cancel => decide(
                    &mut request,
                    &mut shares,
                    RequestStatus::Cancelled,
                    Some(plan.requester),
                    when,
                ),
                Spec::Expire => decide(&mut request, &mut shares, RequestStatus::Expired, None, when),
                Spec::Grant(i) => move_share(&mut shares[i], ShareState::Granting, when),
                Spec::Allow(i) => {
                    let share = &mut shares[i];
                    if plan.shares[i].failed {
                        share.last_error = Some("Glance answered 500 Internal Server Error three times".into());
                        move_share(share, ShareState::Failed, when);
                    } else {
                        share.granted_at = Some(when);
                        share.image_name = request.image_name.clone();
                        share.image_owner = request.image_owner.clone();
                        move_share(share, ShareState::PendingAcceptance, when);
                    }
                }
                Spec::Accept(i) => move_share(&mut shares[i], ShareState::Accepted, when),
                Spec::RejectAsked(i) | Spec::RevokeAsked(i) => {
                    let (by, reason, cause) = revoker(&plan.shares[i]);
                    let share = &mut shares[i];
                    share.revoked_by = Some(by);
                    share.revoke_reason = Some(reason.into());
                    revokes[i] = (Some(cause), Some(when));
                    move_share(share, ShareState::Revoking, when);
                }
                Spec::Reject(_) => {}
                Spec::Revoked(i) => move_share(&mut shares[i], ShareState::Revoked, when),
            }
        }
        let decided_by_call = call_id(rng);
        Life {
            filed_by_call: call_id(rng),
            decided_by_call,
            plan,
            request,
            shares,
            revokes,
            approvals,
        }
    }

    /// Event `spec` at `at`, as the broker records it.
    fn event(&self, at: i64, spec: Spec, rng: &mut StdRng) -> Event {
        let (plan, request) = (&self.plan, &self.request);
        let address = rng.random::<u32>();
        let call = call_id(rng);
        let worker = Initiator::service("worker");
        let requester = plan.requester.initiator(address);
        let consumer = |i: usize| Person::consumer(plan.shares[i].target).initiator(address);
        let (actor, targets, reason);
        let about_share = |initiator, i: usize, action, outcome, call| NewEvent {
            correlation_id: Some(call),
            ..NewEvent::about_share(initiator, &self.shares[i], action, outcome)
        };
        let event = match spec {
            Spec::Create => {
                targets = plan.shares.iter().map(|s| project_id(s.target)).collect::<Vec<_>>();
                NewEvent {
                    reason: Some(&request.reason),
                    correlation_id: Some(&self.filed_by_call),
                    // What validation learns later.
                    image_name: None,
                    image_owner: None,
                    details: json!({ "targets": targets, "expires_at": request.expires_at,
                                     "auto_accept": request.auto_accept, "subject": request.requested_by_subject }),
                    ..NewEvent::about_request(&requester, request, Action::Create)
                }
            }
            Spec::Validate => {
                let details = if plan.validated.1 {
                    let targets: Vec<Value> = self
                        .shares
                        .iter()
                        .map(|s| {
                            json!({ "target": s.target, "project_id": s.project_id, "project_name": s.project_name,
                                         "domain_id": s.project_domain })
                        })
                        .collect();
                    json!({ "image": image_facts(request), "targets": targets, "warnings": [],
                            "policy": { "decision": "approvers", "required_approvals": request.required_approvals,
                                        "rule": request.policy_rule } })
                } else {
                    json!({ "image": image_facts(request), "errors": request.validation_errors.0, "warnings": [] })
                };
                NewEvent {
                    outcome: if plan.validated.1 {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    },
                    correlation_id: Some(&self.filed_by_call),
                    details,
                    ..NewEvent::about_request(&worker, request, Action::Validate)
                }
            }
            Spec::Approve { by, last } => {
                actor = by.initiator(address);
                let given = if last { request.required_approvals } else { 1 };
                NewEvent {
                    outcome: if last { Outcome::Success } else { Outcome::Pending },
                    correlation_id: Some(&self.decided_by_call),
                    details: json!({ "approvals": given, "required": request.required_approvals,
                                     "rule": request.policy_rule, "subject": by.subject() }),
                    ..NewEvent::about_request(&actor, request, Action::Approve)
                }
            }
            Spec::Deny(by) => {
                actor = by.initiator(address);
                NewEvent {
                    reason: Some("the image is not approved for sharing outside its domain"),
                    correlation_id: Some(&self.decided_by_call),
                    details: json!({ "approvals": 0, "required": request.required_approvals, "rule": null,
                                     "subject": by.subject() }),
                    ..NewEvent::about_request(&actor, request, Action::Deny)
                }
            }
            Spec::Cancel => NewEvent {
                reason: Some("filed by mistake"),
                correlation_id: Some(&self.decided_by_call),
                ..NewEvent::about_request(&requester, request, Action::Cancel)
            },
            Spec::Expire => {
                actor = Initiator::service("expiry");
                NewEvent {
                    reason: Some("nobody decided in time"),
                    ..NewEvent::about_request(&actor, request, Action::Expire)
                }
            }
            Spec::Visibility => NewEvent {
                project_id: None,
                share_id: None,
                details: json!({ "visibility": { "from": "private", "to": "shared" } }),
                ..about_share(&worker, 0, Action::Visibility, Outcome::Success, &self.decided_by_call)
            },
            Spec::Protect => NewEvent {
                details: json!({ "protected": false }),
                ..about_share(&worker, 0, Action::Protect, Outcome::Success, &self.decided_by_call)
            },
            Spec::Grant(i) => NewEvent {
                // Learned from Glance by the grant.
                image_name: None,
                image_owner: None,
                ..about_share(&worker, i, Action::Grant, Outcome::Pending, &self.decided_by_call)
            },
            Spec::Allow(i) if plan.shares[i].failed => NewEvent {
                reason: self.shares[i].last_error.as_deref(),
                ..about_share(&worker, i, Action::Allow, Outcome::Failure, &self.decided_by_call)
            },
            Spec::Allow(i) => NewEvent {
                details: json!({ "requested_by": request.requested_by, "approved_by": request.decided_by }),
                ..about_share(&worker, i, Action::Allow, Outcome::Success, &self.decided_by_call)
            },
            Spec::Accept(i) => match plan.shares[i].accepted.map(|(_, how)| how) {
                Some(Answer::Here) => {
                    actor = consumer(i);
                    about_share(&actor, i, Action::Accept, Outcome::Success, &call)
                }
                Some(Answer::Auto) => NewEvent {
                    details: json!({ "auto_accept": true }),
                    ..about_share(&worker, i, Action::Accept, Outcome::Success, &self.decided_by_call)
                },
                _ => NewEvent {
                    details: json!({ "observed_in_glance": true }),
                    ..about_share(&worker, i, Action::Accept, Outcome::Success, &call)
                },
            },
            Spec::RejectAsked(i) | Spec::RevokeAsked(i) => {
                let by;
                (by, reason, _) = revoker(&plan.shares[i]);
                actor = match plan.shares[i].revoke.map(|(_, _, ender)| ender) {
                    Some(Ender::Person(person)) => person.initiator(address),
                    Some(Ender::Consumer) => consumer(i),
                    _ => Initiator::service(&by),
                };
                NewEvent {
                    reason: Some(reason),
                    ..about_share(&actor, i, Action::Revoke, Outcome::Pending, &call)
                }
            }
            Spec::Reject(i) => about_share(&worker, i, Action::Reject, Outcome::Success, &self.filed_by_call),
            Spec::Revoked(i) => {
                let (by, why, cause) = revoker(&plan.shares[i]);
                NewEvent {
                    reason: Some(why),
                    details: json!({ "revoked_by": by, "cause": cause.as_ref(), "dependents": [], "unchecked": [] }),
                    ..about_share(&worker, i, Action::Revoke, Outcome::Success, &self.filed_by_call)
                }
            }
        };
        dated(OBSERVERS[plan.n as usize % 2], event, at, address)
    }
}

/// `event` as the write path prepares it, dated `at`, with a UUIDv7 id of that time.
fn dated(observer: &str, event: NewEvent<'_>, at: i64, salt: u32) -> Event {
    let mut event = write::prepare(observer, event);
    event.occurred_at = time(at);
    event.id = id_at(at, salt);
    event
}

/// Moves a request to its decision, and its undecided shares with it.
fn decide(
    request: &mut ShareRequest,
    shares: &mut [Share],
    status: RequestStatus,
    by: Option<Person>,
    when: DateTime<Utc>,
) {
    request.status = status;
    request.decided_by = by.map(Person::name);
    request.decided_at = Some(when);
    request.version += 1;
    let state = match status {
        RequestStatus::Approved => ShareState::Queued,
        RequestStatus::Denied => ShareState::Denied,
        RequestStatus::Cancelled => ShareState::Cancelled,
        _ => ShareState::Expired,
    };
    for share in shares.iter_mut().filter(|s| s.state == ShareState::AwaitingApproval) {
        move_share(share, state, when);
    }
}

fn move_share(share: &mut Share, state: ShareState, when: DateTime<Utc>) {
    share.state = state;
    share.version += 1;
    share.updated_at = when;
}

/// Who ends a grant, why, and the cause recorded.
fn revoker(share: &SharePlan) -> (String, &'static str, RevokeCause) {
    match share.revoke.map(|(_, _, ender)| ender) {
        Some(Ender::Person(person)) => (
            person.name(),
            "the consumer project no longer needs it",
            RevokeCause::Requested,
        ),
        Some(Ender::Consumer) => (
            Person::consumer(share.target).name(),
            REJECTED_BY_CONSUMER,
            RevokeCause::Rejected,
        ),
        _ => ("expiry".into(), "the request expired", RevokeCause::Expiry),
    }
}

fn image_facts(request: &ShareRequest) -> Value {
    json!({ "name": request.image_name, "owner": request.image_owner, "owner_domain": request.image_owner_domain,
            "visibility": request.image_visibility })
}

/// A UUIDv7 of time `at` (microseconds), as `Uuid::now_v7()` gave the broker then; the
/// random part from the OS, with `salt` mixed in.
fn id_at(at: i64, salt: u32) -> Uuid {
    let stamp = Timestamp::from_unix(NoContext, (at / MICROS) as u64, ((at % MICROS) * 1000) as u32);
    let mut bytes = *Uuid::new_v7(stamp).as_bytes();
    for (byte, salt) in bytes[12..].iter_mut().zip(salt.to_be_bytes()) {
        *byte ^= salt;
    }
    Uuid::from_bytes(bytes)
}

const REASONS: [&str; 6] = [
    "CI runners need the golden image",
    "migration of the analytics cluster",
    "shared base image for the platform team",
    "disaster recovery rehearsal",
    "GPU workloads for the research group",
    "vendor appliance evaluation",
];

// ------------------------------------------------------------------------------- the rest

/// Events that record nothing about a request's life: refused attempts, drift found and
/// resolved, keys made, policy reloads.
fn other_event(world: &World, at: i64, rng: &mut StdRng) -> Event {
    let image = rng.random_range(0..world.images.len());
    let (image_id, owner) = world.images[image];
    let address = rng.random::<u32>();
    let worker = Initiator::service("worker");
    let caller = Person::Portal {
        portal: rng.random_range(1..25),
        p: rng.random_range(0..world.projects),
        k: 0,
    }
    .initiator(address);
    let call = call_id(rng);
    let finding = Uuid::from_u128(rng.random()).to_string();
    let member = project_id(rng.random_range(0..world.projects));
    let (admin, policy) = (Person::Admin.initiator(address), Initiator::service("policy-file"));
    let event = match rng.random_range(0..100) {
        0..60 => NewEvent {
            outcome: Outcome::Failure,
            image_id: Some(image_id),
            correlation_id: Some(&call),
            details: json!({ "reason": "forbidden",
                             "detail": format!("image {image_id} is not owned by a project you act for ({})", project_id(owner ^ 1)) }),
            ..NewEvent::attempt(&caller, Action::Create)
        },
        60..80 => NewEvent {
            image_id: Some(image_id),
            project_id: Some(&member),
            region: Some("RegionOne"),
            details: json!({ "kind": "unmanaged_member", "finding_id": finding, "member_status": "accepted" }),
            ..NewEvent::attempt(&worker, Action::DriftDetected)
        },
        80..97 => NewEvent {
            image_id: Some(image_id),
            project_id: Some(&member),
            region: Some("RegionOne"),
            details: json!({ "kind": "unmanaged_member", "finding_id": finding, "resolution": "not_seen" }),
            ..NewEvent::attempt(&worker, Action::DriftResolved)
        },
        97..99 => NewEvent {
            details: json!({ "key": { "id": finding, "name": format!("portal-{:02}", rng.random_range(1..25)), "role": "requester" } }),
            ..NewEvent::attempt(&admin, Action::CreateKey)
        },
        _ => NewEvent {
            details: json!({ "path": "/etc/glance-share-broker/policy.toml", "digest": format!("{:016x}", mix(at as u64)), "rules": 7 }),
            ..NewEvent::attempt(&policy, Action::Policy)
        },
    };
    dated(OBSERVERS[at as usize % 2], event, at, address)
}

// ------------------------------------------------------------------------------- generating

/// What one insert transaction writes: the rows of the requests filed, and events.
#[derive(Default)]
struct Batch {
    requests: Vec<ShareRequest>,
    shares: Vec<(Share, Option<RevokeCause>, Option<DateTime<Utc>>)>,
    approvals: Vec<(Uuid, Person, DateTime<Utc>)>,
    events: Vec<Event>,
}

#[derive(Debug, Default)]
struct Counts {
    events: u64,
    requests: u64,
    shares: u64,
    approvals: u64,
}

impl Counts {
    fn add(&mut self, batch: &Batch) {
        self.events += batch.events.len() as u64;
        self.requests += batch.requests.len() as u64;
        self.shares += batch.shares.len() as u64;
        self.approvals += batch.approvals.len() as u64;
    }

    fn merge(&mut self, other: Counts) {
        self.events += other.events;
        self.requests += other.requests;
        self.shares += other.shares;
        self.approvals += other.approvals;
    }
}

/// An event due at a time: the heap of what lives will record later.
struct Due {
    at: i64,
    order: u64,
    life: Arc<Life>,
    spec: Spec,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    // The earliest first: BinaryHeap pops the greatest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// Emits the history in time order, in batches.
struct Generator {
    rng: StdRng,
    /// When the other events happen, sorted, earliest last.
    others: Vec<i64>,
    due: BinaryHeap<Due>,
    order: u64,
    batch: Batch,
    first: i64,
    last: i64,
}

impl Generator {
    fn new(world: &World, lives: u64) -> Generator {
        let mut rng = StdRng::seed_from_u64(SEED + 2);
        let mut others: Vec<i64> = (0..world.size.events - lives)
            .map(|_| world.now - rng.random_range(0..SPAN))
            .collect();
        others.sort_unstable_by(|a, b| b.cmp(a));
        Generator {
            rng,
            others,
            due: BinaryHeap::new(),
            order: 0,
            batch: Batch::default(),
            first: i64::MAX,
            last: i64::MIN,
        }
    }

    /// Runs to the end; returns the times of the first and last events.
    fn run(mut self, world: &World, out: &mpsc::Sender<Batch>) -> (i64, i64) {
        let mut planner = Planner::new(world);
        while let Some(plan) = planner.next() {
            self.emit_until(plan.created, world, out);
            let life = Arc::new(Life::new(plan, world, &mut self.rng));
            self.batch.requests.push(life.request.clone());
            for (share, (cause, started)) in life.shares.iter().zip(&life.revokes) {
                self.batch.shares.push((share.clone(), *cause, *started));
            }
            for (by, at) in &life.approvals {
                self.batch.approvals.push((life.request.id, *by, *at));
            }
            for (at, spec) in life.plan.events(world.now) {
                self.order += 1;
                self.due.push(Due {
                    at,
                    order: self.order,
                    life: life.clone(),
                    spec,
                });
            }
        }
        self.emit_until(i64::MAX, world, out);
        let batch = std::mem::take(&mut self.batch);
        if !batch.events.is_empty() || !batch.requests.is_empty() {
            out.blocking_send(batch)
                .expect("the inserters run until the generator ends");
        }
        (self.first, self.last)
    }

    /// Emits every event due before `until`, in time order.
    fn emit_until(&mut self, until: i64, world: &World, out: &mpsc::Sender<Batch>) {
        loop {
            let life_next = self.due.peek().map_or(i64::MAX, |d| d.at);
            let other_next = self.others.last().copied().unwrap_or(i64::MAX);
            let at = life_next.min(other_next);
            if at >= until || at == i64::MAX {
                return;
            }
            let event = if other_next < life_next {
                self.others.pop();
                other_event(world, at, &mut self.rng)
            } else {
                let due = self.due.pop().expect("peeked");
                due.life.event(due.at, due.spec, &mut self.rng)
            };
            self.first = self.first.min(at);
            self.last = self.last.max(at);
            self.batch.events.push(event);
            if self.batch.events.len() == BATCH {
                out.blocking_send(std::mem::take(&mut self.batch))
                    .expect("the inserters run until the generator ends");
            }
        }
    }
}

// ------------------------------------------------------------------------------- inserting

/// Writes one batch in one transaction: the requests, their shares and approvals, then the
/// events through the write path's insert.
async fn insert(pool: &PgPool, batch: Batch) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !batch.requests.is_empty() {
        insert_requests(&mut tx, &batch.requests).await?;
        insert_shares(&mut tx, &batch.shares).await?;
    }
    if !batch.approvals.is_empty() {
        let ids: Vec<Uuid> = batch.approvals.iter().map(|a| a.0).collect();
        let names: Vec<String> = batch.approvals.iter().map(|a| a.1.name()).collect();
        let subjects: Vec<String> = batch.approvals.iter().map(|a| a.1.subject()).collect();
        let times: Vec<DateTime<Utc>> = batch.approvals.iter().map(|a| a.2).collect();
        sqlx::query(
            "insert into approvals (request_id, approver, approver_subject, approved_at)
             select * from unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&subjects)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
    }
    write::store(&mut tx, batch.events).await?;
    tx.commit().await
}

async fn insert_requests(tx: &mut sqlx::PgConnection, requests: &[ShareRequest]) -> Result<(), sqlx::Error> {
    let col = |f: fn(&ShareRequest) -> Option<String>| requests.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Uuid> = requests.iter().map(|r| r.id).collect();
    let images: Vec<Uuid> = requests.iter().map(|r| r.image_id).collect();
    let times = |f: fn(&ShareRequest) -> Option<DateTime<Utc>>| requests.iter().map(f).collect::<Vec<_>>();
    let versions: Vec<i64> = requests.iter().map(|r| r.version).collect();
    let required: Vec<i16> = requests.iter().map(|r| r.required_approvals).collect();
    let auto: Vec<bool> = requests.iter().map(|r| r.auto_accept).collect();
    let errors: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::to_value(&r.validation_errors.0).expect("errors serialize"))
        .collect();
    sqlx::query(
        "insert into share_requests (id, image_id, region, reason, requested_by, requested_by_subject, status,
             expires_at, auto_accept, decided_by, decided_at, version, created_at, updated_at, validation,
             validated_at, validation_errors, image_name, image_owner, image_owner_domain, image_visibility,
             on_behalf_of, required_approvals, policy_rule)
         select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::timestamptz[], $9::bool[], $10::text[], $11::timestamptz[], $12::int8[], $13::timestamptz[],
             $14::timestamptz[], $15::text[], $16::timestamptz[], $17::jsonb[], $18::text[], $19::text[],
             $20::text[], $21::text[], $22::text[], $23::int2[], $24::text[])",
    )
    .bind(&ids)
    .bind(&images)
    .bind(col(|r| Some(r.region.clone())))
    .bind(col(|r| Some(r.reason.clone())))
    .bind(col(|r| Some(r.requested_by.clone())))
    .bind(col(|r| Some(r.requested_by_subject.clone())))
    .bind(col(|r| Some(r.status.as_ref().to_owned())))
    .bind(times(|r| r.expires_at))
    .bind(&auto)
    .bind(col(|r| r.decided_by.clone()))
    .bind(times(|r| r.decided_at))
    .bind(&versions)
    .bind(times(|r| Some(r.created_at)))
    .bind(times(|r| Some(r.updated_at)))
    .bind(col(|r| Some(r.validation.as_ref().to_owned())))
    .bind(times(|r| r.validated_at))
    .bind(&errors)
    .bind(col(|r| r.image_name.clone()))
    .bind(col(|r| r.image_owner.clone()))
    .bind(col(|r| r.image_owner_domain.clone()))
    .bind(col(|r| r.image_visibility.clone()))
    .bind(col(|r| r.on_behalf_of.clone()))
    .bind(&required)
    .bind(col(|r| r.policy_rule.clone()))
    .execute(tx)
    .await?;
    Ok(())
}

type ShareRow = (Share, Option<RevokeCause>, Option<DateTime<Utc>>);

async fn insert_shares(tx: &mut sqlx::PgConnection, shares: &[ShareRow]) -> Result<(), sqlx::Error> {
    let col = |f: fn(&ShareRow) -> Option<String>| shares.iter().map(f).collect::<Vec<_>>();
    let times = |f: fn(&ShareRow) -> Option<DateTime<Utc>>| shares.iter().map(f).collect::<Vec<_>>();
    let uuids = |f: fn(&ShareRow) -> Uuid| shares.iter().map(f).collect::<Vec<_>>();
    let versions: Vec<i64> = shares.iter().map(|s| s.0.version).collect();
    sqlx::query(
        "insert into shares (id, request_id, image_id, region, target, project_id, project_name, project_domain,
             state, last_error, granted_at, revoked_by, revoke_reason, revoke_cause, revoke_started_at,
             version, created_at, updated_at, image_name, image_owner)
         select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::text[], $13::text[], $14::text[],
             $15::timestamptz[], $16::int8[], $17::timestamptz[], $18::timestamptz[], $19::text[], $20::text[])",
    )
    .bind(uuids(|s| s.0.id))
    .bind(uuids(|s| s.0.request_id))
    .bind(uuids(|s| s.0.image_id))
    .bind(col(|s| Some(s.0.region.clone())))
    .bind(col(|s| Some(s.0.target.clone())))
    .bind(col(|s| s.0.project_id.clone()))
    .bind(col(|s| s.0.project_name.clone()))
    .bind(col(|s| s.0.project_domain.clone()))
    .bind(col(|s| Some(s.0.state.as_ref().to_owned())))
    .bind(col(|s| s.0.last_error.clone()))
    .bind(times(|s| s.0.granted_at))
    .bind(col(|s| s.0.revoked_by.clone()))
    .bind(col(|s| s.0.revoke_reason.clone()))
    .bind(col(|s| s.1.map(|c| c.as_ref().to_owned())))
    .bind(times(|s| s.2))
    .bind(&versions)
    .bind(times(|s| Some(s.0.created_at)))
    .bind(times(|s| Some(s.0.updated_at)))
    .bind(col(|s| s.0.image_name.clone()))
    .bind(col(|s| s.0.image_owner.clone()))
    .execute(tx)
    .await?;
    Ok(())
}
