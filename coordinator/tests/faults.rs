//! The coordinator under the faults of a shared cluster (issue 13): idempotent leases, writes
//! fenced by the leasing worker, leases on the database clock, weights pinned per campaign, a
//! registry workers cannot change, limits where values enter. Store tests run on Postgres and
//! SQLite; the outage tests put Postgres behind a proxy that can fail.

mod common;

use common::{open, policy, spec, test_model, worker, Backend, TestDb};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use vephys_coordinator::auth::Tokens;
use vephys_coordinator::metrics::Metrics;
use vephys_coordinator::server::spawn_reaper;
use vephys_coordinator::store::lease::LeaseAsk;
use vephys_coordinator::store::{Connect, Limits, Policy, Store};
use vephys_coordinator::testing::Proxy;
use vephys_coordinator::Error;
use vephys_proto::v1::workers_client::WorkersClient;
use vephys_proto::v1::{
    Campaign, CompleteRequest, HeartbeatRequest, JobCompletion, JobFailure, JobOutcome,
    JobProgress, LeaseRequest, LeasedJob, Provenance, TuningPoint,
};

common::both!(
    "pg_faults_",
    4;
    a_retried_lease_returns_what_the_first_took,
    only_the_worker_holding_a_lease_may_write_its_job,
    a_campaign_keeps_the_weights_it_was_submitted_with,
    workers_add_missing_models_and_change_none,
    leases_are_timed_on_the_database_clock,
    sizes_beyond_the_limits_are_refused_naming_the_limit,
    campaigns_and_jobs_are_listed_a_page_at_a_time,
    a_release_is_recorded_and_uses_no_attempt,
);

async fn setup(backend: Backend, name: &str) -> (TestDb, i64) {
    let db = open(backend, name, policy()).await;
    db.store
        .register_model(&test_model("testnet"))
        .await
        .unwrap();
    let w = db.store.register_worker(&worker("w1")).await.unwrap();
    (db, w)
}

fn completion(job: &LeasedJob) -> JobCompletion {
    JobCompletion {
        job_id: job.job_id,
        token: job.token,
        result: Some(JobOutcome {
            max_act: 1.0,
            mean_act: 0.5,
            status: "ok".into(),
            derived_json: "{}".into(),
            provenance: Some(Provenance {
                weights_sha256: job.weights_sha256.clone(),
                params_json: job.params_json.clone(),
                worker: "fake".into(),
                ..Default::default()
            }),
        }),
        points: vec![],
        artifacts: vec![],
    }
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

fn ask<'a>(worker_id: i64, max_jobs: u32, request_id: &'a str) -> LeaseAsk<'a> {
    LeaseAsk {
        worker_id,
        max_jobs,
        loaded_models: &[],
        request_id,
    }
}

