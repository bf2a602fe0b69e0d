//! The store suite: the job contract of docs/coordinator.md, run against Postgres and SQLite alike.
//! Each test is a plain async fn taking the backend; `both!` instantiates it for each.

mod common;

use common::{open, policy, spec, test_model, worker, Backend, TestDb};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use vephys_coordinator::store::{now_ms, Policy, Store};
use vephys_coordinator::Error;
use vephys_proto::v1::{
    Artifact, JobCompletion, JobFailure, JobOutcome, JobProgress, LeasedJob, Provenance,
    TuningPoint,
};

common::both!(
    "pg_",
    4;
    fencing_refuses_the_stale_token_and_accepts_the_current_one,
    eight_concurrent_leasers_complete_ten_thousand_jobs_exactly_once,
    submitting_the_same_spec_twice_adds_no_jobs,
    cancel_stops_leases_and_a_late_completion_does_not_resurrect,
    an_always_failing_job_fails_after_exactly_max_attempts_keeping_every_error,
    a_permanent_error_does_not_retry,
    retries_wait_for_their_backoff,
    probe_jobs_wait_for_their_synthesis_job_and_receive_its_max_image,
    a_failed_synthesis_fails_the_probes_waiting_on_it,
    heartbeats_extend_leases_and_report_lost_ones,
    two_reapers_reap_each_expired_lease_once,
    an_expired_last_attempt_ends_failed,
    a_released_job_is_queued_at_once_without_using_an_attempt,
    a_lease_is_one_group_and_prefers_loaded_models,
    bad_specs_are_refused_naming_the_field,
    layer_aliases_resolve_to_the_canonical_name,
    bad_worker_writes_are_refused,
    bad_model_descriptions_are_refused,
    views_answer_per_unit_questions,
);

async fn setup(backend: Backend, name: &str, policy: Policy) -> (TestDb, i64) {
    let db = open(backend, name, policy).await;
    db.store
        .register_model(&test_model("testnet"))
        .await
        .unwrap();
    let worker_id = db.store.register_worker(&worker("w1")).await.unwrap();
    (db, worker_id)
}

