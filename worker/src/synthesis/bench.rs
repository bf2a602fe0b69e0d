//! The synthesis benchmark, shared by `cargo bench --bench synth` (`scripts/bench.sh synth`)
//! and `vephys-worker bench` (`scripts/bench.sh gpu`, which needs only a release binary and the
//! machine's own PyTorch): vephys's steady-state image-steps/s against a plain PyTorch loop
//! doing the same work on the same machine in the same run (`scripts/python/bench_synth.py`:
//! the same network, layer, batch, algorithm, precision and memory format), in interleaved
//! rounds so that other load slows both sides alike, medians reported; and the quality of the
//! max images at equal steps (their activity over the best natural photo's), per precision.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::{synthesize, Status, SynthParams};
use crate::device::Precision;
use crate::error::{Result, WorkerError};
use crate::image_io;
use crate::models::{MemoryFormat, Network};

/// A network and layer to synthesize for.
#[derive(Debug, Clone)]
pub struct Case {
    pub model: String,
    pub layer: String,
    /// The same layer under its torchvision/reference name, for the PyTorch loop.
    pub reference_layer: String,
    pub source: Source,
    pub size: i64,
}

/// Where a case's weights come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A built-in model's safetensors (the PyTorch side loads the same file).
    Weights(PathBuf),
    /// A built-in model with seeded random weights on both sides (throughput only: rates do
    /// not depend on the values).
    Random,
    /// An exported model's directory (the PyTorch side rebuilds the eager network it came from).
    Export(PathBuf),
}

impl Case {
    pub fn builtin(model: &str, layer: &str, reference_layer: &str, source: Source) -> Case {
        Case {
            model: model.into(),
            layer: layer.into(),
            reference_layer: reference_layer.into(),
            source,
            size: 224,
        }
    }

    /// The network on `device`.
    pub fn network(&self, device: Device) -> Result<Network> {
        match &self.source {
            Source::Weights(weights) => {
                let mut net = Network::build(&self.model, device)?;
                net.load_weights(weights)?;
                Ok(net)
            }
            Source::Random => {
                tch::manual_seed(0);
                Network::build(&self.model, device)
            }
            Source::Export(dir) => Network::load_dir(dir, device),
        }
    }

    pub fn name(&self) -> String {
        let kind = match self.source {
            Source::Export(_) => " (exported)",
            Source::Random => " (random weights)",
            Source::Weights(_) => "",
        };
        format!("{}/{}{kind}", self.model, self.layer)
    }
}

/// Steady-state image-steps/s of vephys's synthesis of `batch` filters of `layer` in
/// `precision`: from the end of the first step to the end of the last (both sides exclude
/// start-up and the first step's kernel selection; vephys's final fp32 measurement of each pass
/// and, on the CPU, the start of each pass after the first count against it).
pub fn vephys_rate(
    net: &Network,
    layer: &str,
    size: i64,
    batch: usize,
    steps: i64,
    precision: Precision,
) -> Result<f64> {
    let layer = net.layer_index(layer)?;
    let filters: Vec<i64> = (0..batch as i64).collect();
    let params = SynthParams {
        steps: steps + 1,
        size,
        precision,
        ..SynthParams::default()
    };
    // (when, image-steps done by then)
    let mut stamps: Vec<(Instant, u64)> = Vec::new();
    let mut done = 0;
    synthesize(net, layer, &filters, &params, &mut |n| {
        if let Device::Cuda(n) = net.device() {
            tch::Cuda::synchronize(n as i64);
        }
        done += n;
        stamps.push((Instant::now(), done))
    })?;
    let (first, last) = (stamps[0], stamps[stamps.len() - 1]);
    Ok((last.1 - first.1) as f64 / (last.0 - first.0).as_secs_f64())
}

/// The plain PyTorch loop: `script` (bench_synth.py) run by `python`.
#[derive(Debug, Clone)]
pub struct PyTorch {
    pub python: String,
    pub script: PathBuf,
}

