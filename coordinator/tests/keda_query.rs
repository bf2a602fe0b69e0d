//! The KEDA query of the Helm chart (helm/vephys/files/keda-query.sql, what the ScaledObject
//! runs against the database to size the worker pool) on a real Postgres database with jobs in
//! every state: it counts the runnable jobs only (queued, with not_before reached), so jobs
//! waiting out a retry backoff, leased, waiting or finished jobs do not wake GPU workers; and the
//! partial index `jobs_queued` can serve it.

mod common;

use common::Backend;
use sqlx::Row;
use vephys_coordinator::store::{now_ms, Policy};
use vephys_proto::v1::JobFailure;

const KEDA_QUERY: &str = include_str!("../../helm/vephys/files/keda-query.sql");

#[tokio::test]
async fn keda_counts_runnable_jobs_and_the_queued_index_serves_it() {
    // A failed attempt waits an hour before its retry.
    let policy = Policy {
        lease_ms: 60_000,
        retry_base_ms: 3_600_000,
        retry_max_ms: 3_600_000,
    };
    let db = common::open(Backend::Postgres, "keda_query_counts_runnable_jobs", policy).await;
    let s = &db.store;
    s.register_model(&common::test_model("testnet"))
        .await
        .unwrap();
    let w = s.register_worker(&common::worker("w1")).await.unwrap();
    // 8 synthesis jobs (queued) and 8 zoom jobs waiting for them.
    s.submit_campaign(&common::spec(
        "keda",
        "[\"conv1\"]",
        "\"0..8\"",
        "[\"synthesis\", \"zoom\"]",
    ))
    .await
    .unwrap();
    let now = now_ms();
    let leased = s.lease(w, 3, &[], now).await.unwrap().jobs;
    assert_eq!(leased.len(), 3);
    // One of the three fails and goes back to the queue, not before an hour from now.
    let out = s
        .fail(
            w,
            &[JobFailure {
                job_id: leased[0].job_id,
                token: leased[0].token,
                error: "out of memory".into(),
                permanent: false,
                released: false,
            }],
            now,
        )
        .await
        .unwrap();
    assert_eq!(out.retrying, vec![leased[0].job_id]);

    let pool = s.pool();
    let count = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get::<i64, _>(0)
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").await,
        6
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM jobs WHERE state = 'leased'").await,
        2
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM jobs WHERE state = 'waiting'").await,
        8
    );
    // 5 runnable: the queued ones but the one in backoff.
    assert_eq!(count(KEDA_QUERY.trim()).await, 5, "{KEDA_QUERY}");

    // Served by the partial index jobs_queued (WHERE state = 'queued'), not a scan of every job:
    // with sequential scans priced out, the planner must be able to use that index.
    let mut conn = s.pool().acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query(&format!("EXPLAIN {}", KEDA_QUERY.trim()))
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("jobs_queued"),
        "not served by jobs_queued:\n{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "{plan}");
    sqlx::query("RESET enable_seqscan")
        .execute(&mut *conn)
        .await
        .unwrap();
}