fn completion(job: &LeasedJob, token: i64) -> JobCompletion {
    JobCompletion {
        job_id: job.job_id,
        token,
        result: Some(JobOutcome {
            max_act: 1.5,
            mean_act: 0.5,
            status: "ok".into(),
            derived_json: "{}".into(),
            provenance: Some(Provenance {
                weights_sha256: job.weights_sha256.clone(),
                params_json: job.params_json.clone(),
                params_hash: String::new(),
                seed: job.seed,
                device: "cpu".into(),
                library_versions_json: r#"{"vephys":"test"}"#.into(),
                worker: "fake".into(),
                duration_ms: 1,
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

/// Runs a statement, e.g. to back-date a lease instead of sleeping.
async fn execute(store: &Store, sql: &str) {
    sqlx::query(sql).execute(store.pool()).await.unwrap();
}

async fn fencing_refuses_the_stale_token_and_accepts_the_current_one(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    s.submit_campaign(&spec("fence", "[\"conv1\"]", "[0]", "[\"synthesis\"]"))
        .await
        .unwrap();
    let now = now_ms();

    // 1. lease: token 1
    let first = s.lease(w, 1, &[], now).await.unwrap().jobs;
    assert_eq!((first.len(), first[0].token), (1, 1));
    let job = first[0].clone();

    // 2. expire: back-date the lease in SQL, then let the reaper see it
    execute(
        s,
        &format!(
            "UPDATE jobs SET lease_expires_at = 1 WHERE id = {}",
            job.job_id
        ),
    )
    .await;
    let reaped = s.reap(now).await.unwrap();
    assert_eq!(reaped.requeued, vec![job.job_id]);

    // 3. re-lease: token 2
    let w2 = s.register_worker(&worker("w2")).await.unwrap();
    let second = s.lease(w2, 1, &[], now).await.unwrap().jobs;
    assert_eq!((second[0].job_id, second[0].token), (job.job_id, 2));

    // 4. completion with token 1 refused, with token 2 accepted
    let stale = s
        .complete(w, &[completion(&job, 1)], now)
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            Error::StaleLease {
                token: 1,
                current: 2,
                ..
            }
        ),
        "{stale}"
    );
    assert_eq!(
        tonic::Status::from(stale).code(),
        tonic::Code::FailedPrecondition
    );
    let done = s.complete(w2, &[completion(&job, 2)], now).await.unwrap();
    assert_eq!(done.accepted, vec![job.job_id]);

    // exactly one result row; a replay of the winning completion is a no-op
    let replay = s.complete(w2, &[completion(&job, 2)], now).await.unwrap();
    assert_eq!(replay.duplicate, vec![job.job_id]);
    assert!(s.complete(w, &[completion(&job, 1)], now).await.is_err());
    assert_eq!(count(s, "SELECT COUNT(*) FROM results").await, 1);
    assert_eq!(count(s, "SELECT attempt FROM results").await, 2);
    let history = s.attempts(job.job_id).await.unwrap();
    assert_eq!(
        history.iter().map(|a| a.1.as_str()).collect::<Vec<_>>(),
        vec!["expired", "succeeded"]
    );
}

async fn eight_concurrent_leasers_complete_ten_thousand_jobs_exactly_once(
    backend: Backend,
    name: &str,
) {
    let (db, _) = setup(backend, name, policy()).await;
    let submitted = db
        .store
        .submit_campaign(&spec("many", "[\"wide\"]", "\"all\"", "[\"synthesis\"]"))
        .await
        .unwrap();
    assert_eq!(submitted.jobs_created, 10_000);
    let store = Arc::new(db.store);
    let leased: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let mut loops = Vec::new();
    for i in 0..8 {
        let (store, leased) = (store.clone(), leased.clone());
        loops.push(tokio::spawn(async move {
            let w = store
                .register_worker(&worker(&format!("w{i}")))
                .await
                .unwrap();
            let mut completed = 0;
            loop {
                let jobs = store.lease(w, 16, &[], now_ms()).await.unwrap().jobs;
                if jobs.is_empty() {
                    return completed;
                }
                {
                    let mut leased = leased.lock().unwrap();
                    for job in &jobs {
                        // No lease expires in this test, so a second lease of a job is a double lease.
                        assert!(leased.insert(job.job_id), "job {} leased twice", job.job_id);
                        assert_eq!(job.token, 1);
                    }
                }
                let completions: Vec<JobCompletion> =
                    jobs.iter().map(|j| completion(j, j.token)).collect();
                let done = store.complete(w, &completions, now_ms()).await.unwrap();
                assert_eq!(done.accepted.len(), jobs.len());
                completed += jobs.len();
            }
        }));
    }
    let mut total = 0;
    for handle in loops {
        total += handle.await.unwrap();
    }
    assert_eq!(total, 10_000);
    assert_eq!(leased.lock().unwrap().len(), 10_000);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM results").await, 10_000);
    assert_eq!(
        count(&store, "SELECT COUNT(DISTINCT job_id) FROM results").await,
        10_000
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded' AND attempt = 1"
        )
        .await,
        10_000
    );
}

async fn submitting_the_same_spec_twice_adds_no_jobs(backend: Backend, name: &str) {
    let (db, _) = setup(backend, name, policy()).await;
    let text = spec(
        "twice",
        "[\"conv1\", \"conv2\"]",
        "\"all\"",
        "[\"synthesis\", \"zoom\", \"grating\"]",
    );
    let first = db.store.submit_campaign(&text).await.unwrap();
    assert_eq!(first.jobs_created, 3 * (8 + 4));
    assert!(!first.existing);
    // Same spec, written differently (extra whitespace, defaults spelled out).
    let again = db
        .store
        .submit_campaign(&format!("max_attempts = 3\n\n{text}"))
        .await
        .unwrap();
    assert_eq!(
        (again.campaign_id, again.jobs_created, again.existing),
        (first.campaign_id, 0, true)
    );
    assert_eq!(count(&db.store, "SELECT COUNT(*) FROM jobs").await, 36);
    assert_eq!(count(&db.store, "SELECT COUNT(*) FROM campaigns").await, 1);
}

async fn cancel_stops_leases_and_a_late_completion_does_not_resurrect(
    backend: Backend,
    name: &str,
) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    let c = s
        .submit_campaign(&spec("cancel", "[\"conv1\"]", "\"all\"", "[\"synthesis\"]"))
        .await
        .unwrap();
    let now = now_ms();
    let running = s.lease(w, 2, &[], now).await.unwrap().jobs;
    assert_eq!(running.len(), 2);

    let campaign = s.cancel_campaign(c.campaign_id).await.unwrap();
    assert_eq!(campaign.state, "cancelled");
    assert!(
        s.lease(w, 100, &[], now).await.unwrap().jobs.is_empty(),
        "no lease after cancel"
    );

    let progress: Vec<JobProgress> = running
        .iter()
        .map(|j| JobProgress {
            job_id: j.job_id,
            token: j.token,
            progress: 0.5,
        })
        .collect();
    let beat = s.heartbeat(w, &progress, now).await.unwrap();
    assert_eq!(
        beat.cancelled.len(),
        2,
        "the heartbeat carries the cancellation"
    );
    assert!(beat.extended.is_empty());

    let late = s
        .complete(w, &[completion(&running[0], running[0].token)], now)
        .await
        .unwrap();
    assert_eq!(late.cancelled, vec![running[0].job_id]);
    assert!(late.accepted.is_empty());
    assert_eq!(count(s, "SELECT COUNT(*) FROM results").await, 0);
    assert_eq!(
        count(s, "SELECT COUNT(*) FROM jobs WHERE state <> 'cancelled'").await,
        0
    );
    assert_eq!(
        s.campaign(c.campaign_id)
            .await
            .unwrap()
            .totals
            .unwrap()
            .cancelled,
        8
    );
}

async fn an_always_failing_job_fails_after_exactly_max_attempts_keeping_every_error(
    backend: Backend,
    name: &str,
) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    let text = format!(
        "{}max_attempts = 4\n",
        spec("flaky", "[\"conv1\"]", "[3]", "[\"synthesis\"]")
            .replace("[synthesis]\nsteps = 8\n", "")
    );
    s.submit_campaign(&text).await.unwrap();
    let now = now_ms();
    for attempt in 1..=4 {
        let jobs = s.lease(w, 1, &[], now).await.unwrap().jobs;
        assert_eq!(jobs.len(), 1, "attempt {attempt} is leased");
        assert_eq!(jobs[0].token, attempt);
        let failure = JobFailure {
            job_id: jobs[0].job_id,
            token: attempt,
            error: format!("cuda error {attempt}"),
            permanent: false,
            released: false,
        };
        let out = s.fail(w, &[failure], now).await.unwrap();
        if attempt < 4 {
            assert_eq!(out.retrying.len(), 1);
        } else {
            assert_eq!(out.failed.len(), 1);
        }
    }
    assert!(s.lease(w, 1, &[], now).await.unwrap().jobs.is_empty());
    assert_eq!(
        count(
            s,
            "SELECT COUNT(*) FROM jobs WHERE state = 'failed' AND attempt = 4"
        )
        .await,
        1
    );
    let job_id = count(s, "SELECT id FROM jobs").await;
    let errors: Vec<String> = s
        .attempts(job_id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.2.unwrap())
        .collect();
    assert_eq!(
        errors,
        vec![
            "cuda error 1",
            "cuda error 2",
            "cuda error 3",
            "cuda error 4"
        ]
    );
}

async fn a_permanent_error_does_not_retry(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    s.submit_campaign(&spec("perm", "[\"conv1\"]", "[0]", "[\"synthesis\"]"))
        .await
        .unwrap();
    let now = now_ms();
    let job = s.lease(w, 1, &[], now).await.unwrap().jobs.remove(0);
    let failure = JobFailure {
        job_id: job.job_id,
        token: 1,
        error: "filter out of range".into(),
        permanent: true,
        released: false,
    };
    assert_eq!(
        s.fail(w, &[failure], now).await.unwrap().failed,
        vec![job.job_id]
    );
    assert!(s
        .lease(w, 1, &[], now + 3_600_000)
        .await
        .unwrap()
        .jobs
        .is_empty());
    assert_eq!(s.attempts(job.job_id).await.unwrap().len(), 1);
}

async fn retries_wait_for_their_backoff(backend: Backend, name: &str) {
    let policy = Policy {
        lease_ms: 60_000,
        retry_base_ms: 10_000,
        retry_max_ms: 60_000,
    };
    let (db, w) = setup(backend, name, policy).await;
    let s = &db.store;
    s.submit_campaign(&spec("backoff", "[\"conv1\"]", "[0]", "[\"synthesis\"]"))
        .await
        .unwrap();
    let now = now_ms();
    let job = s.lease(w, 1, &[], now).await.unwrap().jobs.remove(0);
    s.fail(
        w,
        &[JobFailure {
            job_id: job.job_id,
            token: 1,
            error: "oom".into(),
            permanent: false,
            released: false,
        }],
        now,
    )
    .await
    .unwrap();
    // Equal jitter: the first retry waits between 5 and 10 seconds.
    assert!(s
        .lease(w, 1, &[], now + 4_999)
        .await
        .unwrap()
        .jobs
        .is_empty());
    assert_eq!(
        s.lease(w, 1, &[], now + 10_000).await.unwrap().jobs[0].token,
        2
    );
}

async fn probe_jobs_wait_for_their_synthesis_job_and_receive_its_max_image(
    backend: Backend,
    name: &str,
) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    // zoom needs the max image (and brings synthesis along); grating does not.
    let c = s
        .submit_campaign(&spec(
            "deps",
            "[\"conv2\"]",
            "[1]",
            "[\"zoom\", \"grating\"]",
        ))
        .await
        .unwrap();
    assert_eq!(c.jobs_created, 3);
    let now = now_ms();
    let mut probes = Vec::new();
    for _ in 0..2 {
        let jobs = s.lease(w, 8, &[], now).await.unwrap().jobs;
        assert_eq!(jobs.len(), 1);
        probes.push(jobs[0].probe.clone());
        assert!(jobs[0].input_response.is_none(), "nothing to wait for");
        let mut done = completion(&jobs[0], jobs[0].token);
        if jobs[0].probe == "synthesis" {
            done.artifacts.push(Artifact {
                kind: "max_image".into(),
                uri: "file:///x/1/max.png".into(),
                sha256: "00".into(),
                bytes: 10,
            });
        }
        s.complete(w, &[done], now).await.unwrap();
    }
    probes.sort();
    assert_eq!(
        probes,
        vec!["grating", "synthesis"],
        "zoom waits for synthesis"
    );
    let zoom = s.lease(w, 8, &[], now).await.unwrap().jobs;
    assert_eq!(zoom[0].probe, "zoom");
    assert_eq!(zoom[0].inputs[0].uri, "file:///x/1/max.png");
    // with the synthesis' own response to it, and the weights that measured it
    let response = zoom[0]
        .input_response
        .as_ref()
        .expect("the synthesis' response");
    assert_eq!((response.max_act, response.mean_act), (1.5, 0.5));
    assert_eq!(response.weights_sha256, zoom[0].weights_sha256);
    let params: serde_json::Value = serde_json::from_str(&zoom[0].params_json).unwrap();
    assert_eq!(
        params["synthesis"]["image_size"], 32,
        "image size defaults to the model's input size"
    );
    assert!(params["zoom"]["factors"].is_array());
}

