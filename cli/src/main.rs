//! `vephys`: submit campaigns to a coordinator, follow them, and read their results.
//!
//! This file holds the command line (`Cli`, `Command`), the connection to the coordinator and
//! the dispatch of each command: `submit` (submit, watch), `results`, `models`, `gc` and
//! `local` have modules of their own; status, cancel and report are short and run here.

mod artifacts;
mod campaigns;
mod embedded;
mod gc;
mod local;
mod models;
mod paging;
mod report;
mod results;
mod results_table;
mod submit;
mod text_table;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;
use vephys_proto::bearer::BearerToken;
use vephys_proto::endpoint::endpoint;
use vephys_proto::v1::campaigns_client::CampaignsClient;
use vephys_proto::v1::{CancelCampaignRequest, GetCampaignRequest, QueryResultsRequest};

use crate::models::ModelsAction;

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
    Submit(submit::SubmitArgs),
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
    Results(results::ResultsArgs),
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
    #[command(
        long_about = "Browse a data directory's results in a web browser: starts the \
embedded coordinator on --data-dir (default vephys-data) and serves its results browser on \
--http until Ctrl-C. Prints the address, with a one-time token that logs the browser in \
(campaigns with live progress, each layer's grid of max images sortable and filterable by any \
unit_summary column, one page per unit with every tuning curve, units side by side, CSV, \
Parquet and JSON downloads). A running coordinator serves the same pages on its own --http \
address; `vephys local` prints its browser's address while it runs."
    )]
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
            print!("{}", submit::build_spec(args)?.to_toml());
            return Ok(());
        }
    }
    if let Command::Local(args) = cli.command {
        return local::run(*args).await;
    }
    if let Command::Ui(args) = &cli.command {
        let dir = cli
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("vephys-data"));
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
        Command::Submit(args) => submit::submit(client, args).await,
        Command::Status { id: Some(id) } => {
            let campaign = client
                .get_campaign(GetCampaignRequest { campaign_id: *id })
                .await?
                .into_inner();
            campaigns::print_campaign(&campaign);
            Ok(())
        }
        Command::Status { id: None } => {
            campaigns::print_campaign_list(&paging::campaigns(client).await?);
            Ok(())
        }
        Command::Watch { id } => submit::watch(client, *id).await,
        Command::Cancel { id } => {
            let campaign = client
                .cancel_campaign(CancelCampaignRequest { campaign_id: *id })
                .await?
                .into_inner();
            println!("campaign {} cancelled", campaign.id);
            campaigns::print_campaign(&campaign);
            Ok(())
        }
        Command::Results(args) => results::results(client, args).await,
        Command::Models { action: None } => models::list(client).await,
        Command::Models {
            action: Some(ModelsAction::Add(args)),
        } => models::add(client, args).await,
        Command::Report(args) => {
            let campaign = client
                .get_campaign(GetCampaignRequest {
                    campaign_id: args.id,
                })
                .await?
                .into_inner();
            let results = results::query(
                client,
                QueryResultsRequest {
                    campaign_id: args.id,
                    ..Default::default()
                },
            )
            .await?;
            let store = match (&args.store, &cli.data_dir) {
                (Some(url), _) => url.clone(),
                (None, Some(dir)) => embedded::DataDir::new(dir)?.objects_url(),
                (None, None) => String::new(),
            };
            let images =
                artifacts::fetch_images(&results, &store, args.s3_endpoint.clone()).await?;
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
