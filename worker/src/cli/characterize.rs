//! `vephys-worker characterize`: the whole experiment for filters of a layer. Per batch of
//! filters: the full-colour max images and (for the color probe) the R-, G- and B-only ones,
//! then every requested probe; grating and hue stimuli are shared, so they run once for all
//! filters up front. Writes per filter, into `--out`:
//!
//! - `filter_NNNN.png`: the max image (absent for a dead unit), and `r|g|b/filter_NNNN.png`
//!   the single-colour ones with a small JSON each (so `probe --images OUT` works too);
//! - `filter_NNNN.json`: synthesis outcomes, every curve and derived number, parameters,
//!   provenance and timings;
//! - `filter_NNNN_tuning.png`: the max image beside its tuning curves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use vephys_worker::figure::tuning_figure;
use vephys_worker::filters::parse_filters;
use vephys_worker::image_io::{png_bytes, write_atomic};
use vephys_worker::models::Network;
use vephys_worker::probes::{
    self, color, Input, MaxImage, Probe, ProbeParams, ProbeResult, PROBES,
};
use vephys_worker::provenance::Provenance;
use vephys_worker::synthesis::{synthesize, ColorMode, Status, SynthOutcome, SynthParams};

use super::probe::{check_out_dir, params_hash, parse_probe, ProbeFlags};
use super::synth::SynthFlags;
use super::{ModelArgs, PrecisionArgs};

#[derive(Args)]
pub struct CharacterizeArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// Layer whose filters to characterize (name or alias; see `vephys-worker layers`)
    #[arg(long, env = "VEPHYS_LAYER")]
    layer: String,

    /// Filters: `all`, a list and/or ranges (`0-15,40`)
    #[arg(long, env = "VEPHYS_FILTERS")]
    filters: String,

    /// Output directory (created if missing; files for the same filters are replaced)
    #[arg(long, env = "VEPHYS_OUT")]
    out: PathBuf,

    /// Probes to run, comma-separated: baseline, zoom, rotation, color, grating, hue
    #[arg(long, env = "VEPHYS_PROBES", value_parser = parse_probe, value_delimiter = ',', default_values_t = PROBES)]
    probes: Vec<Probe>,

    #[command(flatten)]
    synth: SynthFlags,

    #[command(flatten)]
    params: ProbeFlags,

    #[command(flatten)]
    precision: PrecisionArgs,

    /// Print a JSON summary on stdout instead of a table
    #[arg(long)]
    json: bool,
}

/// Everything one call needs, checked.
struct Plan {
    net: Network,
    layer: usize,
    layer_name: String,
    filters: Vec<i64>,
    probes: Vec<Probe>,
    synth: SynthParams,
    params: ProbeParams,
    provenance: Provenance,
}

impl Plan {
    fn wants(&self, kind: Probe) -> bool {
        self.probes.contains(&kind)
    }
}

pub fn run(args: CharacterizeArgs) -> Result<()> {
    let plan = plan(&args)?;
    let colours = if plan.wants(Probe::Color) { 4 } else { 1 };
    let bar = ProgressBar::new(plan.filters.len() as u64 * plan.synth.steps as u64 * colours)
        .with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} image-steps eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
    bar.set_message(format!("{} {}", plan.net.name(), plan.layer_name));

    let started = Instant::now();
    let mut shared = shared_probes(&plan)?;
    let shared_seconds = started.elapsed().as_secs_f64() / plan.filters.len() as f64;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("create output directory {}", args.out.display()))?;
    if plan.wants(Probe::Color) {
        for c in color::CHANNELS {
            std::fs::create_dir_all(args.out.join(c))
                .with_context(|| format!("create {}", args.out.join(c).display()))?;
        }
    }
    let mut summary = Vec::new();
    for chunk in plan.filters.chunks(args.synth.batch) {
        let tick = &mut |n| bar.inc(n);
        let rgb = synthesize(&plan.net, plan.layer, chunk, &plan.synth, tick)?;
        let single = if plan.wants(Probe::Color) {
            let mut runs = Vec::with_capacity(3);
            for mode in [ColorMode::R, ColorMode::G, ColorMode::B] {
                let p = SynthParams {
                    color: mode,
                    ..plan.synth.clone()
                };
                runs.push(synthesize(&plan.net, plan.layer, chunk, &p, tick)?);
            }
            Some(runs)
        } else {
            None
        };
        let probe_start = Instant::now();
        let mut results = image_probes(&plan, &rgb, single.as_deref())?;
        let probe_seconds = probe_start.elapsed().as_secs_f64() / chunk.len() as f64;
        for (i, outcome) in rgb.iter().enumerate() {
            let f = outcome.filter;
            let mut probes = results.remove(&f).unwrap_or_default();
            probes.extend(shared.remove(&f).unwrap_or_default());
            let singles: Option<Vec<&SynthOutcome>> = single
                .as_ref()
                .map(|runs| runs.iter().map(|r| &r[i]).collect());
            let single_seconds: f64 = singles.iter().flatten().map(|o| o.seconds).sum();
            let timings = json!({
                "synthesis_seconds": outcome.seconds + single_seconds,
                "probe_seconds": probe_seconds + shared_seconds,
            });
            let doc = write_filter(
                &args.out,
                &plan,
                outcome,
                singles.as_deref(),
                &probes,
                timings,
            )?;
            summary.push(doc);
        }
    }
    bar.finish_and_clear();
    print_summary(&args, &plan, &summary)
}

