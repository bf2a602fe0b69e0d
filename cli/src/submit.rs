//! `vephys submit` and `vephys watch`: a campaign spec from a TOML file with flags laid over it,
//! sent to the coordinator (resubmitting the same spec adds nothing), and followed with a
//! progress bar per layer and probe until the campaign finishes.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use vephys_proto::spec::{CampaignSpec, Filters, Probe};
use vephys_proto::v1::{GetCampaignRequest, SubmitCampaignRequest};

use crate::campaigns::{print_campaign, total};
use crate::Client;

#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    /// Campaign spec (TOML); flags below override its fields
    file: Option<PathBuf>,
    /// Campaign name
    #[arg(long)]
    name: Option<String>,
    /// Registered model name
    #[arg(long)]
    model: Option<String>,
    /// Layer names or aliases, comma-separated
    #[arg(long, value_delimiter = ',')]
    layers: Vec<String>,
    /// Filters: all, or indices and ranges, inclusive (0-15) or half-open (0..16), e.g.
    /// 0,5,10-19
    #[arg(long, env = "VEPHYS_FILTERS")]
    filters: Option<String>,
    /// Probes, comma-separated: synthesis, baseline, zoom, rotation, color, grating, hue
    #[arg(long, value_delimiter = ',')]
    probes: Vec<Probe>,
    /// Synthesis steps
    #[arg(long)]
    steps: Option<u32>,
    /// Attempts per job before it is marked failed
    #[arg(long)]
    max_attempts: Option<u32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Print the spec that would be submitted and exit
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Follow the campaign after submitting
    #[arg(long)]
    watch: bool,
}

/// The spec from the file (if any) with the flags laid over it.
pub(crate) fn build_spec(args: &SubmitArgs) -> Result<CampaignSpec> {
    let mut spec = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            CampaignSpec::from_toml(&text)
                .with_context(|| format!("{} is not a valid campaign spec", path.display()))?
        }
        None => {
            let (Some(model), false) = (&args.model, args.layers.is_empty()) else {
                bail!("give a spec file, or at least --model and --layers");
            };
            let name = args
                .name
                .clone()
                .unwrap_or_else(|| format!("{model}-{}", args.layers.join("+")));
            let minimal = format!("name = {name:?}\nmodel = {model:?}\nlayers = []\n");
            CampaignSpec::from_toml(&minimal)?
        }
    };
    if let Some(name) = &args.name {
        spec.name = name.clone();
    }
    if let Some(model) = &args.model {
        spec.model = model.clone();
    }
    if !args.layers.is_empty() {
        spec.layers = args.layers.clone();
    }
    if let Some(filters) = &args.filters {
        spec.filters =
            Filters::parse(filters).map_err(|e| anyhow::anyhow!("bad value for --filters: {e}"))?;
    }
    if !args.probes.is_empty() {
        spec.probes = args.probes.clone();
    }
    if let Some(steps) = args.steps {
        spec.synthesis.steps = steps;
    }
    if let Some(n) = args.max_attempts {
        spec.max_attempts = n;
    }
    if let Some(seed) = args.seed {
        spec.seed = seed;
    }
    spec.check()?;
    Ok(spec)
}

pub(crate) async fn submit(client: &mut Client, args: &SubmitArgs) -> Result<()> {
    let spec = build_spec(args)?;
    let response = client
        .submit_campaign(SubmitCampaignRequest {
            spec_toml: spec.to_toml(),
        })
        .await?
        .into_inner();
    let campaign = response.campaign.context("coordinator sent no campaign")?;
    if response.existing {
        println!(
            "campaign {} already exists (same spec); {} new jobs",
            campaign.id, response.jobs_created
        );
    } else {
        println!(
            "campaign {} submitted: {} jobs",
            campaign.id, response.jobs_created
        );
    }
    if args.watch {
        return watch(client, campaign.id).await;
    }
    print_campaign(&campaign);
    Ok(())
}

pub(crate) async fn watch(client: &mut Client, id: i64) -> Result<()> {
    let mut stream = client
        .watch_campaign(GetCampaignRequest { campaign_id: id })
        .await?
        .into_inner();
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:<32} [{bar:40}] {pos}/{len} {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut by_group: HashMap<(String, String), ProgressBar> = HashMap::new();
    let mut last = None;
    while let Some(campaign) = stream.message().await? {
        for group in &campaign.groups {
            let counts = group.counts.unwrap_or_default();
            let bar = by_group
                .entry((group.layer.clone(), group.probe.clone()))
                .or_insert_with(|| {
                    let bar = bars.add(ProgressBar::new(0));
                    bar.set_style(style.clone());
                    bar.set_prefix(format!("{} / {}", group.layer, group.probe));
                    bar
                });
            bar.set_length(total(&counts));
            bar.set_position(counts.succeeded + counts.failed + counts.cancelled);
            bar.set_message(format!(
                "{} running, {} failed",
                counts.leased, counts.failed
            ));
        }
        last = Some(campaign);
    }
    for bar in by_group.values() {
        bar.finish();
    }
    if let Some(campaign) = last {
        println!("campaign {} {}", campaign.id, campaign.state);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    #[test]
    fn flags_build_a_spec_without_a_file() {
        let cli = Cli::parse_from([
            "vephys",
            "submit",
            "--model",
            "vgg19",
            "--layers",
            "block3_pool",
            "--filters",
            "0..4",
            "--probes",
            "synthesis,zoom",
        ]);
        let Command::Submit(args) = cli.command else {
            panic!("not submit")
        };
        let spec = build_spec(&args).unwrap();
        assert_eq!(spec.probes, vec![Probe::Synthesis, Probe::Zoom]);
        assert_eq!(spec.filters.resolve(10).unwrap(), vec![0, 1, 2, 3]);
    }
}
