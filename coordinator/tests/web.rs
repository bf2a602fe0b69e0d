//! The results browser over real HTTP, on Postgres and SQLite alike: pages and their JSON twins,
//! sorting and filtering by the view's own columns, downloads, images checked against their
//! sha256 (a tampered one is refused), 404s that say what is missing, the token and the session
//! cookie, and live progress. Browser-level checks are in tests/browser.rs.

mod common;
mod webkit;

use std::sync::Arc;
use std::time::Duration;

use common::{open, policy, Backend};
use sqlx::{Column as _, Row as _};
use vephys_coordinator::store::Store;
use webkit::{campaign, get, request, Server};

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Postgres, concat!("pg_web_", stringify!($name))).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite, stringify!($name)).await
                }
            )*
        }
    };
}

both!(
    pages_and_json_show_a_campaign,
    sorting_filtering_and_downloads_use_the_views_columns,
    unknown_campaigns_layers_and_units_are_404_with_a_clear_message,
    a_tampered_image_is_refused,
    the_user_token_guards_the_ui_but_not_metrics_or_healthz,
    progress_is_live_and_new_results_show,
    failed_jobs_show_their_errors,
);

struct Fixture {
    store: Arc<Store>,
    objects: vephys_objects::Objects,
    campaign: webkit::Campaign,
    _db: Option<common::TestDb>,
    _dir: tempfile::TempDir,
}

