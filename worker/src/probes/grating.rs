//! `grating` (beyond the paper; Marques et al. 2020 style): full-contrast sinusoidal gratings
//! for every orientation theta x spatial frequency f x phase (`stimuli::gratings`), the same for
//! every filter; each (theta, f) response is the average over the phases.
//!
//! Derived: the orientation curve through the peak's frequency and the frequency curve through
//! the peak's orientation (each statistic, max or mean, through its own peak), their tuning
//! (orientation: circular over 180 degrees; frequency: octaves), and the orientation circular
//! variance over 2 theta.

use serde::Serialize;

use super::measure::{measure, Both, Responses};
use super::params::ProbeParams;
use super::stimuli::gratings;
use super::tuning::{argmax, circular_variance, Axis};
use super::Curve;
use crate::error::Result;
use crate::models::Network;

#[derive(Debug, Clone, Serialize)]
pub struct Grating {
    pub orientations_deg: Vec<f64>,
    /// Cycles per image.
    pub frequencies: Vec<f64>,
    pub phases: usize,
    /// Phase-averaged responses, orientation-major: entry o * frequencies + f.
    pub responses: Responses,
    pub orientation: Curve,
    pub frequency: Curve,
    pub orientation_circular_variance: Both<Option<f64>>,
}

/// Grating responses of `filters` at `size` x `size`, one orientation's stimuli per batch.
pub fn run(
    net: &Network,
    layer: usize,
    filters: &[i64],
    size: i64,
    params: &ProbeParams,
) -> Result<Vec<Grating>> {
    let frequencies = params.grating.frequencies(size as u32)?;
    let np = params.grating.phases as usize;
    let mut tables = vec![Responses::default(); filters.len()];
    for &theta in &params.grating.orientations {
        let stimuli = gratings(size, &[theta], &frequencies, np, net.device())?;
        let responses = measure(net, layer, &stimuli, filters, params.eval())?;
        for (table, r) in tables.iter_mut().zip(responses) {
            let phase_mean = |v: &[f64]| -> Vec<f64> {
                v.chunks(np)
                    .map(|c| c.iter().sum::<f64>() / np as f64)
                    .collect()
            };
            table.max.extend(phase_mean(&r.max));
            table.mean.extend(phase_mean(&r.mean));
        }
    }
    Ok(tables
        .into_iter()
        .map(|table| summarize(table, &frequencies, params))
        .collect())
}

fn summarize(table: Responses, frequencies: &[f64], params: &ProbeParams) -> Grating {
    let (no, nf) = (params.grating.orientations.len(), frequencies.len());
    // each statistic's slices through its own peak
    let slices = |t: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let peak = argmax(t);
        let (o, f) = (peak / nf, peak % nf);
        (
            (0..no).map(|i| t[i * nf + f]).collect(),
            (0..nf).map(|j| t[o * nf + j]).collect(),
        )
    };
    let ((o_max, f_max), (o_mean, f_mean)) = (slices(&table.max), slices(&table.mean));
    let orientation = Responses {
        max: o_max,
        mean: o_mean,
    };
    let frequency = Responses {
        max: f_max,
        mean: f_mean,
    };
    let angles = &params.grating.orientations;
    Grating {
        orientations_deg: angles.clone(),
        frequencies: frequencies.to_vec(),
        phases: params.grating.phases as usize,
        responses: table,
        orientation_circular_variance: Both::of(&orientation, |r| {
            circular_variance(angles, r, 2.0)
        }),
        orientation: Curve::new(
            "orientation_deg",
            angles.clone(),
            orientation,
            Axis::Circular(180.0),
        ),
        frequency: Curve::new(
            "frequency_cycles_per_image",
            frequencies.to_vec(),
            frequency,
            Axis::Log2,
        ),
    }
}
