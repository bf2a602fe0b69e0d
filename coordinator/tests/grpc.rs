//! The gRPC API over a real TCP transport, with an in-process fake worker (no libtorch).

mod common;

use common::{open, policy, spec, test_model, Backend, Coordinator};
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use vephys_coordinator::auth::Tokens;
use vephys_proto::v1::campaigns_client::CampaignsClient;
use vephys_proto::v1::workers_client::WorkersClient;
use vephys_proto::v1::*;

#[derive(Clone)]
struct Bearer(Option<&'static str>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = self.0 {
            let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

type Users = CampaignsClient<InterceptedService<Channel, Bearer>>;
type WorkerApi = WorkersClient<InterceptedService<Channel, Bearer>>;

async fn channel(c: &Coordinator) -> Channel {
    Channel::from_shared(c.url())
        .unwrap()
        .connect()
        .await
        .expect("connect to the test coordinator")
}

async fn users(c: &Coordinator, token: Option<&'static str>) -> Users {
    CampaignsClient::with_interceptor(channel(c).await, Bearer(token))
}

async fn workers(c: &Coordinator, token: Option<&'static str>) -> WorkerApi {
    WorkersClient::with_interceptor(channel(c).await, Bearer(token))
}

fn tokens() -> Tokens {
    Tokens::new(Some("user-secret".into()), Some("worker-secret".into()))
}

/// A worker that does no science: it leases, heartbeats once, and completes every job with a
/// made-up tuning curve.
struct FakeWorker {
    api: WorkerApi,
    id: i64,
}

impl FakeWorker {
    async fn register(c: &Coordinator) -> FakeWorker {
        let mut api = workers(c, Some("worker-secret")).await;
        let registration = RegisterWorkerRequest {
            name: "fake".into(),
            device: "cpu".into(),
            memory_bytes: 1 << 30,
            loaded_models: vec!["testnet".into()],
            models: vec![test_model("testnet")],
        };
        let id = api
            .register_worker(registration)
            .await
            .unwrap()
            .into_inner()
            .worker_id;
        FakeWorker { api, id }
    }

    async fn lease(&mut self, n: u32) -> Vec<LeasedJob> {
        let request = LeaseRequest {
            worker_id: self.id,
            max_jobs: n,
            loaded_models: vec![],
            request_id: String::new(),
        };
        self.api.lease(request).await.unwrap().into_inner().jobs
    }

    /// Runs jobs until the queue is empty; returns how many it completed.
    async fn run_until_idle(&mut self) -> usize {
        let mut done = 0;
        loop {
            let jobs = self.lease(16).await;
            if jobs.is_empty() {
                return done;
            }
            let beat = HeartbeatRequest {
                worker_id: self.id,
                jobs: jobs
                    .iter()
                    .map(|j| JobProgress {
                        job_id: j.job_id,
                        token: j.token,
                        progress: 0.5,
                    })
                    .collect(),
            };
            let beat = self.api.heartbeat(beat).await.unwrap().into_inner();
            assert_eq!(beat.extended.len(), jobs.len());
            let completions: Vec<JobCompletion> = jobs.iter().map(fake_completion).collect();
            let response = self
                .api
                .complete(CompleteRequest {
                    worker_id: self.id,
                    jobs: completions,
                })
                .await
                .unwrap();
            done += response.into_inner().accepted.len();
        }
    }
}

fn fake_completion(job: &LeasedJob) -> JobCompletion {
    let points = match job.probe.as_str() {
        "rotation" => (0..4)
            .map(|i| point("rotation", f64::from(i) * 90.0, None, f64::from(i)))
            .collect(),
        "baseline" => vec![
            point("baseline", 0.0, Some("noise"), 0.1),
            point("baseline", 1.0, Some("white"), 0.2),
        ],
        _ => vec![],
    };
    let artifacts = if job.probe == "synthesis" {
        vec![Artifact {
            kind: "max_image".into(),
            uri: format!("file:///tmp/vephys/{}/{}/max.png", job.job_id, job.token),
            sha256: "cd".repeat(32),
            bytes: 1234,
        }]
    } else {
        vec![]
    };
    JobCompletion {
        job_id: job.job_id,
        token: job.token,
        result: Some(JobOutcome {
            max_act: 2.0 + job.filter as f64,
            mean_act: 1.0,
            status: "ok".into(),
            derived_json: r#"{"preferred": 270.0}"#.into(),
            provenance: Some(Provenance {
                weights_sha256: job.weights_sha256.clone(),
                params_json: job.params_json.clone(),
                params_hash: String::new(),
                seed: job.seed,
                device: "cpu".into(),
                library_versions_json: r#"{"libtorch": "none"}"#.into(),
                worker: "fake".into(),
                duration_ms: 3,
            }),
        }),
        points,
        artifacts,
    }
}

fn point(probe: &str, x: f64, label: Option<&str>, act: f64) -> TuningPoint {
    TuningPoint {
        probe: probe.into(),
        x,
        label: label.map(str::to_string),
        max_act: act,
        mean_act: act / 2.0,
    }
}

common::both!(
    "pg_grpc_",
    2;
    a_fake_worker_runs_a_campaign_end_to_end,
    cancel_reaches_a_running_worker_through_its_heartbeat
);

async fn a_fake_worker_runs_a_campaign_end_to_end(backend: Backend, name: &str) {
    let db = open(backend, name, policy()).await;
    let c = Coordinator::start(db.store, tokens()).await;
    let mut worker = FakeWorker::register(&c).await; // registers the model, as real workers do
    let mut user = users(&c, Some("user-secret")).await;

    let models = user
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(models[0].layers.len(), 3);

    let text = spec(
        "e2e",
        "[\"conv2\"]",
        "\"all\"",
        "[\"synthesis\", \"rotation\", \"baseline\"]",
    );
    let submitted = user
        .submit_campaign(SubmitCampaignRequest {
            spec_toml: text.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.jobs_created, 12);
    let id = submitted.campaign.unwrap().id;
    let again = user
        .submit_campaign(SubmitCampaignRequest { spec_toml: text })
        .await
        .unwrap()
        .into_inner();
    assert!(again.existing && again.jobs_created == 0);

    let mut watch = user
        .watch_campaign(GetCampaignRequest { campaign_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(worker.run_until_idle().await, 12);
    let mut last = None;
    while let Some(update) = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap()
        .unwrap()
    {
        last = Some(update);
    }
    let last = last.expect("the watch sent progress");
    assert_eq!(last.state, "succeeded");
    assert_eq!(
        last.groups
            .iter()
            .map(|g| g.probe.as_str())
            .collect::<Vec<_>>(),
        vec!["synthesis", "baseline", "rotation"]
    );

    let request = QueryResultsRequest {
        campaign_id: id,
        layer: String::new(),
        filter: Some(1),
        probe: "rotation".into(),
    };
    let mut stream = user.query_results(request).await.unwrap().into_inner();
    let mut results = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        results.push(r);
    }
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].points.len(), 4);
    let provenance = results[0].result.clone().unwrap().provenance.unwrap();
    assert_eq!(provenance.weights_sha256, "ab".repeat(32));
    assert_eq!(
        provenance.params_hash.len(),
        64,
        "the coordinator hashes params when the worker does not"
    );

    let all = user
        .get_campaign(GetCampaignRequest { campaign_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.totals.unwrap().succeeded, 12);
    let metrics = c.metrics.render(&c.store).await;
    assert!(
        metrics.contains("vephys_jobs_completed_total 12"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vephys_jobs{state=\"succeeded\"} 12"),
        "{metrics}"
    );
}

async fn cancel_reaches_a_running_worker_through_its_heartbeat(backend: Backend, name: &str) {
    let db = open(backend, name, policy()).await;
    let c = Coordinator::start(db.store, tokens()).await;
    let mut worker = FakeWorker::register(&c).await;
    let mut user = users(&c, Some("user-secret")).await;
    let text = spec("cancel", "[\"conv1\"]", "\"all\"", "[\"synthesis\"]");
    let id = user
        .submit_campaign(SubmitCampaignRequest { spec_toml: text })
        .await
        .unwrap()
        .into_inner()
        .campaign
        .unwrap()
        .id;
    let jobs = worker.lease(4).await;
    user.cancel_campaign(CancelCampaignRequest { campaign_id: id })
        .await
        .unwrap();

    let beat = HeartbeatRequest {
        worker_id: worker.id,
        jobs: jobs
            .iter()
            .map(|j| JobProgress {
                job_id: j.job_id,
                token: j.token,
                progress: 0.9,
            })
            .collect(),
    };
    let beat = worker.api.heartbeat(beat).await.unwrap().into_inner();
    assert_eq!(beat.cancelled.len(), 4);
    assert!(worker.lease(16).await.is_empty());
    let late = worker
        .api
        .complete(CompleteRequest {
            worker_id: worker.id,
            jobs: vec![fake_completion(&jobs[0])],
        })
        .await;
    assert_eq!(late.unwrap().into_inner().cancelled, vec![jobs[0].job_id]);
    let campaign = user
        .get_campaign(GetCampaignRequest { campaign_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (campaign.state.as_str(), campaign.totals.unwrap().succeeded),
        ("cancelled", 0)
    );
}

#[tokio::test]
async fn tokens_separate_users_from_workers() {
    let db = open(Backend::Sqlite, "auth", policy()).await;
    let c = Coordinator::start(db.store, tokens()).await;

    let code =
        |r: Result<tonic::Response<ListModelsResponse>, Status>| r.map(|_| ()).unwrap_err().code();
    assert_eq!(
        code(
            users(&c, None)
                .await
                .list_models(ListModelsRequest {})
                .await
        ),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            users(&c, Some("nope"))
                .await
                .list_models(ListModelsRequest {})
                .await
        ),
        Code::Unauthenticated
    );
    // A worker token cannot use the user api (e.g. cancel)...
    let cancel = users(&c, Some("worker-secret"))
        .await
        .cancel_campaign(CancelCampaignRequest { campaign_id: 1 })
        .await;
    assert_eq!(cancel.unwrap_err().code(), Code::PermissionDenied);
    // ...and a user token cannot lease.
    let lease = workers(&c, Some("user-secret"))
        .await
        .lease(LeaseRequest {
            worker_id: 1,
            max_jobs: 1,
            loaded_models: vec![],
            ..Default::default()
        })
        .await;
    assert_eq!(lease.unwrap_err().code(), Code::PermissionDenied);
    let lease = workers(&c, None)
        .await
        .lease(LeaseRequest {
            worker_id: 1,
            max_jobs: 1,
            loaded_models: vec![],
            ..Default::default()
        })
        .await;
    assert_eq!(lease.unwrap_err().code(), Code::Unauthenticated);
    // The right tokens work.
    users(&c, Some("user-secret"))
        .await
        .list_models(ListModelsRequest {})
        .await
        .unwrap();
    FakeWorker::register(&c).await;
}

#[tokio::test]
async fn errors_map_to_grpc_codes_with_useful_messages() {
    let db = open(Backend::Sqlite, "codes", policy()).await;
    let c = Coordinator::start(db.store, tokens()).await;
    let mut worker = FakeWorker::register(&c).await;
    let mut user = users(&c, Some("user-secret")).await;

    let bad = spec("bad", "[\"conv1\"]", "\"0..99\"", "[\"synthesis\"]");
    let err = user
        .submit_campaign(SubmitCampaignRequest { spec_toml: bad })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("field `filters`") && err.message().contains("0..8"),
        "{}",
        err.message()
    );

    let err = user
        .get_campaign(GetCampaignRequest { campaign_id: 77 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("campaign 77"), "{}", err.message());

    let err = user
        .register_model(RegisterModelRequest { model: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let good = spec("good", "[\"conv1\"]", "[0]", "[\"synthesis\"]");
    user.submit_campaign(SubmitCampaignRequest { spec_toml: good })
        .await
        .unwrap();
    let job = worker.lease(1).await.remove(0);
    let mut stale = fake_completion(&job);
    stale.token += 1;
    let err = worker
        .api
        .complete(CompleteRequest {
            worker_id: worker.id,
            jobs: vec![stale],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("stale lease"), "{}", err.message());
    assert!(c
        .metrics
        .render(&c.store)
        .await
        .contains("vephys_stale_writes_total 1"));

    let err = worker
        .api
        .lease(LeaseRequest {
            worker_id: 4040,
            max_jobs: 1,
            loaded_models: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let db = open(Backend::Sqlite, "health", policy()).await;
    let c = Coordinator::start(db.store, tokens()).await;
    let mut health = HealthClient::new(channel(&c).await);
    let status = health
        .check(HealthCheckRequest {
            service: "vephys.v1.Workers".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel(&c).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"vephys.v1.Campaigns".to_string()),
        "{names:?}"
    );
}

#[tokio::test]
async fn the_http_endpoint_serves_prometheus_metrics() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = open(Backend::Sqlite, "metrics", policy()).await;
    let c = Coordinator::start(db.store, tokens()).await;
    let mut worker = FakeWorker::register(&c).await;
    users(&c, Some("user-secret"))
        .await
        .submit_campaign(SubmitCampaignRequest {
            spec_toml: spec("m", "[\"conv1\"]", "[0, 1]", "[\"synthesis\"]"),
        })
        .await
        .unwrap();
    worker.lease(1).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = vephys_coordinator::http::router(c.store.clone(), c.metrics.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(body.contains("vephys_jobs{state=\"leased\"} 1"), "{body}");
    assert!(body.contains("vephys_jobs{state=\"queued\"} 1"), "{body}");
    assert!(body.contains("vephys_jobs_leased_total 1"), "{body}");
    assert!(
        body.contains("vephys_lease_latency_seconds_count 1"),
        "{body}"
    );
}
