//! `vephys-worker probe`: one probe for filters of a layer, from the max images of an earlier
//! `synth` (or `characterize`) run. Everything is read and checked, and every result computed,
//! before anything is written; then `--out` gets `filter_NNNN_<probe>.json` per filter.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tch::Tensor;
use vephys_worker::filters::parse_filters;
use vephys_worker::image_io::{self, write_atomic};
use vephys_worker::models::Network;
use vephys_worker::probes::{
    baseline, color, grating, hue, parse_values, rotation, zoom, MaxImage, ProbeInput, ProbeKind,
    ProbeParams, ProbeResult, ZoomFill,
};
use vephys_worker::provenance::Provenance;
use vephys_worker::WorkerError;

use super::ModelArgs;

#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// Probe to run: baseline, zoom, rotation, color (the paper's), grating, hue
    #[arg(long, env = "VEPHYS_PROBE", value_enum)]
    probe: ProbeKind,

    /// Layer to record from (name or alias; see `vephys-worker layers`)
    #[arg(long, env = "VEPHYS_LAYER")]
    layer: String,

    /// Filters: `all`, a list and/or ranges (`0-15,40`)
    #[arg(long, env = "VEPHYS_FILTERS")]
    filters: String,

    /// Max images of an earlier `synth --out DIR`: DIR/filter_NNNN.png; the color probe reads
    /// the single-colour ones from DIR/r, DIR/g and DIR/b (`synth --color r --out DIR/r`, ...;
    /// `characterize` writes both). Not used by grating and hue
    #[arg(long, env = "VEPHYS_IMAGES")]
    images: Option<PathBuf>,

    /// Output directory (created if missing; files for the same filters and probe are replaced)
    #[arg(long, env = "VEPHYS_OUT")]
    out: PathBuf,

    /// Image side in pixels: the size of grating and hue stimuli (default 224); for the other
    /// probes, the size every max image must have (default: whatever they share)
    #[arg(long, env = "VEPHYS_SIZE", allow_negative_numbers = true)]
    size: Option<i64>,

    #[command(flatten)]
    params: ProbeFlags,

    /// Print the results as JSON on stdout instead of a table
    #[arg(long)]
    json: bool,
}

/// The probes' parameters as flags; value lists are `a,b,c` or `start:stop:step`.
#[derive(Args, Debug, Clone)]
pub struct ProbeFlags {
    /// Zoom factors (> 0; 1 = the max image); z < 1 shrinks, z > 1 crops the centre
    #[arg(
        long,
        env = "VEPHYS_ZOOM_FACTORS",
        allow_hyphen_values = true,
        default_value = "0.25,0.5,0.75,1,1.5,2,3,4"
    )]
    zoom_factors: String,

    /// What surrounds an image shrunk by zoom < 1: copies of it (tile) or the mean colour (pad)
    #[arg(long, env = "VEPHYS_ZOOM_FILL", value_enum, default_value_t = ZoomFill::Tile)]
    zoom_fill: ZoomFill,

    /// Rotation angles in degrees, counterclockwise, within one turn
    #[arg(
        long,
        env = "VEPHYS_ANGLES",
        allow_hyphen_values = true,
        default_value = "0:345:15"
    )]
    angles: String,

    /// Radius of the rotation probe's circular aperture as a fraction of half the image side;
    /// it hides the border band where max images are weaker (lower it for units whose receptive
    /// field is over a fifth of the image)
    #[arg(long, env = "VEPHYS_APERTURE", allow_negative_numbers = true, default_value_t = ProbeParams::default().aperture)]
    aperture: f64,

    /// Grating orientations in degrees (direction of the wave vector), within half a turn
    #[arg(
        long,
        env = "VEPHYS_ORIENTATIONS",
        allow_hyphen_values = true,
        default_value = "0:165:15"
    )]
    orientations: String,

    /// Grating spatial frequencies in cycles per image (below size / 2)
    #[arg(
        long,
        env = "VEPHYS_FREQUENCIES",
        allow_hyphen_values = true,
        default_value = "2,4,8,16,32,64"
    )]
    frequencies: String,

    /// Grating phases, equally spaced; responses are averaged over them
    #[arg(long, env = "VEPHYS_PHASES", default_value_t = ProbeParams::default().phases)]
    phases: usize,

    /// Number of equally spaced isoluminant hues
    #[arg(long, env = "VEPHYS_HUES", default_value_t = ProbeParams::default().hues)]
    hues: usize,

    /// Std of the baseline's gaussian noise image around the mean colour
    #[arg(long, env = "VEPHYS_NOISE_STD", allow_negative_numbers = true, default_value_t = ProbeParams::default().noise_std)]
    noise_std: f64,

    /// Seed of the baseline's noise image
    #[arg(long, env = "VEPHYS_NOISE_SEED", default_value_t = ProbeParams::default().seed)]
    noise_seed: u64,

    /// Stimuli per forward pass
    #[arg(long, env = "VEPHYS_PROBE_BATCH", default_value_t = ProbeParams::default().batch)]
    probe_batch: usize,
}

