//! Batched max-image synthesis (docs/science.md). Image i of a batch belongs to filter f_i;
//! each step, for every image at once:
//!
//!   g   = d objective_i / d x_i            (one backward pass for the whole batch)
//!   x  <- x + lr * g / rms(g)              (rms per image: each image takes a step of equal size)
//!   x  <- c + (1 - decay) (x - c)          (L2 decay toward the mean colour c)
//!   x  <- blur(x)                          (every `blur_every` steps)
//!   x  <- clamp(x, 0, 1) * colour mask     (single-colour runs keep the other channels at 0)
//!
//! The network runs only up to the target layer and its weights get no gradients. In bf16
//! (`SynthParams::precision`) the forward and backward passes run under bf16 autocast
//! (`Network::forward_to_in`): convolutions and matrix products in bf16, while x, the
//! objective's reduction, g and its normalisation, the decay, blur and clamp stay fp32, and the
//! final activity is measured in fp32 on the saved 8-bit image, as in fp32 runs. Image i's
//! start is Gaussian noise around c drawn from a generator seeded by (seed, f_i, k) alone, so a
//! filter's image does not depend on the batch it was computed in. Start k = 0 is tried first;
//! a filter whose gradient is exactly zero there gets the next start, up to `STARTS` of them
//! (a ReLU unit can be silent on one noise image and not on another). A filter silent from
//! every start is `dead`: nothing can be synthesized for it.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;
use tch::{Kind, Tensor};

use super::objective::{activity, Objective};
use super::params::{ColorMode, SynthParams};
use super::regularizers::{decay_toward, GaussianBlur};
use crate::error::{Result, WorkerError};
use crate::image_io::quantize;
use crate::models::Network;

/// ImageNet's mean colour: the centre of the L2 decay and of the start noise.
pub const DATASET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// The objective's gradient was exactly zero at the start: the unit never responds.
    Dead,
}

pub struct SynthOutcome {
    pub filter: i64,
    /// Seeded starts tried (1 unless the first left the unit silent).
    pub starts: u32,
    /// [3, S, S] on the CPU, quantized to 8 bits (what the PNG holds).
    pub image: Tensor,
    pub status: Status,
    /// Objective value before each step.
    pub trajectory: Vec<f32>,
    /// Max and mean activity of the filter on its final (quantized) image.
    pub max_activity: f64,
    pub mean_activity: f64,
    /// Wall time of the pass divided by its size.
    pub seconds: f64,
}

/// Seeded start images tried before a unit silent from all of them is called dead.
pub const STARTS: u32 = 3;

/// Images per pass through the network on the CPU; other devices take the whole batch at once.
/// Small passes keep their activations and gradients in cache, which outweighs what batching
/// saves. Measured on a 2-core CPU, 224 px, seconds per image-step: EfficientNet-Lite0 to
/// blocks.4 0.016 at 1 image per pass, 0.022 at 2, 0.046 at 4, 0.055 at 8, 0.060 at 16; VGG-19
/// to block3_pool 0.38 at 1 and 2, about 0.7 at 16.
const CPU_IMAGES_PER_PASS: usize = 1;

/// Synthesizes one image per filter of `filters` at layer `layer`: on the CPU one small pass
/// after another (see `CPU_IMAGES_PER_PASS`), elsewhere as one batch. `on_step` is called after
/// every step with the number of images that step advanced (for progress bars).
pub fn synthesize(
    net: &Network,
    layer: usize,
    filters: &[i64],
    params: &SynthParams,
    on_step: &mut dyn FnMut(u64),
) -> Result<Vec<SynthOutcome>> {
    if filters.is_empty() {
        return synthesize_pass(net, layer, filters, params, on_step); // refuses, naming --filters
    }
    let per_pass = match net.device() {
        tch::Device::Cpu => CPU_IMAGES_PER_PASS,
        _ => filters.len(),
    };
    let mut outcomes = Vec::with_capacity(filters.len());
    for pass in filters.chunks(per_pass) {
        outcomes.extend(synthesize_pass(net, layer, pass, params, on_step)?);
    }
    Ok(outcomes)
}

