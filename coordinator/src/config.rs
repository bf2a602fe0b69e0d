//! The coordinator's configuration: every flag also reads a `VEPHYS_…` variable, and the
//! defaults run a single-machine setup (SQLite file, localhost ports, no tokens).

use clap::Parser;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "vephys-coordinator",
    version,
    about = "vephys coordinator: campaigns, fenced job leasing, Postgres/SQLite store"
)]
pub struct Config {
    /// Database: postgres://user:pass@host/db for production, sqlite://FILE embedded
    #[arg(
        long,
        env = "VEPHYS_DATABASE_URL",
        default_value = "sqlite://vephys.db"
    )]
    pub database_url: String,

    /// PEM file of the CA that signed the Postgres server's certificate (trusted besides the
    /// public roots). Turns certificate checks on: no sslmode in the URL means verify-full, and
    /// sslmode=require means verify-ca; disable/allow/prefer with a CA are refused. Without it,
    /// the URL's sslmode is used as is (require: encrypted, certificate not checked)
    #[arg(long, env = "VEPHYS_DATABASE_CA", value_name = "FILE")]
    pub database_ca: Option<PathBuf>,

    /// Most database connections this coordinator opens (SQLite uses at most 4)
    #[arg(long, env = "VEPHYS_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// gRPC address (users and workers)
    #[arg(long, env = "VEPHYS_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// HTTP address for /metrics (Prometheus), /healthz (liveness), /readyz (readiness) and the
    /// results browser (http://ADDRESS/)
    #[arg(long, env = "VEPHYS_HTTP", default_value = "127.0.0.1:7071")]
    pub http: SocketAddr,

    /// Bearer token workers must present; unset leaves the worker API open
    #[arg(long, env = "VEPHYS_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,

    /// Bearer token users (the vephys CLI) must present; unset leaves the user API open
    #[arg(long, env = "VEPHYS_USER_TOKEN", hide_env_values = true)]
    pub user_token: Option<String>,

    /// TLS certificate chain (PEM); with --tls-key, serves gRPC over TLS
    #[arg(long, env = "VEPHYS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM)
    #[arg(long, env = "VEPHYS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Seconds a lease lasts without a heartbeat (1 to 86400); after a start, and after the
    /// database was unreachable, nothing is reaped for this long either
    #[arg(long, env = "VEPHYS_LEASE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lease_seconds: u64,

    /// Seconds between passes of the expired-lease reaper (1 to 3600)
    #[arg(long, env = "VEPHYS_REAP_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub reap_seconds: u64,

    /// First retry delay in seconds after a failed attempt; doubles per attempt (with jitter)
    #[arg(long, env = "VEPHYS_RETRY_BASE_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub retry_base_seconds: u64,

    /// Longest retry delay in seconds
    #[arg(long, env = "VEPHYS_RETRY_MAX_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub retry_max_seconds: u64,

    /// Seconds between readiness checks of the database (one `SELECT 1`): while it fails,
    /// /readyz answers 503 and gRPC health reports the vephys services NOT_SERVING
    #[arg(long, env = "VEPHYS_READINESS_CHECK_SECONDS", default_value_t = 5.0, value_parser = positive_seconds)]
    pub readiness_check_seconds: f64,

    /// Seconds the readiness check waits for the database before counting it unreachable
    #[arg(long, env = "VEPHYS_READINESS_TIMEOUT_SECONDS", default_value_t = 2.0, value_parser = positive_seconds)]
    pub readiness_timeout_seconds: f64,

    /// Object store the workers write to (their --store: file:///dir or s3://bucket/prefix);
    /// the results browser serves images from it, each checked against its recorded sha256
    #[arg(long, env = "VEPHYS_STORE")]
    pub store: Option<String>,

    /// S3 endpoint for S3-compatible servers (Garage, MinIO, Ceph); credentials come from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION
    #[arg(long, env = "VEPHYS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Log filter (tracing env-filter syntax), e.g. info or vephys_coordinator=debug
    #[arg(long, env = "VEPHYS_LOG", default_value = "info")]
    pub log: String,

    /// Print the effective configuration (tokens redacted) as TOML and exit
    #[arg(long, env = "VEPHYS_DUMP_CONFIG")]
    #[serde(skip)]
    pub dump_config: bool,

    /// Apply the database migrations and exit without serving (e.g. a Helm pre-upgrade hook)
    #[arg(long, env = "VEPHYS_MIGRATE_ONLY")]
    #[serde(skip)]
    pub migrate_only: bool,

    /// Serve a --listen address other than loopback without both --user-token and
    /// --worker-token; without this flag such a start is refused, since anyone who can reach
    /// the address could then submit, cancel or complete jobs
    #[arg(long, env = "VEPHYS_INSECURE")]
    pub insecure: bool,

    /// Most jobs one campaign may expand into; bigger campaigns are refused at submission,
    /// naming the limit (split them by layers or filters)
    #[arg(long, env = "VEPHYS_MAX_CAMPAIGN_JOBS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_campaign_jobs: u64,

    /// Most watch and result streams served at once (each polls the database); more are
    /// refused with RESOURCE_EXHAUSTED until one closes
    #[arg(long, env = "VEPHYS_MAX_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_streams: u64,

    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for requests in flight and open streams
    /// before the coordinator exits anyway
    #[arg(long, env = "VEPHYS_SHUTDOWN_SECONDS", default_value_t = 20.0, value_parser = positive_seconds)]
    pub shutdown_seconds: f64,
}