/// A lease whose answer was lost is sent again with the same request id: it gets the jobs the
/// first one took, with the same tokens, and takes no more.
async fn a_retried_lease_returns_what_the_first_took(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name).await;
    let s = &db.store;
    s.submit_campaign(&spec("idem", "[\"conv1\"]", "\"0..8\"", "[\"synthesis\"]"))
        .await
        .unwrap();
    let first = s.lease_for(ask(w, 3, "req-1"), s.now_ms()).await.unwrap();
    assert_eq!(first.jobs.len(), 3);
    let again = s.lease_for(ask(w, 3, "req-1"), s.now_ms()).await.unwrap();
    let ids = |jobs: &[LeasedJob]| jobs.iter().map(|j| (j.job_id, j.token)).collect::<Vec<_>>();
    assert_eq!(
        ids(&again.jobs),
        ids(&first.jobs),
        "the retry returns the same jobs and tokens"
    );
    assert_eq!(
        again.model.as_ref().map(|m| m.name.as_str()),
        Some("testnet")
    );
    assert_eq!(
        count(s, "SELECT COUNT(*) FROM jobs WHERE state = 'leased'").await,
        3
    );
    // another request takes other jobs; no id means no idempotency
    let other = s.lease_for(ask(w, 3, "req-2"), s.now_ms()).await.unwrap();
    assert!(other
        .jobs
        .iter()
        .all(|j| !ids(&first.jobs).contains(&(j.job_id, j.token))));
    assert_eq!(s.lease(w, 1, &[], s.now_ms()).await.unwrap().jobs.len(), 1);
    assert_eq!(s.lease(w, 1, &[], s.now_ms()).await.unwrap().jobs.len(), 1);
    // once the first request's jobs are done, its id leases anew
    let done: Vec<JobCompletion> = first.jobs.iter().map(completion).collect();
    s.complete(w, &done, s.now_ms()).await.unwrap();
    let after = s.lease_for(ask(w, 3, "req-1"), s.now_ms()).await.unwrap();
    assert!(after
        .jobs
        .iter()
        .all(|j| !ids(&first.jobs).contains(&(j.job_id, j.token))));
    // another worker's request of the same id is its own
    let w2 = s.register_worker(&worker("w2")).await.unwrap();
    assert!(s
        .lease_for(ask(w2, 3, "req-2"), s.now_ms())
        .await
        .unwrap()
        .jobs
        .is_empty());
    let long = "x".repeat(65);
    let err = s.lease_for(ask(w, 1, &long), s.now_ms()).await.unwrap_err();
    assert!(
        err.to_string().contains("request_id") && err.to_string().contains("at most 64"),
        "{err}"
    );
}

/// The current token is not enough: the worker must be the one the attempt was leased to.
async fn only_the_worker_holding_a_lease_may_write_its_job(backend: Backend, name: &str) {
    let (db, w1) = setup(backend, name).await;
    let s = &db.store;
    let w2 = s.register_worker(&worker("w2")).await.unwrap();
    s.submit_campaign(&spec("lessee", "[\"conv1\"]", "[0]", "[\"synthesis\"]"))
        .await
        .unwrap();
    let job = s
        .lease(w1, 1, &[], s.now_ms())
        .await
        .unwrap()
        .jobs
        .remove(0);

    let err = s
        .complete(w2, &[completion(&job)], s.now_ms())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotLessee { .. }), "{err}");
    assert_eq!(tonic::Status::from(err).code(), Code::FailedPrecondition);
    let failure = JobFailure {
        job_id: job.job_id,
        token: job.token,
        error: "not mine".into(),
        ..Default::default()
    };
    let err = s
        .fail(w2, std::slice::from_ref(&failure), s.now_ms())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotLessee { .. }), "{err}");
    let progress = JobProgress {
        job_id: job.job_id,
        token: job.token,
        progress: 0.5,
    };
    let beat = s.heartbeat(w2, &[progress], s.now_ms()).await.unwrap();
    assert_eq!((beat.extended, beat.lost), (vec![], vec![job.job_id]));
    assert_eq!(count(s, "SELECT COUNT(*) FROM results").await, 0);

    let beat = s.heartbeat(w1, &[progress], s.now_ms()).await.unwrap();
    assert_eq!(beat.extended, vec![job.job_id]);
    let done = s
        .complete(w1, &[completion(&job)], s.now_ms())
        .await
        .unwrap();
    assert_eq!(done.accepted, vec![job.job_id]);
}

