//! Following the primary of a Postgres that fails over (Patroni, CloudNativePG, streaming
//! replication by hand). `DATABASE_URL` may name several hosts the libpq way,
//! `postgres://broker@db1:5432,db2:5432/broker?target_session_attrs=read-write`, which sqlx
//! does not read: [`Hosts`] splits it into one set of options per host, [`Hosts::primary`]
//! finds the one that takes writes, and [`Follower`] keeps the pool on it. When the primary
//! goes (connections lost, `57P01`, a demoted server answering `25006`), the pool's next
//! connections go to the host that was promoted; connections opened before the move are
//! dropped when next acquired ([`Moved`]). While no host takes writes the pool's
//! connections fail and the API answers 503. Imports nothing of the broker's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};

/// How often the pool's host is checked, when there are several.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one host may take to answer a check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The hosts of `DATABASE_URL`, in the order given.
#[derive(Debug, Clone)]
pub struct Hosts {
    each: Vec<PgConnectOptions>,
    /// `target_session_attrs=read-write` (or [`Hosts::for_writes`]): only a host out of
    /// recovery will do; else the first that answers.
    read_write: bool,
}

impl Hosts {
    /// Splits a URL with one or more `host:port` pairs. The error never repeats the URL (it
    /// may hold a password).
    pub fn parse(url: &str) -> Result<Hosts, &'static str> {
        const INVALID: &str =
            "DATABASE_URL is not a valid Postgres URL (postgres://user:password@host:port[,host:port...]/database)";
        let (scheme, rest) = url.split_once("://").ok_or(INVALID)?;
        let (authority, tail) = rest.find(['/', '?']).map_or((rest, ""), |at| rest.split_at(at));
        let (user, hosts) = authority
            .rsplit_once('@')
            .map_or(("", authority), |(user, hosts)| (user, hosts));
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let mut read_write = false;
        let query: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter(|pair| match pair.split_once('=') {
                Some(("target_session_attrs", value)) => {
                    read_write = matches!(value, "read-write" | "primary");
                    false
                }
                _ => true,
            })
            .collect();
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        let at = if user.is_empty() { "" } else { "@" };
        let each = hosts
            .split(',')
            .map(|host| format!("{scheme}://{user}{at}{host}{path}{query}").parse::<PgConnectOptions>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| INVALID)?;
        if each.is_empty() || hosts.split(',').any(str::is_empty) {
            return Err(INVALID);
        }
        Ok(Hosts { read_write, each })
    }

    /// The hosts of the broker's own database, which it writes to: only a primary will do,
    /// whatever `target_session_attrs` says.
    pub fn for_writes(self) -> Self {
        Hosts {
            read_write: true,
            ..self
        }
    }

    /// Whether there is more than one host to choose from.
    pub fn several(&self) -> bool {
        self.each.len() > 1
    }

    /// The options of host `index`.
    pub fn options(&self, index: usize) -> PgConnectOptions {
        self.each[index].clone()
    }

    /// The first host, in the order given, that answers and (when writes are needed) is
    /// not in recovery; none while there is no such host.
    pub async fn primary(&self) -> Option<usize> {
        for (index, options) in self.each.iter().enumerate() {
            match tokio::time::timeout(PROBE_TIMEOUT, takes_writes(options)).await {
                Ok(Ok(writable)) if writable || !self.read_write => return Some(index),
                Ok(Ok(_)) => tracing::debug!(db.host = options.get_host(), "a standby: not the primary"),
                Ok(Err(e)) => tracing::debug!(db.host = options.get_host(), error = %e, "host does not answer"),
                Err(_) => tracing::debug!(db.host = options.get_host(), "host did not answer in time"),
            }
        }
        None
    }
}

async fn takes_writes(options: &PgConnectOptions) -> Result<bool, sqlx::Error> {
    let mut conn = options.connect().await?;
    let in_recovery: bool = sqlx::query_scalar("select pg_is_in_recovery()")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(!in_recovery)
}

/// When the pool last moved to another host. A connection older than the move was opened
/// to the old host, and is dropped when next acquired.
#[derive(Debug, Clone, Default)]
pub struct Moved(Arc<Mutex<Option<Instant>>>);

impl Moved {
    fn now(&self) {
        *self.0.lock().expect("not poisoned") = Some(Instant::now());
    }

