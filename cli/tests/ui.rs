//! `vephys --data-dir DIR ui` (the embedded coordinator's results browser, served until Ctrl-C)
//! and `vephys results --format parquet|csv --out FILE`, on a data directory whose campaign was
//! made through the store (no worker needed).

#[path = "../../coordinator/tests/webkit/mod.rs"]
mod webkit;

use std::path::Path;
use std::time::Duration;

use parquet::file::reader::{FileReader, SerializedFileReader};
use tokio::io::{AsyncBufReadExt, BufReader};
use vephys_coordinator::store::{Connect, Policy, Store};

/// A data directory as `vephys local` leaves it: `vephys.db` and `objects/`, one campaign of
/// four units with every probe.
async fn data_dir(dir: &Path) {
    let url = format!("sqlite://{}", dir.join("vephys.db").display());
    let store = Store::open(
        Connect {
            url: &url,
            max_connections: 4,
        },
        Policy::default(),
    )
    .await
    .unwrap();
    let objects = webkit::objects(dir);
    webkit::campaign(
        &store,
        &objects,
        "web",
        "conv1",
        "0..4",
        &webkit::all_probes(),
        None,
        None,
        webkit::Files::all(16),
    )
    .await;
    store.close().await;
}

async fn vephys(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_vephys"))
        .args(args)
        .env_remove("VEPHYS_DATA_DIR")
        .env_remove("VEPHYS_UI_HTTP")
        .output()
        .await
        .unwrap()
}

fn rows(path: &Path) -> (i64, Vec<String>) {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let meta = reader.metadata().file_metadata();
    let names = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    (meta.num_rows(), names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_go_to_parquet_and_csv_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    data_dir(&dir).await;
    let d = dir.to_str().unwrap();

    let jobs = tmp.path().join("jobs.parquet");
    let out = vephys(&[
        "--data-dir",
        d,
        "results",
        "1",
        "--format",
        "parquet",
        "--out",
        jobs.to_str().unwrap(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrote 28 results"));
    let (n, names) = rows(&jobs);
    assert_eq!(n, 4 * webkit::all_probes().len() as i64);
    for column in [
        "job", "layer", "filter", "probe", "max_act", "mean_act", "status", "derived", "params",
        "seed",
    ] {
        assert!(names.iter().any(|c| c == column), "{column} in {names:?}");
    }

    let points = tmp.path().join("points.parquet");
    let out = vephys(&[
        "--data-dir",
        d,
        "results",
        "1",
        "--points",
        "--format",
        "parquet",
        "--out",
        points.to_str().unwrap(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (n, names) = rows(&points);
    assert!(n > 200, "{n} points");
    assert_eq!(
        names,
        ["job", "layer", "filter", "probe", "x", "label", "max_act", "mean_act"]
    );

    let out = vephys(&["--data-dir", d, "results", "1", "--format", "parquet"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));

    let csv = tmp.path().join("jobs.csv");
    let out = vephys(&[
        "--data-dir",
        d,
        "results",
        "1",
        "--format",
        "csv",
        "--out",
        csv.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success());
    let stdout = vephys(&["--data-dir", d, "results", "1", "--format", "csv"])
        .await
        .stdout;
    assert_eq!(
        std::fs::read(&csv).unwrap(),
        stdout,
        "--out writes what stdout would show"
    );
    assert!(String::from_utf8_lossy(&stdout)
        .starts_with("job,layer,filter,probe,max_act,mean_act,status,derived\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_serves_a_data_directory_until_interrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();

    let out = vephys(&[
        "--data-dir",
        dir.to_str().unwrap(),
        "ui",
        "--http",
        "127.0.0.1:0",
    ])
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no vephys database"));

    data_dir(&dir).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vephys"))
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "ui",
            "--http",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("vephys ui prints its address")
        .unwrap()
        .unwrap();
    let link = first
        .strip_prefix("results browser: ")
        .unwrap_or_else(|| panic!("{first}"));
    let rest = link.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let addr: std::net::SocketAddr = host.parse().unwrap();

    // the printed link logs the browser in
    let login = webkit::get(addr, &format!("/{path}"), &[]).await;
    assert_eq!(login.status, 303, "{}", login.text());
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        webkit::get(addr, "/", &[]).await.status,
        303,
        "no cookie, no page"
    );
    let page = webkit::get(addr, "/", &[("Cookie", &cookie)]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains(">web<"));
    let layer = webkit::get(addr, "/c/1/l/conv1", &[("Cookie", &cookie)])
        .await
        .text();
    let image = layer
        .split("src=\"/a/")
        .nth(1)
        .map(|s| format!("/a/{}", &s[..s.find('"').unwrap()]));
    let image = webkit::get(addr, &image.expect("an image"), &[("Cookie", &cookie)]).await;
    assert_eq!(
        image.status, 200,
        "images come from the data directory's store"
    );
    assert_eq!(&image.body[..4], b"\x89PNG");
    // /metrics stays open
    assert_eq!(webkit::get(addr, "/metrics", &[]).await.status, 200);

    // Ctrl-C stops it, even with an event stream open
    let _events = {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("GET /events HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("vephys ui stops on Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status}");
}