/// A user re-registers the model with other weights while a campaign runs: the campaign's
/// leases still name the weights it was submitted with, a result from other weights is
/// refused, and a new campaign takes the new weights.
async fn a_campaign_keeps_the_weights_it_was_submitted_with(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name).await;
    let s = &db.store;
    let old = test_model("testnet").weights_sha256;
    s.submit_campaign(&spec(
        "pinned",
        "[\"conv1\"]",
        "\"0..2\"",
        "[\"synthesis\"]",
    ))
    .await
    .unwrap();
    let mut updated = test_model("testnet");
    updated.weights_sha256 = "cd".repeat(32);
    updated.weights_uri = "s3://bucket/weights/testnet.safetensors".into();
    s.register_model(&updated).await.unwrap();

    let lease = s.lease(w, 2, &[], s.now_ms()).await.unwrap();
    assert!(lease
        .jobs
        .iter()
        .all(|j| j.weights_sha256 == old && j.weights_uri.is_empty()));
    assert_eq!(lease.model.as_ref().unwrap().weights_sha256, old);
    let mut other = completion(&lease.jobs[0]);
    let provenance = other.result.as_mut().unwrap().provenance.as_mut().unwrap();
    provenance.weights_sha256 = updated.weights_sha256.clone();
    let err = s.complete(w, &[other], s.now_ms()).await.unwrap_err();
    assert!(matches!(err, Error::WrongWeights { .. }), "{err}");
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        !status.message().contains(&updated.weights_sha256),
        "{}",
        status.message()
    );
    let done: Vec<JobCompletion> = lease.jobs.iter().map(completion).collect();
    assert_eq!(
        s.complete(w, &done, s.now_ms())
            .await
            .unwrap()
            .accepted
            .len(),
        2
    );

    s.submit_campaign(&spec("after", "[\"conv2\"]", "[0]", "[\"synthesis\"]"))
        .await
        .unwrap();
    let job = s.lease(w, 1, &[], s.now_ms()).await.unwrap().jobs.remove(0);
    assert_eq!(job.weights_sha256, updated.weights_sha256);
    assert_eq!(job.weights_uri, updated.weights_uri);
}

/// Workers describe what they hold: a model the registry lacks is added, a registered one is
/// left alone whatever weights the worker holds, and the worker's holdings are recorded.
async fn workers_add_missing_models_and_change_none(backend: Backend, name: &str) {
    let (db, _) = setup(backend, name).await;
    let s = &db.store;
    let mut theirs = test_model("testnet");
    theirs.weights_sha256 = "ef".repeat(32);
    theirs.layers.truncate(1);
    let mut fresh = test_model("newnet");
    fresh.weights_sha256 = "12".repeat(32);
    let mut request = worker("w9");
    request.models = vec![theirs.clone(), fresh.clone()];
    s.register_worker(&request).await.unwrap();

    let kept = s.model("testnet").await.unwrap().unwrap();
    assert_eq!(kept.weights_sha256, test_model("testnet").weights_sha256);
    assert_eq!(kept.layers.len(), 3, "the layer table is the user's");
    let added = s.model("newnet").await.unwrap().unwrap();
    assert_eq!(added.weights_sha256, fresh.weights_sha256);
    let held: String = sqlx::query_scalar("SELECT held FROM workers WHERE name = 'w9'")
        .fetch_one(s.pool())
        .await
        .unwrap();
    let held: serde_json::Value = serde_json::from_str(&held).unwrap();
    assert_eq!(held[0]["model"], "testnet");
    assert_eq!(held[0]["weights_sha256"], theirs.weights_sha256.as_str());
    // the user may still replace the entry
    s.register_model(&theirs).await.unwrap();
    assert_eq!(
        s.model("testnet").await.unwrap().unwrap().weights_sha256,
        theirs.weights_sha256
    );
}

/// Two coordinators whose clocks disagree by minutes agree on when a lease expires: both
/// read the database's clock.
async fn leases_are_timed_on_the_database_clock(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name).await;
    let s = &db.store;
    s.submit_campaign(&spec("clock", "[\"conv1\"]", "[0]", "[\"synthesis\"]"))
        .await
        .unwrap();
    let job = s.lease(w, 1, &[], s.now_ms()).await.unwrap().jobs.remove(0);

    // a second coordinator on a machine whose clock runs ten minutes ahead
    let ahead = db.second_store(policy()).await;
    ahead.skew_local_clock(600_000);
    ahead.ping(Duration::from_secs(5)).await.unwrap(); // reads the database's clock again
    let drift = (ahead.now_ms() - s.now_ms()).abs();
    assert!(
        drift < 5_000,
        "the two coordinators' clocks differ by {drift} ms"
    );
    let reaped = ahead.reap(ahead.now_ms()).await.unwrap();
    assert!(
        reaped.requeued.is_empty(),
        "a fresh lease was reaped by a fast clock"
    );
    // what a coordinator on its own clock would have done
    let reaped = ahead
        .reap(vephys_coordinator::store::now_ms() + 600_000)
        .await
        .unwrap();
    assert_eq!(reaped.requeued, vec![job.job_id]);
}

