//! `vephys local`: a whole campaign on this machine. The embedded coordinator (SQLite in the
//! data directory) and one `vephys-worker serve` child process (objects in the data directory)
//! run it; the command follows it with a progress bar, prints a per-filter summary and writes
//! the HTML report. Running the same command again resumes an interrupted campaign: the spec is
//! the same, so the coordinator hands back the existing campaign and only unfinished jobs run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind};
use tokio_stream::StreamExt;
use vephys_proto::manifest::Manifest;
use vephys_proto::spec::{CampaignSpec, Filters, Probe, SynthesisParams};
use vephys_proto::v1::{
    Campaign, GetCampaignRequest, ListModelsRequest, QueryResultsRequest, SubmitCampaignRequest,
};

use crate::artifacts::fetch_images;
use crate::campaigns::total;
use crate::embedded::{DataDir, Embedded};
use crate::{report, results, Client};

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Model: a built-in one (its weights must be in the worker's weights directory;
    /// scripts/setup.sh puts EfficientNet-Lite0's there) or an exported one whose directory is
    /// <weights directory>/<model>
    #[arg(long, env = "VEPHYS_MODEL", default_value = "efficientnet_lite0")]
    model: String,

    /// An exported model's directory (model.json and its archive, from vephys-export) to
    /// characterize; wins over --model
    #[arg(long, env = "VEPHYS_MODEL_DIR")]
    model_dir: Option<PathBuf>,

    /// Layer name or alias (`vephys-worker layers --model M` lists them) [default: blocks.7 of
    /// EfficientNet-Lite0, block3_pool of the VGGs, an exported model's first layer]
    #[arg(long, env = "VEPHYS_LAYER")]
    layer: Option<String>,

    /// Filters: all, or indices and ranges, inclusive (0-15) or half-open (0..16), e.g.
    /// 0-15,40
    #[arg(long, env = "VEPHYS_FILTERS", default_value = "0-15")]
    filters: String,

    /// Probes, comma-separated (synthesis always runs: the others start from its max images)
    #[arg(
        long,
        env = "VEPHYS_PROBES",
        value_delimiter = ',',
        default_value = "synthesis,baseline,zoom,rotation,color,grating,hue"
    )]
    probes: Vec<Probe>,

    /// Synthesis steps (also the steps of the colour probe's single-colour syntheses)
    #[arg(long, env = "VEPHYS_STEPS", default_value_t = 128)]
    steps: u32,

    /// Image side in pixels (default: the model's input size, 224)
    #[arg(long, env = "VEPHYS_SIZE")]
    size: Option<u32>,

    #[arg(long, env = "VEPHYS_SEED", default_value_t = 0)]
    seed: u64,

    /// Holds the SQLite database, the images, the worker's log and the report
    #[arg(long, env = "VEPHYS_DATA_DIR", default_value = "vephys-data")]
    data_dir: PathBuf,

    /// Compute device of the worker: auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, env = "VEPHYS_DEVICE", default_value = "auto")]
    device: String,

    /// Jobs the worker runs as one batch
    #[arg(long, env = "VEPHYS_MAX_JOBS", default_value_t = 16)]
    max_jobs: u32,

    /// The worker binary (default: vephys-worker next to this program, else on PATH)
    #[arg(long, env = "VEPHYS_WORKER_BIN")]
    worker_bin: Option<PathBuf>,
}

