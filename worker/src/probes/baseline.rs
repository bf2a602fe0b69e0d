//! `baseline`: the max image beside reference stimuli (DESIGN.md section 1).
//!
//! Stimuli, in order: the max image x; x through the rotation probe's circular aperture (what
//! rotation 0 shows, radius `aperture` x S/2); its grayscale Y = 0.299 R + 0.587 G + 0.114 B replicated to three
//! channels; an all-white image; gaussian noise N(c, noise_std) around the mean colour c,
//! clamped to [0, 1] and shared by every filter. The max image's own response is not run again
//! when the synthesis measured it (`MaxImage`). Derived: the colour selectivity index of the
//! full-colour max image, (A_x - A_gray) / (A_x + A_gray).

use serde::Serialize;
use tch::Tensor;

use super::measure::{measure, measure_stimuli, Both, Responses, Stimulus};
use super::params::ProbeParams;
use super::stimuli::{aperture, grayscale, noise};
use super::tuning::selectivity_index;
use super::MaxImage;
use crate::error::Result;
use crate::models::Network;

pub const STIMULI: [&str; 5] = [
    "max_image",
    "max_image_aperture",
    "grayscale",
    "white",
    "noise",
];

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub stimuli: [&'static str; 5],
    pub responses: Responses,
    pub colour_selectivity_index: Both<Option<f64>>,
}

/// Baselines of `filters`, whose max images [3, S, S] are `images` (same order, same size).
pub fn run(
    net: &Network,
    layer: usize,
    filters: &[i64],
    images: &[MaxImage],
    params: &ProbeParams,
) -> Result<Vec<Baseline>> {
    debug_assert_eq!(filters.len(), images.len());
    let device = net.device();
    let size = images[0].image.size()[2];
    let shared = Tensor::f_stack(
        &[
            Tensor::f_ones([3, size, size], (tch::Kind::Float, device))?,
            noise(size, params.noise_std, params.seed, device)?,
        ],
        0,
    )?;
    let shared = measure(net, layer, &shared, filters, params.batch)?;
    let mut out = Vec::with_capacity(filters.len());
    for ((&filter, max_image), shared) in filters.iter().zip(images).zip(shared) {
        let image = max_image.image.to_device(device);
        let x = image.f_unsqueeze(0)?;
        let own = vec![
            max_image.as_stimulus(&image),
            Stimulus::Image(aperture(&x, params.aperture)?.f_squeeze_dim(0)?),
            Stimulus::Image(grayscale(&x)?.f_squeeze_dim(0)?),
        ];
        let mut r = measure_stimuli(net, layer, filter, own, params.batch)?;
        r.max.extend(shared.max);
        r.mean.extend(shared.mean);
        out.push(Baseline {
            stimuli: STIMULI,
            colour_selectivity_index: Both::of(&r, |a| selectivity_index(a[0], a[2])),
            responses: r,
        });
    }
    Ok(out)
}
