//! A one-layer network whose four filters have known kernels, for the probe tests:
//!
//! - 0 `EDGE`: odd (sine-phase) Gabor, wave vector at 60 degrees, period 8 px, luminance;
//! - 1 `CENTRE_SURROUND`: difference of Gaussians (sigma 1.5 and 3.5 px, zero sum), luminance;
//! - 2 `GREEN`: the same difference of Gaussians on the green channel only;
//! - 3 `PERIOD`: even (cosine-phase) Gabor, wave vector at 0 degrees, period 8 px, luminance.
//!
//! Kernels use the probes' display coordinates (x right, y up, angles counterclockwise); the
//! convolution is a valid cross-correlation followed by a ReLU, so a kernel responds most to
//! the pattern it depicts. Every kernel sums to zero: uniform fields give no response.
#![allow(dead_code)]

use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};
use vephys_worker::models::ops::{Activation, Conv2d, ConvConfig, Padding};
use vephys_worker::models::{InputNorm, Network, Stage};

pub const EDGE: i64 = 0;
pub const CENTRE_SURROUND: i64 = 1;
pub const GREEN: i64 = 2;
pub const PERIOD: i64 = 3;

pub const EDGE_ORIENTATION: f64 = 60.0;
pub const PERIOD_PX: f64 = 8.0;
const K: i64 = 21;

/// The four-filter network; its layer `relu` is what the probes record from.
pub fn network() -> Network {
    let net = Network::custom(
        "known_units",
        InputNorm::Affine {
            scale: 1.0,
            shift: 0.0,
        },
        Device::Cpu,
        |p| {
            let cfg = ConvConfig {
                stride: 1,
                padding: Padding::Fixed(0),
                groups: 1,
                bias: false,
            };
            vec![
                Stage::new("conv", &[], Conv2d::new(&(p / "conv"), 3, 4, K, cfg)),
                Stage::new("relu", &[], Activation::Relu),
            ]
        },
    );
    let luminance = |k: Vec<f64>| [k.clone(), k.clone(), k];
    let dog = difference_of_gaussians(1.5, 3.5);
    let zero = vec![0.0; (K * K) as usize];
    let kernels = [
        luminance(gabor(EDGE_ORIENTATION, PERIOD_PX, 3.0, -PI / 2.0)),
        luminance(dog.clone()),
        [zero.clone(), dog, zero],
        luminance(gabor(0.0, PERIOD_PX, 4.0, 0.0)),
    ];
    let flat: Vec<f32> = kernels
        .iter()
        .flat_map(|k| k.iter().flatten())
        .map(|v| *v as f32)
        .collect();
    let params = net.parameters().unwrap();
    let weight = &params["conv.weight"];
    tch::no_grad(|| {
        weight
            .shallow_clone()
            .copy_(&Tensor::from_slice(&flat).view([4, 3, K, K]))
    });
    net
}

/// Display coordinates (x, y) of kernel tap (row i, column j).
fn coords(i: i64, j: i64) -> (f64, f64) {
    let c = (K - 1) as f64 / 2.0;
    (j as f64 - c, c - i as f64)
}

fn taps(f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    let mut k = Vec::with_capacity((K * K) as usize);
    for i in 0..K {
        for j in 0..K {
            let (x, y) = coords(i, j);
            k.push(f(x, y));
        }
    }
    k
}

/// Gaussian envelope times cos(2 pi (x cos t + y sin t) / period + phase), made zero-sum by
/// subtracting the envelope times the mean ratio; scaled to unit L1 norm.
fn gabor(theta_deg: f64, period: f64, sigma: f64, phase: f64) -> Vec<f64> {
    let (s, c) = theta_deg.to_radians().sin_cos();
    let envelope = taps(|x, y| (-(x * x + y * y) / (2.0 * sigma * sigma)).exp());
    let carrier = taps(|x, y| (2.0 * PI * (x * c + y * s) / period + phase).cos());
    let dc: f64 = envelope
        .iter()
        .zip(&carrier)
        .map(|(e, w)| e * w)
        .sum::<f64>()
        / envelope.iter().sum::<f64>();
    let k: Vec<f64> = envelope
        .iter()
        .zip(&carrier)
        .map(|(e, w)| e * (w - dc))
        .collect();
    let l1: f64 = k.iter().map(|v| v.abs()).sum();
    k.into_iter().map(|v| v / l1 * 3.0).collect()
}

fn difference_of_gaussians(centre: f64, surround: f64) -> Vec<f64> {
    let gauss = |sigma: f64| {
        let g = taps(|x, y| (-(x * x + y * y) / (2.0 * sigma * sigma)).exp());
        let total: f64 = g.iter().sum();
        g.into_iter().map(|v| v / total).collect::<Vec<_>>()
    };
    gauss(centre)
        .iter()
        .zip(gauss(surround))
        .map(|(c, s)| 3.0 * (c - s))
        .collect()
}

/// A full-contrast grating [3, S, S] with wave vector at `theta_deg` and `period` px, cosine
/// phase at the image centre.
pub fn grating(size: i64, theta_deg: f64, period: f64) -> Tensor {
    let half = size as f64 / 2.0;
    let (s, c) = theta_deg.to_radians().sin_cos();
    let mut v = Vec::with_capacity((size * size) as usize);
    for i in 0..size {
        for j in 0..size {
            let (x, y) = (j as f64 + 0.5 - half, half - i as f64 - 0.5);
            v.push((0.5 + 0.5 * (2.0 * PI * (x * c + y * s) / period).cos()) as f32);
        }
    }
    Tensor::from_slice(&v)
        .view([1, size, size])
        .expand([3, size, size], false)
        .to_kind(Kind::Float)
        .contiguous()
}
