//! The campaigns list and a campaign's page, with live progress per layer and probe: the pages
//! open `/events`, a server-sent event stream that sends the campaigns' counts whenever they
//! change, and the script updates the bars in place.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use vephys_proto::v1::{Campaign, JobCounts};
use vephys_results::fmt::utc_date;

use super::html::{
    campaign_href, esc, html_response, json_response, layer_href, page, Crumbs, WebError, WebResult,
};
use super::State;

/// How often an event stream looks for changes.
const EVENT_INTERVAL: Duration = Duration::from_millis(1000);
/// How long one event stream lasts before the browser reconnects.
const EVENT_LIFETIME: Duration = Duration::from_secs(300);

/// The progress the event streams send, shared: however many tabs are open, the database is
/// asked once per interval for each view (all campaigns, or one).
#[derive(Default)]
pub struct Progress {
    recent: Mutex<HashMap<Option<i64>, (Instant, String)>>,
}

impl Progress {
    fn recent(&self, key: Option<i64>) -> Option<String> {
        let recent = self.recent.lock().expect("progress lock");
        recent
            .get(&key)
            .filter(|(at, _)| at.elapsed() < EVENT_INTERVAL.mul_f32(0.9))
            .map(|(_, data)| data.clone())
    }

    fn keep(&self, key: Option<i64>, data: &str) {
        let mut recent = self.recent.lock().expect("progress lock");
        // forget views nobody has asked for in a while
        recent.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(10));
        recent.insert(key, (Instant::now(), data.to_string()));
    }
}

fn total(c: &JobCounts) -> u64 {
    c.waiting + c.queued + c.leased + c.succeeded + c.failed + c.cancelled
}

fn done(c: &JobCounts) -> u64 {
    c.succeeded + c.failed + c.cancelled
}

fn counts_json(c: &JobCounts) -> Value {
    json!({
        "waiting": c.waiting, "queued": c.queued, "leased": c.leased,
        "succeeded": c.succeeded, "failed": c.failed, "cancelled": c.cancelled,
        "total": total(c), "done": done(c),
    })
}

/// The layers of a campaign in submission order, with their unit count (one synthesis job
/// per unit).
pub fn layers(c: &Campaign) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for g in &c.groups {
        let units = if g.probe == "synthesis" {
            g.counts.as_ref().map(total).unwrap_or(0)
        } else {
            0
        };
        match out.iter_mut().find(|(l, _)| *l == g.layer) {
            Some((_, n)) => *n = (*n).max(units),
            None => out.push((g.layer.clone(), units)),
        }
    }
    out
}

/// A campaign as the API and the event stream send it.
pub fn campaign_value(c: &Campaign, with_spec: bool) -> Value {
    let totals = c.totals.unwrap_or_default();
    let mut v = json!({
        "id": c.id,
        "name": c.name,
        "model": c.model,
        "state": c.state,
        "created_at_ms": c.created_at_ms,
        "totals": counts_json(&totals),
        "groups": c.groups.iter().map(|g| json!({
            "layer": g.layer,
            "probe": g.probe,
            "counts": counts_json(&g.counts.unwrap_or_default()),
        })).collect::<Vec<_>>(),
        "layers": layers(c).iter().map(|(l, n)| json!({
            "layer": l, "units": n, "href": layer_href(c.id, l),
        })).collect::<Vec<_>>(),
        "href": campaign_href(c.id),
    });
    if with_spec {
        v["spec_toml"] = Value::from(c.spec_toml.as_str());
    }
    v
}

fn progress_cell(id: i64, layer: &str, probe: &str, c: &JobCounts) -> String {
    let (d, t) = (done(c), total(c));
    let failed = if c.failed > 0 {
        format!(
            " <span class=\"failed\" data-f=\"failed\">{} failed</span>",
            c.failed
        )
    } else {
        "<span class=\"failed\" data-f=\"failed\"></span>".into()
    };
    format!(
        "<td class=\"prog\" data-group=\"{}\"><progress max=\"{t}\" value=\"{d}\" aria-label=\"{} {} done\"></progress>\
<span class=\"n\" data-f=\"done\">{d}/{t}</span>{failed}</td>",
        esc(&format!("{id}|{layer}|{probe}")),
        esc(layer),
        esc(probe),
    )
}

