//! `vephys`: submit campaigns to a coordinator, follow them, and read their results.

mod embedded;
mod gc;
mod local;
mod paging;
mod report;
mod results_table;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;
use vephys_objects::{sha256_hex, Objects, S3Options};
use vephys_proto::bearer::BearerToken;
use vephys_proto::endpoint::endpoint;
use vephys_proto::spec::{CampaignSpec, Filters, Probe};
use vephys_proto::v1::campaigns_client::CampaignsClient;
use vephys_proto::v1::*;
use vephys_results::record::result_json;

#[derive(Debug, Parser)]
#[command(
    name = "vephys",
    version,
    about = "virtual electrophysiology on deep vision networks: submit and follow campaigns"
)]
struct Cli {
    /// Coordinator gRPC address (https:// for TLS)
    #[arg(
        long,
        global = true,
        env = "VEPHYS_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    coordinator: String,

    /// User bearer token (the coordinator's --user-token)
    #[arg(long, global = true, env = "VEPHYS_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// CA certificate (PEM) to trust for an https:// coordinator with a private CA
    #[arg(long, global = true, env = "VEPHYS_CA_CERT")]
    ca_cert: Option<PathBuf>,

    /// Read a `vephys local` data directory instead of a running coordinator (starts the
    /// embedded coordinator on its database for the length of the command; wins over
    /// --coordinator)
    #[arg(long, global = true, env = "VEPHYS_DATA_DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit a campaign from a TOML spec file, or from flags; resubmitting the same spec adds nothing
    Submit(SubmitArgs),
    /// Show one campaign's progress, or list all campaigns
    Status {
        /// Campaign id; all campaigns when omitted
        id: Option<i64>,
    },
    /// Follow a campaign with a progress bar per layer and probe until it finishes
    Watch { id: i64 },
    /// Cancel a campaign: no new leases, running jobs stop at their next heartbeat
    Cancel { id: i64 },
    /// Print a campaign's results
    Results(ResultsArgs),
    /// List registered models, or register one
    Models {
        #[command(subcommand)]
        action: Option<ModelsAction>,
    },
    /// Find (and with --delete remove) the objects of attempts that lost and of failed or
    /// cancelled jobs: a dry run by default
    Gc(gc::GcArgs),
    /// Run a campaign on this machine: embedded coordinator (SQLite), one worker, local files;
    /// prints a summary and writes an HTML report. The same command again resumes it.
    #[command(
        args_override_self = true,
        long_about = "Run a campaign on this machine: the embedded coordinator (SQLite in \
--data-dir), one `vephys-worker serve` child process and a local object store (files in \
--data-dir). Shows progress, prints one line per filter (max-image activity, preferred rotation \
and zoom, colour index) and writes DATA_DIR/report/index.html: the grid of max images and every \
filter's tuning curves. Interrupted runs resume when the same command runs again; Ctrl-C \
lets the worker finish and report its batch in flight first, a second Ctrl-C gives the batch \
back at once. \
While it runs it prints the address of the results browser (live progress, the grid of max \
images, every unit's tuning curves). Afterwards `vephys --data-dir DIR results ID` (and status, \
watch, report) read the same data, and `vephys --data-dir DIR ui` browses it."
    )]
    Local(Box<local::LocalArgs>),
    /// Write a campaign's HTML report: grid of max images and per-filter tuning curves
    Report(ReportArgs),
    /// Browse a data directory's results in a web browser: serves the results browser of
    /// --data-dir (default vephys-data) on --http until Ctrl-C and prints its address
    #[command(long_about = "Browse a data directory's results in a web browser: starts the \
embedded coordinator on --data-dir (default vephys-data) and serves its results browser on \
--http until Ctrl-C. Prints the address, with a one-time token that logs the browser in \
(campaigns with live progress, each layer's grid of max images sortable and filterable by any \
unit_summary column, one page per unit with every tuning curve, units side by side, CSV, \
Parquet and JSON downloads). A running coordinator serves the same pages on its own --http \
address; `vephys local` prints its browser's address while it runs.")]
    Ui(UiArgs),
}

#[derive(Debug, clap::Args)]
struct UiArgs {
    /// Address to serve the results browser on (127.0.0.1:0 picks a free port)
    #[arg(long, env = "VEPHYS_UI_HTTP", default_value = "127.0.0.1:7080")]
    http: std::net::SocketAddr,
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    id: i64,
    /// Output directory (index.html and images/)
    #[arg(long)]
    out: PathBuf,
    /// Object store the artifacts live in, for s3:// artifacts (file:// ones are read directly)
    #[arg(long, env = "VEPHYS_STORE")]
    store: Option<String>,
    /// S3 endpoint for S3-compatible servers (Garage, MinIO, Ceph)
    #[arg(long, env = "VEPHYS_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
}

