//! `baseline`: the max image beside reference stimuli (docs/science.md).
//!
//! Stimuli, in order: the max image x; x through the rotation probe's circular aperture (what
//! rotation 0 shows, radius `aperture` x S/2); its grayscale Y = 0.299 R + 0.587 G + 0.114 B replicated to three
//! channels; an all-white image; gaussian noise N(c, noise_std) around the mean colour c,
//! clamped to [0, 1] and shared by every filter. The max image's own response is not run again
//! when the synthesis measured it (`MaxImage`); the filters' own stimuli of a batch run
//! together, so that their apertured images are framed (`TOGETHER`). Derived: the colour
//! selectivity index of the full-colour max image, (A_x - A_gray) / (A_x + A_gray).

use serde::Serialize;
use tch::Tensor;

use super::measure::{measure, measure_own, Both, Response, Responses};
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

/// Filters whose own stimuli run as one batch (`measure_own`): their apertured max images
/// share the aperture's mean-colour surround, so a batch of them is framed (run only within
/// the aperture's reach, about two thirds of an image's work), which one filter's single
/// apertured image alone would not be worth; and few enough that computing every image for
/// each of them at the layer's last convolution costs little.
const TOGETHER: usize = 8;

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
            noise(size, params.baseline.noise_std, params.seed, device)?,
        ],
        0,
    )?;
    let shared = measure(net, layer, &shared, filters, params.eval())?;
    let mut own = Vec::with_capacity(filters.len());
    for (filters, images) in filters.chunks(TOGETHER).zip(images.chunks(TOGETHER)) {
        own.extend(own_responses(net, layer, filters, images, params)?);
    }
    Ok(own
        .into_iter()
        .zip(shared)
        .map(|(own, shared)| {
            let mut r = Responses::default();
            for s in own {
                r.max.push(s.max);
                r.mean.push(s.mean);
            }
            r.max.extend(shared.max);
            r.mean.extend(shared.mean);
            Baseline {
                stimuli: STIMULI,
                colour_selectivity_index: Both::of(&r, |a| selectivity_index(a[0], a[2])),
                responses: r,
            }
        })
        .collect())
}

/// Each filter's responses to its max image, apertured max image and grayscale max image, in
/// that order; the max images' known responses are not run again.
fn own_responses(
    net: &Network,
    layer: usize,
    filters: &[i64],
    images: &[MaxImage],
    params: &ProbeParams,
) -> Result<Vec<[Response; 3]>> {
    let on_device: Vec<Tensor> = images
        .iter()
        .map(|m| m.image.to_device(net.device()))
        .collect();
    let x = Tensor::f_stack(&on_device, 0)?;
    let own = |stimuli: Tensor| measure_own(net, layer, &stimuli, filters, params.eval());
    let apertured = own(aperture(&x, params.rotation.aperture)?)?;
    let gray = own(grayscale(&x)?)?;
    let unknown: Vec<usize> = (0..images.len())
        .filter(|&i| images[i].known(params.precision).is_none())
        .collect();
    let mut measured = match unknown.is_empty() {
        true => Vec::new(),
        false => {
            let index = Tensor::from_slice(&unknown.iter().map(|&i| i as i64).collect::<Vec<_>>())
                .to_device(net.device());
            let filters: Vec<i64> = unknown.iter().map(|&i| filters[i]).collect();
            measure_own(
                net,
                layer,
                &x.f_index_select(0, &index)?,
                &filters,
                params.eval(),
            )?
        }
    }
    .into_iter();
    Ok(images
        .iter()
        .zip(apertured.into_iter().zip(gray))
        .map(|(image, (apertured, gray))| {
            let max_image = match image.known(params.precision) {
                Some(r) => r,
                None => measured.next().expect("one response per unknown max image"),
            };
            [max_image, apertured, gray]
        })
        .collect())
}