/// Campaign "web" on conv1 filters 0..8 with every probe; filter 1 is a dead unit.
async fn fixture(backend: Backend, name: &str, unfinished: Option<(&str, usize)>) -> Fixture {
    let db = open(backend, name, policy()).await;
    let dir = tempfile::tempdir().unwrap();
    let objects = webkit::objects(dir.path());
    let c = campaign(
        &db.store,
        &objects,
        "web",
        "conv1",
        "0..8",
        &webkit::all_probes(),
        Some(1),
        unfinished,
        webkit::Files::all(24),
    )
    .await;
    // the test keeps the database alive; the server gets its own store on it
    let store = Arc::new(db.second_store(policy()).await);
    Fixture {
        store,
        objects,
        campaign: c,
        _db: Some(db),
        _dir: dir,
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Every `src="/a/…"` in a page.
fn image_links(html: &str) -> Vec<String> {
    html.split("src=\"/a/")
        .skip(1)
        .map(|rest| format!("/a/{}", &rest[..rest.find('"').unwrap()]))
        .collect()
}

async fn pages_and_json_show_a_campaign(backend: Backend, name: &str) {
    let f = fixture(backend, name, None).await;
    let server = Server::start(f.store.clone(), Some(f.objects.clone()), None).await;
    let id = f.campaign.id;

    let list = get(server.addr, "/", &[]).await;
    assert_eq!(list.status, 200, "{}", list.text());
    let html = list.text();
    assert!(
        html.contains(&format!("data-campaign=\"{id}\"")) && html.contains(">web<"),
        "{html}"
    );
    assert!(html.contains("data-events=\"/events\""), "the list is live");
    assert!(list
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    assert_eq!(list.header("cache-control"), Some("no-store"));
    let api = get(server.addr, "/api/campaigns", &[]).await.json();
    assert_eq!(api["campaigns"][0]["id"], id);
    assert_eq!(api["campaigns"][0]["state"], "succeeded");
    assert_eq!(api["campaigns"][0]["layers"][0]["units"], 8);

    let page = get(server.addr, &format!("/c/{id}"), &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains(&format!("href=\"/c/{id}/l/conv1\"")));
    let api = get(server.addr, &format!("/api/c/{id}"), &[]).await.json();
    assert!(api["spec_toml"].as_str().unwrap().contains("conv1"));

    // the layer: eight units, seven max images (filter 1 is dead), each under its index and status
    let layer = get(server.addr, &format!("/c/{id}/l/conv1"), &[]).await;
    assert_eq!(layer.status, 200, "{}", layer.text());
    let html = layer.text();
    assert!(html.contains("id=\"unit-count\">8<"), "{html}");
    assert_eq!(count(&html, "class=\"cell\""), 8);
    let images = image_links(&html);
    assert_eq!(images.len(), 7, "{images:?}");
    assert!(html.contains("<span class=\"none\">dead_unit</span>"));
    assert!(html.contains("<b class=\"idx\">3</b> <span class=\"st ok\">ok</span>"));
    assert!(html.contains("loading=\"lazy\""));

    // an image: the stored bytes, cached for good, revalidated by its sha256
    let image = get(server.addr, &images[0], &[]).await;
    assert_eq!(image.status, 200, "{}", image.text());
    assert_eq!(image.header("content-type"), Some("image/png"));
    assert_eq!(&image.body[..8], b"\x89PNG\r\n\x1a\n");
    assert!(image.header("cache-control").unwrap().contains("immutable"));
    let etag = image.header("etag").unwrap().to_string();
    let again = get(server.addr, &images[0], &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304);

    // a unit: max image, R/G/B images, a chart per probe (gratings: two), prev/next
    let unit = get(server.addr, &format!("/c/{id}/l/conv1/u/2"), &[]).await;
    assert_eq!(unit.status, 200, "{}", unit.text());
    let html = unit.text();
    for probe in ["zoom", "rotation", "color", "baseline", "hue"] {
        assert_eq!(
            count(&html, &format!("class=\"chart\" data-probe=\"{probe}\"")),
            1,
            "{probe}"
        );
    }
    assert_eq!(count(&html, "class=\"chart\" data-probe=\"grating\""), 2);
    assert_eq!(image_links(&html).len(), 4, "max image and R, G, B");
    assert!(html.contains("rel=\"prev\"") && html.contains("← filter 1"));
    assert!(html.contains("rel=\"next\"") && html.contains("filter 3 →"));
    assert!(html.contains("color selectivity") && html.contains("params hash"));
    for svg in html.split("<svg").skip(1) {
        let svg = format!("<svg{}", &svg[..svg.find("</svg>").unwrap() + 6]);
        roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    }
    let first = get(server.addr, &format!("/c/{id}/l/conv1/u/0"), &[])
        .await
        .text();
    assert!(
        !first.contains("rel=\"prev\""),
        "the first unit has no previous one"
    );
    let dead = get(server.addr, &format!("/c/{id}/l/conv1/u/1"), &[])
        .await
        .text();
    assert!(dead.contains("dead unit"));

    // the unit's record
    let record = get(server.addr, &format!("/api/c/{id}/l/conv1/u/2"), &[])
        .await
        .json();
    assert_eq!(record["filter"], 2);
    assert_eq!(
        record["results"].as_array().unwrap().len(),
        webkit::all_probes().len()
    );
    assert!(record["summary"]["color_selectivity"].is_f64());
    assert!(record["links"]["max_image"]
        .as_str()
        .unwrap()
        .starts_with("/a/"));
    let download = get(
        server.addr,
        &format!("/c/{id}/l/conv1/u/2/record.json"),
        &[],
    )
    .await;
    assert!(download
        .header("content-disposition")
        .unwrap()
        .contains("attachment"));
    assert_eq!(download.json()["filter"], 2);

    // side by side
    let compare = get(
        server.addr,
        &format!("/c/{id}/l/conv1/compare?f=2,5&f=7"),
        &[],
    )
    .await;
    assert_eq!(compare.status, 200, "{}", compare.text());
    let html = compare.text();
    for f in [2, 5, 7] {
        assert!(html.contains(&format!("<th data-filter=\"{f}\">")), "{f}");
    }
    assert_eq!(count(&html, "class=\"chart\" data-probe=\"zoom\""), 3);

    // the static files and the open endpoints
    let css = get(server.addr, "/static/app.css?v=x", &[]).await;
    assert_eq!(css.status, 200);
    assert_eq!(get(server.addr, "/healthz", &[]).await.status, 200);
    assert_eq!(get(server.addr, "/metrics", &[]).await.status, 200);
    // read-only: nothing but the login form takes a POST
    let post = request(server.addr, "POST", &format!("/c/{id}"), &[], b"x=1").await;
    assert_eq!(post.status, 405);
}

async fn sorting_filtering_and_downloads_use_the_views_columns(backend: Backend, name: &str) {
    let f = fixture(backend, name, None).await;
    let server = Server::start(f.store.clone(), Some(f.objects.clone()), None).await;
    let id = f.campaign.id;

    // the columns are the view's, whatever they are today
    let row = sqlx::query("SELECT * FROM unit_summary WHERE campaign_id = $1")
        .bind(id)
        .fetch_one(f.store.pool())
        .await
        .unwrap();
    let view: Vec<String> = row
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .filter(|n| !["campaign_id", "model", "layer"].contains(&n.as_str()))
        .collect();
    let api = get(server.addr, &format!("/api/c/{id}/l/conv1"), &[])
        .await
        .json();
    let columns: Vec<String> = api["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(columns, view);
    assert_eq!(api["units"], 8);
    let filters = |v: &serde_json::Value| -> Vec<i64> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["filter"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(filters(&api), (0..8).collect::<Vec<_>>());

    // sorting by a number: descending, missing values last, and a different order
    let sorted = get(
        server.addr,
        &format!("/api/c/{id}/l/conv1?sort=color_selectivity&dir=desc"),
        &[],
    )
    .await
    .json();
    let values: Vec<Option<f64>> = sorted["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["color_selectivity"].as_f64())
        .collect();
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    assert!(present.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
    assert!(
        values
            .iter()
            .skip_while(|v| v.is_some())
            .all(|v| v.is_none()),
        "{values:?}"
    );
    assert_ne!(filters(&sorted), (0..8).collect::<Vec<_>>());
    // the HTML grid has the same order
    let html = get(
        server.addr,
        &format!("/c/{id}/l/conv1?sort=color_selectivity&dir=desc"),
        &[],
    )
    .await
    .text();
    let order: Vec<i64> = html
        .split("class=\"cell\" data-filter=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
        .collect();
    assert_eq!(order, filters(&sorted));

    // filtering: numbers, text, ranges, nulls; an unknown column says which ones exist
    let q = |expr: &str| format!("/api/c/{id}/l/conv1?q={}", urlencode(expr));
    let high = get(server.addr, &q("color_selectivity > 0.3"), &[])
        .await
        .json();
    assert!(high["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["color_selectivity"].as_f64().unwrap() > 0.3));
    assert_eq!(high["units"], 8);
    let range = get(server.addr, &q("2..5"), &[]).await.json();
    assert_eq!(filters(&range), vec![2, 3, 4]);
    let ok = get(server.addr, &q("synthesis_status = ok and filter < 4"), &[])
        .await
        .json();
    assert_eq!(filters(&ok), vec![0, 2, 3]);
    let bad = get(server.addr, &q("bogus > 1"), &[]).await;
    assert_eq!(bad.status, 400);
    let message = bad.json()["error"].as_str().unwrap().to_string();
    assert!(
        message.contains("unknown column `bogus`") && message.contains("color_selectivity"),
        "{message}"
    );
    let page = get(
        server.addr,
        &format!("/c/{id}/l/conv1?q={}", urlencode("bogus > 1")),
        &[],
    )
    .await;
    assert_eq!(page.status, 400);
    assert!(page.text().contains("id=\"filter-error\""));

    // paging
    let paged = get(
        server.addr,
        &format!("/api/c/{id}/l/conv1?per=3&page=3"),
        &[],
    )
    .await
    .json();
    assert_eq!(
        (paged["pages"].as_u64(), filters(&paged)),
        (Some(3), vec![6, 7])
    );

    // downloads: the whole table as shown (every page), in the order shown
    let csv = get(
        server.addr,
        &format!("/c/{id}/l/conv1/units.csv?sort=filter&dir=desc"),
        &[],
    )
    .await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-disposition").unwrap().contains(".csv"));
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{text}");
    assert!(lines[0].contains("filter") && lines[0].contains("color_selectivity"));
    let filter_at = lines[0].split(',').position(|c| c == "filter").unwrap();
    assert_eq!(lines[1].split(',').nth(filter_at), Some("7"));
    let parquet = get(
        server.addr,
        &format!("/c/{id}/l/conv1/units.parquet?q=filter%3C5"),
        &[],
    )
    .await;
    assert_eq!(parquet.status, 200);
    assert_eq!(&parquet.body[..4], b"PAR1");
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(bytes::Bytes::from(parquet.body.clone())).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 5);
    let json = get(server.addr, &format!("/c/{id}/l/conv1/units.json"), &[])
        .await
        .json();
    assert_eq!(json.as_array().unwrap().len(), 8);

    // a unit's previous/next follow the order it was opened in
    let second = filters(&sorted)[1];
    let unit = get(
        server.addr,
        &format!("/c/{id}/l/conv1/u/{second}?sort=color_selectivity&dir=desc"),
        &[],
    )
    .await
    .text();
    assert!(
        unit.contains(&format!("← filter {}", filters(&sorted)[0])),
        "{unit}"
    );
    assert!(unit.contains(&format!("filter {} →", filters(&sorted)[2])));
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn unknown_campaigns_layers_and_units_are_404_with_a_clear_message(
    backend: Backend,
    name: &str,
) {
    let f = fixture(backend, name, None).await;
    let server = Server::start(f.store.clone(), Some(f.objects.clone()), None).await;
    let id = f.campaign.id;
    let html_404 = |path: String, says: &'static str| {
        let addr = server.addr;
        async move {
            let r = get(addr, &path, &[]).await;
            assert_eq!(r.status, 404, "{path}: {}", r.text());
            assert!(
                r.header("content-type").unwrap().starts_with("text/html"),
                "{path}"
            );
            assert!(r.text().contains(says), "{path}: {}", r.text());
        }
    };
    let json_404 = |path: String, says: &'static str| {
        let addr = server.addr;
        async move {
            let r = get(addr, &path, &[]).await;
            assert_eq!(r.status, 404, "{path}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
            let message = r.json()["error"].as_str().unwrap().to_string();
            assert!(message.contains(says), "{path}: {message}");
        }
    };
    html_404("/c/999".into(), "campaign 999 not found").await;
    html_404("/c/nope".into(), "campaign ids are numbers").await;
    html_404("/c/999/l/conv1".into(), "campaign 999 not found").await;
    html_404(
        format!("/c/{id}/l/conv9"),
        "has no layer `conv9`; its layers are conv1",
    )
    .await;
    html_404(format!("/c/{id}/l/conv1/u/99"), "has no unit (filter) 99").await;
    html_404(format!("/c/{id}/l/conv1/u/x"), "units are filter indices").await;
    html_404(
        format!("/c/{id}/l/conv1/compare?f=1,99"),
        "has no unit (filter) 99",
    )
    .await;
    json_404("/api/c/999".into(), "campaign 999 not found").await;
    json_404("/api/c/999/l/conv1".into(), "campaign 999 not found").await;
    json_404(format!("/api/c/{id}/l/conv9"), "has no layer `conv9`").await;
    json_404(
        format!("/api/c/{id}/l/conv1/u/99"),
        "has no unit (filter) 99",
    )
    .await;
    json_404(
        format!("/c/{id}/l/conv1/u/99/record.json"),
        "has no unit (filter) 99",
    )
    .await;
    json_404(format!("/c/{id}/l/conv9/units.csv"), "has no layer").await;
    json_404(
        "/c/999/l/conv1/units.parquet".into(),
        "campaign 999 not found",
    )
    .await;
    json_404("/events?campaign=999".into(), "campaign 999 not found").await;
    let artifact = get(
        server.addr,
        &format!("/a/999999/max_image/{}", "0".repeat(64)),
        &[],
    )
    .await;
    assert_eq!(artifact.status, 404);
    assert!(artifact.text().contains("recorded no `max_image` artifact"));
}

async fn a_tampered_image_is_refused(backend: Backend, name: &str) {
    let f = fixture(backend, name, None).await;
    let server = Server::start(f.store.clone(), Some(f.objects.clone()), None).await;
    let id = f.campaign.id;
    let record = get(server.addr, &format!("/api/c/{id}/l/conv1/u/3"), &[])
        .await
        .json();
    let href = record["links"]["max_image"].as_str().unwrap().to_string();
    let uri = record["results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["artifacts"].as_array().unwrap().clone())
        .find(|a| a["kind"] == "max_image")
        .unwrap()["uri"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(server.addr, &href, &[]).await.status, 200);

    // the object changes after the worker recorded its hash
    let path = vephys_objects::local_path(&uri).unwrap();
    std::fs::write(path, webkit::png(24, [1, 2, 3], 99)).unwrap();
    let refused = get(server.addr, &href, &[]).await;
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert!(refused.text().contains("sha256"), "{}", refused.text());
    assert!(
        !refused.body.starts_with(b"\x89PNG"),
        "no image bytes are served"
    );
    assert_eq!(refused.header("cache-control"), Some("no-store"));

    // a link naming other content is not this artifact
    let other = href.rsplit_once('/').unwrap().0.to_string() + "/" + &"a".repeat(64);
    assert_eq!(get(server.addr, &other, &[]).await.status, 404);

    // without a store the coordinator says what to configure
    let bare = Server::start(f.store.clone(), None, None).await;
    let r = get(bare.addr, &href, &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("--store"));
}

async fn the_user_token_guards_the_ui_but_not_metrics_or_healthz(backend: Backend, name: &str) {
    let f = fixture(backend, name, None).await;
    let server = Server::start(f.store.clone(), Some(f.objects.clone()), Some("s3cret")).await;
    let id = f.campaign.id;

    let page = get(server.addr, &format!("/c/{id}?x=1"), &[]).await;
    assert_eq!(page.status, 303);
    assert_eq!(
        page.header("location"),
        Some(format!("/login?next=%2Fc%2F{id}%3Fx%3D1").as_str())
    );
    for path in [
        "/api/campaigns",
        "/events",
        "/a/1/max_image/00",
        "/c/1/l/conv1/units.csv",
    ] {
        let r = get(server.addr, path, &[]).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.text().contains("user token"), "{path}");
    }
    assert_eq!(get(server.addr, "/healthz", &[]).await.status, 200);
    assert_eq!(get(server.addr, "/metrics", &[]).await.status, 200);
    assert_eq!(get(server.addr, "/static/app.js", &[]).await.status, 200);
    let login = get(server.addr, "/login?next=/c/1", &[]).await;
    assert_eq!(login.status, 200);
    assert!(login.text().contains("type=\"password\""));

    // a wrong token: the form again, no cookie
    let form = "application/x-www-form-urlencoded";
    let wrong = request(
        server.addr,
        "POST",
        "/login",
        &[("Content-Type", form)],
        b"token=guess&next=%2F",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    assert!(wrong.text().contains("not the user token"));
    // the right one: a Secure, HttpOnly, SameSite=Strict session, back where we were going
    let body = format!("token=s3cret&next=%2Fc%2F{id}");
    let right = request(
        server.addr,
        "POST",
        "/login",
        &[("Content-Type", form)],
        body.as_bytes(),
    )
    .await;
    assert_eq!(right.status, 303);
    assert_eq!(right.header("location"), Some(format!("/c/{id}").as_str()));
    let cookie = right.header("set-cookie").unwrap().to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("s3cret"),
        "the cookie does not carry the token"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let page = get(server.addr, &format!("/c/{id}"), &[("Cookie", &session)]).await;
    assert_eq!(page.status, 200);
    // a forged session is not one
    let last = if session.ends_with('0') { "1" } else { "0" };
    let forged = format!("{}{last}", &session[..session.len() - 1]);
    assert_eq!(
        get(server.addr, "/", &[("Cookie", &forged)]).await.status,
        303
    );
    // scripts use the bearer header
    let api = get(
        server.addr,
        "/api/campaigns",
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(api.status, 200);
    let api = get(
        server.addr,
        "/api/campaigns",
        &[("Authorization", "Bearer s3cre")],
    )
    .await;
    assert_eq!(api.status, 401);
    // the link `vephys ui` prints: traded for the cookie, dropped from the address bar
    let link = get(
        server.addr,
        &format!("/c/{id}?token=s3cret&view=table"),
        &[],
    )
    .await;
    assert_eq!(link.status, 303);
    assert_eq!(
        link.header("location"),
        Some(format!("/c/{id}?view=table").as_str())
    );
    assert!(link.header("set-cookie").unwrap().contains("HttpOnly"));
    // logging out ends the session in the browser
    let out = request(server.addr, "POST", "/logout", &[("Cookie", &session)], b"").await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

/// Reads an event stream until `done` holds for what arrived, or fails after 15 s.
async fn read_events_until(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut String,
    done: impl Fn(&str) -> bool,
) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut chunk = [0u8; 4096];
    while !done(buffer) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no such event within 15 s; got:\n{buffer}"))
            .unwrap();
        assert!(n > 0, "the stream ended; got:\n{buffer}");
        buffer.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

async fn progress_is_live_and_new_results_show(backend: Backend, name: &str) {
    let mut f = fixture(backend, name, Some(("hue", 3))).await;
    let server = Server::start(f.store.clone(), Some(f.objects.clone()), None).await;
    let id = f.campaign.id;
    assert_eq!(f.campaign.kept.len(), 3);
    let hue_of = |api: &serde_json::Value| -> usize {
        api["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["preferred_hue"].is_f64())
            .count()
    };
    let before = get(server.addr, &format!("/api/c/{id}/l/conv1"), &[])
        .await
        .json();
    assert_eq!(hue_of(&before), 5, "three hue jobs are still running");

    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "GET /events?campaign={id} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buffer = String::new();
    read_events_until(&mut stream, &mut buffer, |b| b.contains("event: campaigns")).await;
    assert!(buffer.contains("text/event-stream"), "{buffer}");
    assert!(buffer.contains("\"state\":\"running\""), "{buffer}");

    f.campaign.finish(&f.store, &f.objects).await;
    read_events_until(&mut stream, &mut buffer, |b| {
        b.contains("\"state\":\"succeeded\"")
    })
    .await;

    // the layer's rows are read again (within a few seconds) and show the new results
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let after = get(server.addr, &format!("/api/c/{id}/l/conv1"), &[])
            .await
            .json();
        if hue_of(&after) == 8 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new results never showed: {after}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stream);
    drop(server);
}

/// The `vephys-coordinator` binary serves the UI on `--http` with images from `--store`, behind
/// `--user-token`, and SIGTERM stops it promptly even while a browser holds an event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_binary_serves_the_ui_and_stops_with_a_stream_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("vephys.db").display());
    {
        let store = Store::open(
            vephys_coordinator::store::Connect {
                url: &url,
                max_connections: 4,
            },
            policy(),
        )
        .await
        .unwrap();
        let objects = webkit::objects(dir.path());
        campaign(
            &store,
            &objects,
            "bin",
            "conv1",
            "0..2",
            &["synthesis"],
            None,
            None,
            webkit::Files::all(8),
        )
        .await;
        store.close().await;
    }
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (grpc, http) = (free(), free());
    let store_url = format!("file://{}", dir.path().join("objects").display());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vephys-coordinator"))
        .env_clear()
        .args([
            "--database-url",
            &url,
            "--listen",
            &grpc.to_string(),
            "--http",
            &http.to_string(),
        ])
        .args(["--user-token", "tok", "--store", &store_url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(http).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the coordinator did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(http, "/healthz", &[]).await.status, 200);
    assert_eq!(get(http, "/", &[]).await.status, 303);
    let auth = [("Authorization", "Bearer tok")];
    let record = get(http, "/api/c/1/l/conv1/u/1", &auth).await.json();
    let image = get(http, record["links"]["max_image"].as_str().unwrap(), &auth).await;
    assert_eq!((image.status, &image.body[..4]), (200, &b"\x89PNG"[..]));

    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = String::new();
    read_events_until(&mut stream, &mut buffer, |b| b.contains("event: campaigns")).await;
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("SIGTERM stops the coordinator with an event stream open")
        .unwrap();
    assert!(status.success(), "{status}");
}

async fn failed_jobs_show_their_errors(backend: Backend, name: &str) {
    let mut f = fixture(backend, name, Some(("zoom", 1))).await;
    let filter = f.campaign.kept[0].filter;
    f.campaign
        .fail(&f.store, "CUDA out of memory <again>")
        .await;
    let server = Server::start(f.store.clone(), Some(f.objects.clone()), None).await;
    let id = f.campaign.id;

    let page = get(server.addr, &format!("/c/{id}"), &[]).await.text();
    assert!(page.contains("Recent errors"), "{page}");
    assert!(
        page.contains("CUDA out of memory &lt;again&gt;"),
        "escaped: {page}"
    );
    assert!(page.contains("class=\"state failed\""));
    let api = get(
        server.addr,
        &format!("/api/c/{id}/l/conv1?q=failed_jobs%3E0"),
        &[],
    )
    .await
    .json();
    let rows = api["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{api}");
    assert_eq!(rows[0]["filter"], filter);
    assert!(rows[0]["preferred_zoom"].is_null());
    let unit = get(server.addr, &format!("/c/{id}/l/conv1/u/{filter}"), &[])
        .await
        .text();
    assert!(
        unit.contains("<span class=\"jstate failed\">failed</span>"),
        "{unit}"
    );
    assert!(unit.contains("CUDA out of memory"));
    assert!(
        !unit.contains("data-probe=\"zoom\""),
        "no zoom chart without zoom results"
    );
}
