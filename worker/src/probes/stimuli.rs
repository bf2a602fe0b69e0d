//! Stimulus images, made on the device of the image (or of `device`) as [N, 3, S, S] batches in
//! pixel space. Geometry uses display coordinates: x to the right, y up, origin at the image
//! centre, angles counterclockwise as seen on screen.
//!
//! - grayscale:  Y = 0.299 R + 0.587 G + 0.114 B, replicated to the three channels;
//! - rotation:   out(p) = in(R(-theta) p), bicubic, then the circular aperture (below);
//! - aperture:   out = m x + (1 - m) c, m = clamp(a S/2 + 1/2 - |p|, 0, 1): a disc of radius
//!   a S/2 (a fraction a of the inscribed circle's) with a one-pixel soft edge, the mean colour
//!   c outside;
//! - zoom z > 1: the centre crop of side round(S/z), resized up to S (bilinear);
//!   zoom z < 1: shrunk to side round(S z) (antialiased bilinear), tiled with one copy centred,
//!   or padded with c; zoom 1 is the image itself;
//! - grating:    1/2 + 1/2 cos(2 pi f (x cos theta + y sin theta) / S + phi), x, y in pixels,
//!   so orientation theta is the direction of the wave vector and rotating the theta = 0
//!   grating by theta gives the theta grating;
//! - hue h:      a uniform field g + r (cos h u + sin h v) with g = 1/2 gray, u the direction of
//!   red and v = w x u in the plane w . d = 0 of the luma weights w: every hue has luma exactly
//!   1/2; r is the largest radius that keeps every hue inside [0, 1]^3.

use std::f64::consts::PI;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::{Device, Kind, Tensor};

use super::params::ZoomFill;
use crate::error::Result;
use crate::synthesis::DATASET_MEAN;

/// Luma weights of ITU-R BT.601.
pub const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

/// The dataset's mean colour as [1, 3, 1, 1] on `device`.
pub fn mean_colour(device: Device) -> Tensor {
    Tensor::from_slice(&DATASET_MEAN)
        .to_device(device)
        .view([1, 3, 1, 1])
}

/// Luma replicated to three channels: [N, 3, H, W] -> [N, 3, H, W].
pub fn grayscale(x: &Tensor) -> Result<Tensor> {
    let w = Tensor::from_slice(&LUMA)
        .to_kind(Kind::Float)
        .to_device(x.device())
        .view([1, 3, 1, 1]);
    let y = x.f_mul(&w)?.f_sum_dim_intlist(1, true, Kind::Float)?;
    Ok(y.f_expand([-1, 3, -1, -1], false)?.contiguous())
}

/// Channel `from` of a single-colour image [3, H, W] moved into channel `to`, the others 0.
pub fn move_channel(x: &Tensor, from: i64, to: i64) -> Result<Tensor> {
    let out = x.f_zeros_like()?;
    out.f_select(0, to)?.f_copy_(&x.f_select(0, from)?)?;
    Ok(out)
}

/// Weight of the aperture per pixel: [1, 1, S, S], 1 inside the disc of radius `fraction` S/2,
/// 0 outside, with a one-pixel linear edge.
fn aperture_mask(size: i64, fraction: f64, device: Device) -> Result<Tensor> {
    let (x, y) = centred_coordinates(size, device)?;
    let r = x.f_square()?.f_add(&y.f_square()?)?.f_sqrt()?;
    let m = r
        .f_neg()?
        .f_add_scalar(fraction * size as f64 / 2.0 + 0.5)?
        .f_clamp(0.0, 1.0)?;
    Ok(m.f_view([1, 1, size, size])?)
}

/// Images [N, 3, S, S] seen through the circular aperture of radius `fraction` S/2, the rest
/// the mean colour.
pub fn aperture(x: &Tensor, fraction: f64) -> Result<Tensor> {
    let m = aperture_mask(x.size()[3], fraction, x.device())?;
    let c = mean_colour(x.device());
    Ok(x.f_sub(&c)?.f_mul(&m)?.f_add(&c)?)
}