impl PyTorch {
    /// Its steady-state image-steps/s on the same work as `vephys_rate`, in `precision`
    /// (bf16: `torch.autocast`) with maps in `format`.
    pub fn rate(
        &self,
        case: &Case,
        device: Device,
        batch: usize,
        steps: i64,
        precision: Precision,
        format: MemoryFormat,
    ) -> Result<f64> {
        let device = match device {
            Device::Cuda(n) => format!("cuda:{n}"),
            _ => "cpu".to_string(),
        };
        let mut command = Command::new(&self.python);
        command.arg(&self.script);
        match &case.source {
            Source::Weights(weights) => command
                .args([&case.model, &case.reference_layer])
                .arg(weights),
            Source::Random => command.args([&case.model, &case.reference_layer, "random"]),
            Source::Export(dir) => command
                .arg("--export-dir")
                .arg(dir)
                .arg(&case.reference_layer),
        };
        command.args([
            &case.size.to_string(),
            &batch.to_string(),
            &steps.to_string(),
            &device,
            precision.as_str(),
            format.as_str(),
        ]);
        let fail = |reason: String| WorkerError::Model {
            model: case.model.clone(),
            reason: format!(
                "the PyTorch loop ({} {}) failed: {reason}",
                self.python,
                self.script.display()
            ),
        };
        let out = command.output().map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| fail(format!("its output is not JSON: {e}")))?;
        doc["image_steps_per_s"]
            .as_f64()
            .ok_or_else(|| fail("no image_steps_per_s in its output".into()))
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n % 2 {
        1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// How one case's max images compare with natural photos, in one precision.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    pub precision: Precision,
    pub filters: Vec<i64>,
    /// Each filter's max image activity (channel objective: the mean of its map, measured in
    /// fp32 on the saved 8-bit image) over the best photo's.
    pub ratios: Vec<f64>,
    /// Their median.
    pub median: f64,
    /// Whether every max image beat every photo.
    pub beats_every_photo: bool,
    /// The max images' activities, per filter.
    pub activities: Vec<f64>,
}

/// Synthesizes `filters` of `case`'s layer for `steps` steps in `precision` and compares each
/// max image's activity with the best of `photos` (resized to the case's size).
pub fn quality(
    net: &Network,
    case: &Case,
    filters: &[i64],
    steps: i64,
    precision: Precision,
    photos: &[PathBuf],
) -> Result<Quality> {
    let layer = net.layer_index(&case.layer)?;
    let params = SynthParams {
        steps,
        size: case.size,
        precision,
        ..SynthParams::default()
    };
    let outcomes = synthesize(net, layer, filters, &params, &mut |_| {})?;
    let best = best_photo_activity(net, layer, filters, case.size, photos)?;
    let activities: Vec<f64> = outcomes.iter().map(|o| o.mean_activity).collect();
    let ratios: Vec<f64> = activities
        .iter()
        .zip(&best)
        .map(|(a, b)| a / b.max(1e-12))
        .collect();
    Ok(Quality {
        precision,
        filters: filters.to_vec(),
        median: median(&ratios),
        beats_every_photo: outcomes
            .iter()
            .zip(&best)
            .all(|(o, b)| o.status == Status::Ok && o.mean_activity > *b),
        ratios,
        activities,
    })
}

/// Per filter, the highest mean activity over `photos` (fp32, whole forward).
pub fn best_photo_activity(
    net: &Network,
    layer: usize,
    filters: &[i64],
    size: i64,
    photos: &[PathBuf],
) -> Result<Vec<f64>> {
    let index = Tensor::from_slice(filters).to_device(net.device());
    let mut best = vec![f64::NEG_INFINITY; filters.len()];
    for photo in photos {
        let image = image_io::load(photo, Some(size))?.to_device(net.device());
        let acts = tch::no_grad(|| net.forward_to(&image.unsqueeze(0), layer))?;
        let means = acts
            .get(0)
            .index_select(0, &index)
            .mean_dim(&[1i64, 2][..], false, Kind::Double)
            .to_device(Device::Cpu);
        for (b, m) in best.iter_mut().zip(Vec::<f64>::try_from(means)?) {
            *b = b.max(m);
        }
    }
    Ok(best)
}

/// The photos of a directory (png, jpg), sorted.
pub fn photos_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(WorkerError::io(format!(
            "read the photos in {}",
            dir.display()
        )))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "png" || e == "jpg" || e == "jpeg")
        })
        .collect();
    photos.sort();
    Ok(photos)
}

/// One measured configuration: the medians of the interleaved rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub case: String,
    pub size: i64,
    pub batch: usize,
    pub steps: i64,
    pub precision: Precision,
    pub memory_format: MemoryFormat,
    /// vephys, image-steps/s (median of the rounds) and every round.
    pub vephys: f64,
    pub vephys_rounds: Vec<f64>,
    /// The PyTorch loop, likewise (None when it was not run).
    pub pytorch: Option<f64>,
    pub pytorch_rounds: Vec<f64>,
    /// vephys over PyTorch: the median of the rounds' ratios (each round's two runs are back
    /// to back, so they shared the machine's load).
    pub ratio: Option<f64>,
}

impl Row {
    /// Milliseconds per image-step, vephys.
    pub fn ms_per_image_step(&self) -> f64 {
        1000.0 / self.vephys
    }
}

/// What `run` measures.
pub struct Config {
    pub device: Device,
    pub cases: Vec<Case>,
    pub precisions: Vec<Precision>,
    pub batches: Vec<usize>,
    /// Image-steps timed per measurement: steps = max(min_steps, image_steps / batch).
    pub image_steps: i64,
    pub min_steps: i64,
    pub rounds: usize,
    /// Memory formats to compare; None: only each network's measured best.
    pub formats: Option<Vec<MemoryFormat>>,
    pub pytorch: Option<PyTorch>,
    /// Before each timed run, wait (up to a minute) until the CPUs are otherwise idle: on a
    /// shared machine, other processes make libtorch's threads wait on each other, which slows
    /// a run by up to 50x.
    pub wait_for_idle: bool,
}

