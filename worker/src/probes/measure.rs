//! The virtual electrode for probes: the max and mean activity (docs/science.md) of chosen
//! filters for a batch of stimuli, run without gradients in chunks of `batch` images, in the
//! precision the probe runs in (`Eval`).

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::device::Precision;
use crate::error::Result;
use crate::models::Network;

/// How stimuli are evaluated: images per forward pass, and the precision (a plain count means
/// fp32, the exact path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eval {
    pub batch: usize,
    pub precision: Precision,
}

impl From<usize> for Eval {
    fn from(batch: usize) -> Eval {
        Eval {
            batch,
            precision: Precision::Fp32,
        }
    }
}

/// Max and mean activity of one filter, one entry per stimulus in stimulus order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Responses {
    pub max: Vec<f64>,
    pub mean: Vec<f64>,
}

/// Max and mean activity of one filter for one stimulus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Response {
    pub max: f64,
    pub mean: f64,
}

/// A stimulus for one filter: an image [3, S, S] on the network's device, or a stimulus whose
/// response is already known (see `MaxImage`), which is not run again.
pub enum Stimulus {
    Image(Tensor),
    Known(Response),
}

/// Responses of `filter` to `stimuli`, in order; only the images go through the network.
pub fn measure_stimuli(
    net: &Network,
    layer: usize,
    filter: i64,
    stimuli: Vec<Stimulus>,
    eval: impl Into<Eval>,
) -> Result<Responses> {
    let images: Vec<&Tensor> = stimuli
        .iter()
        .filter_map(|s| match s {
            Stimulus::Image(x) => Some(x),
            Stimulus::Known(_) => None,
        })
        .collect();
    let measured = match images.is_empty() {
        true => Responses::default(),
        false => measure(net, layer, &Tensor::f_stack(&images, 0)?, &[filter], eval)?.remove(0),
    };
    let mut measured = measured.max.into_iter().zip(measured.mean);
    let mut out = Responses::default();
    for s in &stimuli {
        let (max, mean) = match s {
            Stimulus::Known(r) => (r.max, r.mean),
            Stimulus::Image(_) => measured.next().expect("one response per image"),
        };
        out.max.push(max);
        out.mean.push(mean);
    }
    Ok(out)
}

/// Each filter's response to its own stimulus: `stimuli[i]` ([F, 3, S, S] on the network's
/// device) shown to `filters[i]`. They run as one batch, so images that share a uniform
/// surround are framed together (`Network::forward_to_channels`); the price is that every
/// image is computed for all of `filters` at the layer's last convolution, so keep them few.
pub fn measure_own(
    net: &Network,
    layer: usize,
    stimuli: &Tensor,
    filters: &[i64],
    eval: impl Into<Eval>,
) -> Result<Vec<Response>> {
    debug_assert_eq!(stimuli.size()[0], filters.len() as i64);
    let all = measure(net, layer, stimuli, filters, eval)?;
    Ok(all
        .into_iter()
        .enumerate()
        .map(|(i, r)| Response {
            max: r.max[i],
            mean: r.mean[i],
        })
        .collect())
}

/// Responses of every filter of `filters` to every stimulus of `stimuli` ([N, 3, S, S] on the
/// network's device): one `Responses` per filter. The maps come back in fp32 in either
/// precision, so max and mean are taken in fp32.
pub fn measure(
    net: &Network,
    layer: usize,
    stimuli: &Tensor,
    filters: &[i64],
    eval: impl Into<Eval>,
) -> Result<Vec<Responses>> {
    let Eval { batch, precision } = eval.into();
    debug_assert!(batch > 0 && !filters.is_empty());
    let _no_grad = tch::no_grad_guard();
    let n = stimuli.size()[0];
    let (mut max, mut mean) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < n {
        let len = (batch as i64).min(n - start);
        // only the measured filters' maps are computed where the layer allows (see
        // `Network::forward_to_channels`)
        let part = stimuli.f_narrow(0, start, len)?;
        let maps = net.forward_to_channels_in(&part, layer, filters, precision)?;
        max.push(maps.f_amax([2, 3], false)?);
        mean.push(maps.f_mean_dim(&[2i64, 3][..], false, Kind::Float)?);
        start += len;
    }
    // [N, F] -> one row per filter, copied to the host once
    let rows = |parts: Vec<Tensor>| -> Result<Vec<Vec<f64>>> {
        let t = Tensor::f_cat(&parts, 0)?
            .to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .f_transpose(0, 1)?
            .contiguous();
        Ok(Vec::<Vec<f64>>::try_from(t)?)
    };
    let (max, mean) = (rows(max)?, rows(mean)?);
    Ok(max
        .into_iter()
        .zip(mean)
        .map(|(max, mean)| Responses { max, mean })
        .collect())
}

/// A number derived from the max-activity curve and the same number from the mean-activity
/// curve.
#[derive(Debug, Clone, Serialize)]
pub struct Both<T> {
    pub max: T,
    pub mean: T,
}

impl<T> Both<T> {
    pub fn of(r: &Responses, f: impl Fn(&[f64]) -> T) -> Both<T> {
        Both {
            max: f(&r.max),
            mean: f(&r.mean),
        }
    }
}
