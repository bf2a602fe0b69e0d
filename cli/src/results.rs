//! `vephys results`: a campaign's results, optionally narrowed to a layer, filter or probe, as an
//! aligned text table, CSV, JSON (everything, with provenance and artifacts) or Parquet, one row
//! per job or per tuning point, on standard output or replacing a file atomically.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use vephys_proto::spec::Probe;
use vephys_proto::v1::{JobResult, QueryResultsRequest};
use vephys_results::record::result_json;

use crate::{results_table, text_table, Client};

#[derive(Debug, clap::Args)]
pub(crate) struct ResultsArgs {
    id: i64,
    /// Only this layer (canonical name)
    #[arg(long)]
    layer: Option<String>,
    /// Only this filter
    #[arg(long)]
    filter: Option<i64>,
    /// Only this probe
    #[arg(long)]
    probe: Option<Probe>,
    /// table (aligned text), csv, json (everything, with provenance and artifacts) or parquet
    /// (typed columns for pandas, polars, R; needs --out)
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// One row per tuning point (stimulus) instead of one per job
    #[arg(long)]
    points: bool,
    /// Write to this file instead of standard output (replaced atomically)
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

pub(crate) async fn results(client: &mut Client, args: &ResultsArgs) -> Result<()> {
    if matches!(args.format, Format::Parquet) && args.out.is_none() {
        bail!("--format parquet writes a binary file; give it with --out FILE");
    }
    let request = QueryResultsRequest {
        campaign_id: args.id,
        layer: args.layer.clone().unwrap_or_default(),
        filter: args.filter,
        probe: args.probe.map(|p| p.to_string()).unwrap_or_default(),
    };
    let rows = query(client, request).await?;
    let bytes = match args.format {
        Format::Json => {
            let all: Vec<serde_json::Value> = rows.iter().map(result_json).collect();
            let mut text = serde_json::to_string_pretty(&all)?;
            text.push('\n');
            text.into_bytes()
        }
        Format::Parquet => {
            let table = if args.points {
                results_table::points(&rows)
            } else {
                results_table::jobs(&rows)
            };
            table
                .to_parquet()
                .context("cannot write the parquet file")?
        }
        Format::Table | Format::Csv => {
            let (header, lines) = if args.points {
                point_rows(&rows)
            } else {
                job_rows(&rows)
            };
            if matches!(args.format, Format::Csv) {
                text_table::csv_text(&header, &lines)
            } else {
                text_table::table_text(&header, &lines)
            }
            .into_bytes()
        }
    };
    match &args.out {
        Some(path) => {
            write_atomically(path, &bytes)?;
            eprintln!("wrote {} results to {}", rows.len(), path.display());
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&bytes)
                .context("cannot write to standard output")?;
        }
    }
    Ok(())
}

/// Every result `request` selects, as the coordinator streams them.
pub(crate) async fn query(
    client: &mut Client,
    request: QueryResultsRequest,
) -> Result<Vec<JobResult>> {
    let mut stream = client.query_results(request).await?.into_inner();
    let mut rows = Vec::new();
    while let Some(result) = stream.message().await? {
        rows.push(result);
    }
    Ok(rows)
}

/// Writes `bytes` to a temporary file next to `path` and renames it over `path`, so a reader
/// never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("--out {} is not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}", path.display())
    })
}

fn job_rows(rows: &[JobResult]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "job", "layer", "filter", "probe", "max_act", "mean_act", "status", "derived",
    ];
    let lines = rows
        .iter()
        .map(|r| {
            let outcome = r.result.clone().unwrap_or_default();
            vec![
                r.job_id.to_string(),
                r.layer.clone(),
                r.filter.to_string(),
                r.probe.clone(),
                format!("{:.6}", outcome.max_act),
                format!("{:.6}", outcome.mean_act),
                outcome.status,
                outcome.derived_json,
            ]
        })
        .collect();
    (header, lines)
}

fn point_rows(rows: &[JobResult]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "job", "layer", "filter", "probe", "x", "label", "max_act", "mean_act",
    ];
    let mut lines = Vec::new();
    for r in rows {
        for p in &r.points {
            lines.push(vec![
                r.job_id.to_string(),
                r.layer.clone(),
                r.filter.to_string(),
                p.probe.clone(),
                p.x.to_string(),
                p.label.clone().unwrap_or_default(),
                format!("{:.6}", p.max_act),
                format!("{:.6}", p.mean_act),
            ]);
        }
    }
    (header, lines)
}
