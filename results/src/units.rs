//! The per-unit summary: one row per (layer, filter) with the numbers a scientist scans first.
//! The same rules as the `unit_summary` SQL view (docs/coordinator.md), so the report, the
//! table and queries agree: preferred rotation/zoom are the stimulus value with the highest max
//! activity (the first such stimulus on ties), colour selectivity is the baseline job's `csi`
//! (the paper's index: the full-colour max image against its grayscale), the preferred channel
//! the colour job's.

use std::collections::BTreeMap;

use serde_json::Value;
use vephys_proto::v1::{JobResult, TuningPoint};

use crate::fmt::opt;

/// One unit (filter) of a campaign's layer, summarised from its jobs' results.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub layer: String,
    pub filter: i64,
    /// Synthesis status: `ok` | `dead_unit` | `missing` (no synthesis result yet).
    pub status: String,
    /// Max activity on the saved max image (synthesis `max_act`).
    pub max_act: Option<f64>,
    pub preferred_rotation: Option<f64>,
    pub preferred_zoom: Option<f64>,
    /// The baseline job's derived `csi`: the paper's colour selectivity index.
    pub csi: Option<f64>,
    /// The colour job's derived `preferred_channel` (`r`, `g` or `b`).
    pub preferred_channel: Option<String>,
}

/// A campaign's results by unit, then by probe (the job's probe: `synthesis`, `zoom`, ...).
pub type Grouped<'a> = BTreeMap<(&'a str, i64), BTreeMap<&'a str, &'a JobResult>>;

/// Groups results by unit and probe. A campaign has one job per (layer, filter, probe), so
/// there is one result each; should a reader hand in several, the latest attempt wins, as the
/// coordinator records only the winner's.
pub fn group(results: &[JobResult]) -> Grouped<'_> {
    let mut grouped: Grouped = BTreeMap::new();
    for r in results {
        let probes = grouped.entry((r.layer.as_str(), r.filter)).or_default();
        match probes.get(r.probe.as_str()) {
            Some(old) if old.attempt > r.attempt => {}
            _ => {
                probes.insert(r.probe.as_str(), r);
            }
        }
    }
    grouped
}

/// One unit per (layer, filter) that has any result, sorted by (layer, filter).
pub fn units(results: &[JobResult]) -> Vec<Unit> {
    group(results)
        .iter()
        .map(|(&(layer, filter), probes)| unit_of(layer, filter, probes))
        .collect()
}

pub fn unit_of(layer: &str, filter: i64, probes: &BTreeMap<&str, &JobResult>) -> Unit {
    let synthesis = probes.get("synthesis").and_then(|r| r.result.as_ref());
    let color = probes.get("color").map(|r| derived(r));
    let baseline = probes.get("baseline").map(|r| derived(r));
    let preferred = |probe: &str| probes.get(probe).and_then(|r| peak_x(&r.points));
    Unit {
        layer: layer.to_string(),
        filter,
        status: match synthesis {
            Some(s) if !s.status.is_empty() => s.status.clone(),
            Some(_) => "ok".into(),
            None => "missing".into(),
        },
        max_act: synthesis.map(|s| s.max_act).filter(|v| v.is_finite()),
        preferred_rotation: preferred("rotation"),
        preferred_zoom: preferred("zoom"),
        csi: baseline
            .as_ref()
            .and_then(|d| d.get("csi"))
            .and_then(Value::as_f64),
        preferred_channel: color
            .as_ref()
            .and_then(|d| d.get("preferred_channel"))
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

/// The x of the stimulus with the highest max activity; the first one on ties (the
/// `tuning_peaks` view orders by max_act, then position). None without finite points.
pub fn peak_x(points: &[TuningPoint]) -> Option<f64> {
    let mut best: Option<&TuningPoint> = None;
    for p in points
        .iter()
        .filter(|p| p.max_act.is_finite() && p.x.is_finite())
    {
        if best.is_none_or(|b| p.max_act > b.max_act) {
            best = Some(p);
        }
    }
    best.map(|p| p.x)
}

/// A job's derived numbers as JSON; an empty object when absent or unreadable, so a worker
/// that wrote nothing (or something odd) costs a caption, not the report.
pub fn derived(r: &JobResult) -> Value {
    r.result
        .as_ref()
        .and_then(|o| serde_json::from_str::<Value>(&o.derived_json).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()))
}

pub const HEADERS: [&str; 8] = [
    "layer",
    "filter",
    "status",
    "max-image activity",
    "pref. rotation (deg)",
    "pref. zoom",
    "colour index",
    "channel",
];

/// Which columns hold numbers (right-aligned in the text table).
pub const NUMERIC: [bool; 8] = [false, true, false, true, true, true, true, false];

/// A unit's row of the summary table, "-" where a value is missing.
pub fn row(u: &Unit) -> [String; 8] {
    [
        u.layer.clone(),
        u.filter.to_string(),
        u.status.clone(),
        opt(u.max_act),
        opt(u.preferred_rotation),
        opt(u.preferred_zoom),
        opt(u.csi),
        u.preferred_channel.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// The aligned text table (header, rule, rows), each line ending in a newline.
pub fn format_table(units: &[Unit]) -> String {
    let rows: Vec<[String; 8]> = units.iter().map(row).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if NUMERIC[i] {
                s.push_str(&pad);
                s.push_str(cell);
            } else {
                s.push_str(cell);
                if i + 1 < cells.len() {
                    s.push_str(&pad);
                }
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&HEADERS.map(String::from));
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

/// Prints the per-unit summary as an aligned table on stdout.
pub fn print_table(units: &[Unit]) {
    print!("{}", format_table(units));
}

/// For the page's summary line: how many units are ok, dead, missing.
pub fn status_counts(units: &[Unit]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for u in units {
        *counts.entry(u.status.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}
