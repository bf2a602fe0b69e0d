//! The image priors of synthesis (Erhan 2009, Yosinski 2015):
//!
//! - L2 decay toward the dataset's mean colour c:  x <- c + (1 - theta_decay) (x - c);
//! - Gaussian blur of std sigma pixels (separable, radius ceil(3 sigma), reflect padding so
//!   borders are not darkened);
//! - clamping to the valid pixel range [0, 1].

use tch::{Kind, Tensor};

use crate::error::Result;

pub fn blur_radius(sigma: f64) -> i64 {
    if sigma <= 0.0 {
        0
    } else {
        (3.0 * sigma).ceil().max(1.0) as i64
    }
}

pub fn decay_toward(x: &Tensor, center: &Tensor, decay: f64) -> Result<Tensor> {
    if decay == 0.0 {
        return Ok(x.shallow_clone());
    }
    Ok(x.f_sub(center)?.f_mul_scalar(1.0 - decay)?.f_add(center)?)
}

/// A separable Gaussian blur for 3-channel images, built once and applied many times.
pub struct GaussianBlur {
    radius: i64,
    horizontal: Tensor,
    vertical: Tensor,
}

impl GaussianBlur {
    pub fn new(sigma: f64, device: tch::Device) -> GaussianBlur {
        let radius = blur_radius(sigma);
        let taps: Vec<f32> = (-radius..=radius)
            .map(|t| (-0.5 * (t as f64 / sigma).powi(2)).exp() as f32)
            .collect();
        let k = Tensor::from_slice(&taps).to_device(device);
        let k = &k / k.sum(Kind::Float);
        let n = 2 * radius + 1;
        GaussianBlur {
            radius,
            horizontal: k.view([1, 1, 1, n]).repeat([3, 1, 1, 1]),
            vertical: k.view([1, 1, n, 1]).repeat([3, 1, 1, 1]),
        }
    }

    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let r = self.radius;
        let padded = x.f_reflection_pad2d([r, r, r, r])?;
        let h = padded.f_conv2d(&self.horizontal, None::<Tensor>, [1], [0], [1], 3)?;
        Ok(h.f_conv2d(&self.vertical, None::<Tensor>, [1], [0], [1], 3)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_constant_images_and_mass() {
        let blur = GaussianBlur::new(1.0, tch::Device::Cpu);
        let flat = Tensor::full([1, 3, 16, 16], 0.3, (Kind::Float, tch::Device::Cpu));
        let out = blur.apply(&flat).unwrap();
        assert!((out - 0.3).abs().max().double_value(&[]) < 1e-6);

        let impulse = Tensor::zeros([1, 3, 16, 16], (Kind::Float, tch::Device::Cpu));
        let _ = impulse.get(0).get(0).get(8).get(8).fill_(1.0);
        let out = blur.apply(&impulse).unwrap();
        let total = out.get(0).get(0).sum(Kind::Float).double_value(&[]);
        assert!(
            (total - 1.0).abs() < 1e-5,
            "blur must preserve mass, got {total}"
        );
        // sigma 1: the centre tap of the 2-D kernel is 1 / (2 pi) after normalisation (~0.159)
        let centre = out.get(0).get(0).get(8).get(8).double_value(&[]);
        assert!((centre - 0.1592).abs() < 2e-3, "centre {centre}");
    }

    #[test]
    fn decay_moves_toward_center_by_theta() {
        let x = Tensor::from_slice(&[1.0f32, 0.0]);
        let c = Tensor::from_slice(&[0.5f32, 0.5]);
        let out = decay_toward(&x, &c, 0.1).unwrap();
        let v: Vec<f32> = Vec::try_from(out).unwrap();
        assert!(
            (v[0] - 0.95).abs() < 1e-6 && (v[1] - 0.05).abs() < 1e-6,
            "{v:?}"
        );
    }
}