async fn a_failed_synthesis_fails_the_probes_waiting_on_it(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    let c = s
        .submit_campaign(&spec(
            "cascade",
            "[\"conv2\"]",
            "[0]",
            "[\"synthesis\", \"rotation\", \"color\"]",
        ))
        .await
        .unwrap();
    let now = now_ms();
    let job = s.lease(w, 8, &[], now).await.unwrap().jobs.remove(0);
    assert_eq!(job.probe, "synthesis");
    s.fail(
        w,
        &[JobFailure {
            job_id: job.job_id,
            token: 1,
            error: "dead layer".into(),
            permanent: true,
            released: false,
        }],
        now,
    )
    .await
    .unwrap();
    let campaign = s.campaign(c.campaign_id).await.unwrap();
    assert_eq!(campaign.totals.unwrap().failed, 3);
    assert_eq!(campaign.state, "failed");
}

async fn heartbeats_extend_leases_and_report_lost_ones(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    s.submit_campaign(&spec("beat", "[\"conv1\"]", "[0, 1]", "[\"synthesis\"]"))
        .await
        .unwrap();
    let now = now_ms();
    let jobs = s.lease(w, 2, &[], now).await.unwrap().jobs;
    let progress = |j: &LeasedJob, token| JobProgress {
        job_id: j.job_id,
        token,
        progress: 0.25,
    };

    let later = now + 50_000;
    let beat = s
        .heartbeat(w, &[progress(&jobs[0], 1), progress(&jobs[1], 1)], later)
        .await
        .unwrap();
    assert_eq!(beat.extended.len(), 2);
    // Past the original expiry, but the heartbeat moved it: nothing to reap.
    assert!(s.reap(now + 70_000).await.unwrap().requeued.is_empty());

    // Job 0's lease expires and goes to another worker: the first worker's heartbeat loses it.
    execute(
        s,
        &format!(
            "UPDATE jobs SET lease_expires_at = 1 WHERE id = {}",
            jobs[0].job_id
        ),
    )
    .await;
    s.reap(later).await.unwrap();
    let relet = s.lease(w, 1, &[], later).await.unwrap().jobs;
    assert_eq!(relet[0].token, 2);
    let beat = s
        .heartbeat(w, &[progress(&jobs[0], 1), progress(&jobs[1], 1)], later)
        .await
        .unwrap();
    assert_eq!(beat.extended, vec![jobs[1].job_id]);
    assert_eq!(beat.lost, vec![jobs[0].job_id]);
}

