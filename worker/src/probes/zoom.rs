//! `zoom`: the max image at zoom factors z, the image size kept constant (DESIGN.md section 1;
//! the resampling is `stimuli::zoom`). z = 1 is the max image itself, so its response equals
//! the baseline's `max_image`. Derived: the tuning of the curve on a log axis (bandwidth in
//! octaves).

use serde::Serialize;
use tch::Tensor;

use super::measure::measure;
use super::params::{ProbeParams, ZoomFill};
use super::stimuli::zoom;
use super::tuning::Axis;
use super::{stack, Curve};
use crate::error::Result;
use crate::models::Network;

#[derive(Debug, Clone, Serialize)]
pub struct Zoom {
    pub fill: ZoomFill,
    pub curve: Curve,
}

pub fn run(
    net: &Network,
    layer: usize,
    filters: &[i64],
    images: &[Tensor],
    params: &ProbeParams,
) -> Result<Vec<Zoom>> {
    debug_assert_eq!(filters.len(), images.len());
    let mut out = Vec::with_capacity(filters.len());
    for (&filter, image) in filters.iter().zip(images) {
        let image = image.to_device(net.device());
        let zoomed = params
            .zoom_factors
            .iter()
            .map(|&z| zoom(&image, z, params.zoom_fill))
            .collect::<Result<Vec<_>>>()?;
        let r = measure(net, layer, &stack(&zoomed)?, &[filter], params.batch)?.remove(0);
        out.push(Zoom {
            fill: params.zoom_fill,
            curve: Curve::new("zoom_factor", params.zoom_factors.clone(), r, Axis::Log2),
        });
    }
    Ok(out)
}
