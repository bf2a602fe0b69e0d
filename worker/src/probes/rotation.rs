//! `rotation`: the max image rotated about its centre by each angle (degrees, counterclockwise
//! as displayed), bicubic, and always seen through a circular aperture centred on the image,
//! radius `aperture` x S/2, with the mean colour outside (`stimuli::rotations`). The aperture is
//! the same for every angle and leaves out the band along the borders where a max image is
//! weaker, so image borders cannot fake a tuning curve: a rotation-invariant unit gives a flat
//! one. Consistency: rotation 0 is the max image through the aperture, whose response the
//! baseline reports as `max_image_aperture`.
//!
//! Derived: the curve's tuning on a circular axis, its orientation circular variance over
//! 2 theta, its rotational symmetry period and that symmetry's strength (`tuning`): a unit
//! with the paper's 4-fold pattern (peaks at 0 and 90 degrees) has a circular variance over
//! 2 theta near 1, as an untuned one, but a 90-degree period of strength near 1.

use serde::Serialize;

use super::measure::{measure, Both};
use super::params::ProbeParams;
use super::stimuli::rotations;
use super::tuning::{circular_variance, symmetry_period, symmetry_strength, Axis};
use super::{Curve, MaxImage};
use crate::error::Result;
use crate::models::Network;

#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    pub curve: Curve,
    pub orientation_circular_variance: Both<Option<f64>>,
    pub symmetry_period_deg: Both<Option<f64>>,
    /// 1 - the circular variance at the symmetry's harmonic: 0 none, 1 a pure pattern.
    pub symmetry_strength: Both<Option<f64>>,
}

pub fn run(
    net: &Network,
    layer: usize,
    filters: &[i64],
    images: &[MaxImage],
    params: &ProbeParams,
) -> Result<Vec<Rotation>> {
    debug_assert_eq!(filters.len(), images.len());
    let angles = &params.rotation.angles;
    let mut out = Vec::with_capacity(filters.len());
    for (&filter, max_image) in filters.iter().zip(images) {
        let image = max_image.image.to_device(net.device());
        let stimuli = rotations(&image, angles, params.rotation.aperture)?;
        let r = measure(net, layer, &stimuli, &[filter], params.eval())?.remove(0);
        out.push(Rotation {
            orientation_circular_variance: Both::of(&r, |r| circular_variance(angles, r, 2.0)),
            symmetry_period_deg: Both::of(&r, |r| symmetry_period(angles, r)),
            symmetry_strength: Both::of(&r, |r| symmetry_strength(angles, r)),
            curve: Curve::new("rotation_deg", angles.clone(), r, Axis::Circular(360.0)),
        });
    }
    Ok(out)
}
