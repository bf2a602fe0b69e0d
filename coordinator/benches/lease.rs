//! Lease + complete throughput with no-op jobs against Postgres.
//!
//! `VEPHYS_TEST_DATABASE_URL=postgres://… cargo bench -p vephys-coordinator --bench lease`
//!
//! 1. Straight against the store (no gRPC), at batch sizes 1 and 32 with 1 and 4 workers, on
//!    the database `vephys_bench`.
//! 2. The load test (issue 13): the real `vephys-coordinator` binary on the database
//!    `vephys_bench_load`, a 100,000-job campaign submitted over gRPC, leased and completed by
//!    4 workers at batch 32 over gRPC (idempotent leases, a tuning point and an artifact per
//!    job). Prints jobs/s and the coordinator's peak memory (VmHWM).
//!
//! `VEPHYS_BENCH=load` runs only the load test, `VEPHYS_BENCH=store` only the first part.

use anyhow::{Context, Result};
use sqlx::Connection;
use std::sync::Arc;
use std::time::Instant;
use vephys_coordinator::store::{now_ms, Connect, Policy, Store};
use vephys_proto::v1::{
    JobCompletion, JobOutcome, Layer, Model, Provenance, RegisterWorkerRequest,
};

const BATCHES: [(u32, usize); 2] = [(1, 3_000), (32, 40_000)];
const WORKERS: [usize; 2] = [1, 4];

#[tokio::main]
async fn main() -> Result<()> {
    let base = std::env::var("VEPHYS_TEST_DATABASE_URL")
        .context("VEPHYS_TEST_DATABASE_URL is not set; run `bash scripts/postgres.sh` and export the url it prints")?;
    let which = std::env::var("VEPHYS_BENCH").unwrap_or_default();
    if which != "load" {
        store_throughput(&base).await?;
    }
    if which != "store" {
        load::run(&base).await?;
    }
    Ok(())
}

async fn store_throughput(base: &str) -> Result<()> {
    let url = recreate(base, "vephys_bench").await?;
    let policy = Policy::default();
    let store = Arc::new(
        Store::open(
            Connect {
                url: &url,
                max_connections: 16,
            },
            policy,
        )
        .await?,
    );
    store.register_model(&bench_model()).await?;

    println!("lease+complete throughput, no-op jobs, postgres");
    println!(
        "{:>6} {:>8} {:>8} {:>10} {:>10}",
        "batch", "workers", "jobs", "seconds", "jobs/s"
    );
    for (batch, jobs) in BATCHES {
        for workers in WORKERS {
            let spec = format!(
                "name = \"bench-{batch}-{workers}\"\nmodel = \"benchnet\"\nlayers = [\"huge\"]\nfilters = \"0..{jobs}\"\nprobes = [\"synthesis\"]\n"
            );
            store.submit_campaign(&spec).await?;
            let started = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..workers {
                let store = store.clone();
                tasks.push(tokio::spawn(async move { drain(&store, w, batch).await }));
            }
            let mut done = 0;
            for task in tasks {
                done += task.await??;
            }
            let seconds = started.elapsed().as_secs_f64();
            assert_eq!(done, jobs, "every job completed once");
            println!(
                "{batch:>6} {workers:>8} {done:>8} {seconds:>10.2} {:>10.0}",
                done as f64 / seconds
            );
        }
    }
    store.close().await;
    Ok(())
}

