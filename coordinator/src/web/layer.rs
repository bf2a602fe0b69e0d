//! A campaign's layer: the grid of max images (or a table of every `unit_summary` column),
//! sorted and filtered by any of the view's columns, paged, with the filter index and status
//! under each image; and the same rows as JSON, CSV and Parquet.

use std::sync::Arc;

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use serde_json::{json, Value};
use vephys_results::table::{Kind, Table};

use super::cache::LayerTable;
use super::html::{
    artifact_href, campaign_href, cell_text, download, esc, html_response, humanize, json_response,
    layer_href, page, unit_href, with_query, WebError, WebResult,
};
use super::query::{self, Params, View};
use super::{State, Web};
use crate::store::browse::CampaignHead;

/// The campaign and the layer's rows, or the 404 that says which of them is missing.
pub(super) async fn load(
    web: &Web,
    id: &str,
    layer: &str,
    json: bool,
) -> WebResult<(CampaignHead, Arc<LayerTable>)> {
    let as_json = |e: WebError| if json { e.json() } else { e };
    let Ok(id) = id.parse::<i64>() else {
        return Err(as_json(WebError::not_found(format!(
            "campaign `{id}` not found: campaign ids are numbers; the campaigns are listed at /"
        ))));
    };
    let head = web
        .store
        .campaign_head(id)
        .await
        .map_err(|e| as_json(e.into()))?
        .ok_or_else(|| {
            as_json(WebError::not_found(format!(
                "campaign {id} not found; the campaigns are listed at /"
            )))
        })?;
    match web.layers.get(&web.store, id, layer).await {
        Ok(Some(t)) => Ok((head, t)),
        Ok(None) => {
            let layers = web
                .store
                .campaign_layers(id)
                .await
                .map_err(|e| as_json(e.into()))?;
            Err(as_json(WebError::not_found(format!(
                "campaign {id} has no layer `{layer}`; its layers are {}",
                if layers.is_empty() {
                    "none yet".to_string()
                } else {
                    layers.join(", ")
                }
            ))))
        }
        Err(e) => Err(as_json(e.into())),
    }
}

/// The rows of a page, and how many pages there are.
fn page_of(rows: &[usize], p: &Params) -> (usize, usize, usize) {
    let pages = rows.len().div_ceil(p.per).max(1);
    let page = p.page.min(pages);
    let start = (page - 1) * p.per;
    let end = (start + p.per).min(rows.len());
    (start, end, pages)
}

fn controls(head: &CampaignHead, t: &LayerTable, p: &Params) -> String {
    let mut sort = String::new();
    for &i in &t.shown {
        let name = &t.table.columns[i].name;
        sort.push_str(&format!(
            "<option value=\"{n}\"{sel}>{h}</option>",
            n = esc(name),
            h = esc(&humanize(name)),
            sel = if *name == p.sort { " selected" } else { "" }
        ));
    }
    let per_options: String = [60, 120, 240, 480]
        .iter()
        .map(|n| {
            format!(
                "<option value=\"{n}\"{}>{n}</option>",
                if *n == p.per { " selected" } else { "" }
            )
        })
        .collect();
    let names: String = t
        .shown
        .iter()
        .map(|&i| format!("<option value=\"{}\">", esc(&t.table.columns[i].name)))
        .collect();
    format!(
        "<form class=\"controls\" method=\"get\" action=\"{action}\" role=\"search\">\
<label class=\"grow\">filter <input type=\"search\" name=\"q\" id=\"q\" value=\"{q}\" list=\"columns\" \
placeholder=\"e.g. color_selectivity &gt; 0.3, synthesis_status = ok\" autocomplete=\"off\" spellcheck=\"false\"></label>\
<datalist id=\"columns\">{names}</datalist>\
<label>sort by <select name=\"sort\" id=\"sort\">{sort}</select></label>\
<select name=\"dir\" id=\"dir\" aria-label=\"direction\"><option value=\"asc\"{asc}>ascending</option><option value=\"desc\"{desc}>descending</option></select>\
<label>per page <select name=\"per\">{per_options}</select></label>\
{view}<button type=\"submit\">apply</button> <a href=\"{clear}\">clear</a></form>",
        action = esc(&layer_href(head.id, &t.layer)),
        q = esc(&p.q),
        asc = if p.desc { "" } else { " selected" },
        desc = if p.desc { " selected" } else { "" },
        view = if p.view == View::Table {
            "<input type=\"hidden\" name=\"view\" value=\"table\">"
        } else {
            ""
        },
        clear = esc(&with_query(
            &layer_href(head.id, &t.layer),
            if p.view == View::Table { "view=table" } else { "" }
        )),
    )
}

