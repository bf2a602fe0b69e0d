//! The results browser in a real browser: headless Chromium (Debian's `chromium`, installed by
//! scripts/chromium.sh) driven over the DevTools protocol opens every page of campaigns made
//! by the test, waits for them to load and checks what a person would see: the unit count,
//! images decoded (natural width > 0), a chart per probe, sorting changing the order, keyboard
//! navigation, progress moving without a reload, the login form refusing a wrong token and
//! taking the right one, and no console errors anywhere. Screenshots are kept under
//! `$CARGO_TARGET_TMPDIR/browser/` (target/tmp/browser).

mod cdp;
mod common;
mod webkit;

use std::path::PathBuf;
use std::sync::Arc;

use cdp::{Browser, Page};
use serde_json::{json, Value};
use vephys_coordinator::store::{Connect, Policy, Store};
use webkit::{campaign, Files, Server};

// fields drop in order: the server and the store before the runtime, the files last
struct Fixture {
    server: Server,
    /// Finished, every probe, filter 1 dead.
    done: webkit::Campaign,
    /// Still running: three hue jobs left.
    running: webkit::Campaign,
    store: Arc<Store>,
    objects: vephys_objects::Objects,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn fixture(token: Option<&str>) -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let objects = webkit::objects(dir.path());
    let url = format!("sqlite://{}", dir.path().join("vephys.db").display());
    let (store, done, running, server) = rt.block_on(async {
        let store = Arc::new(
            Store::open(
                Connect {
                    url: &url,
                    max_connections: 4,
                },
                Policy {
                    lease_ms: 3_600_000,
                    ..common::policy()
                },
            )
            .await
            .unwrap(),
        );
        let files = Files::all(48);
        let done = campaign(
            &store,
            &objects,
            "browser",
            "conv1",
            "0..8",
            &webkit::all_probes(),
            Some(1),
            None,
            files,
        )
        .await;
        let running = campaign(
            &store,
            &objects,
            "still running",
            "conv1",
            "0..8",
            &["synthesis", "hue"],
            None,
            Some(("hue", 3)),
            files,
        )
        .await;
        let server = Server::start(store.clone(), Some(objects.clone()), token).await;
        (store, done, running, server)
    });
    Fixture {
        rt,
        store,
        objects,
        done,
        running,
        server,
        _dir: dir,
    }
}

fn artifact(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let path = dir.join(name);
    eprintln!("screenshot: {}", path.display());
    path
}

fn no_errors(b: &mut Browser, page: &Page, what: &str) {
    let errors = page.errors(b);
    assert!(
        errors.is_empty(),
        "{what}: console errors:\n{}",
        errors.join("\n")
    );
}