#[derive(Debug, clap::Args)]
struct SubmitArgs {
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
    dry_run: bool,
    /// Follow the campaign after submitting
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, clap::Args)]
struct ResultsArgs {
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
enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

#[derive(Debug, Subcommand)]
enum ModelsAction {
    /// Register a model: an exported model's model.json (from vephys-export), as it is, or the
    /// JSON `vephys-worker layers --model M --json` prints
    Add(AddModelArgs),
}

#[derive(Debug, clap::Args)]
struct AddModelArgs {
    file: PathBuf,
    /// Object store to upload an exported model's archive to (file:///dir or
    /// s3://bucket/prefix, the workers' --store): workers fetch it from there and check its
    /// sha256. Without it, workers need the model's directory themselves (--model-dir, or
    /// their weights directory)
    #[arg(long, env = "VEPHYS_STORE")]
    store: Option<String>,
    /// S3 endpoint for S3-compatible servers (Garage, MinIO, Ceph)
    #[arg(long, env = "VEPHYS_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
}

pub(crate) type Client = CampaignsClient<InterceptedService<Channel, BearerToken>>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// A coordinator refusal reads as its message and code, not as a debug dump of the status.
fn describe(error: &anyhow::Error) -> String {
    match error.downcast_ref::<Status>() {
        Some(status) => format!("{} ({:?})", status.message(), status.code()),
        None => format!("{error:#}"),
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Submit(args) = &cli.command {
        if args.dry_run {
            print!("{}", build_spec(args)?.to_toml());
            return Ok(());
        }
    }
    if let Command::Local(args) = cli.command {
        return local::run(*args).await;
    }
    if let Command::Ui(args) = &cli.command {
        let dir = cli.data_dir.clone().unwrap_or_else(|| PathBuf::from("vephys-data"));
        return embedded::serve_ui(&dir, args.http).await;
    }
    // With --data-dir the coordinator runs in this process for the length of the command.
    let embedded = match &cli.data_dir {
        Some(dir) => {
            let data = embedded::DataDir::new(dir)?;
            if !data.database().is_file() {
                bail!(
                    "{} holds no vephys database; run `vephys local --data-dir {}` first",
                    dir.display(),
                    dir.display()
                );
            }
            Some(embedded::Embedded::start(&data, std::time::Duration::from_secs(30)).await?)
        }
        None => None,
    };
    let mut client = match &embedded {
        Some(e) => connect_to(&e.url, Some(&e.user_token), None).await?,
        None => {
            connect_to(
                &cli.coordinator,
                cli.token.as_deref(),
                cli.ca_cert.as_deref(),
            )
            .await?
        }
    };
    let outcome = command(&mut client, &cli).await;
    if let Some(e) = embedded {
        e.shutdown().await;
    }
    outcome
}

async fn command(client: &mut Client, cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Submit(args) => submit(client, args).await,
        Command::Status { id: Some(id) } => {
            let campaign = client
                .get_campaign(GetCampaignRequest { campaign_id: *id })
                .await?
                .into_inner();
            print_campaign(&campaign);
            Ok(())
        }
        Command::Status { id: None } => {
            print_campaign_list(&paging::campaigns(client).await?);
            Ok(())
        }
        Command::Watch { id } => watch(client, *id).await,
        Command::Cancel { id } => {
            let campaign = client
                .cancel_campaign(CancelCampaignRequest { campaign_id: *id })
                .await?
                .into_inner();
            println!("campaign {} cancelled", campaign.id);
            print_campaign(&campaign);
            Ok(())
        }
        Command::Results(args) => results(client, args).await,
        Command::Models { action: None } => {
            let models = client
                .list_models(ListModelsRequest {})
                .await?
                .into_inner()
                .models;
            print_models(&models);
            Ok(())
        }
        Command::Models {
            action: Some(ModelsAction::Add(args)),
        } => {
            let file = &args.file;
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut model = model_from_json(&text)
                .with_context(|| format!("{} is not a model description", file.display()))?;
            if let Some(store) = &args.store {
                model.weights_uri = upload_archive(&model, file, store, args.s3_endpoint.clone())
                    .await?;
            }
            let stored = client
                .register_model(RegisterModelRequest { model: Some(model) })
                .await?
                .into_inner();
            println!(
                "registered model {} ({} layers)",
                stored.name,
                stored.layers.len()
            );
            Ok(())
        }
        Command::Report(args) => {
            let campaign = client
                .get_campaign(GetCampaignRequest {
                    campaign_id: args.id,
                })
                .await?
                .into_inner();
            let results = local::query_results(client, args.id).await?;
            let store = match (&args.store, &cli.data_dir) {
                (Some(url), _) => url.clone(),
                (None, Some(dir)) => embedded::DataDir::new(dir)?.objects_url(),
                (None, None) => String::new(),
            };
            let images = fetch_images(&results, &store, args.s3_endpoint.clone()).await?;
            let index = report::write_report(&args.out, &campaign, &results, &|a| {
                images
                    .get(&a.uri)
                    .cloned()
                    .with_context(|| format!("{} was not fetched", a.uri))
            })?;
            println!("report: {}", index.display());
            Ok(())
        }
        Command::Gc(args) => gc::run(client, args, cli.data_dir.as_deref()).await,
        Command::Local(_) | Command::Ui(_) => unreachable!("handled before connecting"),
    }
}

/// A client of the coordinator at `url`; `ca_cert` trusts a private CA for https://.
pub(crate) async fn connect_to(
    url: &str,
    token: Option<&str>,
    ca_cert: Option<&Path>,
) -> Result<Client> {
    let channel = endpoint(url, ca_cert)
        .map_err(anyhow::Error::msg)?
        .connect().await.with_context(|| {
        format!("cannot reach the coordinator at {url}; is it running? (set --coordinator or VEPHYS_COORDINATOR)")
    })?;
    let token = BearerToken::new(token).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    Ok(CampaignsClient::with_interceptor(channel, token))
}

/// The image artifacts (`max_image*`) of `results`, by URI, each checked against its sha256.
/// `file://` artifacts are read directly; others from the store at `store_url`.
pub(crate) async fn fetch_images(
    results: &[JobResult],
    store_url: &str,
    s3_endpoint: Option<String>,
) -> Result<HashMap<String, Vec<u8>>> {
    let store = if store_url.is_empty() {
        None
    } else {
        Some(
            Objects::open(
                store_url,
                &S3Options {
                    endpoint: s3_endpoint,
                },
            )
            .context("bad --store")?,
        )
    };
    let mut images = HashMap::new();
    for artifact in results.iter().flat_map(|r| &r.artifacts) {
        if !artifact.kind.starts_with("max_image") || images.contains_key(&artifact.uri) {
            continue;
        }
        let bytes = match (&store, vephys_objects::local_path(&artifact.uri)) {
            (Some(store), _) if artifact.uri.starts_with(store.url()) => {
                store.get_verified(&artifact.uri, &artifact.sha256).await?
            }
            (_, Some(path)) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read artifact {}", path.display()))?;
                if !sha256_hex(&bytes).eq_ignore_ascii_case(&artifact.sha256) {
                    bail!(
                        "{} changed after it was written (its sha256 is not the recorded {}); \
                         rerun the campaign's jobs to remake it",
                        path.display(),
                        artifact.sha256
                    );
                }
                bytes
            }
            _ => bail!(
                "artifact {} is in an object store; pass --store (and --s3-endpoint) to read it",
                artifact.uri
            ),
        };
        images.insert(artifact.uri.clone(), bytes);
    }
    Ok(images)
}