fn pager(head: &CampaignHead, t: &LayerTable, p: &Params, pages: usize) -> String {
    if pages <= 1 {
        return String::new();
    }
    let page = p.page.min(pages);
    let link = |n: usize| {
        let mut q = p.clone();
        q.page = n;
        with_query(&layer_href(head.id, &t.layer), &q.to_query())
    };
    let mut h = String::from("<nav class=\"pages\" aria-label=\"pages\">");
    if page > 1 {
        h.push_str(&format!(
            "<a href=\"{}\" rel=\"prev\" data-key=\"p\">← previous</a>",
            esc(&link(page - 1))
        ));
    }
    let mut shown: Vec<usize> = vec![1, pages];
    shown.extend(page.saturating_sub(2).max(1)..=(page + 2).min(pages));
    shown.sort_unstable();
    shown.dedup();
    let mut last = 0;
    for n in shown {
        if n > last + 1 {
            h.push_str("<span>…</span>");
        }
        if n == page {
            h.push_str(&format!("<b aria-current=\"page\">{n}</b>"));
        } else {
            h.push_str(&format!("<a href=\"{}\">{n}</a>", esc(&link(n))));
        }
        last = n;
    }
    if page < pages {
        h.push_str(&format!(
            "<a href=\"{}\" rel=\"next\" data-key=\"n\">next →</a>",
            esc(&link(page + 1))
        ));
    }
    h.push_str("</nav>");
    h
}

fn grid(head: &CampaignHead, t: &LayerTable, p: &Params, rows: &[usize]) -> String {
    let sort_col = query::sort_column(t, p).filter(|&c| c != t.filter_col);
    let ctx = p.context();
    let mut h = String::from("<div class=\"grid\" id=\"grid\">");
    for &r in rows {
        let filter = t.filter_of(r);
        let status = t.status_of(r);
        let image = match t.images.get(&filter) {
            Some((job, sha)) => format!(
                "<img src=\"{}\" loading=\"lazy\" decoding=\"async\" width=\"112\" height=\"112\" alt=\"max image of filter {filter}\">",
                esc(&artifact_href(*job, "max_image", sha))
            ),
            None => format!("<span class=\"none\">{}</span>", esc(status)),
        };
        let value = sort_col
            .map(|c| {
                format!(
                    "<span class=\"val\" title=\"{}\">{}</span>",
                    esc(&t.table.columns[c].name),
                    esc(&cell_text(&t.table.rows[r][c]))
                )
            })
            .unwrap_or_default();
        h.push_str(&format!(
            "<div class=\"cell\" data-filter=\"{filter}\"><a class=\"unit\" href=\"{href}\">{image}\
<span class=\"label\"><b class=\"idx\">{filter}</b> <span class=\"st {st}\">{status}</span></span>{value}</a>\
<label class=\"pick\"><input type=\"checkbox\" name=\"f\" value=\"{filter}\" aria-label=\"compare filter {filter}\"></label></div>",
            href = esc(&with_query(&unit_href(head.id, &t.layer, filter), &ctx)),
            st = esc(&vephys_results::fmt::slug(status)),
            status = esc(status),
        ));
    }
    h.push_str("</div>");
    h
}

