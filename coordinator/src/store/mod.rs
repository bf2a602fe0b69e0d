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

pub mod browse;
pub mod campaigns;
pub mod complete;
pub mod expand;
pub mod fail;
pub mod heartbeat;
pub mod jobs;
pub mod lease;
pub mod limits;
pub mod models;
pub mod reap;
pub mod results;
pub mod workers;

use crate::error::{Error, Result};
pub use limits::Limits;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Transaction};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
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
    /// Bounds on what a request may carry; [`Limits::default`] unless set with
    /// [`Store::with_limits`].
    pub limits: Limits,
    clock: Clock,
    /// What never changes once written, kept to spare the hot paths (lease, complete) a round
    /// trip each: registered workers and their models, and each campaign's pinned model entry.
    pub(crate) cache: Cache,
}

/// See [`Store::cache`]. Workers are never deleted and a campaign's pin never changes, so
/// nothing here goes stale; the campaign entries are dropped wholesale when there are many.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// Registered workers and the models they registered as loaded.
    pub workers: std::sync::Mutex<std::collections::HashMap<i64, Vec<String>>>,
    /// A campaign's model entry as pinned at submission (no layers).
    pub pins: std::sync::Mutex<std::collections::HashMap<i64, vephys_proto::v1::Model>>,
}

impl Cache {
    /// Most campaign entries kept (a manifest can be megabytes).
    pub const MAX_PINS: usize = 64;
}

/// The database's clock, as this process reads it: lease times are the database's, so
/// coordinators whose own clocks disagree still agree on when a lease expires. The offset to
/// the local clock is measured at open and again by every [`Store::ping`] (the readiness check,
/// every few seconds), so reading the time costs no round trip.
#[derive(Debug, Default)]
struct Clock {
    /// Database time minus local time, in ms.
    offset_ms: AtomicI64,
    /// Added to the local clock: simulates a machine whose clock is off (tests only).
    skew_ms: AtomicI64,
}

pub(crate) type Tx = Transaction<'static, sqlx::Any>;

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct Connect<'a> {
    pub url: &'a str,
    pub max_connections: u32,
}

/// TLS for the Postgres connection beyond what its URL says (`sslmode`, `sslrootcert`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DatabaseTls<'a> {
    /// PEM bundle of the CA(s) that signed the server's certificate (`--database-ca`), trusted
    /// besides the public roots.
    pub ca: Option<&'a Path>,
}

impl Store {
    /// Opens the database named by `url` (`postgres://…` or `sqlite://path`) and migrates it.
    pub async fn open(connect: Connect<'_>, policy: Policy) -> Result<Store> {
        Self::open_with_tls(connect, DatabaseTls::default(), policy).await
    }

