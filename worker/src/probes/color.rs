//! `color`: the paper's colour protocol. For each channel c in R, G, B the filter's
//! single-colour max image x_c (synthesized with only c free, the others exactly 0) is shown
//! as it is, moved into each of the other two channels ("red max image shown as green"), and
//! as its grayscale Y = w_c x_c replicated to three channels (w = 0.299, 0.587, 0.114). After
//! the twelve, a control per channel: x_c copied into all three channels (`c_equal`), a gray
//! image of the same values without the luma weights.
//!
//! Derived: the preferred channel argmax_c A(x_c); per channel the selectivity index against
//! the luma grayscale, (A(x_c) - A(gray_c)) / (A(x_c) + A(gray_c)), which the luma weights
//! bias (a colour-blind unit reads about +0.05 red, -0.28 green, +0.49 blue), and against the
//! equal-channel control, which they do not (about 0 for a colour-blind unit). The paper's
//! colour selectivity index, of the full-colour max image, is the baseline probe's.
//!
//! A channel whose synthesis found the unit dead has no max image; it is stood for by a uniform
//! field of the synthesis' start colour (the dataset mean in that channel, 0 in the others).
//! A max image's own response is not run again when its synthesis measured it (`MaxImage`).

use serde::Serialize;
use tch::{Device, Tensor};

use super::measure::{measure_stimuli, Both, Responses, Stimulus};
use super::params::ProbeParams;
use super::stimuli::{grayscale, move_channel, uniform};
use super::tuning::{argmax, selectivity_index};
use super::MaxImage;
use crate::error::Result;
use crate::models::Network;
use crate::synthesis::DATASET_MEAN;

pub const CHANNELS: [&str; 3] = ["r", "g", "b"];

#[derive(Debug, Clone, Serialize)]
pub struct Color {
    /// `r`, `r_as_g`, `r_as_b`, `r_gray`, the same for g and b, then `r_equal`, `g_equal`,
    /// `b_equal`.
    pub stimuli: Vec<String>,
    pub responses: Responses,
    pub preferred_channel: Both<&'static str>,
    /// Per channel r, g, b: against the luma grayscale.
    pub channel_selectivity: Both<[Option<f64>; 3]>,
    /// Per channel r, g, b: against the same values in all three channels (no luma bias).
    pub channel_selectivity_equal: Both<[Option<f64>; 3]>,
}

/// The stand-in for a dead channel's max image: [3, S, S].
pub fn dead_channel_image(channel: usize, size: i64, device: Device) -> Result<Tensor> {
    let mut colour = [0.0; 3];
    colour[channel] = f64::from(DATASET_MEAN[channel]);
    Ok(uniform(&[colour], size, device)?.f_squeeze_dim(0)?)
}

/// Stimulus labels in order.
pub fn labels() -> Vec<String> {
    let mut labels = Vec::with_capacity(15);
    for (c, name) in CHANNELS.iter().enumerate() {
        labels.push(name.to_string());
        for (d, other) in CHANNELS.iter().enumerate() {
            if d != c {
                labels.push(format!("{name}_as_{other}"));
            }
        }
        labels.push(format!("{name}_gray"));
    }
    labels.extend(CHANNELS.iter().map(|name| format!("{name}_equal")));
    labels
}

/// `images[i]` holds filter i's R-only, G-only and B-only max images, each [3, S, S].
pub fn run(
    net: &Network,
    layer: usize,
    filters: &[i64],
    images: &[[MaxImage; 3]],
    params: &ProbeParams,
) -> Result<Vec<Color>> {
    debug_assert_eq!(filters.len(), images.len());
    let device = net.device();
    let mut out = Vec::with_capacity(filters.len());
    for (&filter, single) in filters.iter().zip(images) {
        let mut stimuli = Vec::with_capacity(15);
        let mut equal = Vec::with_capacity(3);
        for (c, max_image) in single.iter().enumerate() {
            let image = max_image.image.to_device(device);
            stimuli.push(max_image.as_stimulus(&image, params.precision));
            for d in (0..3).filter(|d| *d != c) {
                stimuli.push(Stimulus::Image(move_channel(&image, c as i64, d as i64)?));
            }
            let gray = grayscale(&image.f_unsqueeze(0)?)?.f_squeeze_dim(0)?;
            stimuli.push(Stimulus::Image(gray));
            let own = image.f_select(0, c as i64)?.f_unsqueeze(0)?;
            equal.push(Stimulus::Image(
                own.f_expand([3, -1, -1], false)?.f_contiguous()?,
            ));
        }
        stimuli.extend(equal);
        let r = measure_stimuli(net, layer, filter, stimuli, params.eval())?;
        // own-channel image of channel c at 4c, its grayscale at 4c + 3, its equal-channel
        // control at 12 + c
        let against = |at: fn(usize) -> usize| {
            move |a: &[f64]| -> [Option<f64>; 3] {
                std::array::from_fn(|c| selectivity_index(a[4 * c], a[at(c)]))
            }
        };
        let preferred = |a: &[f64]| argmax(&[a[0], a[4], a[8]]);
        out.push(Color {
            stimuli: labels(),
            preferred_channel: Both::of(&r, |a| CHANNELS[preferred(a)]),
            channel_selectivity: Both::of(&r, against(|c| 4 * c + 3)),
            channel_selectivity_equal: Both::of(&r, against(|c| 12 + c)),
            responses: r,
        });
    }
    Ok(out)
}
