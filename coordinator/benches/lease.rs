//! Lease + complete throughput with no-op jobs against Postgres, at batch sizes 1 and 32.
//!
//! `VEPHYS_TEST_DATABASE_URL=postgres://… cargo bench -p vephys-coordinator --bench lease`
//! Uses (and recreates) the database `vephys_bench` on that server. Prints jobs/s.

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
    let url = recreate(&base, "vephys_bench").await?;
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