    /// [`Store::open`] with a CA for the database's TLS certificate: see [`postgres_tls_url`]
    /// for how it combines with the URL's `sslmode`.
    pub async fn open_with_tls(
        connect: Connect<'_>,
        tls: DatabaseTls<'_>,
        policy: Policy,
    ) -> Result<Store> {
        sqlx::any::install_default_drivers();
        install_crypto_provider();
        let url = connect.url;
        let (dialect, url, max_connections) =
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                let url = postgres_tls_url(url, tls.ca)?;
                (Dialect::Postgres, url, connect.max_connections)
            } else if tls.ca.is_some() {
                return Err(Error::invalid(
                "configuration",
                "database-ca",
                "a CA applies to a postgres:// database only; leave --database-ca out for SQLite",
            ));
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
            limits: Limits::default(),
            clock: Clock::default(),
            cache: Cache::default(),
        };
        store.migrate().await?;
        store.sync_clock().await?;
        Ok(store)
    }

    /// The store with other [`Limits`] (the coordinator's flags).
    pub fn with_limits(mut self, limits: Limits) -> Store {
        self.limits = limits;
        self
    }

    /// Now on the database's clock, in ms since the Unix epoch: what leases are measured on.
    pub fn now_ms(&self) -> i64 {
        self.local_ms() + self.clock.offset_ms.load(Ordering::Relaxed)
    }

    fn local_ms(&self) -> i64 {
        now_ms() + self.clock.skew_ms.load(Ordering::Relaxed)
    }

    /// Makes this process's local clock read `skew_ms` off, as on a machine whose clock is
    /// wrong; [`Store::now_ms`] stays on the database's. For tests of clock skew.
    pub fn skew_local_clock(&self, skew_ms: i64) {
        self.clock.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// Reads the database's clock and keeps its offset to the local one (half the round trip
    /// is the error).
    async fn sync_clock(&self) -> Result<()> {
        let sql = match self.dialect {
            Dialect::Postgres => {
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
            }
            Dialect::Sqlite => {
                "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
            }
        };
        let before = self.local_ms();
        let database: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await?;
        let after = self.local_ms();
        self.clock
            .offset_ms
            .store(database - (before + after) / 2, Ordering::Relaxed);
        Ok(())
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

    /// One cheap round trip within `timeout` (it reads the database's clock, see
    /// [`Store::now_ms`]): what readiness is made of. The error says why the database did not
    /// answer.
    pub async fn ping(&self, timeout: Duration) -> std::result::Result<(), String> {
        match tokio::time::timeout(timeout, self.sync_clock()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
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

/// Makes ring rustls's process-wide crypto provider, unless one is set already. rustls takes its
/// provider from crate features, and this build has two (ring for tonic and sqlx, aws-lc-rs for
/// the S3 client), so whatever asks for the default without naming one panics: sqlx's
/// `verify-ca` verifier does, and so does tonic's TLS server.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The `sslmode` values Postgres (libpq) defines, weakest first.
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// The Postgres URL to connect with, given the URL and a CA (`--database-ca`):
///
/// - `sslmode` in the URL (or `PGSSLMODE`) is honoured: `require` encrypts without checking the
///   certificate, `verify-ca` checks that it chains to a trusted CA, `verify-full` also that it
///   names the host; an unknown mode is refused here, naming the valid ones.
/// - With a CA (the flag, or `sslrootcert` in the URL) the certificate is checked: no `sslmode`
///   means `verify-full`, and `require` means `verify-ca` (as libpq does when a root certificate
///   is present). `disable`, `allow` and `prefer` with a CA are refused: they may connect in
///   clear text, which a CA is meant to rule out.
/// - The CA file must be readable and hold a PEM certificate; it is read again by every new
///   connection, so a renewed bundle is picked up without a restart.
///
/// Verification trusts the CA besides the public (webpki) roots. sqlx 0.8.6 on current rustls
/// checks the host name under `verify-ca` as well (launchbadge/sqlx#3793, fixed in sqlx 0.9):
/// stricter than libpq, never weaker.
pub fn postgres_tls_url(url: &str, ca: Option<&Path>) -> Result<String> {
    let bad = |field: &str, reason: String| Error::invalid("configuration", field, reason);
    let mut parsed = url::Url::parse(url).map_err(|e| {
        bad(
            "database-url",
            format!("is not a valid postgres:// url ({e}); percent-encode special characters in the password"),
        )
    })?;
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let is_mode = |k: &str| matches!(k, "sslmode" | "ssl-mode");
    let is_root = |k: &str| matches!(k, "sslrootcert" | "ssl-root-cert" | "ssl-ca");
    let mode = pairs
        .iter()
        .rev()
        .find(|(k, _)| is_mode(k))
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("PGSSLMODE").ok().filter(|v| !v.is_empty()));
    if let Some(mode) = &mode {
        if !SSL_MODES.contains(&mode.as_str()) {
            return Err(bad(
                "database-url",
                format!("sslmode `{mode}` is not one of {}", SSL_MODES.join(", ")),
            ));
        }
    }
    let url_root = pairs
        .iter()
        .rev()
        .find(|(k, _)| is_root(k))
        .map(|(_, v)| v.clone());
    let root = match (ca, &url_root) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "database-ca",
                "the database url names a CA too (sslrootcert); give it one way".into(),
            ))
        }
        (Some(path), None) => {
            check_ca_file(path)?;
            Some(path.display().to_string())
        }
        (None, root) => root.clone(),
    };
    let mode = match (mode.as_deref(), root.is_some()) {
        (None, true) => Some("verify-full".to_string()),
        (Some("require"), true) => Some("verify-ca".to_string()),
        (Some(weak @ ("disable" | "allow" | "prefer")), true) => {
            return Err(bad(
                "database-url",
                format!(
                    "sslmode={weak} may connect without TLS, yet a CA is given; use sslmode=verify-full (or verify-ca), or leave the CA out"
                ),
            ))
        }
        (mode, _) => mode.map(str::to_string),
    };
    let kept: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| !is_mode(k) && !is_root(k))
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &kept {
            query.append_pair(k, v);
        }
        if let Some(mode) = &mode {
            query.append_pair("sslmode", mode);
        }
        if let Some(root) = &root {
            query.append_pair("sslrootcert", root);
        }
    }
    if parsed.query() == Some("") {
        parsed.set_query(None);
    }
    Ok(parsed.to_string())
}

