//! A unit (one filter of a layer): its max image and R/G/B-only images, every tuning curve as
//! the report draws it, the derived numbers, parameters and provenance of each job, stored
//! stimuli, links to the previous and next unit in the order the grid was showing; its record
//! as JSON; and two or more units side by side.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use serde_json::{json, Value};
use vephys_proto::v1::{Artifact, JobResult};
use vephys_results::plots::{self, Figure};
use vephys_results::record::result_json;

use super::cache::LayerTable;
use super::html::{
    artifact_href, campaign_href, cell_text, download, esc, html_response, humanize, json_response,
    layer_href, num, page, unit_href, with_query, WebError, WebResult,
};
use super::layer::load;
use super::query::{self, Params};
use super::State;
use crate::store::browse::{CampaignHead, UnitJob};

/// Most units one comparison shows.
const MAX_COMPARE: usize = 12;

/// Single-colour images of the colour job: (artifact kind, caption).
const CHANNELS: [(&str, &str); 3] = [
    ("max_image_r", "R only"),
    ("max_image_g", "G only"),
    ("max_image_b", "B only"),
];

struct Unit {
    filter: i64,
    row: usize,
    results: Vec<JobResult>,
    jobs: Vec<UnitJob>,
}

impl Unit {
    /// Results by probe (one job per probe; the latest attempt should there be more).
    fn by_probe(&self) -> BTreeMap<&str, &JobResult> {
        let mut out: BTreeMap<&str, &JobResult> = BTreeMap::new();
        for r in &self.results {
            match out.get(r.probe.as_str()) {
                Some(old) if old.attempt > r.attempt => {}
                _ => {
                    out.insert(r.probe.as_str(), r);
                }
            }
        }
        out
    }

    fn artifact_job(&self, kind: &str) -> Option<(i64, &Artifact)> {
        self.results
            .iter()
            .flat_map(|r| r.artifacts.iter().map(move |a| (r.job_id, a)))
            .find(|(_, a)| a.kind == kind)
    }
}

fn parse_filter(text: &str, json: bool) -> WebResult<i64> {
    text.parse::<i64>().map_err(|_| {
        let e = WebError::not_found(format!(
            "unit `{text}` not found: units are filter indices (numbers)"
        ));
        if json {
            e.json()
        } else {
            e
        }
    })
}

fn no_unit(head: &CampaignHead, t: &LayerTable, filter: i64) -> WebError {
    let (lo, hi) = (0..t.table.rows.len())
        .map(|r| t.filter_of(r))
        .fold((i64::MAX, i64::MIN), |(a, b), f| (a.min(f), b.max(f)));
    WebError::not_found(format!(
        "campaign {} layer `{}` has no unit (filter) {filter}; its {} units are filters {lo}…{hi}",
        head.id,
        t.layer,
        t.table.rows.len()
    ))
}

async fn load_unit(
    state: &State,
    head: &CampaignHead,
    t: &LayerTable,
    filter: i64,
    json: bool,
) -> WebResult<Unit> {
    let Some(&row) = t.by_filter.get(&filter) else {
        let e = no_unit(head, t, filter);
        return Err(if json { e.json() } else { e });
    };
    let store = &state.0.store;
    let wrap = |e: crate::error::Error| {
        let e = WebError::from(e);
        if json {
            e.json()
        } else {
            e
        }
    };
    let ids = t.jobs.get(&filter).cloned().unwrap_or_default();
    let results = store.results_of(&ids).await.map_err(wrap)?;
    let jobs = store.jobs_by_id(&ids).await.map_err(wrap)?;
    Ok(Unit {
        filter,
        row,
        results,
        jobs,
    })
}

fn image(href: &str, alt: &str, size: u32, class: &str) -> String {
    format!(
        "<img class=\"{class}\" src=\"{}\" width=\"{size}\" height=\"{size}\" alt=\"{}\">",
        esc(href),
        esc(alt)
    )
}