/// Synthesizes one image per filter of `filters` in a single batch through the network. A
/// filter's image is the same whichever batch it runs in (tested), so `synthesize` may split.
pub fn synthesize_pass(
    net: &Network,
    layer: usize,
    filters: &[i64],
    params: &SynthParams,
    on_step: &mut dyn FnMut(u64),
) -> Result<Vec<SynthOutcome>> {
    params.validate()?;
    if filters.is_empty() {
        return Err(WorkerError::bad(
            "--filters",
            "no filters to synthesize; name at least one",
        ));
    }
    let started = Instant::now();
    let device = net.device();
    let shape = net.check_size(layer, params.size)?;
    let objective = Objective::new(
        params.objective,
        params.unit_y,
        params.unit_x,
        shape.height,
        shape.width,
    )?;
    let n = filters.len() as i64;
    let index = Tensor::from_slice(filters).to_device(device);

    let mask = params.color.mask();
    let single_colour = params.color != ColorMode::Rgb;
    let colour_mask = Tensor::from_slice(&mask)
        .to_device(device)
        .view([1, 3, 1, 1]);
    let center_values: Vec<f32> = DATASET_MEAN.iter().zip(mask).map(|(c, m)| c * m).collect();
    let center = Tensor::from_slice(&center_values)
        .to_device(device)
        .view([1, 3, 1, 1]);
    let blur = (params.blur_sigma > 0.0 && params.blur_every > 0)
        .then(|| GaussianBlur::new(params.blur_sigma, device));

    let mut starts = vec![0u32; filters.len()];
    let mut x = start_images(filters, params, &center_values, &starts)?.to_device(device);
    let mut alive = Tensor::ones([n, 1, 1, 1], (Kind::Float, device));
    let mut dead = vec![false; filters.len()];
    let mut trajectory = Vec::with_capacity(params.steps as usize);
    let mut step = 0;
    while step < params.steps {
        let leaf = x.detach().set_requires_grad(true);
        let acts = net.forward_to_in(&leaf, layer, params.precision)?;
        let per_image = objective.evaluate(&acts, &index)?;
        let grad =
            Tensor::f_run_backward(&[per_image.f_sum(Kind::Float)?], &[&leaf], false, false)?
                .remove(0);
        let grad = match single_colour {
            true => tch::no_grad(|| grad.f_mul(&colour_mask))?,
            false => grad,
        };
        if step == 0 {
            let zero = tch::no_grad(|| grad.f_abs()?.f_amax([1, 2, 3], false)?.f_eq(0.0))?;
            dead = Vec::<bool>::try_from(zero.to_device(tch::Device::Cpu))?;
            // silent from this start: the next one, if any is left (step 0 runs again)
            let retry: Vec<usize> = (0..dead.len())
                .filter(|&i| dead[i] && starts[i] + 1 < STARTS)
                .collect();
            if !retry.is_empty() {
                for &i in &retry {
                    starts[i] += 1;
                }
                let fresh =
                    start_images(filters, params, &center_values, &starts)?.to_device(device);
                // the silent images' new starts (the others' are unchanged: same seed)
                x = fresh.f_where_self(&zero.f_view([n, 1, 1, 1])?, &x)?;
                continue;
            }
            alive = zero
                .f_logical_not()?
                .to_kind(Kind::Float)
                .f_view([n, 1, 1, 1])?;
        }
        // Kept on the device; copied once at the end so a GPU never waits on the host.
        trajectory.push(per_image.detach());
        x = tch::no_grad(|| -> Result<Tensor> {
            let rms = grad
                .f_square()?
                .f_mean_dim(&[1i64, 2, 3][..], true, None)?
                .f_sqrt()?
                .f_add_scalar(1e-8)?;
            let step_size = alive.f_mul_scalar(params.lr)?;
            let mut x = leaf.detach().f_add(&grad.f_div(&rms)?.f_mul(&step_size)?)?;
            x = decay_toward(&x, &center, params.decay)?;
            if let Some(blur) = &blur {
                if (step + 1) % params.blur_every == 0 {
                    x = blur.apply(&x)?;
                }
            }
            x = x.f_clamp(0.0, 1.0)?;
            if single_colour {
                x = x.f_mul(&colour_mask)?;
            }
            Ok(x)
        })?;
        on_step(n as u64);
        step += 1;
    }

    let images = quantize(&x);
    // fp32 whatever the precision of the steps: numbers comparable across precisions
    let (max, mean) = tch::no_grad(|| activity(&net.forward_to(&images, layer)?, &index))?;
    let max = Vec::<f64>::try_from(max.to_kind(Kind::Double).to_device(tch::Device::Cpu))?;
    let mean = Vec::<f64>::try_from(mean.to_kind(Kind::Double).to_device(tch::Device::Cpu))?;
    // [steps, B] -> one trajectory per image
    let trajectory = Tensor::f_stack(&trajectory, 0)?
        .to_device(tch::Device::Cpu)
        .transpose(0, 1)
        .contiguous();
    let images = images.to_device(tch::Device::Cpu);
    let seconds = started.elapsed().as_secs_f64() / n as f64;

    let mut outcomes = Vec::with_capacity(filters.len());
    for (i, &filter) in filters.iter().enumerate() {
        outcomes.push(SynthOutcome {
            filter,
            starts: starts[i] + 1,
            image: images.get(i as i64),
            status: if dead[i] { Status::Dead } else { Status::Ok },
            trajectory: Vec::<f32>::try_from(trajectory.get(i as i64))?,
            max_activity: max[i],
            mean_activity: mean[i],
            seconds,
        });
    }
    Ok(outcomes)
}

/// Start images [B, 3, S, S] on the CPU: c + N(0, init_std), clamped, seeded per filter and
/// per start (`starts[i]` for filter i; start 0 is the seed's own noise).
fn start_images(
    filters: &[i64],
    params: &SynthParams,
    center: &[f32],
    starts: &[u32],
) -> Result<Tensor> {
    let s = params.size as usize;
    let noise = Normal::new(0.0f32, params.init_std as f32).expect("init_std validated");
    let mut data = Vec::with_capacity(filters.len() * 3 * s * s);
    for (&filter, &start) in filters.iter().zip(starts) {
        let seed = params.seed ^ u64::from(start).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = ChaCha8Rng::seed_from_u64(filter_seed(seed, filter));
        for &c in center {
            for _ in 0..s * s {
                // single-colour runs: `center` is 0 in the frozen channels, and so is the start
                let v = if c == 0.0 {
                    0.0
                } else {
                    (c + noise.sample(&mut rng)).clamp(0.0, 1.0)
                };
                data.push(v);
            }
        }
    }
    Ok(Tensor::from_slice(&data).view([filters.len() as i64, 3, params.size, params.size]))
}

/// Mixes the run's seed with the filter index (splitmix64) so filters get unrelated noise.
fn filter_seed(seed: u64, filter: i64) -> u64 {
    let mut z = seed ^ (filter as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
