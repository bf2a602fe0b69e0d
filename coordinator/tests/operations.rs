//! What an operator meets (issue 13): paged lists, a bound on open streams, no open api on a
//! network address without saying so, and a shutdown that ends in bounded time.

mod common;

use common::{open, policy, spec, test_model, Backend, Coordinator, TestDb};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Code;
use vephys_coordinator::auth::Tokens;
use vephys_coordinator::server::ServeOptions;
use vephys_proto::v1::campaigns_client::CampaignsClient;
use vephys_proto::v1::{
    GetCampaignRequest, ListCampaignsRequest, ListJobsRequest, RegisterModelRequest,
    SubmitCampaignRequest,
};

/// A coordinator on a fresh SQLite database with five campaigns of three jobs; the database
/// lives as long as the returned `TestDb`.
async fn coordinator(name: &str, options: ServeOptions) -> (Coordinator, TestDb) {
    let db = open(Backend::Sqlite, name, policy()).await;
    db.store
        .register_model(&test_model("testnet"))
        .await
        .unwrap();
    for i in 0..5 {
        db.store
            .submit_campaign(&spec(
                &format!("c{i}"),
                "[\"conv1\"]",
                "\"0..3\"",
                "[\"synthesis\"]",
            ))
            .await
            .unwrap();
    }
    let store = db.second_store(policy()).await;
    let c = Coordinator::start_with(store, Tokens::new(None, None), options).await;
    (c, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_and_jobs_come_a_page_at_a_time() {
    let (c, _db) = coordinator("paging", ServeOptions::default()).await;
    let mut users = CampaignsClient::connect(c.url()).await.unwrap();
    let mut names = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = users
            .list_campaigns(ListCampaignsRequest {
                page_size: 2,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        names.extend(page.campaigns.into_iter().map(|c| c.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(pages, 3);
    let all = users
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.campaigns.len(), all.next_page_token.as_str()), (5, ""));
    let bad = users
        .list_campaigns(ListCampaignsRequest {
            page_size: 2,
            page_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("page_token"), "{}", bad.message());

    let jobs = users
        .list_jobs(ListJobsRequest {
            campaign_id: 1,
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jobs.jobs.len(), 2);
    let rest = users
        .list_jobs(ListJobsRequest {
            campaign_id: 1,
            page_size: 2,
            page_token: jobs.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rest.jobs.len(), rest.next_page_token.as_str()), (1, ""));
    let missing = users
        .list_jobs(ListJobsRequest {
            campaign_id: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

/// Every open watch polls the database: past the limit a watch is refused (retry later), and a
/// watcher that hangs up gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_bounded() {
    let options = ServeOptions {
        max_streams: 2,
        ..ServeOptions::default()
    };
    let (c, _db) = coordinator("streams", options).await;
    let mut users = CampaignsClient::connect(c.url()).await.unwrap();
    let watch = |id| GetCampaignRequest { campaign_id: id };
    let mut first = users.watch_campaign(watch(1)).await.unwrap().into_inner();
    let second = users.watch_campaign(watch(2)).await.unwrap().into_inner();
    assert!(first.next().await.is_some());
    let refused = users.watch_campaign(watch(3)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-streams"),
        "{}",
        refused.message()
    );
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match users.watch_campaign(watch(3)).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    Instant::now() < deadline,
                    "the closed watch never gave its place back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}

fn coordinator_binary() -> &'static str {
    env!("CARGO_BIN_EXE_vephys-coordinator")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A coordinator on a network address with an api left open does not start unless told so.
#[test]
fn an_open_api_off_loopback_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("v.db").display());
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(coordinator_binary());
        cmd.args([
            "--database-url",
            &db,
            "--listen",
            &format!("0.0.0.0:{}", free_port()),
        ])
        .args(["--http", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .env_remove("VEPHYS_USER_TOKEN")
        .env_remove("VEPHYS_WORKER_TOKEN")
        .env_remove("VEPHYS_INSECURE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        cmd
    };
    let refused = run(&["--user-token", "u"]).output().unwrap();
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("--worker-token is unset") && text.contains("--insecure"),
        "{text}"
    );

    let mut insecure = run(&["--insecure"]).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(insecure.try_wait().unwrap().is_none(), "--insecure serves");
    insecure.kill().unwrap();
    insecure.wait().unwrap();
}

/// A shutdown waits for requests in flight, but not forever: a watch stream that would never
/// end (a campaign no worker runs) is closed at --shutdown-seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(coordinator_binary())
        .args([
            "--database-url",
            &format!("sqlite://{}", dir.path().join("v.db").display()),
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--http", &format!("127.0.0.1:{}", free_port())])
        .args(["--shutdown-seconds", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut users = loop {
        match CampaignsClient::connect(url.clone()).await {
            Ok(client) => break client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the coordinator did not come up: {e}"),
        }
    };
    users
        .register_model(RegisterModelRequest {
            model: Some(test_model("testnet")),
        })
        .await
        .unwrap();
    let submitted = users
        .submit_campaign(SubmitCampaignRequest {
            spec_toml: spec("open", "[\"conv1\"]", "[0]", "[\"synthesis\"]"),
        })
        .await
        .unwrap()
        .into_inner();
    let id = submitted.campaign.unwrap().id;
    let mut watch = users
        .watch_campaign(GetCampaignRequest { campaign_id: id })
        .await
        .unwrap()
        .into_inner();
    assert!(watch.next().await.is_some());

    let asked = Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if asked.elapsed() > Duration::from_secs(15) {
            child.kill().unwrap();
            panic!("the coordinator was still up 15 s after SIGTERM with --shutdown-seconds 1");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?}",
        asked.elapsed()
    );
    drop(watch);
}
