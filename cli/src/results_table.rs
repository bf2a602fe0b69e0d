//! `vephys results` as typed tables (for `--format parquet`): one row per job with its numbers
//! and provenance, or one row per tuning point. Column names match the CSV's where both exist.

use vephys_proto::v1::JobResult;
use vephys_results::table::{Cell, Column, Kind, Table};

fn text(s: &str) -> Cell {
    Cell::Text(s.to_string())
}

/// One row per finished job.
pub fn jobs(rows: &[JobResult]) -> Table {
    let mut table = Table::new(vec![
        Column::new("job", Kind::Int),
        Column::new("layer", Kind::Text),
        Column::new("filter", Kind::Int),
        Column::new("probe", Kind::Text),
        Column::new("attempt", Kind::Int),
        Column::new("max_act", Kind::Float),
        Column::new("mean_act", Kind::Float),
        Column::new("status", Kind::Text),
        Column::new("derived", Kind::Text),
        Column::new("weights_sha256", Kind::Text),
        Column::new("params", Kind::Text),
        Column::new("params_hash", Kind::Text),
        Column::new("seed", Kind::Int),
        Column::new("device", Kind::Text),
        Column::new("worker", Kind::Text),
        Column::new("duration_ms", Kind::Int),
    ]);
    for r in rows {
        let outcome = r.result.clone().unwrap_or_default();
        let p = outcome.provenance.clone().unwrap_or_default();
        table.push(vec![
            Cell::Int(r.job_id),
            text(&r.layer),
            Cell::Int(r.filter),
            text(&r.probe),
            Cell::Int(r.attempt),
            Cell::Float(outcome.max_act),
            Cell::Float(outcome.mean_act),
            text(&outcome.status),
            text(&outcome.derived_json),
            text(&p.weights_sha256),
            text(&p.params_json),
            text(&p.params_hash),
            Cell::Int(p.seed),
            text(&p.device),
            text(&p.worker),
            Cell::Int(p.duration_ms),
        ]);
    }
    table
}

/// One row per tuning point (stimulus); `label` is null for numeric stimuli.
pub fn points(rows: &[JobResult]) -> Table {
    let mut table = Table::new(vec![
        Column::new("job", Kind::Int),
        Column::new("layer", Kind::Text),
        Column::new("filter", Kind::Int),
        Column::new("probe", Kind::Text),
        Column::new("x", Kind::Float),
        Column::new("label", Kind::Text),
        Column::new("max_act", Kind::Float),
        Column::new("mean_act", Kind::Float),
    ]);
    for r in rows {
        for p in &r.points {
            table.push(vec![
                Cell::Int(r.job_id),
                text(&r.layer),
                Cell::Int(r.filter),
                text(&p.probe),
                Cell::Float(p.x),
                p.label.as_deref().map_or(Cell::Null, text),
                Cell::Float(p.max_act),
                Cell::Float(p.mean_act),
            ]);
        }
    }
    table
}