fn num(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Images of the page that are in view: (count, all decoded).
const VISIBLE_IMAGES: &str = "(() => { const imgs = [...document.images].filter(i => { \
    const r = i.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight && r.width > 0; }); \
    return [imgs.length, imgs.every(i => i.complete && i.naturalWidth > 0)]; })()";

#[test]
fn every_page_shows_its_content_without_console_errors() {
    let f = fixture(None);
    let mut b = Browser::start();
    let page = b.page();
    let base = format!("http://{}", f.server.addr);
    let id = f.done.id;

    // campaigns, newest first, with progress per layer and probe
    page.open(&mut b, &format!("{base}/"));
    assert_eq!(
        num(&page.eval(
            &mut b,
            "document.querySelectorAll('article.campaign').length"
        )),
        2
    );
    let names = page.eval(
        &mut b,
        "[...document.querySelectorAll('article.campaign h2 a')].map(a => a.textContent)",
    );
    assert_eq!(names, json!(["still running", "browser"]));
    assert_eq!(
        num(&page.eval(
            &mut b,
            &format!("document.querySelectorAll('[data-campaign=\"{id}\"] progress').length")
        )),
        7,
        "one bar per (layer, probe)"
    );
    page.wait_for(
        &mut b,
        "document.getElementById('live').classList.contains('on')",
        10,
    );
    page.screenshot(&mut b, &artifact("campaigns.png"));
    no_errors(&mut b, &page, "campaigns");

    // a campaign
    page.open(&mut b, &format!("{base}/c/{id}"));
    assert_eq!(
        page.eval(&mut b, "document.querySelector('ul.layers a').textContent"),
        json!("conv1")
    );
    page.screenshot(&mut b, &artifact("campaign.png"));
    no_errors(&mut b, &page, "campaign");

    // the layer: eight units, seven max images decoded, the dead unit says so
    page.open(&mut b, &format!("{base}/c/{id}/l/conv1"));
    assert_eq!(
        page.eval(&mut b, "document.getElementById('unit-count').textContent"),
        json!("8")
    );
    assert_eq!(
        num(&page.eval(&mut b, "document.querySelectorAll('#grid .cell').length")),
        8
    );
    assert_eq!(page.eval(&mut b, VISIBLE_IMAGES), json!([7, true]));
    assert_eq!(
        page.eval(
            &mut b,
            "document.querySelector('.cell[data-filter=\"1\"] .none').textContent"
        ),
        json!("dead_unit")
    );
    assert_eq!(
        page.eval(
            &mut b,
            "document.querySelector('.cell[data-filter=\"2\"] .label').textContent"
        ),
        json!("2 ok")
    );
    page.screenshot(&mut b, &artifact("layer.png"));
    no_errors(&mut b, &page, "layer grid");

    page.open(&mut b, &format!("{base}/c/{id}/l/conv1?view=table"));
    assert_eq!(
        num(&page.eval(
            &mut b,
            "document.querySelectorAll('#units tbody tr').length"
        )),
        8
    );
    page.screenshot(&mut b, &artifact("layer-table.png"));
    no_errors(&mut b, &page, "layer table");

    // a unit: its images decoded, a chart per probe drawn, prev/next
    page.open(&mut b, &format!("{base}/c/{id}/l/conv1/u/2"));
    let charts = page.eval(
        &mut b,
        "(() => { const n = {}; for (const f of document.querySelectorAll('figure.chart')) { \
           const s = f.querySelector('svg').getBoundingClientRect(); \
           if (s.width > 100 && s.height > 100) n[f.dataset.probe] = (n[f.dataset.probe] || 0) + 1; } return n; })()",
    );
    assert_eq!(
        charts,
        json!({"zoom": 1, "rotation": 1, "color": 1, "baseline": 1, "grating": 2, "hue": 1})
    );
    assert_eq!(page.eval(&mut b, VISIBLE_IMAGES), json!([4, true]));
    assert_eq!(
        page.eval(&mut b, "document.querySelector('img.max').naturalWidth"),
        json!(48)
    );
    assert!(page
        .eval(&mut b, "document.querySelector('a[rel=next]').textContent")
        .as_str()
        .unwrap()
        .contains("filter 3"));
    page.screenshot(&mut b, &artifact("unit.png"));
    no_errors(&mut b, &page, "unit");

    // the dead unit
    page.open(&mut b, &format!("{base}/c/{id}/l/conv1/u/1"));
    assert!(page
        .eval(&mut b, "document.querySelector('.noimage').textContent")
        .as_str()
        .unwrap()
        .contains("dead unit"));
    no_errors(&mut b, &page, "dead unit");

    // side by side
    page.open(&mut b, &format!("{base}/c/{id}/l/conv1/compare?f=0,2,3"));
    assert_eq!(
        num(&page.eval(
            &mut b,
            "document.querySelectorAll('#compare-table thead th[data-filter]').length"
        )),
        3
    );
    assert_eq!(
        num(&page.eval(
            &mut b,
            "document.querySelectorAll('figure.chart[data-probe=zoom]').length"
        )),
        3
    );
    // side by side: the three zoom charts share a row, each in its own column
    let tops_and_lefts = "[...document.querySelectorAll('figure.chart[data-probe=zoom]')].map(f => f.getBoundingClientRect())";
    assert_eq!(
        num(&page.eval(
            &mut b,
            &format!("new Set({tops_and_lefts}.map(r => Math.round(r.top))).size")
        )),
        1
    );
    assert_eq!(
        num(&page.eval(
            &mut b,
            &format!("new Set({tops_and_lefts}.map(r => Math.round(r.left))).size")
        )),
        3
    );
    assert_eq!(page.eval(&mut b, VISIBLE_IMAGES)[1], json!(true));
    page.screenshot(&mut b, &artifact("compare.png"));
    no_errors(&mut b, &page, "compare");

    // an unknown unit: the 404 page says what is missing
    page.open(&mut b, &format!("{base}/c/{id}/l/conv1/u/99"));
    assert!(page
        .eval(&mut b, "document.querySelector('.error').textContent")
        .as_str()
        .unwrap()
        .contains("has no unit (filter) 99"));
    let _ = page.errors(&mut b); // the 404 itself may be logged
}

#[test]
fn sorting_changes_the_order_and_the_keyboard_moves_between_units() {
    let f = fixture(None);
    let mut b = Browser::start();
    let page = b.page();
    let base = format!("http://{}", f.server.addr);
    let id = f.done.id;
    let order = "[...document.querySelectorAll('#grid .cell')].map(c => +c.dataset.filter)";

    page.open(&mut b, &format!("{base}/c/{id}/l/conv1"));
    assert_eq!(page.eval(&mut b, order), json!([0, 1, 2, 3, 4, 5, 6, 7]));
    // choose an order in the form, as a person would: the page reloads in that order
    page.eval(
        &mut b,
        "window.__before = true; document.getElementById('dir').value = 'desc'; \
         const s = document.getElementById('sort'); s.value = 'color_selectivity'; \
         s.dispatchEvent(new Event('change'));",
    );
    page.wait_for(
        &mut b,
        "!window.__before && location.search.includes('sort=color_selectivity')",
        15,
    );
    page.settle(&mut b);
    let sorted = page.eval(&mut b, order);
    let expected = f.rt.block_on(async {
        let r = webkit::get(
            f.server.addr,
            &format!("/api/c/{id}/l/conv1?sort=color_selectivity&dir=desc"),
            &[],
        )
        .await;
        r.json()["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["filter"].clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(sorted, Value::Array(expected.clone()));
    assert_ne!(
        sorted,
        json!([0, 1, 2, 3, 4, 5, 6, 7]),
        "sorting changed the order"
    );
    assert_eq!(page.eval(&mut b, VISIBLE_IMAGES), json!([7, true]));
    page.screenshot(&mut b, &artifact("layer-sorted.png"));
    no_errors(&mut b, &page, "sorted layer");

    // arrows move between units, Enter opens one, and its prev/next follow the sorted order
    page.press(&mut b, "ArrowRight"); // focuses the first unit
    page.press(&mut b, "ArrowRight");
    let focused = page.eval(
        &mut b,
        "+document.activeElement.closest('.cell').dataset.filter",
    );
    assert_eq!(focused, expected[1]);
    page.eval(&mut b, "window.__before = true");
    page.press(&mut b, "Enter");
    page.wait_for(
        &mut b,
        "!window.__before && location.pathname.includes('/u/')",
        15,
    );
    page.settle(&mut b);
    let path = page.eval(&mut b, "location.pathname + location.search");
    assert!(
        path.as_str().unwrap().ends_with(&format!(
            "/u/{}?sort=color_selectivity&dir=desc",
            expected[1]
        )),
        "{path}"
    );
    page.eval(&mut b, "window.__before = true");
    page.press(&mut b, "ArrowRight");
    page.wait_for(
        &mut b,
        &format!(
            "!window.__before && location.pathname.endsWith('/u/{}')",
            expected[2]
        ),
        15,
    );
    page.settle(&mut b);
    no_errors(&mut b, &page, "unit by keyboard");
    // u: up to the grid, which keeps its order
    page.eval(&mut b, "window.__before = true");
    page.press(&mut b, "u");
    page.wait_for(
        &mut b,
        "!window.__before && document.getElementById('grid')",
        15,
    );
    page.settle(&mut b);
    assert_eq!(page.eval(&mut b, order), Value::Array(expected.clone()));

    // x ticks units for comparison, c compares them
    page.press(&mut b, "ArrowRight");
    page.press(&mut b, "x");
    page.press(&mut b, "ArrowRight");
    page.press(&mut b, "x");
    assert_eq!(
        num(&page.eval(&mut b, "document.querySelectorAll('.cell.picked').length")),
        2
    );
    page.eval(&mut b, "window.__before = true");
    page.press(&mut b, "c");
    page.wait_for(
        &mut b,
        "!window.__before && location.pathname.endsWith('/compare')",
        15,
    );
    page.settle(&mut b);
    assert_eq!(
        num(&page.eval(
            &mut b,
            "document.querySelectorAll('#compare-table thead th[data-filter]').length"
        )),
        2
    );
    no_errors(&mut b, &page, "compare by keyboard");

    // / focuses the filter; typing a filter and Enter shows the matching units
    page.open(&mut b, &format!("{base}/c/{id}/l/conv1"));
    page.press(&mut b, "/");
    assert_eq!(page.eval(&mut b, "document.activeElement.id"), json!("q"));
    page.call(&mut b, "Input.insertText", json!({"text": "filter < 3"}));
    page.eval(&mut b, "window.__before = true");
    page.press(&mut b, "Enter");
    page.wait_for(
        &mut b,
        "!window.__before && document.getElementById('grid')",
        15,
    );
    page.settle(&mut b);
    assert_eq!(page.eval(&mut b, order), json!([0, 1, 2]));
    assert_eq!(
        page.eval(&mut b, "document.getElementById('match-count').textContent"),
        json!("3")
    );
    no_errors(&mut b, &page, "filtered layer");
}

#[test]
fn progress_moves_without_a_reload() {
    let mut f = fixture(None);
    let mut b = Browser::start();
    let page = b.page();
    let base = format!("http://{}", f.server.addr);
    let id = f.running.id;
    page.open(&mut b, &format!("{base}/"));
    page.wait_for(
        &mut b,
        "document.getElementById('live').classList.contains('on')",
        10,
    );
    let cell = format!("[...document.querySelectorAll('[data-group]')].find(td => td.dataset.group === '{id}|conv1|hue')");
    assert_eq!(
        page.eval(
            &mut b,
            &format!("{cell}.querySelector('[data-f=done]').textContent")
        ),
        json!("5/8")
    );
    let state =
        format!("document.querySelector('[data-campaign=\"{id}\"] [data-f=state]').textContent");
    assert_eq!(page.eval(&mut b, &state), json!("running"));
    page.eval(&mut b, "window.__same_page = true");

    let (store, objects) = (f.store.clone(), f.objects.clone());
    f.rt.block_on(f.running.finish(&store, &objects));
    page.wait_for(
        &mut b,
        &format!("{cell}.querySelector('[data-f=done]').textContent === '8/8'"),
        15,
    );
    page.wait_for(&mut b, &format!("{state} === 'succeeded'"), 15);
    assert_eq!(
        page.eval(&mut b, "window.__same_page"),
        json!(true),
        "the page was not reloaded"
    );
    assert_eq!(
        page.eval(&mut b, &format!("{cell}.querySelector('progress').value")),
        json!(8)
    );
    page.screenshot(&mut b, &artifact("campaigns-live.png"));
    no_errors(&mut b, &page, "live campaigns");
}

#[test]
fn the_login_form_refuses_a_wrong_token_and_takes_the_right_one() {
    let f = fixture(Some("s3cret-token"));
    let mut b = Browser::start();
    let page = b.page();
    let base = format!("http://{}", f.server.addr);
    let id = f.done.id;

    page.open(&mut b, &format!("{base}/c/{id}/l/conv1"));
    assert_eq!(page.eval(&mut b, "location.pathname"), json!("/login"));
    assert_eq!(
        page.eval(&mut b, "document.activeElement.id"),
        json!("token")
    );
    page.screenshot(&mut b, &artifact("login.png"));
    no_errors(&mut b, &page, "login form");

    let submit = |b: &mut Browser, token: &str| {
        page.eval(
            b,
            &format!(
                "window.__before = true; document.getElementById('token').value = '{token}'; \
                 document.querySelector('section.login form').requestSubmit();"
            ),
        );
        page.wait_for(
            b,
            "!window.__before && document.readyState === 'complete'",
            15,
        );
        page.settle(b);
    };
    submit(&mut b, "wrong");
    assert_eq!(page.eval(&mut b, "location.pathname"), json!("/login"));
    assert!(page
        .eval(&mut b, "document.getElementById('login-error').textContent")
        .as_str()
        .unwrap()
        .contains("not the user token"));
    let cookies = page.call(
        &mut b,
        "Network.getCookies",
        json!({"urls": [base.clone()]}),
    );
    assert_eq!(
        cookies["cookies"].as_array().unwrap().len(),
        0,
        "no session for a wrong token"
    );
    let _ = page.errors(&mut b); // the 401 answer to the form may be logged

    submit(&mut b, "s3cret-token");
    assert_eq!(
        page.eval(&mut b, "location.pathname"),
        json!(format!("/c/{id}/l/conv1"))
    );
    assert_eq!(
        page.eval(&mut b, "document.getElementById('unit-count').textContent"),
        json!("8")
    );
    assert_eq!(
        page.eval(&mut b, VISIBLE_IMAGES),
        json!([7, true]),
        "images load with the session"
    );
    let cookies = page.call(
        &mut b,
        "Network.getCookies",
        json!({"urls": [base.clone()]}),
    );
    let session = &cookies["cookies"][0];
    assert_eq!(session["name"], "vephys_session");
    assert_eq!(
        (
            session["httpOnly"].clone(),
            session["secure"].clone(),
            session["sameSite"].clone()
        ),
        (json!(true), json!(true), json!("Strict"))
    );
    assert_eq!(
        page.eval(&mut b, "document.cookie"),
        json!(""),
        "scripts cannot read the session"
    );
    page.screenshot(&mut b, &artifact("after-login.png"));
    no_errors(&mut b, &page, "after login");

    // the live stream works with the session too
    page.open(&mut b, &format!("{base}/"));
    page.wait_for(
        &mut b,
        "document.getElementById('live').classList.contains('on')",
        10,
    );
    no_errors(&mut b, &page, "campaigns after login");
}

/// The console watch itself: a page with a console error and a failed load is caught.
#[test]
fn the_console_watch_catches_errors() {
    let mut b = Browser::start();
    let page = b.page();
    page.open(
        &mut b,
        "data:text/html,<script>console.error('boom')</script><img src='http://127.0.0.1:9/x.png'>",
    );
    page.wait_for(&mut b, "document.images[0].complete", 10);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let errors = page.errors(&mut b);
    assert!(errors.iter().any(|e| e.contains("boom")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("log:")), "{errors:?}");
}
