//! What synthesis maximises and what every probe measures, for a batch where image i belongs
//! to filter f_i and A_i = activations[i, f_i] is an h x w map:
//!
//! - `channel`: mean(A_i)            (the paper's objective)
//! - `unit`:    A_i[y, x]            (centre by default)
//! - `layer`:   mean over every filter's map of image i
//! - activity:  (max(A_i), mean(A_i)) — what every probe reports.
//!
//! Each image's objective depends on that image alone, so a batch is exactly a set of
//! independent runs.

use tch::Tensor;

use super::params::ObjectiveKind;
use crate::error::{Result, WorkerError};

#[derive(Debug, Clone, Copy)]
pub enum Objective {
    Channel,
    Unit { y: i64, x: i64 },
    Layer,
}

impl Objective {
    /// Resolves the objective for a layer whose maps are `h` x `w`.
    pub fn new(
        kind: ObjectiveKind,
        unit_y: Option<i64>,
        unit_x: Option<i64>,
        h: i64,
        w: i64,
    ) -> Result<Objective> {
        Ok(match kind {
            ObjectiveKind::Channel => Objective::Channel,
            ObjectiveKind::Layer => Objective::Layer,
            ObjectiveKind::Unit => {
                let (y, x) = (unit_y.unwrap_or(h / 2), unit_x.unwrap_or(w / 2));
                if !(0..h).contains(&y) || !(0..w).contains(&x) {
                    return Err(WorkerError::bad(
                        "--unit-y/--unit-x",
                        format!("({y}, {x}) is outside the layer's {h} x {w} map"),
                    ));
                }
                Objective::Unit { y, x }
            }
        })
    }

    /// Objective value per image: [B].
    pub fn evaluate(&self, acts: &Tensor, filters: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Objective::Channel => {
                own_map(acts, filters)?.f_mean_dim(&[1i64, 2, 3][..], false, None)?
            }
            Objective::Unit { y, x } => own_map(acts, filters)?
                .f_select(2, *y)?
                .f_select(2, *x)?
                .f_view([-1])?,
            Objective::Layer => acts.f_mean_dim(&[1i64, 2, 3][..], false, None)?,
        })
    }
}

/// (max, mean) of each image's own filter map: two [B] tensors.
pub fn activity(acts: &Tensor, filters: &Tensor) -> Result<(Tensor, Tensor)> {
    let maps = own_map(acts, filters)?;
    Ok((
        maps.f_amax([1, 2, 3], false)?,
        maps.f_mean_dim(&[1i64, 2, 3][..], false, None)?,
    ))
}

/// A_i = acts[i, f_i] as [B, 1, h, w].
fn own_map(acts: &Tensor, filters: &Tensor) -> Result<Tensor> {
    let s = acts.size();
    let index = filters
        .f_view([s[0], 1, 1, 1])?
        .f_expand([s[0], 1, s[2], s[3]], false)?;
    Ok(acts.f_gather(1, &index, false)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn objectives_read_each_images_own_filter() {
        // acts[i, c, y, x] = 100 i + 10 c + (y * 2 + x)
        let acts = Tensor::arange(2 * 3 * 2 * 2, (Kind::Float, Device::Cpu)).view([2, 3, 2, 2]);
        let acts = Tensor::from_slice(&[0.0f32, 100.0]).view([2, 1, 1, 1])
            + Tensor::from_slice(&[0.0f32, 10.0, 20.0]).view([1, 3, 1, 1])
            + acts.remainder(4);
        let filters = Tensor::from_slice(&[2i64, 0]);
        let chan: Vec<f32> =
            Vec::try_from(Objective::Channel.evaluate(&acts, &filters).unwrap()).unwrap();
        assert_eq!(chan, vec![21.5, 101.5]);
        let unit: Vec<f32> = Vec::try_from(
            Objective::Unit { y: 1, x: 0 }
                .evaluate(&acts, &filters)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(unit, vec![22.0, 102.0]);
        let layer: Vec<f32> =
            Vec::try_from(Objective::Layer.evaluate(&acts, &filters).unwrap()).unwrap();
        assert_eq!(layer, vec![11.5, 111.5]);
        let (max, mean) = activity(&acts, &filters).unwrap();
        assert_eq!(Vec::<f32>::try_from(max).unwrap(), vec![23.0, 103.0]);
        assert_eq!(Vec::<f32>::try_from(mean).unwrap(), vec![21.5, 101.5]);
    }

    #[test]
    fn unit_position_must_be_inside_the_map() {
        assert!(Objective::new(ObjectiveKind::Unit, Some(5), None, 4, 4).is_err());
        assert!(matches!(
            Objective::new(ObjectiveKind::Unit, None, None, 5, 7).unwrap(),
            Objective::Unit { y: 2, x: 3 }
        ));
    }
}
