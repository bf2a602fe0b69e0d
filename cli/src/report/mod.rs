//! The static HTML report of a campaign and the per-unit summary table.
//!
//! Input is what `QueryResults` streams (one `JobResult` per finished job, docs/results.md) and
//! a way to fetch artifact bytes (file:// or s3://, the caller's business). Output is
//! `dir/index.html` plus `dir/images/<layer>_filter_NNNN[_r|_g|_b].png`.
//!
//! - `html.rs`: the page;
//! - `files.rs`: verified fetching and the atomic write;
//!
//! and from the `vephys-results` crate, which the coordinator's results browser draws with too:
//! `units` (one summary row per unit, the text table), `plots` (one figure per probe result),
//! `svg` (the plots themselves) and `fmt` (escaping, numbers, dates, slugs).

mod files;
mod html;

use vephys_results::{fmt, plots, units};

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::Result;
use vephys_proto::v1::{Artifact, Campaign, JobResult};

pub use units::{print_table, units, Unit};

/// Single-colour images of the colour job, as (artifact kind, file suffix, caption).
const CHANNELS: [(&str, &str, &str); 3] = [
    ("max_image_r", "r", "R"),
    ("max_image_g", "g", "G"),
    ("max_image_b", "b", "B"),
];

/// Writes `dir/index.html` and the images it shows; returns the page's path.
///
/// Every image is fetched with `fetch` and checked against its recorded sha256 before anything
/// lands in `dir`; a mismatch is an error and leaves `dir` as it was. Units with no synthesis
/// result, dead units and probes that did not run are shown as such, not treated as errors.
pub fn write_report(
    dir: &Path,
    campaign: &Campaign,
    results: &[JobResult],
    fetch: &dyn Fn(&Artifact) -> Result<Vec<u8>>,
) -> Result<PathBuf> {
    let grouped = units::group(results);
    let unit_rows: Vec<Unit> = grouped
        .iter()
        .map(|(&(layer, filter), probes)| units::unit_of(layer, filter, probes))
        .collect();

    let mut staging = files::Staging::new(dir)?;
    let mut images = html::Images::new();
    for (&(layer, filter), probes) in &grouped {
        let mut found = html::UnitImages::default();
        if let Some(a) = probes
            .get("synthesis")
            .and_then(|r| artifact(r, "max_image"))
        {
            let name = files::image_name(layer, filter, None);
            let what = format!("the max image of {layer} filter {filter}");
            staging.image(&name, &files::fetch_verified(fetch, a, &what)?)?;
            found.max = Some(name);
        }
        if let Some(color) = probes.get("color") {
            for (kind, suffix, caption) in CHANNELS {
                if let Some(a) = artifact(color, kind) {
                    let name = files::image_name(layer, filter, Some(suffix));
                    let what = format!("the {caption}-only max image of {layer} filter {filter}");
                    staging.image(&name, &files::fetch_verified(fetch, a, &what)?)?;
                    found.channels.push((caption, name));
                }
            }
        }
        images.insert((layer, filter), found);
    }
    let page = html::page(campaign, &unit_rows, &grouped, &images);
    staging.commit(dir, &page)
}

fn artifact<'a>(r: &'a JobResult, kind: &str) -> Option<&'a Artifact> {
    r.artifacts.iter().find(|a| a.kind == kind)
}