pub async fn run(mut args: LocalArgs) -> Result<()> {
    let started = Instant::now();
    // Everything that can be checked without a worker is checked before anything is created.
    let exported = exported_manifest(&args)?;
    if let Some(manifest) = &exported {
        args.model = manifest.model.clone();
    }
    let spec = spec(&args, exported.as_ref())?;
    let worker_bin = worker_binary(args.worker_bin.as_deref())?;
    let data = DataDir::new(&args.data_dir)?;

    // Ctrl-C is ours from here on: the worker runs in its own process group, so the terminal's
    // SIGINT reaches only this process, which asks the worker to finish its batch first.
    let mut interrupt = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let coordinator = Embedded::start(&data, Duration::from_secs(30)).await?;
    let mut worker = spawn_worker(&worker_bin, &coordinator, &data, &args)?;
    let outcome = tokio::select! {
        r = drive(&args, &spec, &coordinator, &data, &mut worker, started) => r,
        _ = interrupt.recv() => {
            eprintln!(
                "interrupted: the worker finishes and reports its batch in flight \
                 (Ctrl-C again: release the batch and stop now)"
            );
            finish_batch(&mut worker, &mut interrupt).await;
            Err(anyhow::anyhow!(
                "interrupted; running the same command again resumes the campaign"
            ))
        }
    };
    stop_worker(&mut worker).await;
    coordinator.shutdown().await;
    outcome
}

/// The manifest of the exported model to run: --model-dir's, or that of --model's directory in
/// the worker's weights directory.
fn exported_manifest(args: &LocalArgs) -> Result<Option<Manifest>> {
    let dir = match &args.model_dir {
        Some(dir) => dir.clone(),
        None => {
            let weights = std::env::var_os("VEPHYS_WEIGHTS_DIR")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vephys/weights"))
                });
            match weights.map(|w| w.join(&args.model)) {
                Some(dir) if dir.join("model.json").is_file() => dir,
                _ => return Ok(None),
            }
        }
    };
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}; give the directory vephys-export wrote",
            path.display()
        )
    })?;
    let manifest = Manifest::parse(&text).with_context(|| format!("{}", path.display()))?;
    Ok(Some(manifest))
}

/// The layer to characterize when --layer is not given.
fn default_layer(model: &str, exported: Option<&Manifest>) -> String {
    match (exported, model) {
        (Some(m), _) => m.layers[0].name.clone(),
        (None, "vgg16" | "vgg19") => "block3_pool".to_string(),
        _ => "blocks.7".to_string(),
    }
}

fn spec(args: &LocalArgs, exported: Option<&Manifest>) -> Result<CampaignSpec> {
    let layer = args
        .layer
        .clone()
        .unwrap_or_else(|| default_layer(&args.model, exported));
    let mut probes = args.probes.clone();
    if !probes.contains(&Probe::Synthesis) {
        probes.insert(0, Probe::Synthesis);
    }
    probes.dedup();
    let spec = CampaignSpec {
        name: format!("local {} {layer} {}", args.model, args.filters),
        model: args.model.clone(),
        layers: vec![layer.clone()],
        filters: Filters::parse(&args.filters)
            .map_err(|e| anyhow::anyhow!("bad value for --filters: {e}"))?,
        probes,
        seed: args.seed,
        synthesis: SynthesisParams {
            steps: args.steps,
            image_size: args.size.unwrap_or(0),
            batch_size: args.max_jobs.max(1),
            ..SynthesisParams::default()
        },
        ..CampaignSpec::new(&args.model, &args.model, &[&layer])
    };
    spec.check()
        .map_err(|e| anyhow::anyhow!("bad campaign: {e}"))?;
    Ok(spec)
}

fn worker_binary(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--worker-bin {} does not exist; build it with `cargo build --release -p vephys-worker`", path.display());
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vephys-worker")));
    if let Some(path) = sibling.filter(|p| p.is_file()) {
        return Ok(path);
    }
    Ok(PathBuf::from("vephys-worker"))
}

fn spawn_worker(
    bin: &Path,
    coordinator: &Embedded,
    data: &DataDir,
    args: &LocalArgs,
) -> Result<Child> {
    // the worker writes this file once the coordinator has registered it; one left by an
    // earlier run must not count
    let ready = ready_file(data);
    match std::fs::remove_file(&ready) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", ready.display())),
    }
    let log_path = data.root.join("worker.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut command = Command::new(bin);
    command.arg("serve");
    if let Some(dir) = &args.model_dir {
        command.arg("--model-dir").arg(dir);
    }
    command
        .args(["--coordinator", &coordinator.url])
        .args(["--store", &data.objects_url()])
        .args(["--device", &args.device])
        .args(["--max-jobs", &args.max_jobs.to_string()])
        .arg("--spool-dir")
        .arg(data.root.join("spool"))
        .arg("--ready-file")
        .arg(&ready)
        .args(["--name", "local"])
        // The token travels in the environment, not on the command line other users can read.
        .env("VEPHYS_WORKER_TOKEN", &coordinator.worker_token)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0) // see `run`: Ctrl-C goes to vephys, which signals the worker
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the worker {}; build it with `cargo build --release -p vephys-worker` or pass --worker-bin", bin.display()))
}

