//! `zoom`: the max image at zoom factors z, the image size kept constant (docs/science.md;
//! the resampling is `stimuli::zoom`). z = 1 is the max image itself, so its response equals
//! the baseline's `max_image` (and is not run again when the synthesis measured it, see
//! `MaxImage`). Derived: the tuning of the curve on a log axis (bandwidth in octaves).

use super::measure::{measure_stimuli, Stimulus};
use super::params::{ProbeParams, ZoomFill};
use super::stimuli::zoom;
use super::tuning::Axis;
use super::{Curve, MaxImage};
use crate::error::Result;
use crate::models::Network;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Zoom {
    pub fill: ZoomFill,
    pub curve: Curve,
}

pub fn run(
    net: &Network,
    layer: usize,
    filters: &[i64],
    images: &[MaxImage],
    params: &ProbeParams,
) -> Result<Vec<Zoom>> {
    debug_assert_eq!(filters.len(), images.len());
    let mut out = Vec::with_capacity(filters.len());
    for (&filter, max_image) in filters.iter().zip(images) {
        let image = max_image.image.to_device(net.device());
        let stimuli = params
            .zoom
            .factors
            .iter()
            .map(|&z| match z == 1.0 {
                true => Ok(max_image.as_stimulus(&image, params.precision)),
                false => Ok(Stimulus::Image(zoom(&image, z, params.zoom.fill)?)),
            })
            .collect::<Result<Vec<_>>>()?;
        let r = measure_stimuli(net, layer, filter, stimuli, params.eval())?;
        out.push(Zoom {
            fill: params.zoom.fill,
            curve: Curve::new("zoom_factor", params.zoom.factors.clone(), r, Axis::Log2),
        });
    }
    Ok(out)
}