/// The layer × probe table of a campaign's progress.
fn progress_table(c: &Campaign) -> String {
    let mut probes: Vec<&str> = Vec::new();
    for g in &c.groups {
        if !probes.contains(&g.probe.as_str()) {
            probes.push(&g.probe);
        }
    }
    let mut h = String::from(
        "<table class=\"progress\"><thead><tr><th>layer</th><th class=\"n\">units</th>",
    );
    for p in &probes {
        h.push_str(&format!("<th>{}</th>", esc(p)));
    }
    h.push_str("</tr></thead><tbody>");
    for (layer, units) in layers(c) {
        h.push_str(&format!(
            "<tr><th><a href=\"{}\">{}</a></th><td class=\"n\">{units}</td>",
            esc(&layer_href(c.id, &layer)),
            esc(&layer)
        ));
        for p in &probes {
            match c.groups.iter().find(|g| g.layer == layer && g.probe == *p) {
                Some(g) => h.push_str(&progress_cell(
                    c.id,
                    &layer,
                    p,
                    &g.counts.unwrap_or_default(),
                )),
                None => h.push_str("<td></td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>");
    h
}

fn facts(c: &Campaign) -> String {
    let t = c.totals.unwrap_or_default();
    format!(
        "<p class=\"facts\">campaign <b>{}</b> · model <b>{}</b> · created <b>{}</b> · \
<span data-f=\"totals\">{} of {} jobs done{}</span></p>",
        c.id,
        esc(&c.model),
        esc(&utc_date(c.created_at_ms)),
        done(&t),
        total(&t),
        if t.failed > 0 {
            format!(", {} failed", t.failed)
        } else {
            String::new()
        }
    )
}

fn state_badge(state: &str) -> String {
    format!(
        "<span class=\"state {s}\" data-f=\"state\">{s}</span>",
        s = esc(state)
    )
}

fn campaign_card(c: &Campaign) -> String {
    format!(
        "<article class=\"campaign\" data-campaign=\"{id}\"><h2><a href=\"{href}\">{name}</a> {state}</h2>{facts}{table}</article>",
        id = c.id,
        href = esc(&campaign_href(c.id)),
        name = esc(&c.name),
        state = state_badge(&c.state),
        facts = facts(c),
        table = progress_table(c),
    )
}

/// `GET /`
pub async fn list_page(state: State) -> WebResult {
    let campaigns = state.0.store.list_campaigns().await?;
    let mut body = String::from(
        "<h1>Campaigns <span class=\"live\" id=\"live\" data-events=\"/events\" title=\"progress updates live\">live</span></h1>",
    );
    if campaigns.is_empty() {
        body.push_str(
            "<p class=\"note\" id=\"empty\">No campaigns yet. Submit one with <code>vephys submit</code> \
or run <code>vephys local</code>; it will appear here.</p>",
        );
    }
    body.push_str("<div id=\"campaigns\">");
    // newest first: the one running now is the one people look for
    for c in campaigns.iter().rev() {
        body.push_str(&campaign_card(c));
    }
    body.push_str("</div><p class=\"note\" id=\"new-campaign\" hidden>A new campaign was submitted: <a href=\"/\">reload</a>.</p>");
    Ok(html_response(
        StatusCode::OK,
        page("Campaigns", &Crumbs::new(), &body),
    ))
}

/// `GET /api/campaigns`
pub async fn list_json(state: State) -> WebResult {
    let campaigns = state
        .0
        .store
        .list_campaigns()
        .await
        .map_err(|e| WebError::from(e).json())?;
    let list: Vec<Value> = campaigns.iter().map(|c| campaign_value(c, false)).collect();
    Ok(json_response(StatusCode::OK, &json!({ "campaigns": list })))
}

fn parse_id(id: &str, json: bool) -> WebResult<i64> {
    id.parse::<i64>().map_err(|_| {
        let e = WebError::not_found(format!(
            "campaign `{id}` not found: campaign ids are numbers; the campaigns are listed at /"
        ));
        if json {
            e.json()
        } else {
            e
        }
    })
}

/// `GET /c/{id}`
pub async fn campaign_page(state: State, Path(id): Path<String>) -> WebResult {
    let id = parse_id(&id, false)?;
    let c = state.0.store.campaign(id).await?;
    let errors = state.0.store.recent_errors(id, 20).await?;
    // the grid of a layer is likely the next click: start reading it
    for (layer, _) in layers(&c).iter().take(super::cache::CAPACITY / 2) {
        state.0.layers.prefetch(&state.0.store, id, layer);
    }
    let mut body = format!(
        "<div data-campaign=\"{id}\" class=\"campaign one\"><h1>{} {} <span class=\"live\" id=\"live\" data-events=\"/events?campaign={id}\">live</span></h1>{}",
        esc(&c.name),
        state_badge(&c.state),
        facts(&c)
    );
    body.push_str("<h2>Layers</h2><ul class=\"layers\">");
    for (i, (layer, units)) in layers(&c).iter().enumerate() {
        let key = if i < 9 {
            format!(" data-key=\"{}\"", i + 1)
        } else {
            String::new()
        };
        body.push_str(&format!(
            "<li><a href=\"{}\"{key}>{}</a> <span class=\"note\">{units} units</span></li>",
            esc(&layer_href(id, layer)),
            esc(layer)
        ));
    }
    body.push_str("</ul><h2>Progress</h2>");
    body.push_str(&progress_table(&c));
    body.push_str("</div>");
    if !errors.is_empty() {
        body.push_str("<h2>Recent errors</h2><table class=\"errors\"><thead><tr><th>layer</th><th>filter</th><th>probe</th><th>attempt</th><th>outcome</th><th>error</th></tr></thead><tbody>");
        for e in &errors {
            body.push_str(&format!(
                "<tr><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
                esc(&e.layer),
                esc(&super::html::unit_href(id, &e.layer, e.filter)),
                e.filter,
                esc(&e.probe),
                e.attempt,
                esc(&e.outcome),
                esc(e.error.as_deref().unwrap_or(""))
            ));
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(&format!(
        "<details><summary>Campaign spec</summary><pre>{}</pre></details>\
<p class=\"downloads\"><a href=\"/api/c/{id}\">campaign as JSON</a></p>",
        esc(&c.spec_toml)
    ));
    let crumbs = vec![(c.name.clone(), campaign_href(id))];
    Ok(html_response(StatusCode::OK, page(&c.name, &crumbs, &body)))
}

/// `GET /api/c/{id}`
pub async fn campaign_json(state: State, Path(id): Path<String>) -> WebResult {
    let id = parse_id(&id, true)?;
    let c = state
        .0
        .store
        .campaign(id)
        .await
        .map_err(|e| WebError::from(e).json())?;
    Ok(json_response(StatusCode::OK, &campaign_value(&c, true)))
}

/// `GET /events[?campaign=ID]`: `campaigns` events, each the JSON list of campaigns (or the
/// one), sent at once and then whenever something changed.
pub async fn events(state: State, RawQuery(query): RawQuery) -> WebResult<Response> {
    let only = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "campaign")
        .map(|(_, v)| v.into_owned());
    let only = match only {
        Some(id) => {
            let id = parse_id(&id, true)?;
            state
                .0
                .store
                .campaign(id)
                .await
                .map_err(|e| WebError::from(e).json())?;
            Some(id)
        }
        None => None,
    };
    let web = state.0.clone();
    let snapshot = move || {
        let web = web.clone();
        async move {
            if let Some(shared) = web.progress.recent(only) {
                return Ok(shared);
            }
            let list = match only {
                Some(id) => vec![web.store.campaign(id).await?],
                None => web.store.list_campaigns().await?,
            };
            let values: Vec<Value> = list.iter().map(|c| campaign_value(c, false)).collect();
            let data = Value::Array(values).to_string();
            web.progress.keep(only, &data);
            Ok::<String, crate::error::Error>(data)
        }
    };
    // A stream ends after a while (the browser reconnects by itself) or when the server stops,
    // so a graceful shutdown never waits on an open tab.
    let deadline = tokio::time::Instant::now() + EVENT_LIFETIME;
    let mut shutdown = state.0.shutdown.clone();
    let stopping = async move {
        match shutdown.as_mut() {
            Some(rx) => {
                let _ = rx.wait_for(|s| *s).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let stopping = futures::FutureExt::shared(stopping);
    let stream = futures::stream::unfold(
        (snapshot, None::<String>, true, stopping),
        move |(snapshot, last, first, stopping)| async move {
            let mut first = first;
            loop {
                if !first {
                    tokio::select! {
                        _ = tokio::time::sleep(EVENT_INTERVAL) => {}
                        _ = stopping.clone() => return None,
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                }
                first = false;
                match snapshot().await {
                    Ok(data) if last.as_deref() != Some(data.as_str()) => {
                        let event = Event::default()
                            .event("campaigns")
                            .retry(Duration::from_secs(1))
                            .data(data.clone());
                        return Some((
                            Ok::<Event, Infallible>(event),
                            (snapshot, Some(data), false, stopping),
                        ));
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream could not read progress");
                        let event = Event::default().event("trouble").data(e.to_string());
                        return Some((Ok(event), (snapshot, last, false, stopping)));
                    }
                }
            }
        },
    );
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(super::html::secure(r))
}