async fn sizes_beyond_the_limits_are_refused_naming_the_limit(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name).await;
    let s = &db.store;
    let refused = |e: Error, field: &str, says: &str| {
        let text = e.to_string();
        assert!(text.contains(field) && text.contains(says), "{text}");
    };
    // registry entries
    let mut huge = test_model("huge");
    huge.layers[0].channels = 1 << 40;
    refused(
        s.register_model(&huge).await.unwrap_err(),
        "layers[0]",
        "1048576 channels",
    );
    let mut big = test_model("big");
    big.input_size = 1 << 20;
    refused(
        s.register_model(&big).await.unwrap_err(),
        "input_size",
        "1..=4096",
    );
    let mut traversal = test_model("bad");
    traversal.layers[0].name = "../../etc".into();
    refused(
        s.register_model(&traversal).await.unwrap_err(),
        "layers[0].name",
        "is not a name",
    );
    let mut foreign = test_model("foreign");
    foreign.weights_uri = "http://elsewhere/w".into();
    refused(
        s.register_model(&foreign).await.unwrap_err(),
        "weights_uri",
        "s3://",
    );

    // a spec beyond the contract's limits, and a campaign beyond the coordinator's
    let err = s
        .submit_campaign(&format!(
            "{}[rotation]\nstep_degrees = 1e-12\n",
            spec("r", "[\"conv1\"]", "[0]", "[\"rotation\"]")
        ))
        .await
        .unwrap_err();
    refused(err, "rotation.angles", "out of bounds");
    let wide = spec("wide", "[\"wide\"]", "\"all\"", "[\"synthesis\", \"hue\"]");
    s.submit_campaign(&wide).await.unwrap(); // 20,000 jobs: within the default
    let small = db.second_store(policy()).await.with_limits(Limits {
        max_campaign_jobs: 1000,
    });
    let err = small
        .submit_campaign(&spec(
            "too-wide",
            "[\"wide\"]",
            "\"all\"",
            "[\"synthesis\"]",
        ))
        .await
        .unwrap_err();
    refused(err, "filters", "--max-campaign-jobs");

    // what a worker sends
    s.submit_campaign(&spec("w", "[\"conv1\"]", "[0]", "[\"synthesis\"]"))
        .await
        .unwrap();
    let job = s.lease(w, 1, &[], s.now_ms()).await.unwrap().jobs.remove(0);
    let mut many = completion(&job);
    many.points = vec![TuningPoint::default(); 20_000];
    refused(
        s.complete(w, &[many], s.now_ms()).await.unwrap_err(),
        "jobs[0].points",
        "at most 16384",
    );
    let mut long = completion(&job);
    long.result.as_mut().unwrap().derived_json = format!("{{\"x\": \"{}\"}}", "y".repeat(2 << 20));
    refused(
        s.complete(w, &[long], s.now_ms()).await.unwrap_err(),
        "derived_json",
        "at most 1048576",
    );
    let failure = JobFailure {
        job_id: job.job_id,
        token: job.token,
        error: "e".repeat(100_000),
        ..Default::default()
    };
    s.fail(w, &[failure], s.now_ms()).await.unwrap();
    let kept: i64 = count(s, "SELECT MAX(LENGTH(error)) FROM attempts").await;
    assert_eq!(kept, 4096, "a long error is stored cut to 4096 bytes");
}