async fn two_reapers_reap_each_expired_lease_once(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    db.store
        .submit_campaign(&spec("reap", "[\"wide\"]", "\"0..400\"", "[\"synthesis\"]"))
        .await
        .unwrap();
    let now = now_ms();
    assert_eq!(
        db.store.lease(w, 400, &[], now).await.unwrap().jobs.len(),
        400
    );
    // A second coordinator on the same database reaps at the same moment.
    let other = Arc::new(db.second_store(policy()).await);
    let first = Arc::new(db.store);
    let late = now + 120_000;
    let (a, b) = tokio::join!(
        {
            let s = first.clone();
            tokio::spawn(async move { s.reap(late).await.unwrap() })
        },
        {
            let s = other.clone();
            tokio::spawn(async move { s.reap(late).await.unwrap() })
        },
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut all: Vec<i64> = a.requeued.iter().chain(&b.requeued).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        a.requeued.len() + b.requeued.len(),
        400,
        "each lease reaped once"
    );
    assert_eq!(all.len(), 400);
    assert_eq!(
        count(
            &first,
            "SELECT COUNT(*) FROM attempts WHERE outcome = 'expired'"
        )
        .await,
        400
    );
    assert_eq!(
        count(&first, "SELECT COUNT(*) FROM jobs WHERE state = 'queued'").await,
        400
    );
}