    /// Whether a connection of age `age` was opened before the last move.
    pub fn predates(&self, age: Duration) -> bool {
        self.0
            .lock()
            .expect("not poisoned")
            .is_some_and(|moved| age > moved.elapsed())
    }
}

/// Whether the pool's host still answers and, when writes are needed, takes them.
async fn still_suits(pool: &PgPool, read_write: bool) -> bool {
    let check = async {
        let mut conn = pool.acquire().await?;
        let in_recovery: bool = sqlx::query_scalar("select pg_is_in_recovery()")
            .fetch_one(&mut *conn)
            .await?;
        if in_recovery && read_write {
            // A demoted server: never hand this connection out again.
            conn.detach().close().await?;
            return Ok(false);
        }
        Ok::<_, sqlx::Error>(true)
    };
    matches!(tokio::time::timeout(PROBE_TIMEOUT, check).await, Ok(Ok(true)))
}

/// Keeps a pool on the primary among its hosts: [`Follower::check`] runs every
/// [`CHECK_EVERY`] (a background task of the process).
#[derive(Debug, Clone)]
pub struct Follower {
    pool: PgPool,
    hosts: Arc<Hosts>,
    current: Arc<AtomicUsize>,
    moved: Moved,
}

impl Follower {
    /// Follows for `pool`, which is on host `current` of `hosts` and drops connections
    /// older than `moved`.
    pub fn new(pool: PgPool, hosts: Hosts, current: usize, moved: Moved) -> Self {
        Follower {
            pool,
            hosts: Arc::new(hosts),
            current: Arc::new(AtomicUsize::new(current)),
            moved,
        }
    }

    /// A pool whose host no longer takes writes moves to the first host that does; while
    /// none does, it stays (its connections fail, and callers answer 503).
    pub async fn check(&self) -> anyhow::Result<()> {
        if still_suits(&self.pool, self.hosts.read_write).await {
            return Ok(());
        }
        let Some(primary) = self.hosts.primary().await else {
            metrics::gauge!("gsb_db_primary_available").set(0.0);
            anyhow::bail!("no Postgres host takes writes: waiting for a primary");
        };
        metrics::gauge!("gsb_db_primary_available").set(1.0);
        let current = self.current.swap(primary, Ordering::SeqCst);
        if primary != current {
            tracing::warn!(
                db.from = self.hosts.each[current].get_host(),
                db.to = self.hosts.each[primary].get_host(),
                "the primary moved: the pool follows it"
            );
            metrics::counter!("gsb_db_failovers_total").increment(1);
            self.pool.set_connect_options(self.hosts.options(primary));
            self.moved.now();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_host_url_becomes_one_set_of_options_per_host() {
        let hosts = Hosts::parse(
            "postgres://broker:s3cret@db1:5433,db2/broker?target_session_attrs=read-write&sslmode=disable",
        )
        .unwrap();
        assert!(hosts.several());
        assert!(hosts.read_write);
        assert_eq!(hosts.options(0).get_host(), "db1");
        assert_eq!(hosts.options(0).get_port(), 5433);
        assert_eq!(hosts.options(1).get_host(), "db2");
        assert_eq!(hosts.options(1).get_port(), 5432);
        assert_eq!(hosts.options(1).get_username(), "broker");
        assert_eq!(hosts.options(1).get_database(), Some("broker"));
    }

    #[test]
    fn a_single_host_url_is_read_as_sqlx_reads_it() {
        let hosts = Hosts::parse("postgres://postgres@127.0.0.1:5432/postgres").unwrap();
        assert!(!hosts.several());
        assert!(!hosts.read_write);
        assert_eq!(hosts.options(0).get_port(), 5432);
        let any = Hosts::parse("postgresql://u@h/db?target_session_attrs=any").unwrap();
        assert!(!any.read_write);
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        for url in [
            "db1:5432/broker",
            "postgres://u:hunter2@db1:5432,,db2/broker",
            "postgres://u:hunter2@db1:notaport/broker",
        ] {
            let error = Hosts::parse(url).unwrap_err();
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn a_connection_opened_before_the_move_predates_it() {
        let moved = Moved::default();
        assert!(!moved.predates(Duration::from_secs(3600)));
        moved.now();
        std::thread::sleep(Duration::from_millis(20));
        assert!(moved.predates(Duration::from_secs(3600)));
        assert!(!moved.predates(Duration::from_millis(1)));
    }
}
