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
use vephys_worker::probes::params::{
    BaselineParams, ColorParams, Field, GratingParams, HueParams, RotationParams, ZoomParams,
};
use vephys_worker::probes::{
    self, color, needs, parse_values, Input, MaxImage, Needs, Probe, ProbeParams, ProbeResult,
    ZoomFill,
};
use vephys_worker::provenance::Provenance;
use vephys_worker::WorkerError;

use super::{ModelArgs, PrecisionArgs};

#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// Probe to run: baseline, zoom, rotation, color (the paper's), grating, hue
    #[arg(long, env = "VEPHYS_PROBE", value_parser = parse_probe)]
    probe: Probe,

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

    /// Image side in pixels: the size of grating and hue stimuli (default: the model's input
    /// size, 224 for the built-in models); for the other probes, the size every max image must
    /// have (default: whatever they share)
    #[arg(long, env = "VEPHYS_SIZE", allow_negative_numbers = true)]
    size: Option<i64>,

    #[command(flatten)]
    params: ProbeFlags,

    #[command(flatten)]
    precision: PrecisionArgs,

    /// Print the results as JSON on stdout instead of a table
    #[arg(long)]
    json: bool,
}

/// The probes' parameters as flags; value lists are `a,b,c` or `start:stop:step`. Every
/// default is the job contract's (`vephys_proto::params`), shown as the flag's default.
#[derive(Args, Debug, Clone)]
pub struct ProbeFlags {
    /// Zoom factors (> 0; 1 = the max image); z < 1 shrinks, z > 1 crops the centre
    #[arg(long, env = "VEPHYS_ZOOM_FACTORS", allow_hyphen_values = true, default_value_t = ValueList(ZoomParams::default().factors))]
    zoom_factors: ValueList,

    /// What surrounds an image shrunk by zoom < 1: copies of it (tile) or the mean colour
    /// (mean; `pad` is the same)
    #[arg(long, env = "VEPHYS_ZOOM_FILL", default_value_t = ZoomParams::default().fill)]
    zoom_fill: ZoomFill,

    /// Rotation angles in degrees, counterclockwise, within one turn
    #[arg(long, env = "VEPHYS_ANGLES", allow_hyphen_values = true, default_value_t = ValueList(RotationParams::default().angles))]
    angles: ValueList,

    /// Radius of the rotation probe's circular aperture as a fraction of half the image side;
    /// it hides the border band where max images are weaker (lower it for units whose receptive
    /// field is over a fifth of the image)
    #[arg(long, env = "VEPHYS_APERTURE", allow_negative_numbers = true, default_value_t = RotationParams::default().aperture)]
    aperture: f64,

    /// Grating orientations in degrees (direction of the wave vector), within half a turn
    #[arg(long, env = "VEPHYS_ORIENTATIONS", allow_hyphen_values = true, default_value_t = ValueList(GratingParams::default().orientations))]
    orientations: ValueList,

    /// Grating spatial frequencies in cycles per image, below size / 2 [default: the octaves
    /// 2, 4, 8, ... below size / 2]
    #[arg(long, env = "VEPHYS_FREQUENCIES", allow_hyphen_values = true)]
    frequencies: Option<ValueList>,

    /// Grating phases, equally spaced; responses are averaged over them
    #[arg(long, env = "VEPHYS_PHASES", default_value_t = GratingParams::default().phases)]
    phases: u32,

    /// Number of equally spaced isoluminant hues
    #[arg(long, env = "VEPHYS_HUES", default_value_t = HueParams::default().steps)]
    hues: u32,

    /// Std of the baseline's gaussian noise image around the mean colour
    #[arg(long, env = "VEPHYS_NOISE_STD", allow_negative_numbers = true, default_value_t = BaselineParams::default().noise_std)]
    noise_std: f64,

    /// Seed of the baseline's noise image
    #[arg(long, env = "VEPHYS_NOISE_SEED", default_value_t = ProbeParams::default().seed)]
    noise_seed: u64,

    /// Stimuli per forward pass
    #[arg(long, env = "VEPHYS_PROBE_BATCH", default_value_t = ProbeParams::default().batch, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    probe_batch: usize,
}

impl ProbeFlags {
    /// The parameters, checked as far as they go without knowing the image size.
    pub fn params(&self) -> Result<ProbeParams, WorkerError> {
        let params = ProbeParams {
            baseline: BaselineParams {
                noise_std: self.noise_std,
            },
            zoom: ZoomParams {
                factors: self.zoom_factors.0.clone(),
                fill: self.zoom_fill,
            },
            rotation: RotationParams {
                angles: self.angles.0.clone(),
                aperture: self.aperture,
            },
            color: ColorParams::default(),
            grating: GratingParams {
                orientations: self.orientations.0.clone(),
                spatial_frequencies: self.frequencies.as_ref().map(|f| f.0.clone()),
                phases: self.phases,
            },
            hue: HueParams { steps: self.hues },
            seed: self.noise_seed,
            batch: self.probe_batch,
            // fp32 until the command resolves --precision for its device
            ..ProbeParams::default()
        };
        params.check()?;
        Ok(params)
    }
}

/// A value list on the command line: `a,b,c` or `start:stop:step` (stop included); shown as
/// a range when evenly spaced.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueList(pub Vec<f64>);

impl std::str::FromStr for ValueList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // the flag's name is added by clap; the field only labels the message
        parse_values(Field::ZoomFactors, s)
            .map(ValueList)
            .map_err(|e| e.reason)
    }
}