/// The max image and the single-colour images.
fn images(t: &LayerTable, u: &Unit, big: u32) -> String {
    let status = t.status_of(u.row);
    let mut h = String::from("<div class=\"imgs\">");
    match u.artifact_job("max_image") {
        Some((job, a)) => h.push_str(&format!(
            "<figure class=\"max\">{}<figcaption>max image</figcaption></figure>",
            image(
                &artifact_href(job, &a.kind, &a.sha256),
                &format!("max image of {} filter {}", t.layer, u.filter),
                big,
                "max"
            )
        )),
        None => h.push_str(&format!(
            "<p class=\"note noimage\">{}</p>",
            esc(match status {
                "dead_unit" =>
                    "dead unit: its gradient was zero from the start, so there is no max image",
                "missing" => "no max image yet (synthesis not run, failed or not finished)",
                _ => "no max image recorded",
            })
        )),
    }
    let mut channels = String::new();
    for (kind, caption) in CHANNELS {
        if let Some((job, a)) = u.artifact_job(kind) {
            channels.push_str(&format!(
                "<figure class=\"ch\">{}<figcaption>{caption}</figcaption></figure>",
                image(
                    &artifact_href(job, kind, &a.sha256),
                    &format!("{caption} max image of filter {}", u.filter),
                    big / 2,
                    "ch"
                )
            ));
        }
    }
    if !channels.is_empty() {
        h.push_str(&format!("<div class=\"channels\">{channels}</div>"));
    }
    h.push_str("</div>");
    h
}

fn figure_html(f: &Figure) -> String {
    format!(
        "<figure class=\"chart\" data-probe=\"{}\">{}<figcaption>{}</figcaption></figure>",
        esc(&f.probe),
        f.svg,
        esc(&f.caption)
    )
}

/// Summary numbers (every column of the view but the keys) as a two-column table.
fn summary(t: &LayerTable, row: usize) -> String {
    let mut h = String::from("<table class=\"kv\" id=\"summary\">");
    for &i in &t.shown {
        let c = &t.table.columns[i];
        h.push_str(&format!(
            "<tr><th title=\"{}\">{}</th><td class=\"n\">{}</td></tr>",
            esc(&c.name),
            esc(&humanize(&c.name)),
            esc(&cell_text(&t.table.rows[row][i]))
        ));
    }
    h.push_str("</table>");
    h
}

fn short(s: &str) -> String {
    s.chars().take(12).collect()
}

fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_string())
}

fn jobs_table(u: &Unit) -> String {
    let by_job: BTreeMap<i64, &JobResult> = u.results.iter().map(|r| (r.job_id, r)).collect();
    let mut h = String::from(
        "<div class=\"scroll\"><table class=\"jobs\"><thead><tr><th>probe</th><th>state</th><th class=\"n\">attempt</th>\
<th class=\"n\">max act</th><th class=\"n\">mean act</th><th>status</th><th>device</th><th>worker</th>\
<th class=\"n\">compute (ms)</th><th class=\"n\">seed</th><th>weights sha256</th><th>params hash</th></tr></thead><tbody>",
    );
    for j in &u.jobs {
        let r = by_job.get(&j.job_id).and_then(|r| r.result.as_ref());
        let p = r.and_then(|r| r.provenance.as_ref());
        let error = j
            .last_error
            .as_deref()
            .filter(|_| j.state != "succeeded")
            .map(|e| format!("<div class=\"err\">{}</div>", esc(e)))
            .unwrap_or_default();
        h.push_str(&format!(
            "<tr><td>{}</td><td><span class=\"jstate {st}\">{st}</span>{error}</td><td class=\"n\">{}/{}</td>\
<td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
<td><code title=\"{}\">{}</code></td><td><code title=\"{}\">{}</code></td></tr>",
            esc(&j.probe),
            j.attempt,
            j.max_attempts,
            r.map(|r| num(r.max_act)).unwrap_or_default(),
            r.map(|r| num(r.mean_act)).unwrap_or_default(),
            esc(r.map(|r| r.status.as_str()).unwrap_or("")),
            esc(p.map(|p| p.device.as_str()).unwrap_or("")),
            esc(p.map(|p| p.worker.as_str()).unwrap_or("")),
            p.map(|p| p.duration_ms.to_string()).unwrap_or_default(),
            p.map(|p| p.seed.to_string()).unwrap_or_default(),
            esc(p.map(|p| p.weights_sha256.as_str()).unwrap_or("")),
            esc(&short(p.map(|p| p.weights_sha256.as_str()).unwrap_or(""))),
            esc(p.map(|p| p.params_hash.as_str()).unwrap_or("")),
            esc(&short(p.map(|p| p.params_hash.as_str()).unwrap_or(""))),
            st = esc(&j.state),
        ));
    }
    h.push_str("</tbody></table></div>");
    h
}

