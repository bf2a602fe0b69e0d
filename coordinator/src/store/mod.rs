//! The store: Postgres in production, SQLite embedded, chosen by the database URL.
//!
//! The job lifecycle reads as files: a campaign is submitted ([`campaigns`]) and expanded into
//! jobs ([`expand`]); jobs are leased ([`lease`]), kept alive ([`heartbeat`]), completed
//! ([`complete`]) or failed ([`fail`]); expired leases are reaped ([`reap`]). [`models`] is the
//! registry, [`workers`] the worker roster, [`results`] the read side.
//!
//! One code path serves both databases through sqlx's `Any` driver: `$n` parameters work in
//! both dialects and most SQL is shared; where the dialects differ the two statements sit side
//! by side, chosen by [`Dialect`]. Times are milliseconds since the Unix epoch, passed in by
//! the caller, so tests can move the clock instead of sleeping.

pub mod campaigns;
pub mod complete;
pub mod expand;
pub mod fail;
pub mod heartbeat;
pub mod lease;
pub mod models;
pub mod reap;
pub mod results;
pub mod workers;

use crate::error::{Error, Result};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Transaction};
use std::time::Duration;

/// Which SQL dialect a statement is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

/// Tunables of the job lifecycle.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How long a lease lasts without a heartbeat.
    pub lease_ms: i64,
    /// First retry delay; doubles with every attempt.
    pub retry_base_ms: i64,
    /// Ceiling of the retry delay.
    pub retry_max_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            lease_ms: 60_000,
            retry_base_ms: 5_000,
            retry_max_ms: 600_000,
        }
    }
}

impl Policy {
    /// Delay before the next attempt after attempt `attempt` failed: exponential backoff with
    /// "equal jitter" (a random point in the upper half of the window), so jobs that failed
    /// together do not come back together yet each waits at least half its backoff.
    pub fn retry_delay_ms(&self, attempt: i64) -> i64 {
        let exponent = attempt.clamp(1, 30) - 1;
        let ceiling = self
            .retry_base_ms
            .saturating_mul(1i64 << exponent)
            .min(self.retry_max_ms)
            .max(0);
        if ceiling == 0 {
            return 0;
        }
        use rand::Rng;
        rand::thread_rng().gen_range(ceiling / 2..=ceiling)
    }
}

pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) dialect: Dialect,
    pub policy: Policy,
}

pub(crate) type Tx = Transaction<'static, sqlx::Any>;

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct Connect<'a> {
    pub url: &'a str,
    pub max_connections: u32,
}

impl Store {
    /// Opens the database named by `url` (`postgres://…` or `sqlite://path`) and migrates it.
    pub async fn open(connect: Connect<'_>, policy: Policy) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let url = connect.url;
        let (dialect, url, max_connections) =
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                (Dialect::Postgres, url.to_string(), connect.max_connections)
            } else if let Some(path) = url
                .strip_prefix("sqlite://")
                .or(url.strip_prefix("sqlite:"))
            {
                // mode=rwc creates the file on first start, which is what a first-time user wants.
                let url = if path.contains('?') {
                    url.to_string()
                } else {
                    format!("sqlite://{path}?mode=rwc")
                };
                // One writer at a time is all SQLite allows; a few connections let reads overlap.
                (Dialect::Sqlite, url, connect.max_connections.clamp(1, 4))
            } else {
                return Err(Error::invalid(
                    "configuration",
                    "database-url",
                    format!(
                    "`{url}` is not a postgres:// or sqlite:// url; use e.g. sqlite://vephys.db"
                ),
                ));
            };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers (watch, results) run while one writer commits;
                        // the busy timeout makes writers queue for the lock instead of failing.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 30000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let store = Store {
            pool,
            dialect,
            policy,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.dialect {
            Dialect::Postgres => {
                sqlx::migrate!("../migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
            Dialect::Sqlite => {
                sqlx::migrate!("../migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// The connection pool, for tools and tests that query the views or poke at rows.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await
    }

    /// Opens a write transaction. SQLite takes the database write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads and then writes can fail with
    /// SQLITE_BUSY when another writer got in between, and the busy timeout does not cover
    /// that upgrade. Postgres needs nothing special: row locks do the work.
    pub(crate) async fn begin_write(&self) -> Result<Tx> {
        let tx = match self.dialect {
            Dialect::Postgres => self.pool.begin().await?,
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        };
        Ok(tx)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis() as i64
}

/// Rows per multi-row statement: well under SQLite's 32,766 and Postgres' 65,535 bind
/// parameters for the widest row we insert.
pub(crate) const ROWS_PER_STATEMENT: usize = 1000;

// Statements whose length depends on the data (IN lists, multi-row VALUES) are built as
// text with numbered `$n` placeholders, which both dialects accept. (sqlx's QueryBuilder would
// emit `?` under the Any driver, which Postgres rejects.)

/// `$first, $first+1, …`: `count` placeholders for an `IN (…)` list.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    debug_assert!(count > 0, "an empty IN list is a syntax error");
    let list: Vec<String> = (first..first + count).map(|i| format!("${i}")).collect();
    list.join(", ")
}

/// `($first, …), (…)`: `rows` tuples of `cols` placeholders for a multi-row `VALUES`.
pub(crate) fn value_rows(first: usize, rows: usize, cols: usize) -> String {
    debug_assert!(
        rows > 0 && cols > 0,
        "VALUES needs at least one row and one column"
    );
    let tuples: Vec<String> = (0..rows)
        .map(|r| format!("({})", placeholders(first + r * cols, cols)))
        .collect();
    tuples.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(value_rows(1, 2, 2), "($1, $2), ($3, $4)");
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let policy = Policy {
            lease_ms: 1,
            retry_base_ms: 100,
            retry_max_ms: 1000,
        };
        for _ in 0..100 {
            assert!((50..=100).contains(&policy.retry_delay_ms(1)));
            assert!((200..=400).contains(&policy.retry_delay_ms(3)));
            assert!((500..=1000).contains(&policy.retry_delay_ms(30)));
        }
    }
}