async fn campaigns_and_jobs_are_listed_a_page_at_a_time(backend: Backend, name: &str) {
    let (db, _) = setup(backend, name).await;
    let s = &db.store;
    for i in 0..5 {
        s.submit_campaign(&spec(
            &format!("c{i}"),
            "[\"conv1\"]",
            "\"0..3\"",
            "[\"synthesis\"]",
        ))
        .await
        .unwrap();
    }
    let first = s.list_campaigns_page(0, 2).await.unwrap();
    let second = s.list_campaigns_page(first[1].id, 2).await.unwrap();
    let third = s.list_campaigns_page(second[1].id, 2).await.unwrap();
    let names: Vec<&str> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|c: &Campaign| c.name.as_str())
        .collect();
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(
        third[0].totals.unwrap().queued,
        3,
        "a page counts its campaigns' jobs"
    );
    let jobs = s.jobs_page(first[0].id, 0, 2).await.unwrap();
    assert_eq!(jobs.len(), 2);
    let rest = s.jobs_page(first[0].id, jobs[1].job_id, 10).await.unwrap();
    assert_eq!(
        (rest.len(), rest[0].state.as_str(), rest[0].attempt),
        (1, "queued", 0)
    );
}

/// A job given back because the worker's store failed is queued again at once, the attempt
/// recorded as released, and its allowance not used.
async fn a_release_is_recorded_and_uses_no_attempt(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name).await;
    let s = &db.store;
    let one_attempt = format!(
        "max_attempts = 1\n{}",
        spec("rel", "[\"conv1\"]", "[0]", "[\"synthesis\"]")
    );
    s.submit_campaign(&one_attempt).await.unwrap();
    for round in 1..=3 {
        let job = s.lease(w, 1, &[], s.now_ms()).await.unwrap().jobs.remove(0);
        assert_eq!(job.token, round);
        let release = JobFailure {
            job_id: job.job_id,
            token: job.token,
            error: "cannot write to the store".into(),
            permanent: false,
            released: true,
        };
        assert_eq!(
            s.fail(w, &[release], s.now_ms()).await.unwrap().retrying,
            vec![job.job_id]
        );
    }
    assert_eq!(
        count(s, "SELECT COUNT(*) FROM attempts WHERE released").await,
        3
    );
    let job = s.lease(w, 1, &[], s.now_ms()).await.unwrap().jobs.remove(0);
    let done = s
        .complete(w, &[completion(&job)], s.now_ms())
        .await
        .unwrap();
    assert_eq!(
        done.accepted,
        vec![job.job_id],
        "three releases left the one attempt unused"
    );
}

// ---------------------------------------------------------------------------------------------
// Outages: Postgres behind a proxy that fails

/// A coordinator (gRPC on loopback) on the test database through a proxy, and a worker.
struct Outage {
    proxy: Proxy,
    coordinator: common::Coordinator,
    api: WorkersClient<tonic::transport::Channel>,
    worker_id: i64,
    _db: TestDb,
}

async fn outage(name: &str, policy: Policy) -> Outage {
    let db = open(Backend::Postgres, name, policy.clone()).await;
    db.store
        .register_model(&test_model("testnet"))
        .await
        .unwrap();
    let (proxy, url) = Proxy::in_front_of(&db.url).await;
    let store = Store::open(
        Connect {
            url: &url,
            max_connections: 4,
        },
        policy,
    )
    .await
    .unwrap();
    let coordinator = common::Coordinator::start(store, Tokens::new(None, None)).await;
    let mut api = WorkersClient::connect(coordinator.url()).await.unwrap();
    let worker_id = api
        .register_worker(worker("w1"))
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    Outage {
        proxy,
        coordinator,
        api,
        worker_id,
        _db: db,
    }
}