async fn a_released_job_is_queued_at_once_without_using_an_attempt(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    let text = format!(
        "{}max_attempts = 1\n",
        spec("released", "[\"conv1\"]", "[0]", "[\"synthesis\"]")
            .replace("[synthesis]\nsteps = 8\n", "")
    );
    s.submit_campaign(&text).await.unwrap();
    let now = now_ms();
    // released twice, e.g. a worker stopped twice: neither uses up the single attempt
    for token in 1..=2 {
        let jobs = s.lease(w, 1, &[], now).await.unwrap().jobs;
        assert_eq!(jobs.len(), 1, "queued again at once, no backoff");
        assert_eq!(jobs[0].token, token, "tokens keep rising");
        let release = JobFailure {
            job_id: jobs[0].job_id,
            token,
            error: "the worker was stopped".into(),
            permanent: true, // ignored for a release
            released: true,
        };
        let out = s.fail(w, &[release], now).await.unwrap();
        assert_eq!(out.retrying, vec![jobs[0].job_id]);
    }
    // a real failure of the one allowed attempt ends it
    let jobs = s.lease(w, 1, &[], now).await.unwrap().jobs;
    let failure = JobFailure {
        job_id: jobs[0].job_id,
        token: 3,
        error: "cuda error".into(),
        permanent: false,
        released: false,
    };
    assert_eq!(s.fail(w, &[failure], now).await.unwrap().failed.len(), 1);
    assert_eq!(
        s.attempts(jobs[0].job_id).await.unwrap().len(),
        3,
        "every attempt is kept"
    );
}

