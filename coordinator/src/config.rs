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

    /// Most database connections this coordinator opens (SQLite uses at most 4)
    #[arg(long, env = "VEPHYS_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// gRPC address (users and workers)
    #[arg(long, env = "VEPHYS_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// HTTP address for /metrics (Prometheus) and /healthz
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

    /// Seconds a lease lasts without a heartbeat
    #[arg(long, env = "VEPHYS_LEASE_SECONDS", default_value_t = 60)]
    pub lease_seconds: u64,

    /// Seconds between passes of the expired-lease reaper
    #[arg(long, env = "VEPHYS_REAP_SECONDS", default_value_t = 5)]
    pub reap_seconds: u64,

    /// First retry delay in seconds after a failed attempt; doubles per attempt (with jitter)
    #[arg(long, env = "VEPHYS_RETRY_BASE_SECONDS", default_value_t = 5)]
    pub retry_base_seconds: u64,

    /// Longest retry delay in seconds
    #[arg(long, env = "VEPHYS_RETRY_MAX_SECONDS", default_value_t = 600)]
    pub retry_max_seconds: u64,

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
}

impl Config {
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