fn details(u: &Unit) -> String {
    let mut h = String::new();
    for (probe, r) in u.by_probe() {
        let outcome = r.result.clone().unwrap_or_default();
        let p = outcome.provenance.clone().unwrap_or_default();
        let record = r
            .artifacts
            .iter()
            .find(|a| a.kind == "record")
            .map(|a| {
                format!(
                    " · <a href=\"{}\">stored record</a>",
                    esc(&artifact_href(r.job_id, &a.kind, &a.sha256))
                )
            })
            .unwrap_or_default();
        h.push_str(&format!(
            "<details class=\"job\" data-probe=\"{probe}\"><summary><b>{probe}</b> · job {} · attempt {}{record}</summary>\
<div class=\"cols\"><div><h4>derived numbers</h4><pre>{}</pre></div>\
<div><h4>parameters</h4><pre>{}</pre></div>\
<div><h4>provenance</h4><pre>{}</pre></div></div></details>",
            r.job_id,
            r.attempt,
            esc(&pretty(&outcome.derived_json)),
            esc(&pretty(&p.params_json)),
            esc(&serde_json::to_string_pretty(&json!({
                "weights_sha256": p.weights_sha256,
                "params_hash": p.params_hash,
                "seed": p.seed,
                "device": p.device,
                "worker": p.worker,
                "duration_ms": p.duration_ms,
                "library_versions": serde_json::from_str::<Value>(&p.library_versions_json).unwrap_or(Value::Null),
            })).unwrap_or_default()),
            probe = esc(probe),
        ));
    }
    h
}

/// Image artifacts other than the max images (stimuli, when a worker stores them), and any
/// other stored file.
fn stimuli(u: &Unit) -> String {
    let known = [
        "max_image",
        "max_image_r",
        "max_image_g",
        "max_image_b",
        "record",
    ];
    let mut pictures = String::new();
    let mut files = String::new();
    for r in &u.results {
        for a in r
            .artifacts
            .iter()
            .filter(|a| !known.contains(&a.kind.as_str()))
        {
            let href = artifact_href(r.job_id, &a.kind, &a.sha256);
            let lower = a.uri.to_lowercase();
            if lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
                pictures.push_str(&format!(
                    "<figure class=\"stim\"><img src=\"{}\" loading=\"lazy\" width=\"96\" height=\"96\" alt=\"{} {}\"><figcaption>{} · {}</figcaption></figure>",
                    esc(&href),
                    esc(&r.probe),
                    esc(&a.kind),
                    esc(&r.probe),
                    esc(&a.kind)
                ));
            } else {
                files.push_str(&format!(
                    "<li><a href=\"{}\">{} · {}</a> ({} bytes)</li>",
                    esc(&href),
                    esc(&r.probe),
                    esc(&a.kind),
                    a.bytes
                ));
            }
        }
    }
    let mut h = String::new();
    if !pictures.is_empty() {
        h.push_str(&format!(
            "<h2>Stimuli</h2><div class=\"stimuli\">{pictures}</div>"
        ));
    }
    if !files.is_empty() {
        h.push_str(&format!("<h2>Other stored files</h2><ul>{files}</ul>"));
    }
    h
}