async fn an_expired_last_attempt_ends_failed(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    let text = format!(
        "{}max_attempts = 1\n",
        spec("once", "[\"conv1\"]", "[0]", "[\"synthesis\"]")
            .replace("[synthesis]\nsteps = 8\n", "")
    );
    s.submit_campaign(&text).await.unwrap();
    let now = now_ms();
    s.lease(w, 1, &[], now).await.unwrap();
    let reaped = s.reap(now + 61_000).await.unwrap();
    assert_eq!(reaped.failed.len(), 1);
    assert_eq!(
        count(s, "SELECT COUNT(*) FROM jobs WHERE state = 'failed'").await,
        1
    );
}

async fn a_lease_is_one_group_and_prefers_loaded_models(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    s.register_model(&test_model("othernet")).await.unwrap();
    s.submit_campaign(&spec(
        "groups",
        "[\"conv1\", \"conv2\"]",
        "\"all\"",
        "[\"synthesis\", \"grating\"]",
    ))
    .await
    .unwrap();
    let other = spec("other", "[\"conv2\"]", "\"all\"", "[\"synthesis\"]")
        .replace("model = \"testnet\"", "model = \"othernet\"");
    s.submit_campaign(&other).await.unwrap();
    let now = now_ms();

    // The worker has othernet loaded: it gets othernet's jobs although testnet's are older.
    let jobs = s
        .lease(w, 100, &["othernet".to_string()], now)
        .await
        .unwrap()
        .jobs;
    assert_eq!(jobs.len(), 4);
    assert!(jobs.iter().all(|j| j.model == "othernet"));

    // Without a preference, batches come oldest group first, one (layer, probe) per batch.
    let mut groups = Vec::new();
    loop {
        let jobs = s.lease(w, 100, &[], now).await.unwrap().jobs;
        if jobs.is_empty() {
            break;
        }
        let group: HashSet<(String, String, String)> = jobs
            .iter()
            .map(|j| (j.model.clone(), j.layer.clone(), j.probe.clone()))
            .collect();
        assert_eq!(group.len(), 1, "one batch, one group: {group:?}");
        groups.push((jobs[0].layer.clone(), jobs[0].probe.clone(), jobs.len()));
    }
    assert_eq!(groups.len(), 4);
    assert_eq!(groups[0], ("conv1".to_string(), "synthesis".to_string(), 8));
}

async fn bad_specs_are_refused_naming_the_field(backend: Backend, name: &str) {
    let (db, _) = setup(backend, name, policy()).await;
    let s = &db.store;
    let cases = [
        (
            spec("b", "[\"conv9\"]", "\"all\"", "[\"synthesis\"]"),
            "layers[0]",
        ),
        (
            spec("b", "[\"conv1\"]", "\"0..9\"", "[\"synthesis\"]"),
            "filters",
        ),
        (
            spec("b", "[\"conv1\"]", "[-1]", "[\"synthesis\"]"),
            "filters",
        ),
        (spec("b", "[\"conv1\"]", "\"all\"", "[\"zom\"]"), "probes"),
        (
            spec("b", "[\"conv1\"]", "\"all\"", "[\"synthesis\"]").replace("testnet", "nonet"),
            "model",
        ),
        (
            spec("b", "[\"conv1\"]", "\"all\"", "[\"synthesis\"]")
                .replace("steps = 8", "steps = 0"),
            "synthesis.steps",
        ),
        (
            spec("b", "[\"conv1\"]", "\"all\"", "[\"synthesis\"]")
                .replace("steps = 8", "stepz = 8"),
            "stepz",
        ),
        (spec("b", "[]", "\"all\"", "[\"synthesis\"]"), "layers"),
        (
            spec("b", "[\"conv1\"]", "\"all\"", "[\"grating\"]").replace("[2, 4, 8]", "[2, 16]"),
            "Nyquist",
        ),
        (
            "name = \"b\"\nmodel = \"testnet\"\nlayers = [\"conv1\"]\n[zoom]\nfactors = [0.0]\n"
                .to_string(),
            "zoom.factors",
        ),
        ("this is not toml".to_string(), ""),
    ];
    for (text, field) in cases {
        let err = s.submit_campaign(&text).await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Invalid { .. }), "{message}");
        assert!(message.contains(field), "expected `{field}` in: {message}");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::InvalidArgument
        );
    }
    assert_eq!(count(s, "SELECT COUNT(*) FROM jobs").await, 0);
    assert_eq!(count(s, "SELECT COUNT(*) FROM campaigns").await, 0);
}