/// While the database cannot be reached every worker call answers UNAVAILABLE (retry), not
/// INTERNAL (give up), and changes nothing; once it is back the same calls succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_answers_unavailable_and_loses_nothing() {
    let mut o = outage("faults_outage_unavailable", policy()).await;
    let store = o.coordinator.store.clone();
    store
        .submit_campaign(&spec(
            "outage",
            "[\"conv1\"]",
            "\"0..4\"",
            "[\"synthesis\"]",
        ))
        .await
        .unwrap();
    let lease = |request_id: &str| LeaseRequest {
        worker_id: o.worker_id,
        max_jobs: 2,
        loaded_models: vec![],
        request_id: request_id.into(),
    };
    let jobs = o.api.lease(lease("a")).await.unwrap().into_inner().jobs;
    assert_eq!(jobs.len(), 2);

    o.proxy.refuse();
    let status = o.api.lease(lease("b")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("retry"), "{}", status.message());
    let beat = HeartbeatRequest {
        worker_id: o.worker_id,
        jobs: jobs
            .iter()
            .map(|j| JobProgress {
                job_id: j.job_id,
                token: j.token,
                progress: 0.5,
            })
            .collect(),
    };
    let status = o.api.heartbeat(beat.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let complete = CompleteRequest {
        worker_id: o.worker_id,
        jobs: jobs.iter().map(completion).collect(),
    };
    let status = o.api.complete(complete.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    o.proxy.restore();
    // the retried lease of request "b" took nothing while the database was away
    let again = o.api.lease(lease("b")).await.unwrap().into_inner().jobs;
    assert_eq!(again.len(), 2);
    assert!(again
        .iter()
        .all(|j| jobs.iter().all(|k| k.job_id != j.job_id)));
    assert_eq!(
        o.api
            .heartbeat(beat)
            .await
            .unwrap()
            .into_inner()
            .extended
            .len(),
        2
    );
    let done = o.api.complete(complete).await.unwrap().into_inner();
    assert_eq!(done.accepted.len(), 2);
}

/// Leases that ran out while the coordinator (or its database) was down are not reaped at
/// once: the reaper waits one lease length, in which the workers heartbeat them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reaper_waits_a_lease_after_a_start_and_after_an_outage() {
    let lease_ms = 1_500;
    let policy = Policy {
        lease_ms,
        ..policy()
    };
    let o = outage("faults_reaper_grace", policy).await;
    let store = o.coordinator.store.clone();
    store
        .submit_campaign(&spec("grace", "[\"conv1\"]", "\"0..2\"", "[\"synthesis\"]"))
        .await
        .unwrap();
    let w = o.worker_id;
    let first = store
        .lease(w, 1, &[], store.now_ms())
        .await
        .unwrap()
        .jobs
        .remove(0);
    // the coordinator was down longer than a lease: the lease looks expired when it starts
    sqlx::query("UPDATE jobs SET lease_expires_at = $1 WHERE id = $2")
        .bind(store.now_ms() - 10 * lease_ms)
        .bind(first.job_id)
        .execute(store.pool())
        .await
        .unwrap();
    let reaper = spawn_reaper(
        store.clone(),
        Arc::new(Metrics::new()),
        Duration::from_millis(50),
    );
    tokio::time::sleep(Duration::from_millis(lease_ms as u64 / 2)).await;
    let beat = |job: &LeasedJob| JobProgress {
        job_id: job.job_id,
        token: job.token,
        progress: 0.1,
    };
    let extended = store
        .heartbeat(w, &[beat(&first)], store.now_ms())
        .await
        .unwrap();
    assert_eq!(
        extended.extended,
        vec![first.job_id],
        "the lease was reaped before the worker could extend it"
    );

    // the database goes away for longer than a lease; the leases run out meanwhile
    let second = store
        .lease(w, 1, &[], store.now_ms())
        .await
        .unwrap()
        .jobs
        .remove(0);
    let keep_alive = |jobs: Vec<LeasedJob>| {
        let store = store.clone();
        async move {
            let beats: Vec<JobProgress> = jobs.iter().map(beat).collect();
            store.heartbeat(w, &beats, store.now_ms()).await.unwrap()
        }
    };
    for _ in 0..6 {
        // past the start's grace, heartbeating as a worker does
        keep_alive(vec![first.clone(), second.clone()]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    keep_alive(vec![first.clone(), second.clone()]).await;
    o.proxy.refuse();
    tokio::time::sleep(Duration::from_millis(2 * lease_ms as u64)).await;
    o.proxy.restore();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let beat = keep_alive(vec![first.clone(), second.clone()]).await;
    assert_eq!(
        beat.extended.len(),
        2,
        "leases were reaped as soon as the database came back: {beat:?}"
    );
    reaper.abort();
    let expired = count(
        &store,
        "SELECT COUNT(*) FROM attempts WHERE outcome = 'expired'",
    )
    .await;
    assert_eq!(expired, 0);
}
