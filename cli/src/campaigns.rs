//! Campaigns as `vephys status`, `vephys cancel` and `vephys submit` print them: one campaign
//! with its job counts and a line per layer and probe, or a list of every campaign with its
//! progress; and the job total the progress bars of `watch` and `local` count against.

use vephys_proto::v1::{Campaign, JobCounts};

use crate::text_table::print_table;

/// Every job the counts cover, whatever its state.
pub(crate) fn total(c: &JobCounts) -> u64 {
    c.waiting + c.queued + c.leased + c.succeeded + c.failed + c.cancelled
}

pub(crate) fn print_campaign(c: &Campaign) {
    let t = c.totals.unwrap_or_default();
    println!(
        "campaign {} `{}` model {}: {}",
        c.id, c.name, c.model, c.state
    );
    println!(
        "  jobs {}: {} succeeded, {} failed, {} running, {} queued, {} waiting, {} cancelled",
        total(&t),
        t.succeeded,
        t.failed,
        t.leased,
        t.queued,
        t.waiting,
        t.cancelled
    );
    let header = ["layer", "probe", "done", "total", "running", "failed"];
    let lines: Vec<Vec<String>> = c
        .groups
        .iter()
        .map(|g| {
            let k = g.counts.unwrap_or_default();
            vec![
                g.layer.clone(),
                g.probe.clone(),
                k.succeeded.to_string(),
                total(&k).to_string(),
                k.leased.to_string(),
                k.failed.to_string(),
            ]
        })
        .collect();
    print_table(&header, &lines);
}

pub(crate) fn print_campaign_list(campaigns: &[Campaign]) {
    let header = ["id", "name", "model", "state", "done", "total", "failed"];
    let lines: Vec<Vec<String>> = campaigns
        .iter()
        .map(|c| {
            let t = c.totals.unwrap_or_default();
            vec![
                c.id.to_string(),
                c.name.clone(),
                c.model.clone(),
                c.state.clone(),
                t.succeeded.to_string(),
                total(&t).to_string(),
                t.failed.to_string(),
            ]
        })
        .collect();
    print_table(&header, &lines);
}