async fn layer_aliases_resolve_to_the_canonical_name(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    let c = db
        .store
        .submit_campaign(&spec(
            "alias",
            "[\"features.0\", \"conv1\"]",
            "[2]",
            "[\"synthesis\"]",
        ))
        .await
        .unwrap();
    assert_eq!(
        c.jobs_created, 1,
        "a layer named twice (by alias and name) is one layer"
    );
    let job = db
        .store
        .lease(w, 1, &[], now_ms())
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!((job.layer.as_str(), job.filter), ("conv1", 2));
}

async fn bad_worker_writes_are_refused(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    s.submit_campaign(&spec("bad", "[\"conv1\"]", "[0, 1]", "[\"synthesis\"]"))
        .await
        .unwrap();
    let now = now_ms();
    let jobs = s.lease(w, 2, &[], now).await.unwrap().jobs;

    assert!(matches!(
        s.lease(w, 0, &[], now).await,
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        s.lease(999, 1, &[], now).await,
        Err(Error::NotFound { what: "worker", .. })
    ));
    assert!(matches!(
        s.complete(w, &[], now).await,
        Err(Error::Invalid { .. })
    ));
    let twice = [completion(&jobs[0], 1), completion(&jobs[0], 1)];
    assert!(matches!(
        s.complete(w, &twice, now).await,
        Err(Error::Invalid { .. })
    ));
    let mut ghost = completion(&jobs[0], 1);
    ghost.job_id = 424_242;
    assert!(matches!(
        s.complete(w, &[ghost], now).await,
        Err(Error::NotFound { what: "job", .. })
    ));
    let mut no_result = completion(&jobs[0], 1);
    no_result.result = None;
    let err = s.complete(w, &[no_result], now).await.unwrap_err();
    assert!(err.to_string().contains("jobs[0].result"), "{err}");
    let mut bad_json = completion(&jobs[0], 1);
    bad_json.result.as_mut().unwrap().derived_json = "[1,2]".into();
    assert!(s
        .complete(w, &[bad_json], now)
        .await
        .unwrap_err()
        .to_string()
        .contains("derived_json"));
    let mut nan = completion(&jobs[0], 1);
    nan.points.push(TuningPoint {
        probe: "zoom".into(),
        x: f64::NAN,
        label: None,
        max_act: 1.0,
        mean_act: 1.0,
    });
    assert!(s
        .complete(w, &[nan], now)
        .await
        .unwrap_err()
        .to_string()
        .contains("points[0]"));

    // A stale token anywhere in a batch refuses the whole batch: nothing is written.
    let batch = [completion(&jobs[0], 1), completion(&jobs[1], 7)];
    assert!(matches!(
        s.complete(w, &batch, now).await,
        Err(Error::StaleLease { token: 7, .. })
    ));
    let stale_fail = JobFailure {
        job_id: jobs[1].job_id,
        token: 7,
        error: "x".into(),
        permanent: false,
        released: false,
    };
    assert!(matches!(
        s.fail(w, &[stale_fail], now).await,
        Err(Error::StaleLease { .. })
    ));
    assert_eq!(count(s, "SELECT COUNT(*) FROM results").await, 0);
    assert_eq!(
        count(s, "SELECT COUNT(*) FROM jobs WHERE state = 'leased'").await,
        2
    );
}