/// One worker's loop: lease a batch, complete it, until the queue is empty.
async fn drain(store: &Store, n: usize, batch: u32) -> Result<usize> {
    let registration = RegisterWorkerRequest {
        name: format!("bench-{n}"),
        device: "cpu".into(),
        ..Default::default()
    };
    let worker = store.register_worker(&registration).await?;
    let mut done = 0;
    loop {
        let jobs = store.lease(worker, batch, &[], now_ms()).await?.jobs;
        if jobs.is_empty() {
            return Ok(done);
        }
        let completions: Vec<JobCompletion> = jobs
            .iter()
            .map(|job| JobCompletion {
                job_id: job.job_id,
                token: job.token,
                result: Some(JobOutcome {
                    status: "ok".into(),
                    provenance: Some(Provenance {
                        params_json: job.params_json.clone(),
                        worker: "bench".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        done += store
            .complete(worker, &completions, now_ms())
            .await?
            .accepted
            .len();
    }
}

fn bench_model() -> Model {
    Model {
        name: "benchnet".into(),
        architecture: "bench".into(),
        input_size: 32,
        layers: vec![Layer {
            name: "huge".into(),
            aliases: vec![],
            channels: 1_000_000,
            height: 1,
            width: 1,
        }],
        ..Default::default()
    }
}

async fn recreate(base: &str, db: &str) -> Result<String> {
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .context("cannot connect to VEPHYS_TEST_DATABASE_URL")?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await?;
    let (server, _) = base
        .rsplit_once('/')
        .context("VEPHYS_TEST_DATABASE_URL has no database path")?;
    Ok(format!("{server}/{db}"))
}

/// The load test: the coordinator binary, gRPC all the way.
mod load {
    use super::{bench_model, recreate};
    use anyhow::{bail, Context, Result};
    use rand::Rng;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};
    use vephys_proto::v1::campaigns_client::CampaignsClient;
    use vephys_proto::v1::workers_client::WorkersClient;
    use vephys_proto::v1::{
        Artifact, CompleteRequest, GetCampaignRequest, JobCompletion, JobOutcome, LeaseRequest,
        Provenance, RegisterModelRequest, RegisterWorkerRequest, SubmitCampaignRequest,
        TuningPoint,
    };

    const JOBS: usize = 100_000;
    const WORKERS: usize = 4;
    const BATCH: u32 = 32;

    /// The coordinator process, killed when dropped.
    struct Coordinator(Child);

    impl Drop for Coordinator {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Coordinator {
        /// Peak resident memory so far (VmHWM), in MiB.
        fn peak_mib(&self) -> Result<f64> {
            let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
            let kb: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .context("no VmHWM in /proc/PID/status")?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()?;
            Ok(kb / 1024.0)
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub async fn run(base: &str) -> Result<()> {
        let url = recreate(base, "vephys_bench_load").await?;
        let port = free_port();
        let coordinator = Coordinator(
            Command::new(env!("CARGO_BIN_EXE_vephys-coordinator"))
                .args([
                    "--database-url",
                    &url,
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .args([
                    "--http",
                    &format!("127.0.0.1:{}", free_port()),
                    "--log",
                    "warn",
                ])
                .args(["--max-campaign-jobs", &JOBS.to_string()])
                .env_remove("VEPHYS_USER_TOKEN")
                .env_remove("VEPHYS_WORKER_TOKEN")
                .stdin(Stdio::null())
                .spawn()
                .context("cannot start vephys-coordinator")?,
        );
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut users = loop {
            match CampaignsClient::connect(endpoint.clone()).await {
                Ok(client) => break client,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => bail!("the coordinator did not come up: {e}"),
            }
        };
        users
            .register_model(RegisterModelRequest {
                model: Some(bench_model()),
            })
            .await?;
        let spec = format!(
            "name = \"load\"\nmodel = \"benchnet\"\nlayers = [\"huge\"]\nfilters = \"0..{JOBS}\"\nprobes = [\"synthesis\"]\n"
        );
        let submitted = Instant::now();
        let campaign = users
            .submit_campaign(SubmitCampaignRequest { spec_toml: spec })
            .await?
            .into_inner();
        let submit_s = submitted.elapsed().as_secs_f64();
        assert_eq!(campaign.jobs_created as usize, JOBS);

        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let endpoint = endpoint.clone();
            tasks.push(tokio::spawn(async move { drain(endpoint, w).await }));
        }
        let mut done = 0;
        for task in tasks {
            done += task.await??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let id = campaign.campaign.context("no campaign")?.id;
        let finished = users
            .get_campaign(GetCampaignRequest { campaign_id: id })
            .await?
            .into_inner();
        let totals = finished.totals.unwrap_or_default();
        assert_eq!(
            (done, totals.succeeded as usize),
            (JOBS, JOBS),
            "every job completed once"
        );
        println!();
        println!("load test: {JOBS} jobs, {WORKERS} workers at batch {BATCH}, gRPC, postgres");
        println!("  submit (expand {JOBS} jobs): {submit_s:.2} s");
        println!(
            "  lease + complete: {seconds:.2} s, {:.0} jobs/s",
            done as f64 / seconds
        );
        println!(
            "  coordinator peak memory (VmHWM): {:.1} MiB",
            coordinator.peak_mib()?
        );
        Ok(())
    }

    /// One worker over gRPC: lease a batch (with a request id, as the daemon does), complete it
    /// with a result, a tuning point and an artifact per job, until the queue is empty.
    async fn drain(endpoint: String, n: usize) -> Result<usize> {
        let mut api = WorkersClient::connect(endpoint).await?;
        let worker_id = api
            .register_worker(RegisterWorkerRequest {
                name: format!("load-{n}"),
                device: "cpu".into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .worker_id;
        let mut done = 0;
        loop {
            let request_id = format!("{:032x}", rand::thread_rng().gen::<u128>());
            let lease = api
                .lease(LeaseRequest {
                    worker_id,
                    max_jobs: BATCH,
                    loaded_models: vec![],
                    request_id,
                })
                .await?
                .into_inner();
            if lease.jobs.is_empty() {
                return Ok(done);
            }
            let jobs = lease
                .jobs
                .iter()
                .map(|job| JobCompletion {
                    job_id: job.job_id,
                    token: job.token,
                    result: Some(JobOutcome {
                        max_act: 1.0,
                        mean_act: 0.5,
                        status: "ok".into(),
                        derived_json: "{\"steps\": 1}".into(),
                        provenance: Some(Provenance {
                            weights_sha256: job.weights_sha256.clone(),
                            params_json: job.params_json.clone(),
                            worker: "load".into(),
                            ..Default::default()
                        }),
                    }),
                    points: vec![TuningPoint {
                        probe: job.probe.clone(),
                        x: 1.0,
                        label: None,
                        max_act: 1.0,
                        mean_act: 0.5,
                    }],
                    artifacts: vec![Artifact {
                        kind: "record".into(),
                        uri: format!(
                            "s3://bench/campaigns/{}/{}/attempt_{}/record.json",
                            job.campaign_id, job.job_id, job.token
                        ),
                        sha256: "0".repeat(64),
                        bytes: 100,
                    }],
                })
                .collect();
            let answer = api
                .complete(CompleteRequest { worker_id, jobs })
                .await?
                .into_inner();
            done += answer.accepted.len();
        }
    }
}
