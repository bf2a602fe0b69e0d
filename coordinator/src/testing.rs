//! Helpers for tests of the coordinator and of its clients (the worker daemon, the CLI): a
//! fresh Postgres database per test, a TCP proxy in front of it that a test can break, and a
//! private CA for TLS tests.
//! Not used by the coordinator itself.

use sha2::Digest;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const UP: u8 = 0;
const HANG: u8 = 1;
const RESET: u8 = 2;

/// A TCP proxy in front of a database that a test can break: black-holed (connections
/// accepted, never answered, as with a lost network) or refusing (connections reset at once,
/// as with a server restarting). Breaking it also cuts every open connection.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(UP));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (mode2, links2) = (mode.clone(), links.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mode = mode2.load(Ordering::SeqCst);
                let link = tokio::spawn(async move {
                    match mode {
                        HANG => {
                            // Accepted, never answered: the database "hangs".
                            let mut buf = [0u8; 1024];
                            while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
                        }
                        RESET => drop(client),
                        _ => {
                            if let Ok(mut server) = TcpStream::connect(target).await {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        }
                    }
                });
                links2.lock().unwrap().push(link);
            }
        });
        Proxy { addr, mode, links }
    }

    /// A proxy in front of the Postgres database at `url`, and the URL that goes through it.
    pub async fn in_front_of(url: &str) -> (Proxy, String) {
        let mut url = url::Url::parse(url).unwrap();
        let target: SocketAddr = format!(
            "{}:{}",
            url.host_str().unwrap().replace("localhost", "127.0.0.1"),
            url.port().unwrap_or(5432)
        )
        .parse()
        .unwrap();
        let proxy = Proxy::start(target).await;
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(proxy.addr.port())).unwrap();
        (proxy, url.to_string())
    }

    /// Cuts every open connection and black-holes new ones.
    pub fn cut(&self) {
        self.set(HANG);
    }

    /// Cuts every open connection and resets new ones at once.
    pub fn refuse(&self) {
        self.set(RESET);
    }

    pub fn restore(&self) {
        self.set(UP);
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

/// Drops and recreates a database named after the test (so reruns start clean and nothing
/// accumulates), and returns its URL.
pub async fn fresh_postgres(name: &str) -> String {
    use sqlx::Connection;
    let base = std::env::var("VEPHYS_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("VEPHYS_TEST_DATABASE_URL is not set; start Postgres with `bash scripts/postgres.sh` and export the URL it prints")
    });
    assert!(
        base.starts_with("postgres://") && !base.contains('\n'),
        "VEPHYS_TEST_DATABASE_URL must be one postgres:// url, got {base:?}"
    );
    // Postgres names stop at 63 bytes: keep a readable prefix and make it unique with a hash.
    let clean = name
        .to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let hash = sha2::Sha256::digest(name.as_bytes());
    let db = format!(
        "vt_{}_{}",
        &clean[..clean.len().min(40)],
        hex::encode(&hash[..4])
    );
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to VEPHYS_TEST_DATABASE_URL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop test database");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    admin.close().await.ok();
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{db}"),
        None => panic!("VEPHYS_TEST_DATABASE_URL {base} has no database path"),
    }
}

/// A private CA and a certificate it signs for `localhost`, made with openssl in `dir`:
/// (CA certificate, server certificate, server key), all PEM.
pub fn private_ca(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let path = |file: &str| dir.join(format!("{name}-{file}"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs (scripts/postgres.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |p: std::path::PathBuf| p.display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        &s(path("ca.key")),
        "-out",
        &s(path("ca.crt")),
        "-subj",
        &format!("/CN={name} test CA"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &s(path("server.key")),
        "-out",
        &s(path("server.csr")),
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        path("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(path("server.csr")),
        "-CA",
        &s(path("ca.crt")),
        "-CAkey",
        &s(path("ca.key")),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &s(path("server.ext")),
        "-out",
        &s(path("server.crt")),
    ]);
    (path("ca.crt"), path("server.crt"), path("server.key"))
}