async fn bad_model_descriptions_are_refused(backend: Backend, name: &str) {
    let db = open(backend, name, policy()).await;
    let mut dup = test_model("dup");
    dup.layers[1].aliases.push("conv1".into());
    let err = db.store.register_model(&dup).await.unwrap_err();
    assert!(err.to_string().contains("`conv1` is used twice"), "{err}");
    let mut empty = test_model("empty");
    empty.layers.clear();
    assert!(db
        .store
        .register_model(&empty)
        .await
        .unwrap_err()
        .to_string()
        .contains("field `layers`"));
    let mut sha = test_model("sha");
    sha.weights_sha256 = "xyz".into();
    assert!(db
        .store
        .register_model(&sha)
        .await
        .unwrap_err()
        .to_string()
        .contains("weights_sha256"));
    let mut zero = test_model("zero");
    zero.layers[0].channels = 0;
    assert!(db
        .store
        .register_model(&zero)
        .await
        .unwrap_err()
        .to_string()
        .contains("layers[0]"));
    assert!(db.store.list_models().await.unwrap().is_empty());

    // Re-registering replaces the description.
    db.store.register_model(&test_model("m")).await.unwrap();
    let mut smaller = test_model("m");
    smaller.layers.truncate(1);
    db.store.register_model(&smaller).await.unwrap();
    assert_eq!(db.store.model("m").await.unwrap().unwrap().layers.len(), 1);
}

async fn views_answer_per_unit_questions(backend: Backend, name: &str) {
    let (db, w) = setup(backend, name, policy()).await;
    let s = &db.store;
    s.submit_campaign(&spec(
        "views",
        "[\"conv2\"]",
        "[0]",
        "[\"rotation\", \"zoom\", \"color\", \"baseline\"]",
    ))
    .await
    .unwrap();
    let now = now_ms();
    loop {
        let jobs = s.lease(w, 8, &[], now).await.unwrap().jobs;
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            let mut done = completion(&job, job.token);
            let derived = |d: &str| d.to_string();
            let (curve, json): (&[(f64, f64)], String) = match job.probe.as_str() {
                "rotation" => (
                    &[(0.0, 1.0), (90.0, 3.0), (180.0, 2.0)],
                    derived(
                        r#"{"preferred": 90.0, "bandwidth": 40.0, "circular_variance": 0.9,
                        "symmetry_period_deg": 90.0, "symmetry_strength": 0.8, "mean": {}}"#,
                    ),
                ),
                "zoom" => (&[(0.5, 0.2), (2.0, 0.9)], derived(r#"{"bandwidth": 1.5}"#)),
                "color" => (
                    &[],
                    derived(
                        r#"{"preferred_channel": "g", "preferred_channel_selectivity": 0.1,
                        "channel_selectivity": [0.0, 0.3, 0.5]}"#,
                    ),
                ),
                "baseline" => (&[], derived(r#"{"csi": 0.25, "mean": {"csi": 0.2}}"#)),
                _ => {
                    done.result.as_mut().unwrap().max_act = 7.5;
                    (&[], "{}".to_string())
                }
            };
            done.result.as_mut().unwrap().derived_json = json;
            for (x, act) in curve {
                done.points.push(TuningPoint {
                    probe: job.probe.clone(),
                    x: *x,
                    label: None,
                    max_act: *act,
                    mean_act: act / 2.0,
                });
            }
            s.complete(w, &[done], now).await.unwrap();
        }
    }
    let row: (f64, f64, f64, f64) =
        sqlx::query_as("SELECT max_image_max_act, preferred_rotation, preferred_zoom, color_selectivity FROM unit_summary")
            .fetch_one(s.pool())
            .await
            .unwrap();
    // the paper's colour selectivity is the baseline's (full-colour image against its gray)
    assert_eq!(row, (7.5, 90.0, 2.0, 0.25));
    let headline: (f64, String, f64, f64, f64, f64, f64) = sqlx::query_as(
        "SELECT channel_selectivity, preferred_channel, symmetry_period_deg, symmetry_strength,
                rotation_circular_variance, rotation_bandwidth_deg, zoom_bandwidth_octaves
         FROM unit_summary",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(headline, (0.1, "g".to_string(), 90.0, 0.8, 0.9, 40.0, 1.5));
    assert_eq!(
        count(
            s,
            "SELECT COUNT(*) FROM tuning_curves WHERE probe = 'rotation'"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            s,
            "SELECT CAST(SUM(jobs) AS BIGINT) FROM campaign_progress WHERE state = 'succeeded'"
        )
        .await,
        5
    );
}