impl ProbeFlags {
    /// The parameters, checked as far as they go without knowing the image size.
    pub fn params(&self) -> Result<ProbeParams, WorkerError> {
        let params = ProbeParams {
            zoom_factors: parse_values("--zoom-factors", &self.zoom_factors)?,
            zoom_fill: self.zoom_fill,
            angles: parse_values("--angles", &self.angles)?,
            aperture: self.aperture,
            orientations: parse_values("--orientations", &self.orientations)?,
            frequencies: parse_values("--frequencies", &self.frequencies)?,
            phases: self.phases,
            hues: self.hues,
            noise_std: self.noise_std,
            seed: self.noise_seed,
            batch: self.probe_batch,
        };
        params.validate()?;
        Ok(params)
    }
}

/// What each filter brings to its probe.
enum Inputs {
    MaxImages(Vec<MaxImage>),
    SingleColour(Vec<[MaxImage; 3]>),
    Nothing,
}

pub fn run(args: ProbeArgs) -> Result<()> {
    // Read and check everything before computing anything, and compute before writing.
    let params = args.params.params()?;
    check_out_dir(&args.out)?;
    let net = args.model.load()?;
    let layer = net.layer_index(&args.layer)?;
    let channels = net
        .check_size(layer, args.size.unwrap_or(224).max(1))?
        .channels;
    let filters = parse_filters(&args.filters, channels, net.layer_name(layer))?;
    let (inputs, size) = read_inputs(&args, &filters)?;
    let shape = net.check_size(layer, size)?;
    if args.probe == ProbeKind::Grating {
        params.check_frequencies(size)?;
    }

    let bar = progress(
        filters.len(),
        &format!("{} {} {}", net.name(), shape.name, args.probe.name()),
    );
    let results = run_probe(
        &net, layer, args.probe, &filters, &inputs, size, &params, &bar,
    )?;
    bar.finish_and_clear();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("create output directory {}", args.out.display()))?;
    let provenance = Provenance::of(&net);
    let mut docs = Vec::with_capacity(results.len());
    for (&filter, result) in filters.iter().zip(&results) {
        let doc = json!({
            "model": net.name(),
            "layer": shape.name,
            "filter": filter,
            "size": size,
            "result": result,
            "params": params,
            "params_hash": params_hash(&params),
            "images": args.images,
            "weights_sha256": provenance.weights_sha256,
            "device": provenance.device,
            "versions": provenance.versions,
            "host": provenance.host,
        });
        let path = args
            .out
            .join(format!("filter_{filter:04}_{}.json", args.probe.name()));
        write_atomic(&path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
        docs.push(doc);
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&Value::Array(docs))?);
        return Ok(());
    }
    for (&filter, result) in filters.iter().zip(&results) {
        let cells: Vec<String> = highlights(result)
            .into_iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("filter {filter:>5}  {}", cells.join("  "));
    }
    eprintln!(
        "wrote {} {} results to {}",
        results.len(),
        args.probe.name(),
        args.out.display()
    );
    Ok(())
}