/// Fraction of CPU time busy over `window`, from /proc/stat (None where it cannot be read).
fn cpu_busy(window: Duration) -> Option<f64> {
    let sample = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // idle and iowait
        let idle = cpu.get(3)? + cpu.get(4).copied().unwrap_or(0);
        Some((cpu.iter().sum(), idle))
    };
    let (t0, i0) = sample()?;
    std::thread::sleep(window);
    let (t1, i1) = sample()?;
    let total = t1.checked_sub(t0).filter(|t| *t > 0)?;
    Some(1.0 - i1.saturating_sub(i0) as f64 / total as f64)
}

/// Waits until the CPUs have been under 10% busy for half a second, up to `max`; whether they
/// were.
pub fn wait_for_idle(max: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < max {
        match cpu_busy(Duration::from_millis(500)) {
            None => return false,
            Some(busy) if busy < 0.1 => return true,
            Some(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
    false
}

/// Measures every (case, batch, precision, format), interleaving vephys and PyTorch round by
/// round (and, within a round, the precisions and formats), printing a line per row as it is
/// done.
pub fn run(config: &Config) -> Result<Vec<Row>> {
    println!(
        "{:<40} {:>4} {:>5} {:>5} {:>5} {:>13} {:>9} {:>9} {:>9} {:>6}",
        "model/layer",
        "px",
        "batch",
        "steps",
        "prec",
        "layout",
        "ms/img-st",
        "vephys/s",
        "torch/s",
        "ratio"
    );
    let mut rows = Vec::new();
    for case in &config.cases {
        let mut net = case.network(config.device)?;
        for &batch in &config.batches {
            let steps = (config.image_steps / batch as i64).max(config.min_steps);
            // every (precision, format) of this batch, measured in interleaved rounds
            let mut todo: Vec<(Precision, MemoryFormat)> = Vec::new();
            for &precision in &config.precisions {
                match &config.formats {
                    Some(formats) => todo.extend(formats.iter().map(|f| (precision, *f))),
                    None => todo.push((precision, net.memory_format(precision))),
                }
            }
            let mut ours = vec![Vec::new(); todo.len()];
            let mut theirs = vec![Vec::new(); todo.len()];
            for _ in 0..config.rounds {
                for (i, &(precision, format)) in todo.iter().enumerate() {
                    net.set_memory_format(Some(format));
                    if config.wait_for_idle {
                        wait_for_idle(Duration::from_secs(60));
                    }
                    ours[i].push(vephys_rate(
                        &net,
                        &case.layer,
                        case.size,
                        batch,
                        steps,
                        precision,
                    )?);
                    if let Some(py) = &config.pytorch {
                        if config.wait_for_idle {
                            wait_for_idle(Duration::from_secs(60));
                        }
                        theirs[i].push(py.rate(
                            case,
                            config.device,
                            batch,
                            steps,
                            precision,
                            format,
                        )?);
                    }
                }
            }
            net.set_memory_format(None);
            for (i, &(precision, format)) in todo.iter().enumerate() {
                let row = Row {
                    case: case.name(),
                    size: case.size,
                    batch,
                    steps,
                    precision,
                    memory_format: format,
                    vephys: median(&ours[i]),
                    vephys_rounds: ours[i].clone(),
                    pytorch: (!theirs[i].is_empty()).then(|| median(&theirs[i])),
                    pytorch_rounds: theirs[i].clone(),
                    ratio: (!theirs[i].is_empty()).then(|| {
                        let ratios: Vec<f64> =
                            ours[i].iter().zip(&theirs[i]).map(|(a, b)| a / b).collect();
                        median(&ratios)
                    }),
                };
                let (torch, ratio) = match (row.pytorch, row.ratio) {
                    (Some(p), Some(r)) => (format!("{p:.2}"), format!("{r:.3}")),
                    _ => ("-".into(), "-".into()),
                };
                println!(
                    "{:<40} {:>4} {:>5} {:>5} {:>5} {:>13} {:>9.1} {:>9.2} {:>9} {:>6}",
                    row.case,
                    row.size,
                    batch,
                    steps,
                    precision.as_str(),
                    format.as_str(),
                    row.ms_per_image_step(),
                    row.vephys,
                    torch,
                    ratio
                );
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// bf16 over fp32 speed-ups of `rows` (same case, batch and format), one line each.
pub fn print_speedups(rows: &[Row]) {
    for bf16 in rows.iter().filter(|r| r.precision == Precision::Bf16) {
        let fp32 = rows.iter().find(|r| {
            r.precision == Precision::Fp32
                && r.case == bf16.case
                && r.batch == bf16.batch
                && r.memory_format == bf16.memory_format
        });
        if let Some(fp32) = fp32 {
            let torch = match (bf16.pytorch, fp32.pytorch) {
                (Some(b), Some(f)) => format!(", PyTorch {:.2}x", b / f),
                _ => String::new(),
            };
            println!(
                "  {} batch {} {}: bf16/fp32 = {:.2}x (vephys{torch})",
                bf16.case,
                bf16.batch,
                bf16.memory_format.as_str(),
                bf16.vephys / fp32.vephys
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
