//! The page: one self-contained HTML file (inline CSS and SVG, images next to it, no scripts,
//! no external URLs) that opens from a laptop's disk or any static file server.
//!
//! Layout: title and campaign facts; the per-unit summary table; per layer a grid of max images
//! labelled with their filter numbers (the paper's Figure 1); then one section per filter with
//! its max image(s) beside its tuning plots (Figures 3-8). Every string from the campaign or
//! the results is escaped with `esc`.

use std::collections::BTreeMap;

use vephys_proto::v1::Campaign;

use super::fmt::{esc, opt, slug, utc_date};
use super::plots;
use super::units::{self, Grouped, Unit, HEADERS, NUMERIC};

/// The image files of one unit, relative to `images/`.
#[derive(Default)]
pub struct UnitImages {
    pub max: Option<String>,
    /// Single-colour max images: ("R", file), ("G", file), ("B", file), those present.
    pub channels: Vec<(&'static str, String)>,
}

pub type Images<'a> = BTreeMap<(&'a str, i64), UnitImages>;

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:1em 2em;color:#222;background:#fff}
h1{margin:.2em 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd}h3{margin:.2em 0 .4em}
.facts{color:#555}.facts b{color:#222}
table.summary{border-collapse:collapse;font-variant-numeric:tabular-nums}
table.summary th,table.summary td{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}
table.summary td.n,table.summary th.n{text-align:right}
table.summary tr.dead_unit td,table.summary tr.missing td{color:#999}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(84px,1fr));gap:6px;max-width:1100px}
.grid a{display:block;text-align:center;color:#333;text-decoration:none;font-size:11px}
.grid img,.grid .none{width:80px;height:80px;display:block;margin:0 auto}
.grid .none{background:#eee;color:#888;line-height:80px;font-size:10px}
img{image-rendering:crisp-edges;image-rendering:pixelated}
section.unit{border-top:1px solid #ddd;padding:.6em 0 1em}
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.imgs{display:flex;flex-wrap:wrap;gap:8px;max-width:420px}
.imgs figure img{width:192px;height:192px;display:block}
.imgs figure.ch img{width:96px;height:96px}
figure{margin:0}figcaption{font-size:12px;color:#555;max-width:330px}
.status{font-size:12px;font-weight:normal;padding:1px 6px;border-radius:3px;background:#e5f3e5}
.status.dead_unit,.status.missing{background:#f6e3e3}
.note{color:#777;font-style:italic}
svg.plot{border:1px solid #eee}
pre{background:#f7f7f7;padding:.6em;overflow:auto}
"#;

/// The HTML id of a unit's section.
pub fn anchor(layer: &str, filter: i64) -> String {
    format!("u-{}-{filter:04}", slug(layer))
}

pub fn page(campaign: &Campaign, units: &[Unit], grouped: &Grouped, images: &Images) -> String {
    let mut h = String::new();
    let title = format!(
        "{} — {} (campaign {})",
        campaign.name, campaign.model, campaign.id
    );
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    h.push_str(&format!(
        "<title>{}</title><style>{CSS}</style></head><body>\n",
        esc(&title)
    ));
    header(&mut h, campaign, units);
    summary_table(&mut h, units);

    // per layer: the grid of max images, then one section per filter
    let mut layers: BTreeMap<&str, Vec<&Unit>> = BTreeMap::new();
    for u in units {
        layers.entry(u.layer.as_str()).or_default().push(u);
    }
    for (layer, us) in &layers {
        h.push_str(&format!(
            "<h2>Max images · {}</h2>\n<div class=\"grid\">",
            esc(layer)
        ));
        for u in us {
            let href = anchor(layer, u.filter);
            let img = images.get(&(*layer, u.filter)).and_then(|i| i.max.as_ref());
            let cell = match img {
                Some(file) => format!(
                    "<img src=\"images/{}\" alt=\"max image of filter {}\" loading=\"lazy\">",
                    esc(file),
                    u.filter
                ),
                None => format!("<span class=\"none\">{}</span>", esc(&u.status)),
            };
            h.push_str(&format!(
                "<a href=\"#{}\">{cell}{}</a>",
                esc(&href),
                u.filter
            ));
        }
        h.push_str("</div>\n");
    }
    for u in units {
        let key = (u.layer.as_str(), u.filter);
        let empty = BTreeMap::new();
        let probes = grouped.get(&key).unwrap_or(&empty);
        unit_section(&mut h, u, probes, images.get(&key));
    }
    h.push_str("<p class=\"facts\">Written by vephys. Max activity: solid orange; mean activity: dashed blue \
                (bars: max activity, black tick: mean). Definitions: docs/results.md.</p>\n</body></html>\n");
    h
}

fn header(h: &mut String, c: &Campaign, units: &[Unit]) {
    h.push_str(&format!("<h1>{}</h1>\n", esc(&c.name)));
    h.push_str(&format!(
        "<p class=\"facts\">campaign <b>{}</b> · model <b>{}</b> · state <b>{}</b> · created <b>{}</b> · {} units ({})",
        c.id,
        esc(&c.model),
        esc(&c.state),
        esc(&utc_date(c.created_at_ms)),
        units.len(),
        esc(&units::status_counts(units))
    ));
    if let Some(t) = &c.totals {
        h.push_str(&format!(
            " · jobs: {} succeeded, {} failed, {} cancelled, {} unfinished",
            t.succeeded,
            t.failed,
            t.cancelled,
            t.waiting + t.queued + t.leased
        ));
    }
    h.push_str("</p>\n");
    if !c.spec_toml.is_empty() {
        h.push_str(&format!(
            "<details><summary>campaign spec</summary><pre>{}</pre></details>\n",
            esc(&c.spec_toml)
        ));
    }
}

fn summary_table(h: &mut String, units: &[Unit]) {
    h.push_str("<h2>Units</h2>\n<table class=\"summary\"><thead><tr>");
    for (head, n) in HEADERS.iter().zip(NUMERIC) {
        h.push_str(&format!(
            "<th{}>{}</th>",
            if n { " class=\"n\"" } else { "" },
            esc(head)
        ));
    }
    h.push_str("</tr></thead><tbody>\n");
    for u in units {
        h.push_str(&format!("<tr class=\"{}\">", esc(&slug(&u.status))));
        for (i, (cell, n)) in units::row(u).iter().zip(NUMERIC).enumerate() {
            let class = if n { " class=\"n\"" } else { "" };
            // the filter number links to the unit's section
            let text = if i == 1 {
                format!(
                    "<a href=\"#{}\">{}</a>",
                    esc(&anchor(&u.layer, u.filter)),
                    esc(cell)
                )
            } else {
                esc(cell)
            };
            h.push_str(&format!("<td{class}>{text}</td>"));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");
}

fn unit_section(
    h: &mut String,
    u: &Unit,
    probes: &BTreeMap<&str, &vephys_proto::v1::JobResult>,
    images: Option<&UnitImages>,
) {
    h.push_str(&format!(
        "<section class=\"unit\" id=\"{}\"><h3>{} · filter {} <span class=\"status {}\">{}</span></h3>\n<div class=\"row\"><div class=\"imgs\">",
        esc(&anchor(&u.layer, u.filter)),
        esc(&u.layer),
        u.filter,
        esc(&slug(&u.status)),
        esc(&u.status)
    ));
    match images.and_then(|i| i.max.as_ref()) {
        Some(file) => h.push_str(&format!(
            "<figure><img src=\"images/{}\" alt=\"max image of {} filter {}\"><figcaption>max image · max activity {}</figcaption></figure>",
            esc(file),
            esc(&u.layer),
            u.filter,
            esc(&opt(u.max_act))
        )),
        None => h.push_str(&format!("<p class=\"note\">{}</p>", esc(no_image_reason(&u.status)))),
    }
    for (channel, file) in images.map(|i| i.channels.as_slice()).unwrap_or_default() {
        h.push_str(&format!(
            "<figure class=\"ch\"><img src=\"images/{}\" alt=\"{} max image of filter {}\"><figcaption>{} only</figcaption></figure>",
            esc(file),
            channel,
            u.filter,
            channel
        ));
    }
    h.push_str("</div><div class=\"row\">");
    let figures = plots::figures(probes);
    if figures.is_empty() {
        h.push_str("<p class=\"note\">no probe results for this unit</p>");
    }
    for f in figures {
        h.push_str(&format!(
            "<figure class=\"fig\">{}<figcaption>{}</figcaption></figure>\n",
            f.svg,
            esc(&f.caption)
        ));
    }
    h.push_str("</div></div></section>\n");
}

fn no_image_reason(status: &str) -> &'static str {
    match status {
        "dead_unit" => "dead unit: its gradient was zero from the start, so there is no max image",
        "missing" => "no synthesis result (not run, failed or not finished)",
        _ => "no max image recorded",
    }
}