/// `GET /c/{id}/l/{layer}/u/{filter}`
pub async fn show(
    state: State,
    Path((id, layer, filter)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> WebResult {
    let (head, t) = load(&state.0, &id, &layer, false).await?;
    let filter = parse_filter(&filter, false)?;
    let u = load_unit(&state, &head, &t, filter, false).await?;
    let p = Params::parse(query.as_deref());
    // previous/next in the grid's order; the plain filter order when that order is unreadable
    let order = query::select(&t, &p)
        .or_else(|_| query::select(&t, &Params::default()))
        .unwrap_or_default();
    let ctx = p.context();
    let at = order.iter().position(|&r| r == u.row);
    let link = |r: usize, rel: &str, key: &str, text: String| {
        format!(
            "<a href=\"{}\" rel=\"{rel}\" data-key=\"{key}\">{}</a>",
            esc(&with_query(
                &unit_href(head.id, &t.layer, t.filter_of(r)),
                &ctx
            )),
            esc(&text)
        )
    };
    let mut nav = String::from("<nav class=\"prevnext\" aria-label=\"units\">");
    match at {
        Some(i) => {
            if i > 0 {
                let r = order[i - 1];
                nav.push_str(&link(
                    r,
                    "prev",
                    "p",
                    format!("← filter {}", t.filter_of(r)),
                ));
            }
            nav.push_str(&format!(
                "<span class=\"pos\">{} of {}{}</span>",
                i + 1,
                order.len(),
                if p.q.is_empty() && p.sort == "filter" {
                    String::new()
                } else {
                    " in this order".into()
                }
            ));
            if i + 1 < order.len() {
                let r = order[i + 1];
                nav.push_str(&link(
                    r,
                    "next",
                    "n",
                    format!("filter {} →", t.filter_of(r)),
                ));
            }
        }
        None => nav.push_str("<span class=\"pos\">not among the filtered units</span>"),
    }
    nav.push_str("</nav>");
    // back to the grid page that holds this unit
    let mut back = p.clone();
    back.page = at.map(|i| i / p.per + 1).unwrap_or(1);
    let layer_link = with_query(&layer_href(head.id, &t.layer), &back.to_query());

    let status = t.status_of(u.row).to_string();
    let figures = plots::figures(&u.by_probe());
    let mut body = format!(
        "<article class=\"unit\" data-filter=\"{}\"><h1>filter {} <span class=\"status {}\">{}</span> \
<span class=\"sub\">· {} · {}</span></h1>{nav}",
        u.filter,
        u.filter,
        esc(&vephys_results::fmt::slug(&status)),
        esc(&status),
        esc(&t.layer),
        esc(&head.name),
    );
    body.push_str("<div class=\"row\">");
    body.push_str(&images(&t, &u, 224));
    body.push_str(&format!(
        "<div class=\"numbers\"><h2>Summary</h2>{}</div></div>",
        summary(&t, u.row)
    ));
    body.push_str("<h2>Tuning curves</h2>");
    if figures.is_empty() {
        body.push_str("<p class=\"note\" id=\"no-charts\">No probe results for this unit yet.</p>");
    }
    body.push_str("<div class=\"charts\">");
    for f in &figures {
        body.push_str(&figure_html(f));
    }
    body.push_str("</div><p class=\"note\">Max activity: solid orange; mean activity: dashed blue (bars: max activity, black tick: mean). Definitions: docs/results.md.</p>");
    body.push_str("<h2>Jobs</h2>");
    body.push_str(&jobs_table(&u));
    body.push_str("<h2>Derived numbers, parameters and provenance</h2>");
    body.push_str(&details(&u));
    body.push_str(&stimuli(&u));
    body.push_str(&format!(
        "<p class=\"downloads\"><a href=\"{}/record.json\" download>unit record (JSON)</a> · \
<a href=\"/api/c/{}/l/{}/u/{}\">API</a></p></article>",
        esc(&unit_href(head.id, &t.layer, u.filter)),
        head.id,
        esc(&super::html::enc(&t.layer)),
        u.filter
    ));
    let crumbs = vec![
        (head.name.clone(), campaign_href(head.id)),
        (t.layer.clone(), layer_link),
        (format!("filter {}", u.filter), String::new()),
    ];
    let title = format!("filter {} · {} · {}", u.filter, t.layer, head.name);
    Ok(html_response(StatusCode::OK, page(&title, &crumbs, &body)))
}

fn record(head: &CampaignHead, t: &LayerTable, u: &Unit) -> Value {
    let mut summary = serde_json::Map::new();
    for (c, cell) in t.table.columns.iter().zip(&t.table.rows[u.row]) {
        summary.insert(c.name.clone(), cell.json());
    }
    let mut images = serde_json::Map::new();
    for r in &u.results {
        for a in &r.artifacts {
            images.insert(
                a.kind.clone(),
                Value::from(artifact_href(r.job_id, &a.kind, &a.sha256)),
            );
        }
    }
    json!({
        "campaign": {"id": head.id, "name": head.name, "model": head.model},
        "layer": t.layer,
        "filter": u.filter,
        "status": t.status_of(u.row),
        "summary": summary,
        "jobs": u.jobs.iter().map(|j| json!({
            "job_id": j.job_id, "probe": j.probe, "state": j.state, "attempt": j.attempt,
            "max_attempts": j.max_attempts, "last_error": j.last_error, "finished_at_ms": j.finished_at,
        })).collect::<Vec<_>>(),
        "results": u.results.iter().map(result_json).collect::<Vec<_>>(),
        "links": images,
        "href": unit_href(head.id, &t.layer, u.filter),
    })
}

/// `GET /api/c/{id}/l/{layer}/u/{filter}`
pub async fn record_json(
    state: State,
    Path((id, layer, filter)): Path<(String, String, String)>,
) -> WebResult {
    let (head, t) = load(&state.0, &id, &layer, true).await?;
    let filter = parse_filter(&filter, true)?;
    let u = load_unit(&state, &head, &t, filter, true).await?;
    Ok(json_response(StatusCode::OK, &record(&head, &t, &u)))
}

/// `GET /c/{id}/l/{layer}/u/{filter}/record.json`
pub async fn record_download(
    state: State,
    Path((id, layer, filter)): Path<(String, String, String)>,
) -> WebResult {
    let (head, t) = load(&state.0, &id, &layer, true).await?;
    let filter = parse_filter(&filter, true)?;
    let u = load_unit(&state, &head, &t, filter, true).await?;
    let text = serde_json::to_string_pretty(&record(&head, &t, &u)).unwrap_or_default();
    Ok(download(
        "application/json",
        &format!("campaign{}_{}_filter{:04}.json", head.id, t.layer, u.filter),
        text.into_bytes(),
    ))
}

/// `GET /c/{id}/l/{layer}/compare?f=3,7&f=12`
pub async fn compare_page(
    state: State,
    Path((id, layer)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> WebResult {
    let (head, t) = load(&state.0, &id, &layer, false).await?;
    let mut filters: Vec<i64> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        if k == "f" {
            for part in v.split([',', ' ']).filter(|p| !p.trim().is_empty()) {
                let f = parse_filter(part.trim(), false)?;
                if !filters.contains(&f) {
                    filters.push(f);
                }
            }
        }
    }
    if filters.is_empty() {
        return Err(WebError::bad_request(
            "nothing to compare: name the units as ?f=3,7,12 (or tick them in the grid)",
        ));
    }
    if filters.len() > MAX_COMPARE {
        return Err(WebError::bad_request(format!(
            "{} units is too many to show side by side; compare at most {MAX_COMPARE}",
            filters.len()
        )));
    }
    let mut units = Vec::new();
    for f in &filters {
        units.push(load_unit(&state, &head, &t, *f, false).await?);
    }
    let figures: Vec<Vec<Figure>> = units
        .iter()
        .map(|u| plots::figures(&u.by_probe()))
        .collect();
    // one row per (probe, figure of that probe), in the order they first appear
    let mut keys: Vec<(String, usize)> = Vec::new();
    for fs in &figures {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for f in fs {
            let k = seen.entry(f.probe.as_str()).or_default();
            let key = (f.probe.clone(), *k);
            *k += 1;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    let n = units.len();
    let mut body = format!(
        "<h1>{n} units side by side <span class=\"sub\">· {} · {}</span></h1>\
<div class=\"scroll\"><table class=\"compare\" id=\"compare-table\"><thead><tr><th></th>",
        esc(&t.layer),
        esc(&head.name)
    );
    for u in &units {
        let status = t.status_of(u.row);
        body.push_str(&format!(
            "<th data-filter=\"{f}\"><a href=\"{}\">filter {f}</a> <span class=\"st {}\">{}</span></th>",
            esc(&unit_href(head.id, &t.layer, u.filter)),
            esc(&vephys_results::fmt::slug(status)),
            esc(status),
            f = u.filter
        ));
    }
    body.push_str("</tr></thead><tbody><tr><th>images</th>");
    for u in &units {
        body.push_str(&format!("<td>{}</td>", images(&t, u, 144)));
    }
    body.push_str("</tr>");
    for &i in &t.shown {
        if i == t.filter_col {
            continue;
        }
        let c = &t.table.columns[i];
        body.push_str(&format!(
            "<tr class=\"num\"><th title=\"{}\">{}</th>",
            esc(&c.name),
            esc(&humanize(&c.name))
        ));
        for u in &units {
            body.push_str(&format!(
                "<td class=\"n\">{}</td>",
                esc(&cell_text(&t.table.rows[u.row][i]))
            ));
        }
        body.push_str("</tr>");
    }
    for (probe, k) in &keys {
        body.push_str(&format!("<tr class=\"chartrow\"><th>{}</th>", esc(probe)));
        for fs in &figures {
            let f = fs.iter().filter(|f| &f.probe == probe).nth(*k);
            body.push_str(&format!(
                "<td>{}</td>",
                f.map(figure_html)
                    .unwrap_or_else(|| "<span class=\"note\">not run</span>".into())
            ));
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table></div>");
    let crumbs = vec![
        (head.name.clone(), campaign_href(head.id)),
        (t.layer.clone(), layer_href(head.id, &t.layer)),
        ("compare".into(), String::new()),
    ];
    Ok(html_response(
        StatusCode::OK,
        page(&format!("compare · {}", t.layer), &crumbs, &body),
    ))
}