/// First and one-past-last row (= column) of an S x S image that the aperture of radius
/// `fraction` S/2 lets through: outside that square every pixel is the mean colour.
fn aperture_span(size: i64, fraction: f64) -> (i64, i64) {
    // pixel i's centre is i + 1/2 - S/2 from the axis; its weight is > 0 while that is below
    // the radius plus the half-pixel edge
    let reach = fraction * size as f64 / 2.0 + 0.5;
    let first = (0..size)
        .find(|i| ((*i as f64) + 0.5 - size as f64 / 2.0).abs() < reach)
        .unwrap_or(0);
    (first, size - first)
}

/// Pixel-centre coordinates in display orientation: x right, y up, origin at the centre;
/// two [S, S] tensors.
fn centred_coordinates(size: i64, device: Device) -> Result<(Tensor, Tensor)> {
    let half = size as f64 / 2.0;
    let axis = Tensor::f_arange(size, (Kind::Float, device))?.f_add_scalar(0.5 - half)?;
    let x = axis.f_view([1, size])?.f_expand([size, size], false)?;
    let y = axis
        .f_neg()?
        .f_view([size, 1])?
        .f_expand([size, size], false)?;
    Ok((x, y))
}

/// The image [3, S, S] rotated by each angle (degrees) about its centre, bicubic, through the
/// aperture of radius `aperture` S/2: [N, 3, S, S]. Rotation 0 is exactly the apertured image
/// (`aperture`).
///
/// A quarter turn moves pixel centres onto pixel centres (they lie symmetrically about the
/// image centre) and the aperture is round, so the image rotated by a + 90 k degrees is the one
/// rotated by a, turned k quarter turns: exactly, not just up to interpolation. Only one angle
/// of each class modulo 90 degrees is sampled (6 of the default 24); the rest are turned copies.
pub fn rotations(image: &Tensor, angles: &[f64], aperture_fraction: f64) -> Result<Tensor> {
    let device = image.device();
    let size = image.size()[2];
    let mut sampled: Vec<f64> = Vec::new();
    // per angle: which sampled angle, and how many quarter turns on top of it
    let mut turned: Vec<(i64, i64)> = Vec::with_capacity(angles.len());
    for &a in angles {
        let base = a.rem_euclid(90.0);
        let quarter_turns = ((a - base) / 90.0).round() as i64;
        let i = match sampled.iter().position(|s| *s == base) {
            Some(i) => i,
            None => {
                sampled.push(base);
                sampled.len() - 1
            }
        };
        turned.push((i as i64, quarter_turns.rem_euclid(4)));
    }
    let inside = sampled_rotations(image, &sampled, aperture_fraction)?;
    let (first, end) = aperture_span(size, aperture_fraction);
    let out = mean_colour(device)
        .f_expand([angles.len() as i64, 3, size, size], false)?
        .contiguous();
    for (j, (i, k)) in turned.into_iter().enumerate() {
        let x = inside.f_get(i)?;
        let x = match k {
            0 => x,
            _ => x.f_rot90(k, [1, 2])?,
        };
        out.f_get(j as i64)?
            .f_narrow(1, first, end - first)?
            .f_narrow(2, first, end - first)?
            .f_copy_(&x)?;
    }
    Ok(out)
}