/// Checks every input before anything is computed or written.
fn plan(args: &CharacterizeArgs) -> Result<Plan> {
    check_out_dir(&args.out)?;
    let net = args.model.load()?;
    let precision = args.precision.resolve(&net)?;
    let synth = SynthParams {
        precision,
        ..args.synth.params(ColorMode::Rgb, net.input_size())
    };
    synth.validate()?;
    if args.synth.batch == 0 {
        anyhow::bail!("bad value for --batch: 0; use at least 1");
    }
    let mut probes = Vec::new();
    for p in &args.probes {
        if !probes.contains(p) {
            probes.push(*p);
        }
    }
    if probes.is_empty() {
        anyhow::bail!("bad value for --probes: the list is empty; name at least one probe");
    }
    let params = ProbeParams {
        precision,
        ..args.params.params()?
    };
    if probes.contains(&Probe::Grating) {
        params.grating.frequencies(synth.size as u32)?;
    }
    let layer = net.layer_index(&args.layer)?;
    let shape = net.check_size(layer, synth.size)?;
    let filters = parse_filters(&args.filters, shape.channels, &shape.name)?;
    let provenance = Provenance::of(&net, precision);
    Ok(Plan {
        net,
        layer,
        layer_name: shape.name,
        filters,
        probes,
        synth,
        params,
        provenance,
    })
}

type ByFilter = BTreeMap<i64, Vec<ProbeResult>>;

/// Grating and hue results of every filter (the stimuli are the same for all).
fn shared_probes(plan: &Plan) -> Result<ByFilter> {
    let (net, layer, size, p) = (&plan.net, plan.layer, plan.synth.size, &plan.params);
    let mut out = ByFilter::new();
    for probe in [Probe::Grating, Probe::Hue] {
        if !plan.wants(probe) {
            continue;
        }
        let results = probes::run(net, layer, probe, &plan.filters, Input::Size(size), p)?;
        for (f, r) in plan.filters.iter().zip(results) {
            out.entry(*f).or_default().push(r);
        }
    }
    Ok(out)
}

/// The probes that start from max images, for the live filters of one batch.
fn image_probes(
    plan: &Plan,
    rgb: &[SynthOutcome],
    single: Option<&[Vec<SynthOutcome>]>,
) -> Result<ByFilter> {
    let (net, layer, p) = (&plan.net, plan.layer, &plan.params);
    let live: Vec<usize> = (0..rgb.len())
        .filter(|i| rgb[*i].status == Status::Ok)
        .collect();
    let filters: Vec<i64> = live.iter().map(|i| rgb[*i].filter).collect();
    let images: Vec<MaxImage> = live
        .iter()
        .map(|i| MaxImage::synthesized(&rgb[*i]))
        .collect();
    let mut out = ByFilter::new();
    if filters.is_empty() {
        return Ok(out);
    }
    let mut add = |results: Vec<ProbeResult>| {
        for (f, r) in filters.iter().zip(results) {
            out.entry(*f).or_default().push(r);
        }
    };
    for probe in [Probe::Baseline, Probe::Zoom, Probe::Rotation] {
        if plan.wants(probe) {
            add(probes::run(
                net,
                layer,
                probe,
                &filters,
                Input::MaxImages(&images),
                p,
            )?);
        }
    }
    if let Some(runs) = single {
        let mut triples = Vec::with_capacity(live.len());
        for &i in &live {
            let mut triple = Vec::with_capacity(3);
            for (c, run) in runs.iter().enumerate() {
                triple.push(match run[i].status {
                    Status::Ok => MaxImage::synthesized(&run[i]),
                    Status::Dead => MaxImage::new(color::dead_channel_image(
                        c,
                        plan.synth.size,
                        tch::Device::Cpu,
                    )?),
                });
            }
            let [r, g, b]: [MaxImage; 3] = triple.try_into().expect("three channels");
            triples.push([r, g, b]);
        }
        let input = Input::SingleColour(&triples);
        add(probes::run(net, layer, Probe::Color, &filters, input, p)?);
    }
    Ok(out)
}

