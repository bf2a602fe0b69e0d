//! The results browser with a campaign of 10,000 units: how long the layer page's first screen
//! and a unit page take to serve, over real HTTP on loopback, and how much memory the process
//! holds. Results are synthetic (every probe's points and derived numbers, a PNG max image per
//! unit) and inserted through the store's lease/complete path.
//!
//! `cargo bench -p vephys-coordinator --bench ui` (SQLite in a temporary directory; with
//! `VEPHYS_TEST_DATABASE_URL` set, also Postgres, in the database `vephys_bench_ui`). Prints
//! milliseconds per page; nothing here asserts a time. `VEPHYS_BENCH_UI_UNITS` changes the size.

#[path = "../tests/webkit/mod.rs"]
mod webkit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sqlx::Connection;
use vephys_coordinator::store::{Connect, Policy, Store};
use webkit::{get, Files, Server};

const ROUNDS: usize = 30;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let units: i64 = std::env::var("VEPHYS_BENCH_UI_UNITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("vephys.db").display());
    run("sqlite", &url, units, dir.path()).await?;
    if std::env::var_os("VEPHYS_BENCH_UI_KEEP").is_some() {
        println!(
            "  kept the SQLite database: {}",
            dir.keep().join("vephys.db").display()
        );
    }
    if let Ok(base) = std::env::var("VEPHYS_TEST_DATABASE_URL") {
        let url = recreate(&base, "vephys_bench_ui").await?;
        let pg_dir = tempfile::tempdir()?;
        run("postgres", &url, units, pg_dir.path()).await?;
    }
    Ok(())
}

/// Resident and peak resident memory of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and maximum of `times`, in ms.
fn summary(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    (ms(times[times.len() / 2]), ms(*times.last().unwrap()))
}

async fn timed(server: &Server, path: &str) -> Result<(Duration, usize)> {
    let started = Instant::now();
    let r = get(server.addr, path, &[]).await;
    let took = started.elapsed();
    anyhow::ensure!(r.status == 200, "{path}: {} {}", r.status, r.text());
    Ok((took, r.body.len()))
}

async fn run(backend: &str, url: &str, units: i64, dir: &std::path::Path) -> Result<()> {
    let store = Arc::new(
        Store::open(
            Connect {
                url,
                max_connections: 8,
            },
            Policy {
                lease_ms: 3_600_000,
                ..Policy::default()
            },
        )
        .await?,
    );
    let objects = webkit::objects(dir);
    let (rss0, _) = memory();
    println!("results browser, {backend}: a campaign of {units} units, every probe");
    let started = Instant::now();
    let files = Files {
        image_size: 32,
        colour_images: false,
        records: false,
    };
    let c = webkit::campaign(
        &store,
        &objects,
        "bench",
        "wide",
        &format!("0..{units}"),
        &webkit::all_probes(),
        None,
        None,
        files,
    )
    .await;
    let (points,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tuning_points")
        .fetch_one(store.pool())
        .await?;
    println!(
        "  inserted {} jobs, {points} tuning points, {units} max images in {:.1} s",
        units * webkit::all_probes().len() as i64,
        started.elapsed().as_secs_f64()
    );
    let view = Instant::now();
    let rows = store.unit_summary_rows(c.id, "wide").await?;
    println!(
        "  the unit_summary view for the layer: {} rows x {} columns in {:.0} ms (read once, then cached)",
        rows.rows.len(),
        rows.columns.len(),
        ms(view.elapsed())
    );
    drop(rows);
    let (rss_made, _) = memory();

    let server = Server::start(store.clone(), Some(objects.clone()), None).await;
    let id = c.id;
    let layer = format!("/c/{id}/l/wide");
    let (cold, bytes) = timed(&server, &layer).await?;
    println!(
        "  layer page, first request (reads the view): {:.1} ms, {} KiB",
        ms(cold),
        bytes / 1024
    );
    let cases: Vec<(String, String)> = vec![
        ("campaigns list".into(), "/".into()),
        ("campaign page".into(), format!("/c/{id}")),
        (
            "layer page, first screen (120 thumbnails)".into(),
            layer.clone(),
        ),
        (
            "layer page sorted by colour selectivity, filtered".into(),
            format!("{layer}?sort=color_selectivity&dir=desc&q=preferred_rotation%3E%3D90"),
        ),
        (
            "layer page, last page".into(),
            format!("{layer}?page={}", (units as usize).div_ceil(120)),
        ),
        ("layer table view".into(), format!("{layer}?view=table")),
        ("layer JSON (API)".into(), format!("/api/c/{id}/l/wide")),
    ];
    for (what, path) in &cases {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..ROUNDS {
            let (t, b) = timed(&server, path).await?;
            times.push(t);
            size = b;
        }
        let (median, max) = summary(&mut times);
        println!(
            "  {what}: median {median:.1} ms, max {max:.1} ms, {} KiB",
            size / 1024
        );
    }
    // the first screen as a browser loads it: the page, then its thumbnails six at a time
    let started = Instant::now();
    let html = get(server.addr, &layer, &[]).await.text();
    let images: Vec<String> = html
        .split("src=\"/a/")
        .skip(1)
        .take(36)
        .map(|rest| format!("/a/{}", &rest[..rest.find('"').unwrap()]))
        .collect();
    for batch in images.chunks(6) {
        let fetches = batch.iter().map(|p| get(server.addr, p, &[]));
        for r in futures::future::join_all(fetches).await {
            anyhow::ensure!(r.status == 200, "image {}", r.status);
        }
    }
    println!(
        "  layer page + its first {} thumbnails (each read and checked against its sha256): {:.1} ms",
        images.len(),
        ms(started.elapsed())
    );

    // unit pages: spread over the layer, plain and in a sorted, filtered order
    for (what, context) in [
        ("unit page", String::new()),
        (
            "unit page, prev/next in a sorted filtered order",
            "?sort=color_selectivity&dir=desc&q=synthesis_status%3Dok".to_string(),
        ),
        ("unit record JSON", String::new()),
    ] {
        let mut times = Vec::new();
        let mut size = 0;
        for k in 0..ROUNDS as i64 {
            let filter = (k * 7919 + 13) % units;
            let path = if what.contains("JSON") {
                format!("/api/c/{id}/l/wide/u/{filter}")
            } else {
                format!("{layer}/u/{filter}{context}")
            };
            let (t, b) = timed(&server, &path).await?;
            times.push(t);
            size = b;
        }
        let (median, max) = summary(&mut times);
        println!(
            "  {what}: median {median:.1} ms, max {max:.1} ms, {} KiB",
            size / 1024
        );
    }
    let (rss, hwm) = memory();
    println!(
        "  memory: resident {rss:.0} MiB after serving (peak {hwm:.0} MiB), {rss_made:.0} MiB before the \
         server started, {rss0:.0} MiB before the campaign was made"
    );
    drop(server);
    store.close().await;
    Ok(())
}

/// Drops and recreates database `name` on the server of `base`; returns its URL.
async fn recreate(base: &str, name: &str) -> Result<String> {
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .context("connect to VEPHYS_TEST_DATABASE_URL")?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let (server, _) = base.rsplit_once('/').context("no database in the url")?;
    Ok(format!("{server}/{name}"))
}