/// A CA file that cannot be used stops the start with a message naming it.
fn check_ca_file(path: &Path) -> Result<()> {
    let bad = |reason: String| Error::invalid("configuration", "database-ca", reason);
    let pem =
        std::fs::read(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(())
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

impl Dialect {
    /// Placeholder `$n` for a JSON document: jsonb on Postgres (sqlx sends text, which Postgres
    /// does not turn into jsonb by itself), TEXT on SQLite.
    pub(crate) fn json_param(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}::jsonb"),
            Dialect::Sqlite => format!("${n}"),
        }
    }

    /// A JSON column read as text (`col::text` on Postgres, where it is jsonb).
    pub(crate) fn json_text(self, column: &str) -> String {
        match self {
            Dialect::Postgres => format!("{column}::text"),
            Dialect::Sqlite => column.to_string(),
        }
    }
}

/// `value_rows` whose columns at `json` (0-based) hold JSON documents (`Dialect::json_param`).
pub(crate) fn value_rows_json(
    dialect: Dialect,
    first: usize,
    rows: usize,
    cols: usize,
    json: &[usize],
) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let cells: Vec<String> = (0..cols)
                .map(|c| {
                    let n = first + r * cols + c;
                    match json.contains(&c) {
                        true => dialect.json_param(n),
                        false => format!("${n}"),
                    }
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    tuples.join(", ")
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
    fn sslmode_is_kept_and_checked() {
        let url = "postgres://u:p%40ss@db:5432/v?sslmode=require&application_name=x";
        let out = postgres_tls_url(url, None).unwrap();
        assert_eq!(
            out,
            "postgres://u:p%40ss@db:5432/v?application_name=x&sslmode=require"
        );
        let plain = postgres_tls_url("postgres://u@db/v", None).unwrap();
        assert_eq!(plain, "postgres://u@db/v");
        let err = postgres_tls_url("postgres://u@db/v?sslmode=verify", None).unwrap_err();
        assert!(err.to_string().contains("verify-full"), "{err}");
    }

    #[test]
    fn a_ca_turns_verification_on() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca bundle.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let root = url::form_urlencoded::byte_serialize(ca.display().to_string().as_bytes())
            .collect::<String>();
        let out = postgres_tls_url("postgres://u@db/v", Some(&ca)).unwrap();
        assert_eq!(
            out,
            format!("postgres://u@db/v?sslmode=verify-full&sslrootcert={root}")
        );
        let out = postgres_tls_url("postgres://u@db/v?sslmode=require", Some(&ca)).unwrap();
        assert!(out.contains("sslmode=verify-ca"), "{out}");
        let out = postgres_tls_url("postgres://u@db/v?sslmode=verify-ca", Some(&ca)).unwrap();
        assert!(out.contains("sslmode=verify-ca"), "{out}");
        for weak in ["disable", "allow", "prefer"] {
            let url = format!("postgres://u@db/v?sslmode={weak}");
            let err = postgres_tls_url(&url, Some(&ca)).unwrap_err().to_string();
            assert!(err.contains(&format!("sslmode={weak}")), "{err}");
        }
        // sslrootcert in the url works like the flag; both at once is refused.
        let url = format!("postgres://u@db/v?sslrootcert={root}");
        assert!(postgres_tls_url(&url, None)
            .unwrap()
            .contains("sslmode=verify-full"));
        assert!(postgres_tls_url(&url, Some(&ca)).is_err());
        let missing = dir.path().join("missing.pem");
        let err = postgres_tls_url("postgres://u@db/v", Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read") && err.contains("database-ca"),
            "{err}"
        );
        std::fs::write(&missing, "not a certificate").unwrap();
        let err = postgres_tls_url("postgres://u@db/v", Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
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
