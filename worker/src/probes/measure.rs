//! The virtual electrode for probes: the max and mean activity (DESIGN.md section 1) of chosen
//! filters for a batch of stimuli, run without gradients in chunks of `batch` images.

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::models::Network;

/// Max and mean activity of one filter, one entry per stimulus in stimulus order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Responses {
    pub max: Vec<f64>,
    pub mean: Vec<f64>,
}

/// Responses of every filter of `filters` to every stimulus of `stimuli` ([N, 3, S, S] on the
/// network's device): one `Responses` per filter.
pub fn measure(
    net: &Network,
    layer: usize,
    stimuli: &Tensor,
    filters: &[i64],
    batch: usize,
) -> Result<Vec<Responses>> {
    debug_assert!(batch > 0 && !filters.is_empty());
    let _no_grad = tch::no_grad_guard();
    let n = stimuli.size()[0];
    let (mut max, mut mean) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < n {
        let len = (batch as i64).min(n - start);
        // only the measured filters' maps are computed where the layer allows (see
        // `Network::forward_to_channels`)
        let maps = net.forward_to_channels(&stimuli.f_narrow(0, start, len)?, layer, filters)?;
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