/// Runs `kind` for every filter, one filter at a time for probes with per-filter stimuli and
/// all at once for shared stimuli.
#[allow(clippy::too_many_arguments)]
fn run_probe(
    net: &Network,
    layer: usize,
    kind: ProbeKind,
    filters: &[i64],
    inputs: &Inputs,
    size: i64,
    params: &ProbeParams,
    bar: &ProgressBar,
) -> Result<Vec<ProbeResult>> {
    let mut results = Vec::with_capacity(filters.len());
    match inputs {
        Inputs::MaxImages(images) => {
            for (f, image) in filters.iter().zip(images) {
                let (f, image) = (std::slice::from_ref(f), std::slice::from_ref(image));
                let result = match kind {
                    ProbeKind::Baseline => ProbeResult::Baseline(
                        baseline::run(net, layer, f, image, params)?.remove(0),
                    ),
                    ProbeKind::Zoom => {
                        ProbeResult::Zoom(zoom::run(net, layer, f, image, params)?.remove(0))
                    }
                    ProbeKind::Rotation => ProbeResult::Rotation(
                        rotation::run(net, layer, f, image, params)?.remove(0),
                    ),
                    _ => unreachable!("{kind:?} does not start from a max image"),
                };
                results.push(result);
                bar.inc(1);
            }
        }
        Inputs::SingleColour(images) => {
            for (f, single) in filters.iter().zip(images) {
                let c = color::run(
                    net,
                    layer,
                    std::slice::from_ref(f),
                    std::slice::from_ref(single),
                    params,
                )?;
                results.extend(c.into_iter().map(ProbeResult::Color));
                bar.inc(1);
            }
        }
        Inputs::Nothing => {
            match kind {
                ProbeKind::Grating => results.extend(
                    grating::run(net, layer, filters, size, params)?
                        .into_iter()
                        .map(|g| ProbeResult::Grating(Box::new(g))),
                ),
                ProbeKind::Hue => results.extend(
                    hue::run(net, layer, filters, size, params)?
                        .into_iter()
                        .map(ProbeResult::Hue),
                ),
                _ => unreachable!("{kind:?} needs max images"),
            }
            bar.inc(filters.len() as u64);
        }
    }
    Ok(results)
}

/// The max images each filter needs, checked: present, readable, square, all one size (and
/// `--size` when given). Returns them with the stimulus size.
fn read_inputs(args: &ProbeArgs, filters: &[i64]) -> Result<(Inputs, i64)> {
    let input = args.probe.input();
    if input == ProbeInput::Nothing {
        let size = args.size.unwrap_or(224);
        if size < 8 {
            anyhow::bail!("bad value for --size: {size} px is too small; use at least 8");
        }
        return Ok((Inputs::Nothing, size));
    }
    let Some(dir) = &args.images else {
        anyhow::bail!(
            "the {} probe starts from max images: pass --images DIR (the --out of `vephys-worker synth` or `characterize`)",
            args.probe.name()
        );
    };
    let mut size = args.size;
    let mut read = |path: &Path, channel: Option<usize>| -> Result<Tensor> {
        let image = read_max_image(path, channel)?;
        let side = image.size()[2];
        match size {
            Some(s) if s != side => Err(WorkerError::Image {
                path: path.to_path_buf(),
                reason: format!("it is {side} x {side} px but the probe runs at {s} x {s}; use max images of one size (and --size to match)"),
            }
            .into()),
            _ => {
                size = Some(side);
                Ok(image)
            }
        }
    };
    let stem = |f: i64| format!("filter_{f:04}.png");
    let inputs = match input {
        ProbeInput::MaxImage => Inputs::MaxImages(
            filters
                .iter()
                .map(|f| read(&dir.join(stem(*f)), None).map(MaxImage::new))
                .collect::<Result<_>>()?,
        ),
        _ => {
            let mut all = Vec::with_capacity(filters.len());
            for f in filters {
                let [r, g, b] =
                    [0, 1, 2].map(|c| read(&dir.join(color::CHANNELS[c]).join(stem(*f)), Some(c)));
                all.push([r?, g?, b?].map(MaxImage::new));
            }
            Inputs::SingleColour(all)
        }
    };
    Ok((inputs, size.expect("at least one filter was read")))
}