/// Registration, submission, progress, summary and report.
async fn drive(
    args: &LocalArgs,
    spec: &CampaignSpec,
    coordinator: &Embedded,
    data: &DataDir,
    worker: &mut Child,
    started: Instant,
) -> Result<()> {
    let mut client =
        crate::connect_to(&coordinator.url, Some(&coordinator.user_token), None).await?;
    wait_for_model(&mut client, worker, data, &args.model).await?;
    let submitted = client
        .submit_campaign(SubmitCampaignRequest {
            spec_toml: spec.to_toml(),
        })
        .await?
        .into_inner();
    let campaign = submitted
        .campaign
        .context("the coordinator returned no campaign")?;
    let resumed = submitted.existing;
    eprintln!(
        "campaign {} ({}): {} jobs{} — data in {}",
        campaign.id,
        campaign.name,
        total(&campaign.totals.unwrap_or_default()),
        if resumed { ", resumed" } else { "" },
        data.root.display()
    );
    eprintln!(
        "results browser (live while this runs): {}",
        coordinator.ui_login_url(&format!("c/{}", campaign.id))
    );
    let finished = tokio::select! {
        c = follow(&mut client, campaign.id) => c?,
        status = worker.wait() => bail!(
            "the worker exited ({}) before the campaign finished; see {}{}",
            status.map(|s| s.to_string()).unwrap_or_default(),
            data.root.join("worker.log").display(),
            log_tail(&data.root.join("worker.log"))
        ),
    };
    let wall = started.elapsed();

    let results = results::query(
        &mut client,
        QueryResultsRequest {
            campaign_id: finished.id,
            ..Default::default()
        },
    )
    .await?;
    let units = report::units(&results);
    println!();
    report::print_table(&units);
    let images = fetch_images(&results, &data.objects_url(), None).await?;
    let index = report::write_report(&data.report(), &finished, &results, &|a| {
        images
            .get(&a.uri)
            .cloned()
            .with_context(|| format!("{} was not fetched", a.uri))
    })?;
    let compute: i64 = results
        .iter()
        .filter_map(|r| {
            r.result
                .as_ref()?
                .provenance
                .as_ref()
                .map(|p| p.duration_ms)
        })
        .sum();
    println!();
    println!(
        "campaign {} {}: {} jobs",
        finished.id,
        finished.state,
        total(&finished.totals.unwrap_or_default())
    );
    if resumed {
        println!(
            "wall time {:.1} s (resumed run; overhead not measured)",
            wall.as_secs_f64()
        );
    } else {
        let compute_s = compute as f64 / 1000.0;
        println!(
            "wall time {:.1} s, worker compute {:.1} s, overhead {:.1}% (start-up, scheduling, storage)",
            wall.as_secs_f64(),
            compute_s,
            100.0 * (wall.as_secs_f64() - compute_s) / compute_s.max(1e-9)
        );
    }
    println!("report: {}", index.display());
    println!(
        "query: vephys --data-dir {} results {}",
        args.data_dir.display(),
        finished.id
    );
    println!("browse: vephys --data-dir {} ui", args.data_dir.display());
    if finished.state != "succeeded" {
        bail!(
            "campaign {} ended {}; `vephys --data-dir {} status {}` shows the failed jobs' errors",
            finished.id,
            finished.state,
            args.data_dir.display(),
            finished.id
        );
    }
    Ok(())
}