impl std::fmt::Display for ValueList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = &self.0;
        let step = v.get(1).map(|b| b - v[0]);
        let even = v.len() >= 3
            && step.is_some_and(|d| v.windows(2).all(|w| (w[1] - w[0] - d).abs() < 1e-9));
        match (even, step) {
            (true, Some(d)) => write!(f, "{}:{}:{}", v[0], v[v.len() - 1], d),
            _ => {
                let items: Vec<String> = v.iter().map(f64::to_string).collect();
                f.write_str(&items.join(","))
            }
        }
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
    let mut params = args.params.params()?;
    check_out_dir(&args.out)?;
    let net = args.model.load()?;
    params.precision = args.precision.resolve(&net)?;
    let layer = net.layer_index(&args.layer)?;
    let channels = net
        .check_size(layer, args.size.unwrap_or(net.input_size()).max(1))?
        .channels;
    let filters = parse_filters(&args.filters, channels, net.layer_name(layer))?;
    let (inputs, size) = read_inputs(&args, &filters, net.input_size())?;
    let shape = net.check_size(layer, size)?;
    if args.probe == Probe::Grating {
        params.grating.frequencies(size as u32)?;
    }

    let bar = progress(
        filters.len(),
        &format!("{} {} {}", net.name(), shape.name, args.probe),
    );
    let results = run_probe(
        &net, layer, args.probe, &filters, &inputs, size, &params, &bar,
    )?;
    bar.finish_and_clear();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("create output directory {}", args.out.display()))?;
    let provenance = Provenance::of(&net, params.precision);
    let mut docs = Vec::with_capacity(results.len());
    for (&filter, result) in filters.iter().zip(&results) {
        let doc = json!({
            "model": net.name(),
            "layer": shape.name,
            "filter": filter,
            "size": size,
            "result": result,
            "derived": result.derived(),
            "params": params,
            "params_hash": params_hash(&params),
            "images": args.images,
            "weights_sha256": provenance.weights_sha256,
            "device": provenance.device,
            "precision": provenance.precision,
            "mixed_precision": provenance.mixed_precision,
            "versions": provenance.versions,
            "host": provenance.host,
        });
        let path = args
            .out
            .join(format!("filter_{filter:04}_{}.json", args.probe));
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
        args.probe,
        args.out.display()
    );
    Ok(())
}

/// A probe for the command line: any but synthesis (that is `synth`).
pub fn parse_probe(text: &str) -> Result<Probe, String> {
    match text.parse::<Probe>()? {
        Probe::Synthesis => Err("synthesis is not a probe here: run `vephys-worker synth`".into()),
        probe => Ok(probe),
    }
}

/// Runs `probe` for every filter through the probe battery: one filter at a time where each
/// has its own stimuli (for the progress bar), all at once where they share them.
#[allow(clippy::too_many_arguments)]
fn run_probe(
    net: &Network,
    layer: usize,
    probe: Probe,
    filters: &[i64],
    inputs: &Inputs,
    size: i64,
    params: &ProbeParams,
    bar: &ProgressBar,
) -> Result<Vec<ProbeResult>> {
    let mut results = Vec::with_capacity(filters.len());
    let one = |i: usize| std::slice::from_ref(&filters[i]);
    match inputs {
        Inputs::MaxImages(images) => {
            for (i, image) in images.iter().enumerate() {
                let input = Input::MaxImages(std::slice::from_ref(image));
                results.extend(probes::run(net, layer, probe, one(i), input, params)?);
                bar.inc(1);
            }
        }
        Inputs::SingleColour(images) => {
            for (i, single) in images.iter().enumerate() {
                let input = Input::SingleColour(std::slice::from_ref(single));
                results.extend(probes::run(net, layer, probe, one(i), input, params)?);
                bar.inc(1);
            }
        }
        Inputs::Nothing => {
            results = probes::run(net, layer, probe, filters, Input::Size(size), params)?;
            bar.inc(filters.len() as u64);
        }
    }
    Ok(results)
}

/// The max images each filter needs, checked: present, readable, square, all one size (and
/// `--size` when given). Returns them with the stimulus size.
fn read_inputs(args: &ProbeArgs, filters: &[i64], input_size: i64) -> Result<(Inputs, i64)> {
    let input = needs(args.probe);
    if input == Needs::Nothing {
        let size = args.size.unwrap_or(input_size);
        if size < 8 {
            anyhow::bail!("bad value for --size: {size} px is too small; use at least 8");
        }
        return Ok((Inputs::Nothing, size));
    }
    let Some(dir) = &args.images else {
        anyhow::bail!(
            "the {} probe starts from max images: pass --images DIR (the --out of `vephys-worker synth` or `characterize`)",
            args.probe
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
        Needs::MaxImage => Inputs::MaxImages(
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

/// The numbers worth a glance: the derived numbers of the max-activity responses, as the
/// daemon stores them.
fn highlights(result: &ProbeResult) -> Vec<(String, String)> {
    let derived = serde_json::to_value(result.derived()).unwrap_or_default();
    let mut cells = Vec::new();
    flatten("", &derived, &mut cells);
    cells
}

/// `{"a": {"b": 1}}` as ("a.b", "1"), leaving out the mean-activity numbers.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "mean" {
                    continue;
                }
                let name = match prefix.is_empty() {
                    true => k.clone(),
                    false => format!("{prefix}.{k}"),
                };
                flatten(&name, v, out);
            }
        }
        Value::Number(n) => out.push((
            prefix.to_string(),
            format!("{:.3}", n.as_f64().unwrap_or(f64::NAN)),
        )),
        Value::Null => out.push((prefix.to_string(), "-".into())),
        other => out.push((
            prefix.to_string(),
            other.to_string().trim_matches('"').to_string(),
        )),
    }
}