/// The square the aperture lets through (see `aperture_span`) of the image rotated by each
/// angle, bicubic, the aperture applied: [N, 3, L, L]. Angle 0 is the image itself, not
/// resampled, so that rotation 0 is exactly `aperture`'s image.
fn sampled_rotations(image: &Tensor, angles: &[f64], aperture_fraction: f64) -> Result<Tensor> {
    let device = image.device();
    let size = image.size()[2];
    // Only the square the aperture lets through is sampled; the rest is the mean colour.
    let (first, end) = aperture_span(size, aperture_fraction);
    let nonzero: Vec<f64> = angles.iter().copied().filter(|a| *a != 0.0).collect();
    let sampled = resampled(image, &nonzero, first, end)?;
    let unturned = image
        .f_unsqueeze(0)?
        .f_narrow(2, first, end - first)?
        .f_narrow(3, first, end - first)?;
    let mut k = 0;
    let parts = angles
        .iter()
        .map(|a| match *a == 0.0 {
            true => Ok(unturned.shallow_clone()),
            false => {
                k += 1;
                Ok(sampled.f_narrow(0, k - 1, 1)?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let rotated = Tensor::f_cat(&parts, 0)?;
    let c = mean_colour(device);
    let m = aperture_mask(size, aperture_fraction, device)?
        .f_narrow(2, first, end - first)?
        .f_narrow(3, first, end - first)?;
    Ok(rotated.f_sub(&c)?.f_mul(&m)?.f_add(&c)?)
}

/// The image [3, S, S] rotated about its centre by each angle, bicubic, on rows and columns
/// [first, end): [N, 3, end - first, end - first], in [0, 1].
fn resampled(image: &Tensor, angles: &[f64], first: i64, end: i64) -> Result<Tensor> {
    let device = image.device();
    let (n, size, side) = (angles.len() as i64, image.size()[2], end - first);
    if n == 0 {
        return Ok(Tensor::f_empty([0, 3, side, side], (image.kind(), device))?);
    }
    // affine_grid maps output (x, y_row) to input coordinates; with y_row = -y,
    // R(-theta) becomes [[cos, -sin], [sin, cos]].
    let mut theta = Vec::with_capacity(angles.len() * 6);
    for a in angles {
        let (s, c) = (a * PI / 180.0).sin_cos();
        theta.extend_from_slice(&[c as f32, -s as f32, 0.0, s as f32, c as f32, 0.0]);
    }
    let theta = Tensor::from_slice(&theta).to_device(device).view([n, 2, 3]);
    let grid = Tensor::f_affine_grid_generator(&theta, [n, 3, size, size], false)?
        .f_narrow(1, first, side)?
        .f_narrow(2, first, side)?;
    let c = mean_colour(device);
    // Sample (x - c) with zero padding so that whatever comes in from outside is the mean colour.
    let centred = image
        .f_unsqueeze(0)?
        .f_sub(&c)?
        .f_expand([n, 3, size, size], false)?;
    Ok(centred
        .f_grid_sampler(&grid, 2, 0, false)?
        .f_add(&c)?
        .f_clamp(0.0, 1.0)?)
}

/// The image [3, S, S] at zoom factor `z` (> 0), same size: [3, S, S].
pub fn zoom(image: &Tensor, z: f64, fill: ZoomFill) -> Result<Tensor> {
    debug_assert!(z > 0.0, "zoom factors are validated positive");
    let size = image.size()[2];
    if z == 1.0 {
        return Ok(image.shallow_clone());
    }
    let batch = image.f_unsqueeze(0)?;
    if z > 1.0 {
        let side = ((size as f64 / z).round() as i64).clamp(1, size);
        let offset = (size - side) / 2;
        let crop = batch.f_narrow(2, offset, side)?.f_narrow(3, offset, side)?;
        let up = crop.f_upsample_bilinear2d([size, size], false, None, None)?;
        return Ok(up.f_clamp(0.0, 1.0)?.f_squeeze_dim(0)?);
    }
    let side = ((size as f64 * z).round() as i64).clamp(1, size);
    let small = batch
        .f_internal_upsample_bilinear2d_aa([side, side], false, None, None)?
        .f_clamp(0.0, 1.0)?;
    let before = (size - side) / 2;
    let out = match fill {
        ZoomFill::Mean => {
            let c = mean_colour(image.device());
            small
                .f_sub(&c)?
                .f_constant_pad_nd([before, size - side - before, before, size - side - before])?
                .f_add(&c)?
        }
        ZoomFill::Tile => {
            // Tile k x k copies, then cut the window in which one copy starts at `before`.
            let shift = (side - before % side) % side;
            let k = (size + shift + side - 1) / side;
            small
                .f_repeat([1, 1, k, k])?
                .f_narrow(2, shift, size)?
                .f_narrow(3, shift, size)?
        }
    };
    Ok(out.f_squeeze_dim(0)?)
}

/// Full-contrast gratings for every (orientation, frequency, phase) in that order (phase
/// fastest): [No * Nf * Np, 3, S, S]; frequencies in cycles per image, angles in degrees,
/// phases equally spaced over one cycle.
pub fn gratings(
    size: i64,
    orientations: &[f64],
    frequencies: &[f64],
    phases: usize,
    device: Device,
) -> Result<Tensor> {
    let (x, y) = centred_coordinates(size, device)?;
    let mut images = Vec::with_capacity(orientations.len() * frequencies.len() * phases);
    for theta in orientations {
        let (s, c) = (theta * PI / 180.0).sin_cos();
        let along = x.f_mul_scalar(c)?.f_add(&y.f_mul_scalar(s)?)?;
        for f in frequencies {
            let wave = along.f_mul_scalar(2.0 * PI * f / size as f64)?;
            for p in 0..phases {
                let phi = 2.0 * PI * p as f64 / phases as f64;
                images.push(
                    wave.f_add_scalar(phi)?
                        .f_cos()?
                        .f_mul_scalar(0.5)?
                        .f_add_scalar(0.5)?,
                );
            }
        }
    }
    let n = images.len() as i64;
    let stack = Tensor::f_stack(&images, 0)?.f_view([n, 1, size, size])?;
    Ok(stack.f_expand([n, 3, size, size], false)?.contiguous())
}

/// `n` equally spaced isoluminant colours, hue 0 = red, counterclockwise toward green.
pub fn hue_colours(n: usize) -> Vec<[f64; 3]> {
    let (u, v) = hue_plane();
    // The radius that keeps every direction of the plane inside the cube around gray 1/2.
    let radius = (0..3600)
        .map(|k| {
            let h = k as f64 * PI / 1800.0;
            let d: [f64; 3] = std::array::from_fn(|i| h.cos() * u[i] + h.sin() * v[i]);
            d.iter()
                .map(|di| 0.5 / di.abs().max(1e-12))
                .fold(f64::INFINITY, f64::min)
        })
        .fold(f64::INFINITY, f64::min);
    (0..n)
        .map(|k| {
            let h = 2.0 * PI * k as f64 / n as f64;
            std::array::from_fn(|i| 0.5 + radius * (h.cos() * u[i] + h.sin() * v[i]))
        })
        .collect()
}

/// Orthonormal basis (u, v) of the isoluminant plane: u along red's projection, v = w x u.
fn hue_plane() -> ([f64; 3], [f64; 3]) {
    let w = LUMA;
    let ww: f64 = w.iter().map(|x| x * x).sum();
    let red: [f64; 3] = std::array::from_fn(|i| f64::from(i == 0) - w[0] / ww * w[i]);
    let u = normalize(red);
    let v = normalize([
        w[1] * u[2] - w[2] * u[1],
        w[2] * u[0] - w[0] * u[2],
        w[0] * u[1] - w[1] * u[0],
    ]);
    (u, v)
}

fn normalize(a: [f64; 3]) -> [f64; 3] {
    let n = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    a.map(|x| x / n)
}

/// Uniform fields of the given colours: [N, 3, S, S].
pub fn uniform(colours: &[[f64; 3]], size: i64, device: Device) -> Result<Tensor> {
    let flat: Vec<f32> = colours.iter().flatten().map(|c| *c as f32).collect();
    let n = colours.len() as i64;
    Ok(Tensor::from_slice(&flat)
        .to_device(device)
        .f_view([n, 3, 1, 1])?
        .f_expand([n, 3, size, size], false)?
        .contiguous())
}

/// Gaussian noise around the mean colour, clamped to [0, 1]: [3, S, S]. Drawn on the CPU from
/// a seeded generator so every device sees the same image.
pub fn noise(size: i64, std: f64, seed: u64, device: Device) -> Result<Tensor> {
    let normal = Normal::new(0.0f32, std as f32).expect("noise std validated");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity((3 * size * size) as usize);
    for c in DATASET_MEAN {
        for _ in 0..size * size {
            data.push((c + normal.sample(&mut rng)).clamp(0.0, 1.0));
        }
    }
    Ok(Tensor::from_slice(&data)
        .f_view([3, size, size])?
        .to_device(device))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs(t: &Tensor) -> f64 {
        t.abs().max().double_value(&[])
    }

    #[test]
    fn rotating_the_zero_grating_gives_the_rotated_grating() {
        let g = gratings(48, &[0.0, 30.0, 90.0], &[4.0], 1, Device::Cpu).unwrap();
        for (i, angle) in [(1, 30.0), (2, 90.0)] {
            let rotated = rotations(&g.get(0), &[angle], 1.0).unwrap();
            let expected = aperture(&g.get(i).unsqueeze(0), 1.0).unwrap();
            // inside the aperture up to bicubic interpolation error
            let inner = (rotated - expected).narrow(2, 12, 24).narrow(3, 12, 24);
            assert!(max_abs(&inner) < 0.03, "angle {angle}: {}", max_abs(&inner));
        }
    }

    #[test]
    fn quarter_turns_of_sampled_rotations_equal_sampling_every_angle() {
        // an odd and an even size: pixel centres are symmetric about the centre either way
        for size in [31, 32] {
            let img = Tensor::rand([3, size, size], (Kind::Float, Device::Cpu));
            let angles: Vec<f64> = (0..24).map(|k| 15.0 * k as f64).chain([100.0]).collect();
            let turned = rotations(&img, &angles, 0.8).unwrap();
            let (first, end) = aperture_span(size, 0.8);
            let every = sampled_rotations(&img, &angles, 0.8).unwrap();
            let inside = turned
                .narrow(2, first, end - first)
                .narrow(3, first, end - first);
            let err = max_abs(&(inside - &every));
            assert!(err < 1e-5, "{size} px: {err}");
            // outside the aperture's square: the mean colour
            let c = mean_colour(Device::Cpu);
            let outside = turned.narrow(2, 0, first) - c;
            assert!(max_abs(&outside) < 1e-7);
        }
    }

    #[test]
    fn rotation_zero_is_the_apertured_image_and_90_is_exact() {
        let img = Tensor::rand([3, 32, 32], (Kind::Float, Device::Cpu));
        let out = rotations(&img, &[0.0, 90.0], 0.8).unwrap();
        let apertured = aperture(&img.unsqueeze(0), 0.8).unwrap();
        // exactly: the same image as the baseline's `max_image_aperture`, not resampled
        assert!(out.get(0).equal(&apertured.get(0)));
        // resampling at the identity is exact in value, but it clamps to [0, 1]: values beyond
        // show whether angle 0 went through it
        let bright = &img * 2.0;
        let unclamped = aperture(&bright.unsqueeze(0), 0.8).unwrap();
        assert!(rotations(&bright, &[0.0], 0.8)
            .unwrap()
            .get(0)
            .equal(&unclamped.get(0)));
        // counterclockwise as displayed: the top row becomes the left column
        let rot90 = aperture(&img.rot90(1, [1, 2]).unsqueeze(0), 0.8).unwrap();
        assert!(max_abs(&(out.get(1) - rot90.get(0))) < 1e-4);
    }

    #[test]
    fn rotations_sample_only_what_the_aperture_lets_through() {
        let img = Tensor::rand([3, 40, 40], (Kind::Float, Device::Cpu));
        for fraction in [0.3, 0.7, 1.0] {
            let (first, end) = aperture_span(40, fraction);
            let m = aperture_mask(40, fraction, Device::Cpu).unwrap();
            // nothing outside the square gets through, and its edge rows do
            let outside = m.copy();
            let _ = outside
                .narrow(2, first, end - first)
                .narrow(3, first, end - first)
                .fill_(0.0);
            assert_eq!(max_abs(&outside), 0.0, "fraction {fraction}");
            assert!(m.narrow(2, first, 1).max().double_value(&[]) > 0.0);
            // the whole image sampled, then the aperture: the same stimuli (angles of the
            // class of 0 are not sampled at all, see `rotation_zero_is_the_apertured_image...`:
            // bicubic sampling at the identity is off by up to 1e-6 at 40 px, this reference's
            // error, not theirs)
            let angles = [33.0, 200.0, 290.0];
            let full = {
                let n = angles.len() as i64;
                let theta: Vec<f32> = angles
                    .iter()
                    .flat_map(|a: &f64| {
                        let (s, c) = (a * PI / 180.0).sin_cos();
                        [c as f32, -s as f32, 0.0, s as f32, c as f32, 0.0]
                    })
                    .collect();
                let grid = Tensor::affine_grid_generator(
                    &Tensor::from_slice(&theta).view([n, 2, 3]),
                    [n, 3, 40, 40],
                    false,
                );
                let c = mean_colour(Device::Cpu);
                let rotated = (img.unsqueeze(0) - &c)
                    .expand([n, 3, 40, 40], false)
                    .grid_sampler(&grid, 2, 0, false)
                    .g_add(&c)
                    .clamp(0.0, 1.0);
                aperture(&rotated, fraction).unwrap()
            };
            let fast = rotations(&img, &angles, fraction).unwrap();
            assert!(max_abs(&(fast - full)) < 1e-6, "fraction {fraction}");
        }
    }

    #[test]
    fn zoom_keeps_size_and_one_is_identity() {
        let img = Tensor::rand([3, 32, 32], (Kind::Float, Device::Cpu));
        assert!(max_abs(&(zoom(&img, 1.0, ZoomFill::Tile).unwrap() - &img)) == 0.0);
        for z in [0.25, 0.5, 0.75, 1.5, 2.0, 3.0, 4.0] {
            for fill in [ZoomFill::Tile, ZoomFill::Mean] {
                assert_eq!(zoom(&img, z, fill).unwrap().size(), vec![3, 32, 32]);
            }
        }
        // z = 2 shows the centre 16 x 16 pixels doubled
        let z2 = zoom(&img, 2.0, ZoomFill::Tile).unwrap();
        let centre = img.narrow(1, 8, 16).narrow(2, 8, 16).mean(Kind::Float);
        assert!((z2.mean(Kind::Float) - centre).abs().double_value(&[]) < 1e-2);
        // z = 0.5, padded: the border is the mean colour, the centre the shrunk image
        let padded = zoom(&img, 0.5, ZoomFill::Mean).unwrap();
        let corner: Vec<f32> = Vec::try_from(padded.select(1, 0).select(1, 0)).unwrap();
        for (c, m) in corner.iter().zip(DATASET_MEAN) {
            assert!((c - m).abs() < 1e-6);
        }
        // z = 0.5, tiled: period 16 pixels in both directions
        let tiled = zoom(&img, 0.5, ZoomFill::Tile).unwrap();
        assert!(max_abs(&(tiled.narrow(1, 0, 16) - tiled.narrow(1, 16, 16))) < 1e-6);
        assert!(max_abs(&(tiled.narrow(2, 0, 16) - tiled.narrow(2, 16, 16))) < 1e-6);
    }

    #[test]
    fn hues_are_isoluminant_distinct_and_in_gamut() {
        let colours = hue_colours(12);
        for c in &colours {
            let luma: f64 = c.iter().zip(LUMA).map(|(a, w)| a * w).sum();
            assert!((luma - 0.5).abs() < 1e-9, "{c:?}");
            assert!(c.iter().all(|v| (-1e-9..=1.0 + 1e-9).contains(v)), "{c:?}");
        }
        // hue 0 is reddest, hue 120-ish greener, hue 240 bluer
        assert!(colours[0][0] > colours[0][1] && colours[0][0] > colours[0][2]);
        assert!(colours[4][1] > colours[4][0]);
        assert!(colours[8][2] > colours[8][1]);
    }

    #[test]
    fn grayscale_is_luma_and_moving_a_channel_keeps_its_values() {
        let img = Tensor::rand([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let g = grayscale(&img).unwrap();
        let luma =
            img.get(0).get(0) * 0.299 + img.get(0).get(1) * 0.587 + img.get(0).get(2) * 0.114;
        for c in 0..3 {
            assert!(max_abs(&(g.get(0).get(c) - &luma)) < 1e-6);
        }
        let moved = move_channel(&img.get(0), 0, 1).unwrap();
        assert!(max_abs(&(moved.get(1) - img.get(0).get(0))) == 0.0);
        assert!(max_abs(&moved.get(0)) == 0.0 && max_abs(&moved.get(2)) == 0.0);
    }
}
