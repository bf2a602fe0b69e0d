//! Prometheus metrics: job states (read from the store at scrape time, so they are right with
//! several coordinators), and this coordinator's leases, completions, failures and latencies.

use crate::store::Store;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Jobs handed out in leases.
    pub jobs_leased: IntCounter,
    /// Lease calls, by whether they returned jobs ("granted") or not ("empty").
    pub lease_requests: IntCounterVec,
    /// Jobs finished by a completion.
    pub jobs_completed: IntCounter,
    /// Failed attempts, by what happened next ("retrying" or "failed").
    pub jobs_failed: IntCounterVec,
    /// Leases returned to the queue by the reaper.
    pub leases_expired: IntCounter,
    /// Writes refused for carrying a stale fencing token.
    pub stale_writes: IntCounter,
    /// Time to serve a lease call.
    pub lease_latency: Histogram,
    jobs: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let jobs_leased = counter("vephys_jobs_leased_total", "jobs handed out in leases");
        let lease_requests = counter_vec(
            "vephys_lease_requests_total",
            "lease calls by outcome",
            "outcome",
        );
        let jobs_completed = counter(
            "vephys_jobs_completed_total",
            "jobs finished by a completion",
        );
        let jobs_failed = counter_vec(
            "vephys_job_failures_total",
            "failed attempts by what happened next",
            "outcome",
        );
        let leases_expired = counter(
            "vephys_leases_expired_total",
            "leases returned to the queue by the reaper",
        );
        let stale_writes = counter(
            "vephys_stale_writes_total",
            "writes refused for a stale fencing token",
        );
        let lease_latency = Histogram::with_opts(
            HistogramOpts::new("vephys_lease_latency_seconds", "time to serve a lease call")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(lease_latency.clone()))
            .expect("unique metric");
        let jobs = IntGaugeVec::new(
            Opts::new("vephys_jobs", "jobs by state, all campaigns"),
            &["state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(jobs.clone()))
            .expect("unique metric");
        Self {
            registry,
            jobs_leased,
            lease_requests,
            jobs_completed,
            jobs_failed,
            leases_expired,
            stale_writes,
            lease_latency,
            jobs,
        }
    }

    /// The text exposition format, with job states fresh from the store.
    pub async fn render(&self, store: &Store) -> String {
        match store.jobs_by_state().await {
            Ok(states) => {
                self.jobs.reset();
                for (state, n) in states {
                    self.jobs.with_label_values(&[state.as_str()]).set(n);
                }
            }
            Err(error) => tracing::warn!(%error, "could not count jobs for metrics"),
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is utf-8")
    }
}