/// The spec from the file (if any) with the flags laid over it.
fn build_spec(args: &SubmitArgs) -> Result<CampaignSpec> {
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

async fn submit(client: &mut Client, args: &SubmitArgs) -> Result<()> {
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

async fn watch(client: &mut Client, id: i64) -> Result<()> {
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

async fn results(client: &mut Client, args: &ResultsArgs) -> Result<()> {
    if matches!(args.format, Format::Parquet) && args.out.is_none() {
        bail!("--format parquet writes a binary file; give it with --out FILE");
    }
    let request = QueryResultsRequest {
        campaign_id: args.id,
        layer: args.layer.clone().unwrap_or_default(),
        filter: args.filter,
        probe: args.probe.map(|p| p.to_string()).unwrap_or_default(),
    };
    let mut stream = client.query_results(request).await?.into_inner();
    let mut rows = Vec::new();
    while let Some(result) = stream.message().await? {
        rows.push(result);
    }
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
            table.to_parquet().context("cannot write the parquet file")?
        }
        Format::Table | Format::Csv => {
            let (header, lines) = if args.points {
                point_rows(&rows)
            } else {
                job_rows(&rows)
            };
            if matches!(args.format, Format::Csv) {
                csv_text(&header, &lines)
            } else {
                table_text(&header, &lines)
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

fn print_table(header: &[&str], lines: &[Vec<String>]) {
    print!("{}", table_text(header, lines));
}

/// Left-aligned columns two spaces apart, one line per row after the header.
fn table_text(header: &[&str], lines: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for line in lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = render(header.to_vec());
    for line in lines {
        out.push_str(&render(line.iter().map(String::as_str).collect()));
    }
    out
}

fn csv_text(header: &[&str], lines: &[Vec<String>]) -> String {
    let mut out = csv_line(header.iter().copied()) + "\n";
    for line in lines {
        out.push_str(&csv_line(line.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// One CSV record (RFC 4180 quoting: derived JSON cells contain commas and quotes).
fn csv_line<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = cells
        .map(|cell| {
            if cell.contains([',', '"', '\n']) {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell.to_string()
            }
        })
        .collect();
    quoted.join(",")
}

fn total(c: &JobCounts) -> u64 {
    c.waiting + c.queued + c.leased + c.succeeded + c.failed + c.cancelled
}

fn print_campaign(c: &Campaign) {
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

fn print_campaign_list(campaigns: &[Campaign]) {
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

fn print_models(models: &[Model]) {
    let header = ["model", "architecture", "input", "layers", "weights_sha256"];
    let lines: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.architecture.clone(),
                m.input_size.to_string(),
                m.layers.len().to_string(),
                m.weights_sha256.clone(),
            ]
        })
        .collect();
    print_table(&header, &lines);
}

/// Uploads an exported model's archive (next to its model.json) to the store, under a key named
/// by its sha256; returns its URI. Refuses an archive that is not the manifest's.
async fn upload_archive(
    model: &Model,
    manifest_path: &Path,
    store: &str,
    s3_endpoint: Option<String>,
) -> Result<String> {
    let Some(manifest) = vephys_proto::manifest::Manifest::parse(&model.manifest_json).ok() else {
        bail!(
            "--store uploads an exported model's archive, and {} is a built-in model's description; leave --store out",
            model.name
        );
    };
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let archive = dir.join(&manifest.archive);
    let bytes = std::fs::read(&archive)
        .with_context(|| format!("cannot read the archive {}", archive.display()))?;
    if !sha256_hex(&bytes).eq_ignore_ascii_case(&manifest.weights_sha256) {
        bail!(
            "{} is not the archive {} describes (its sha256 differs); export the model again",
            archive.display(),
            manifest_path.display()
        );
    }
    let objects = Objects::open(store, &S3Options { endpoint: s3_endpoint }).context("bad --store")?;
    let key = format!("models/{}/{}.pt", model.name, manifest.weights_sha256.to_lowercase());
    let stored = objects
        .put(&key, bytes)
        .await
        .with_context(|| format!("cannot upload {} to {}", archive.display(), objects.url()))?;
    eprintln!("uploaded {} ({} bytes) to {}", archive.display(), stored.bytes, stored.uri);
    Ok(stored.uri)
}

/// The JSON `vephys-worker layers --model M --json` prints, or an exported model's manifest
/// (which has these fields and more). Keys this CLI does not know are ignored, so a newer
/// worker's extra fields do not break registration.
#[derive(Debug, Deserialize)]
struct ModelJson {
    model: String,
    architecture: String,
    input_size: i64,
    weights_sha256: Option<String>,
    #[serde(default)]
    weights_uri: Option<String>,
    layers: Vec<LayerJson>,
}

#[derive(Debug, Deserialize)]
struct LayerJson {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    channels: i64,
    height: i64,
    width: i64,
}

fn model_from_json(text: &str) -> Result<Model> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let manifest_json = match vephys_proto::manifest::is_manifest(&value) {
        true => vephys_proto::manifest::Manifest::parse(text)?.to_json(),
        false => String::new(),
    };
    let m: ModelJson = serde_json::from_value(value)?;
    Ok(Model {
        manifest_json,
        name: m.model,
        architecture: m.architecture,
        input_size: m.input_size,
        weights_sha256: m.weights_sha256.unwrap_or_default(),
        weights_uri: m.weights_uri.unwrap_or_default(),
        layers: m
            .layers
            .into_iter()
            .map(|l| Layer {
                name: l.name,
                aliases: l.aliases,
                channels: l.channels,
                height: l.height,
                width: l.width,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_layer_json_becomes_a_model() {
        let text = r#"{"model":"vgg19","architecture":"vgg19","input_size":224,"weights_sha256":null,
            "layers":[{"name":"block3_pool","aliases":["features.18"],"channels":256,"height":28,"width":28}]}"#;
        let model = model_from_json(text).unwrap();
        assert_eq!(model.name, "vgg19");
        assert_eq!(model.weights_sha256, "");
        assert_eq!(model.layers[0].aliases, vec!["features.18"]);
    }

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

    #[test]
    fn csv_quotes_cells_with_commas_and_quotes() {
        assert_eq!(
            csv_line(["a", "{\"x\":1,\"y\":2}"].into_iter()),
            "a,\"{\"\"x\"\":1,\"\"y\"\":2}\""
        );
    }
}
