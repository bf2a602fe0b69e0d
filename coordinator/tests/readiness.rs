//! Readiness follows the database (issue 17): a coordinator whose Postgres stops answering
//! reports `/readyz` 503 and gRPC health NOT_SERVING for its two services, while liveness
//! (`/healthz`, the server's own gRPC health) stays up; when the database answers again it is
//! ready again. The database sits behind a TCP proxy the test can black-hole: existing
//! connections are cut and new ones are accepted but never answered, as with a lost network.
//! Readiness is read from the last background check, so a probe answers at once even while
//! the database hangs.

mod common;

use common::Backend;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic_health::pb::health_check_response::ServingStatus;
use vephys_coordinator::auth::Tokens;
use vephys_coordinator::metrics::Metrics;
use vephys_coordinator::server::{serve_grpc_with_health, DbHealth, Settings};
use vephys_coordinator::store::{Connect, Store};
use vephys_coordinator::testing::Proxy;

/// `GET path` over plain HTTP/1.1: the status code.
async fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

type Health = tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>;

async fn grpc_status(client: &mut Health, service: &str) -> i32 {
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// Polls `probe` until it returns `want` or 10 s pass.
async fn eventually<F, Fut>(what: &str, want: (u16, i32, i32), mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (u16, i32, i32)>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = probe().await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_liveness_does_not() {
    let db = common::open(
        Backend::Postgres,
        "readiness_follows_the_database",
        common::policy(),
    )
    .await;
    let (proxy, url) = Proxy::in_front_of(&db.url).await;
    let store = Arc::new(
        Store::open(
            Connect {
                url: &url,
                max_connections: 4,
            },
            common::policy(),
        )
        .await
        .expect("the store opens through the proxy"),
    );
    let metrics = Arc::new(Metrics::new());
    let timeout = Duration::from_millis(700);
    let health = DbHealth::spawn(store.clone(), Duration::from_millis(100), timeout);

    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let router = vephys_coordinator::http::router(store.clone(), metrics.clone())
        .merge(vephys_coordinator::http::readiness_router(health.clone()));
    tokio::spawn(async move { axum::serve(http, router).await.unwrap() });
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let settings = Settings {
        tokens: Tokens::new(None, None),
        watch_interval: Duration::from_millis(50),
        tls: None,
    };
    tokio::spawn(serve_grpc_with_health(
        store.clone(),
        metrics,
        settings,
        health,
        grpc,
        std::future::pending(),
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = Health::new(channel);
    let probe = || {
        let mut client = client.clone();
        async move {
            (
                http_status(http_addr, "/readyz").await,
                grpc_status(&mut client, "vephys.v1.Workers").await,
                grpc_status(&mut client, "vephys.v1.Campaigns").await,
            )
        }
    };
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;

    eventually("ready at start", (200, serving, serving), probe).await;

    proxy.cut();
    eventually(
        "not ready while the database hangs",
        (503, not_serving, not_serving),
        probe,
    )
    .await;
    // Liveness is the process, not the database: nothing restarts the pod.
    assert_eq!(http_status(http_addr, "/healthz").await, 200);
    assert_eq!(grpc_status(&mut client.clone(), "").await, serving);
    // A probe reads the last check: it answers at once, not after the check's timeout.
    let started = Instant::now();
    assert_eq!(http_status(http_addr, "/readyz").await, 503);
    assert!(
        started.elapsed() < timeout / 2,
        "/readyz took {:?}: it waited for the database",
        started.elapsed()
    );

    proxy.restore();
    eventually(
        "ready again once the database answers",
        (200, serving, serving),
        probe,
    )
    .await;
}
