//! `hue` (beyond the paper): uniform fields of `hues` equally spaced isoluminant colours
//! (`stimuli::hue_colours`: luma 1/2 for all, hue 0 = red, counterclockwise toward green), the
//! same for every filter. Derived: the curve's tuning on a circular axis and its hue circular
//! variance over theta (0 = one hue only, 1 = all hues alike).

use serde::Serialize;

use super::measure::{measure, Both};
use super::params::ProbeParams;
use super::stimuli::{hue_colours, uniform};
use super::tuning::{circular_variance, Axis};
use super::Curve;
use crate::error::Result;
use crate::models::Network;

#[derive(Debug, Clone, Serialize)]
pub struct Hue {
    pub colours: Vec<[f64; 3]>,
    pub curve: Curve,
    pub hue_circular_variance: Both<Option<f64>>,
}

/// Hue curves of `filters` on `size` x `size` fields.
pub fn run(
    net: &Network,
    layer: usize,
    filters: &[i64],
    size: i64,
    params: &ProbeParams,
) -> Result<Vec<Hue>> {
    let n = params.hue.steps as usize;
    let colours = hue_colours(n);
    let hues: Vec<f64> = (0..n).map(|k| 360.0 * k as f64 / n as f64).collect();
    let stimuli = uniform(&colours, size, net.device())?;
    let responses = measure(net, layer, &stimuli, filters, params.eval())?;
    Ok(responses
        .into_iter()
        .map(|r| Hue {
            colours: colours.clone(),
            hue_circular_variance: Both::of(&r, |r| circular_variance(&hues, r, 1.0)),
            curve: Curve::new("hue_deg", hues.clone(), r, Axis::Circular(360.0)),
        })
        .collect())
}