/// A max image [3, S, S]. A single-colour run (`channel`) that found the unit dead has a JSON
/// beside the missing PNG; it stands for `color::dead_channel_image`.
fn read_max_image(path: &Path, channel: Option<usize>) -> Result<Tensor> {
    if !path.exists() {
        let json = path.with_extension("json");
        let dead = std::fs::read_to_string(&json)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .is_some_and(|doc| doc["status"] == "dead");
        return match (dead, channel) {
            (true, Some(c)) => {
                let side = dead_side(&json)?;
                Ok(color::dead_channel_image(c, side, tch::Device::Cpu)?)
            }
            (true, None) => anyhow::bail!(
                "{}: the unit is dead (its synthesis found no gradient, so it has no max image); leave its filter out of --filters",
                path.display()
            ),
            (false, _) => anyhow::bail!(
                "missing max image {}: run `vephys-worker synth` for this filter first (with --color r, g or b for the color probe, or use `characterize`)",
                path.display()
            ),
        };
    }
    let image = image_io::load(path, None)?;
    let (h, w) = (image.size()[1], image.size()[2]);
    if h != w {
        return Err(WorkerError::Image {
            path: path.to_path_buf(),
            reason: format!("it is {w} x {h} px; max images are square"),
        }
        .into());
    }
    Ok(image)
}

/// Image size of a dead run, from its JSON's synthesis parameters.
fn dead_side(json: &Path) -> Result<i64> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(json)?)?;
    doc["params"]["size"].as_i64().with_context(|| {
        format!(
            "{}: no params.size to size the dead channel's image",
            json.display()
        )
    })
}

pub fn check_out_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        anyhow::bail!(
            "--out {} exists and is not a directory; choose another path",
            out.display()
        );
    }
    Ok(())
}

pub fn progress(len: usize, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} filters eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

/// sha256 of the parameters' canonical JSON.
pub fn params_hash(params: &impl serde::Serialize) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(
        serde_json::to_vec(params).expect("params serialize"),
    ))
}

/// The numbers worth a glance, from the mean-activity curve.
fn highlights(result: &ProbeResult) -> Vec<(&'static str, String)> {
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    match result {
        ProbeResult::Baseline(b) => {
            let r = &b.responses.mean;
            vec![
                ("max_image", num(Some(r[0]))),
                ("grayscale", num(Some(r[2]))),
                ("white", num(Some(r[3]))),
                ("noise", num(Some(r[4]))),
                ("csi", num(b.colour_selectivity_index.mean)),
            ]
        }
        ProbeResult::Zoom(z) => curve_highlights(&z.curve, "octaves"),
        ProbeResult::Rotation(r) => {
            let mut h = curve_highlights(&r.curve, "deg");
            h.push(("circ_var_2theta", num(r.orientation_circular_variance.mean)));
            h.push(("symmetry_deg", num(r.symmetry_period_deg.mean)));
            h
        }
        ProbeResult::Color(c) => vec![
            ("preferred", c.preferred_channel.mean.to_string()),
            ("csi", num(c.colour_selectivity_index.mean)),
        ],
        ProbeResult::Grating(g) => vec![
            (
                "orientation_deg",
                num(Some(g.orientation.tuning.mean.preferred)),
            ),
            (
                "cycles_per_image",
                num(Some(g.frequency.tuning.mean.preferred)),
            ),
            ("circ_var_2theta", num(g.orientation_circular_variance.mean)),
        ],
        ProbeResult::Hue(h) => {
            let mut out = curve_highlights(&h.curve, "deg");
            out.push(("circ_var", num(h.hue_circular_variance.mean)));
            out
        }
    }
}

fn curve_highlights(
    curve: &vephys_worker::probes::Curve,
    unit: &'static str,
) -> Vec<(&'static str, String)> {
    let t = &curve.tuning.mean;
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    vec![
        ("preferred", num(Some(t.preferred))),
        ("peak", num(Some(t.peak))),
        ("peak/mean", num(t.peak_to_mean)),
        ("bandwidth", format!("{} {unit}", num(t.bandwidth))),
        ("flat", t.flat.to_string()),
    ]
}