/// Where the worker says it is registered (`vephys-worker serve --ready-file`).
fn ready_file(data: &DataDir) -> PathBuf {
    data.root.join("worker.ready")
}

/// Waits until `model` is registered, or this run's worker has registered without it (it
/// must load its models first). The worker's ready file says it has registered.
async fn wait_for_model(
    client: &mut Client,
    worker: &mut Child,
    data: &DataDir,
    model: &str,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let log = data.root.join("worker.log");
    let ready = ready_file(data);
    loop {
        // the ready file first: once it exists, the list read after it has this worker's models
        let registered = tokio::fs::try_exists(&ready).await.unwrap_or(false);
        let models = client
            .list_models(ListModelsRequest {})
            .await?
            .into_inner()
            .models;
        if models.iter().any(|m| m.name == model) {
            return Ok(());
        }
        if registered {
            let known: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            bail!(
                "model `{model}` is unknown here: the worker has no weights for it (known: {}); \
                 put {model}.safetensors in its weights directory (VEPHYS_WEIGHTS_DIR) or use --model",
                known.join(", ")
            );
        }
        if let Some(status) = worker.try_wait()? {
            bail!(
                "the worker exited ({status}) during start-up{}",
                log_tail(&log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the worker registered no model within 5 minutes; does its weights directory hold \
                 {model}.safetensors (scripts/setup.sh)? see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Shows progress until every job is finished; returns the final campaign.
async fn follow(client: &mut Client, id: i64) -> Result<Campaign> {
    let bar = ProgressBar::new(1000).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {percent:>3}% {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let mut stream = client
        .watch_campaign(GetCampaignRequest { campaign_id: id })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(campaign) = stream.next().await {
        let campaign = campaign?;
        let t = campaign.totals.unwrap_or_default();
        let n = total(&t).max(1) as f64;
        let done = (t.succeeded + t.failed + t.cancelled) as f64 + campaign.leased_progress;
        bar.set_position((1000.0 * done / n) as u64);
        bar.set_message(groups_line(&campaign));
        last = Some(campaign);
    }
    bar.finish_and_clear();
    match last {
        Some(c) => Ok(client
            .get_campaign(GetCampaignRequest { campaign_id: c.id })
            .await?
            .into_inner()),
        None => bail!("the coordinator ended the progress stream without news"),
    }
}

/// `synthesis 16/16 · zoom 3/16 …`: finished jobs per probe.
fn groups_line(c: &Campaign) -> String {
    c.groups
        .iter()
        .map(|g| {
            let k = g.counts.unwrap_or_default();
            let all = k.waiting + k.queued + k.leased + k.succeeded + k.failed + k.cancelled;
            let failed = if k.failed > 0 {
                format!(" ({} failed)", k.failed)
            } else {
                String::new()
            };
            format!(
                "{} {}/{}{failed}",
                g.probe,
                k.succeeded + k.failed + k.cancelled,
                all
            )
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// After a Ctrl-C: asks the worker to finish and report its batch in flight (SIGTERM) and waits
/// for it however long the batch takes; a second Ctrl-C makes it release the batch instead.
async fn finish_batch(worker: &mut Child, interrupt: &mut Signal) {
    terminate(worker);
    tokio::select! {
        _ = worker.wait() => {}
        _ = interrupt.recv() => {
            eprintln!("releasing the batch in flight");
            terminate(worker); // the second signal: release the leases and exit
            if tokio::time::timeout(Duration::from_secs(30), worker.wait()).await.is_err() {
                let _ = worker.kill().await;
            }
        }
    }
}

/// SIGTERM to the worker, if it still runs.
fn terminate(worker: &Child) {
    if let Some(pid) = worker.id() {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
}

/// Asks the worker to finish and waits for it (it has no batch in flight by now).
async fn stop_worker(worker: &mut Child) {
    terminate(worker); // the worker reports what it has and exits
    if tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .is_err()
    {
        let _ = worker.kill().await;
    }
}

/// The last lines of a log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n  ");
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its log ends:\n  {tail}")
    }
}