/// Writes one filter's images, JSON and figure; returns its summary line as JSON.
fn write_filter(
    out: &Path,
    plan: &Plan,
    rgb: &SynthOutcome,
    single: Option<&[&SynthOutcome]>,
    probes: &[ProbeResult],
    timings: Value,
) -> Result<Value> {
    let f = rgb.filter;
    let stem = format!("filter_{f:04}");
    let image = write_image(out, &stem, rgb)?;
    let mut synthesis = json!({ "rgb": outcome_json(rgb, image.clone()) });
    if let Some(single) = single {
        for (c, outcome) in color::CHANNELS.iter().zip(single) {
            let dir = out.join(c);
            let png = write_image(&dir, &stem, outcome)?;
            let params = SynthParams {
                color: channel_mode(c),
                ..plan.synth.clone()
            };
            let side = json!({
                "model": plan.net.name(), "layer": plan.layer_name, "filter": f, "color": c,
                "status": outcome.status, "image": png,
                "max_activity": outcome.max_activity, "mean_activity": outcome.mean_activity,
                "params": params, "params_hash": params.hash(),
            });
            write_atomic(
                &dir.join(format!("{stem}.json")),
                serde_json::to_string_pretty(&side)?.as_bytes(),
            )?;
            synthesis[*c] = outcome_json(outcome, png.map(|p| format!("{c}/{p}")));
        }
    }
    let mut by_probe = serde_json::Map::new();
    for result in probes {
        let mut v = serde_json::to_value(result)?;
        v.as_object_mut().map(|o| o.remove("probe"));
        v["derived"] = serde_json::to_value(result.derived())?;
        by_probe.insert(result.probe().to_string(), v);
    }
    let figure_name = if rgb.status == Status::Ok {
        let title = format!("{} {} #{f}", plan.net.name(), plan.layer_name);
        let figure = tuning_figure(&title, &png_bytes(&rgb.image)?, probes)?;
        write_atomic(
            &out.join(format!("{stem}_tuning.svg")),
            figure.svg.as_bytes(),
        )?;
        write_atomic(&out.join(format!("{stem}_tuning.png")), &figure.png)?;
        Some(format!("{stem}_tuning.png"))
    } else {
        None
    };
    let params = json!({ "synthesis": plan.synth, "probes": plan.params });
    let doc = json!({
        "model": plan.net.name(),
        "layer": plan.layer_name,
        "filter": f,
        "status": rgb.status,
        "image": image,
        "figure": figure_name,
        "synthesis": synthesis,
        "probes": by_probe,
        "params": params,
        "params_hash": params_hash(&params),
        "seed": plan.synth.seed,
        "weights_sha256": plan.provenance.weights_sha256,
        "device": plan.provenance.device,
        "precision": plan.provenance.precision,
        "mixed_precision": plan.provenance.mixed_precision,
        "memory_format": plan.provenance.memory_format,
        "versions": plan.provenance.versions,
        "host": plan.provenance.host,
        "timings": timings,
    });
    write_atomic(
        &out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    Ok(json!({
        "filter": f,
        "status": rgb.status,
        "max_activity": rgb.max_activity,
        "mean_activity": rgb.mean_activity,
        "json": format!("{stem}.json"),
        "figure": doc["figure"],
    }))
}

fn channel_mode(c: &str) -> ColorMode {
    match c {
        "r" => ColorMode::R,
        "g" => ColorMode::G,
        _ => ColorMode::B,
    }
}

/// Writes `dir/stem.png` for a live unit (removing a stale one for a dead unit); its file name.
fn write_image(dir: &Path, stem: &str, outcome: &SynthOutcome) -> Result<Option<String>> {
    let name = format!("{stem}.png");
    if outcome.status == Status::Dead {
        match std::fs::remove_file(dir.join(&name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => return Ok(None),
        }
    }
    write_atomic(&dir.join(&name), &png_bytes(&outcome.image)?)?;
    Ok(Some(name))
}

fn outcome_json(o: &SynthOutcome, image: Option<String>) -> Value {
    json!({
        "status": o.status,
        "image": image,
        "max_activity": o.max_activity,
        "mean_activity": o.mean_activity,
        "objective_trajectory": o.trajectory,
    })
}

fn print_summary(args: &CharacterizeArgs, plan: &Plan, summary: &[Value]) -> Result<()> {
    if args.json {
        let doc = json!({
            "model": plan.net.name(),
            "layer": plan.layer_name,
            "out": args.out,
            "probes": plan.probes,
            "filters": summary,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{:>6} {:>6} {:>12} {:>12}  figure",
        "filter", "status", "max", "mean"
    );
    for s in summary {
        println!(
            "{:>6} {:>6} {:>12.4} {:>12.4}  {}",
            s["filter"],
            s["status"].as_str().unwrap_or(""),
            s["max_activity"].as_f64().unwrap_or(f64::NAN),
            s["mean_activity"].as_f64().unwrap_or(f64::NAN),
            s["figure"].as_str().unwrap_or("-"),
        );
    }
    eprintln!("wrote {} filters to {}", summary.len(), args.out.display());
    Ok(())
}