impl Config {
    /// Refuses a --listen address off this machine while either api is open (no token),
    /// unless --insecure says so.
    pub fn check_exposure(&self) -> Result<(), String> {
        let open = self.user_token.is_none() || self.worker_token.is_none();
        if !open || self.listen.ip().is_loopback() || self.insecure {
            return Ok(());
        }
        Err(format!(
            "--listen {} is reachable from other machines, but {} unset, so anyone who can reach \
             it could use that api; set both --user-token and --worker-token (VEPHYS_USER_TOKEN, \
             VEPHYS_WORKER_TOKEN), listen on 127.0.0.1, or pass --insecure to serve it open anyway",
            self.listen,
            match (self.user_token.is_none(), self.worker_token.is_none()) {
                (true, true) => "--user-token and --worker-token are",
                (true, false) => "--user-token is",
                _ => "--worker-token is",
            }
        ))
    }

    /// The effective settings as TOML, secrets redacted.
    pub fn dump(&self) -> String {
        let mut shown = self.clone();
        let redact = |t: &mut Option<String>| {
            if t.is_some() {
                *t = Some("<redacted>".into());
            }
        };
        redact(&mut shown.worker_token);
        redact(&mut shown.user_token);
        shown.database_url = redact_url_password(&shown.database_url);
        toml::to_string(&shown).expect("config serializes to toml")
    }
}

/// A duration in seconds: positive and finite.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds in (0, 3600]")),
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:<redacted>@host/db`.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_suit_a_first_run() {
        let config = Config::parse_from(["vephys-coordinator"]);
        assert_eq!(config.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(config.database_url, "sqlite://vephys.db");
        assert_eq!(config.database_ca, None);
        assert_eq!(config.readiness_check_seconds, 5.0);
        assert_eq!(config.readiness_timeout_seconds, 2.0);
    }

    #[test]
    fn database_ca_and_readiness_read_their_variables() {
        let config = Config::try_parse_from([
            "vephys-coordinator",
            "--database-ca",
            "/etc/vephys/database-ca/ca.crt",
            "--readiness-check-seconds",
            "0.5",
        ])
        .unwrap();
        assert_eq!(
            config.database_ca.as_deref(),
            Some(std::path::Path::new("/etc/vephys/database-ca/ca.crt"))
        );
        assert_eq!(config.readiness_check_seconds, 0.5);
        let bad =
            Config::try_parse_from(["vephys-coordinator", "--readiness-timeout-seconds", "0"]);
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("is not a number of seconds"));
    }

    #[test]
    fn an_open_api_off_loopback_needs_insecure() {
        let open = Config::parse_from(["vephys-coordinator", "--listen", "0.0.0.0:7070"]);
        let err = open.check_exposure().unwrap_err();
        assert!(
            err.contains("--insecure") && err.contains("--user-token and --worker-token"),
            "{err}"
        );
        let half = Config::parse_from([
            "vephys-coordinator",
            "--listen",
            "10.0.0.5:7070",
            "--user-token",
            "u",
        ]);
        assert!(half
            .check_exposure()
            .unwrap_err()
            .contains("--worker-token is"));
        let insecure = Config::parse_from([
            "vephys-coordinator",
            "--listen",
            "0.0.0.0:7070",
            "--insecure",
        ]);
        insecure.check_exposure().unwrap();
        let closed = Config::parse_from([
            "vephys-coordinator",
            "--listen",
            "0.0.0.0:7070",
            "--user-token",
            "u",
            "--worker-token",
            "w",
        ]);
        closed.check_exposure().unwrap();
        Config::parse_from(["vephys-coordinator"])
            .check_exposure()
            .unwrap();
        let v6 = Config::parse_from(["vephys-coordinator", "--listen", "[::1]:7070"]);
        v6.check_exposure().unwrap();
    }

    #[test]
    fn flags_out_of_range_are_refused() {
        for args in [
            ["--lease-seconds", "0"],
            ["--max-campaign-jobs", "0"],
            ["--max-streams", "0"],
            ["--shutdown-seconds", "-1"],
        ] {
            let mut all = vec!["vephys-coordinator"];
            all.extend(args);
            assert!(Config::try_parse_from(all).is_err(), "{args:?}");
        }
    }

    #[test]
    fn dump_redacts_secrets() {
        let config = Config::parse_from([
            "vephys-coordinator",
            "--database-url",
            "postgres://vephys:hunter2@db/vephys",
            "--user-token",
            "secret-token",
        ]);
        let dump = config.dump();
        assert!(
            !dump.contains("hunter2") && !dump.contains("secret-token"),
            "{dump}"
        );
        assert!(dump.contains("listen = \"127.0.0.1:7070\""), "{dump}");
    }
}