fn table(head: &CampaignHead, t: &LayerTable, p: &Params, rows: &[usize]) -> String {
    let ctx = p.context();
    let mut h = String::from(
        "<div class=\"scroll\"><table class=\"units\" id=\"units\"><thead><tr><th>image</th>",
    );
    for &i in &t.shown {
        let c = &t.table.columns[i];
        let mut q = p.clone();
        q.page = 1;
        let active = c.name == p.sort;
        q.desc = if active { !p.desc } else { c.name != "filter" };
        q.sort = c.name.clone();
        let arrow = match (active, p.desc) {
            (true, true) => " ↓",
            (true, false) => " ↑",
            _ => "",
        };
        let numeric = matches!(c.kind, Kind::Int | Kind::Float);
        h.push_str(&format!(
            "<th{cls}{aria}><a href=\"{}\" title=\"sort by {}\">{}{arrow}</a></th>",
            esc(&with_query(&layer_href(head.id, &t.layer), &q.to_query())),
            esc(&c.name),
            esc(&humanize(&c.name)),
            cls = if numeric { " class=\"n\"" } else { "" },
            aria = if active {
                if p.desc {
                    " aria-sort=\"descending\""
                } else {
                    " aria-sort=\"ascending\""
                }
            } else {
                ""
            },
        ));
    }
    h.push_str("</tr></thead><tbody>");
    for &r in rows {
        let filter = t.filter_of(r);
        let href = with_query(&unit_href(head.id, &t.layer, filter), &ctx);
        let image = match t.images.get(&filter) {
            Some((job, sha)) => format!(
                "<img src=\"{}\" loading=\"lazy\" decoding=\"async\" width=\"40\" height=\"40\" alt=\"\">",
                esc(&artifact_href(*job, "max_image", sha))
            ),
            None => String::new(),
        };
        h.push_str(&format!(
            "<tr data-filter=\"{filter}\"><td class=\"thumb\"><a href=\"{href}\" tabindex=\"-1\">{image}</a></td>",
            href = esc(&href)
        ));
        for &i in &t.shown {
            let cell = &t.table.rows[r][i];
            let text = esc(&cell_text(cell));
            let numeric = matches!(t.table.columns[i].kind, Kind::Int | Kind::Float);
            if i == t.filter_col {
                h.push_str(&format!(
                    "<td class=\"n\"><a class=\"unit\" href=\"{}\">{text}</a></td>",
                    esc(&href)
                ));
            } else if numeric {
                h.push_str(&format!("<td class=\"n\">{text}</td>"));
            } else {
                h.push_str(&format!("<td>{text}</td>"));
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></div>");
    h
}

/// `GET /c/{id}/l/{layer}`
pub async fn show(
    state: State,
    Path((id, layer)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> WebResult {
    let (head, t) = load(&state.0, &id, &layer, false).await?;
    let p = Params::parse(query.as_deref());
    let (rows, error) = match query::select(&t, &p) {
        Ok(rows) => (rows, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let (start, end, pages) = page_of(&rows, &p);
    let page_rows = &rows[start..end];
    let here = layer_href(head.id, &t.layer);
    let mut body = format!(
        "<h1>{} <span class=\"sub\">· {}</span></h1>",
        esc(&t.layer),
        esc(&head.name)
    );
    let sorted = if p.sort == "filter" && !p.desc {
        String::new()
    } else {
        format!(
            " · sorted by <b>{}</b> {}",
            esc(&humanize(&p.sort)),
            if p.desc { "descending" } else { "ascending" }
        )
    };
    body.push_str(&format!(
        "<p class=\"facts\"><b id=\"unit-count\">{}</b> units{}{sorted}{}</p>",
        t.table.rows.len(),
        if p.q.is_empty() {
            String::new()
        } else {
            format!(" · <b id=\"match-count\">{}</b> match", rows.len())
        },
        if pages > 1 {
            format!(" · page {} of {pages}", p.page.min(pages))
        } else {
            String::new()
        },
    ));
    body.push_str(&controls(&head, &t, &p));
    if state.0.layers.refreshing(head.id, &t.layer) {
        body.push_str(
            "<p class=\"note\" id=\"refreshing\">New results are being read; reload in a moment to see them.</p>",
        );
    }
    if let Some(e) = &error {
        body.push_str(&format!(
            "<p class=\"error\" role=\"alert\" id=\"filter-error\">{}</p>",
            esc(e)
        ));
    }
    let mut other = p.clone();
    other.view = if p.view == View::Grid {
        View::Table
    } else {
        View::Grid
    };
    other.page = 1;
    let context = p.to_query();
    let dl = |ext: &str| with_query(&format!("{here}/units.{ext}"), &p.context());
    body.push_str(&format!(
        "<p class=\"bar\"><a href=\"{}\" data-key=\"t\">{}</a> · download the {} rows: \
<a href=\"{}\" download>CSV</a> <a href=\"{}\" download>Parquet</a> <a href=\"{}\" download>JSON</a> · \
<a href=\"/api/c/{}/l/{}{}\">API</a></p>",
        esc(&with_query(&here, &other.to_query())),
        if p.view == View::Grid {
            "show as table"
        } else {
            "show as grid"
        },
        if p.q.is_empty() { "layer's" } else { "matching" },
        esc(&dl("csv")),
        esc(&dl("parquet")),
        esc(&dl("json")),
        head.id,
        esc(&super::html::enc(&t.layer)),
        esc(&if context.is_empty() {
            String::new()
        } else {
            format!("?{context}")
        }),
    ));
    body.push_str(&pager(&head, &t, &p, pages));
    body.push_str(&format!(
        "<form id=\"compare\" method=\"get\" action=\"{}/compare\">",
        esc(&here)
    ));
    if rows.is_empty() && error.is_none() {
        body.push_str("<p class=\"note\" id=\"no-match\">No unit matches the filter.</p>");
    }
    match p.view {
        View::Grid => body.push_str(&grid(&head, &t, &p, page_rows)),
        View::Table => body.push_str(&table(&head, &t, &p, page_rows)),
    }
    if p.view == View::Grid {
        body.push_str(
            "<p class=\"bar\"><button type=\"submit\" id=\"compare-button\">compare selected units</button> \
<span class=\"note\">tick two or more (<kbd>x</kbd>), then <kbd>c</kbd></span></p>",
        );
    }
    body.push_str("</form>");
    body.push_str(&pager(&head, &t, &p, pages));
    let crumbs = vec![
        (head.name.clone(), campaign_href(head.id)),
        (t.layer.clone(), here.clone()),
    ];
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let title = format!("{} · {}", t.layer, head.name);
    Ok(html_response(status, page(&title, &crumbs, &body)))
}

/// The selected rows with every column of the view.
fn selected(t: &LayerTable, rows: &[usize]) -> Table {
    Table {
        columns: t.table.columns.clone(),
        rows: rows.iter().map(|&r| t.table.rows[r].clone()).collect(),
    }
}

async fn rows_for(
    state: &State,
    id: &str,
    layer: &str,
    query: Option<&str>,
) -> WebResult<(CampaignHead, Arc<LayerTable>, Params, Vec<usize>)> {
    let (head, t) = load(&state.0, id, layer, true).await?;
    let p = Params::parse(query);
    let rows = query::select(&t, &p).map_err(|e| WebError::bad_request(e).json())?;
    Ok((head, t, p, rows))
}

fn file_name(head: &CampaignHead, layer: &str, ext: &str) -> String {
    format!("campaign{}_{}_units.{ext}", head.id, layer)
}

/// `GET /api/c/{id}/l/{layer}`: one page of rows, with the paging facts.
pub async fn json(
    state: State,
    Path((id, layer)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> WebResult {
    let (head, t, p, rows) = rows_for(&state, &id, &layer, query.as_deref()).await?;
    let (start, end, pages) = page_of(&rows, &p);
    let mut out = Vec::with_capacity(end - start);
    for &r in &rows[start..end] {
        let filter = t.filter_of(r);
        let mut object = serde_json::Map::new();
        for &i in &t.shown {
            object.insert(t.table.columns[i].name.clone(), t.table.rows[r][i].json());
        }
        object.insert(
            "href".into(),
            Value::from(unit_href(head.id, &t.layer, filter)),
        );
        object.insert(
            "max_image".into(),
            t.images.get(&filter).map_or(Value::Null, |(job, sha)| {
                Value::from(artifact_href(*job, "max_image", sha))
            }),
        );
        out.push(Value::Object(object));
    }
    let columns: Vec<Value> = t
        .shown
        .iter()
        .map(|&i| {
            let c = &t.table.columns[i];
            json!({"name": c.name, "kind": match c.kind { Kind::Int => "int", Kind::Float => "float", Kind::Text => "text" }})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "campaign": head.id,
            "layer": t.layer,
            "units": t.table.rows.len(),
            "matching": rows.len(),
            "page": p.page.min(pages),
            "pages": pages,
            "per": p.per,
            "sort": p.sort,
            "dir": if p.desc { "desc" } else { "asc" },
            "q": p.q,
            "columns": columns,
            "rows": out,
        }),
    ))
}

/// `GET /c/{id}/l/{layer}/units.csv`
pub async fn csv(
    state: State,
    Path((id, layer)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> WebResult {
    let (head, t, _, rows) = rows_for(&state, &id, &layer, query.as_deref()).await?;
    let bytes = selected(&t, &rows).to_csv().into_bytes();
    Ok(download(
        "text/csv; charset=utf-8",
        &file_name(&head, &t.layer, "csv"),
        bytes,
    ))
}

/// `GET /c/{id}/l/{layer}/units.json`
pub async fn json_download(
    state: State,
    Path((id, layer)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> WebResult {
    let (head, t, _, rows) = rows_for(&state, &id, &layer, query.as_deref()).await?;
    let bytes = selected(&t, &rows).to_json().to_string().into_bytes();
    Ok(download(
        "application/json",
        &file_name(&head, &t.layer, "json"),
        bytes,
    ))
}

/// `GET /c/{id}/l/{layer}/units.parquet`
pub async fn parquet(
    state: State,
    Path((id, layer)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> WebResult {
    let (head, t, _, rows) = rows_for(&state, &id, &layer, query.as_deref()).await?;
    let bytes = selected(&t, &rows).to_parquet().map_err(|e| WebError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("cannot write the parquet file: {e}"),
        json: true,
    })?;
    Ok(download(
        "application/vnd.apache.parquet",
        &file_name(&head, &t.layer, "parquet"),
        bytes,
    ))
}
