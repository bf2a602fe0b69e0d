//! Numbers derived from a tuning curve r(v_k) sampled at increasing stimulus values v_k.
//!
//! - preferred value: the v_k of the largest response; peak = that response;
//! - peak/mean ratio: max_k r_k / mean_k r_k (none when the mean is not positive);
//! - bandwidth (FWHM): the width of the peak's lobe at half height h = (max + min) / 2, with
//!   the crossings linearly interpolated; in the axis' units (degrees for circular axes, which
//!   wrap around; octaves for log axes such as zoom and spatial frequency); none when the curve
//!   does not fall to h on both sides within the sampled range;
//! - flat: max - min <= 5% of max(|max|, |min|) (nothing to tune to);
//! - circular variance over m theta: 1 - |sum r_k e^{i m theta_k}| / sum r_k with r rectified
//!   at 0 (m = 2 for orientation: 0 = one orientation only, 1 = all orientations alike);
//! - rotational symmetry period: for a full turn sampled uniformly at N angles, 360 / g for the
//!   largest g <= N/2 dividing N such that the harmonics of r that are multiples of g hold at
//!   least 90% of its non-constant power (a curve repeating every 180 degrees has only even
//!   harmonics, so g = 2); none for flat curves or other samplings;
//! - symmetry strength: 1 - the circular variance at that period's harmonic (360 / period);
//! - colour selectivity index: (A_colour - A_gray) / (A_colour + A_gray), none when the sum is
//!   not positive.

pub use vephys_proto::derived::Tuning;

/// How the stimulus axis is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Axis {
    Linear,
    /// Wraps around after `period` (degrees).
    Circular(f64),
    /// Distances in octaves (log2 of the ratio).
    Log2,
}

/// Relative spread below which a curve counts as flat.
const FLAT: f64 = 0.05;
/// Share of the non-constant power the symmetry harmonics must hold.
const SYMMETRY_POWER: f64 = 0.9;

/// The tuning of the curve r over `values` on `axis`.
pub fn of(values: &[f64], r: &[f64], axis: Axis) -> Tuning {
    debug_assert_eq!(values.len(), r.len());
    debug_assert!(!r.is_empty(), "a tuning curve needs at least one point");
    let peak_at = argmax(r);
    let max = r[peak_at];
    let mean = r.iter().sum::<f64>() / r.len() as f64;
    Tuning {
        preferred: values[peak_at],
        peak: max,
        peak_to_mean: (mean > 0.0).then(|| max / mean),
        bandwidth: fwhm(values, r, axis, peak_at),
        flat: is_flat(r),
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(r: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in r.iter().enumerate() {
        if *v > r[best] {
            best = i;
        }
    }
    best
}

pub fn is_flat(r: &[f64]) -> bool {
    let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = r.iter().copied().fold(f64::INFINITY, f64::min);
    max - min <= FLAT * max.abs().max(min.abs())
}

/// Full width at half height of the lobe around `peak_at`.
fn fwhm(values: &[f64], r: &[f64], axis: Axis, peak_at: usize) -> Option<f64> {
    let n = r.len();
    let half = (r[peak_at] + r.iter().copied().fold(f64::INFINITY, f64::min)) / 2.0;
    if is_flat(r) || n < 3 {
        return None;
    }
    // Position of sample i on a line that unrolls circular axes from the peak outward.
    let coord = |i: isize| -> f64 {
        let k = i.rem_euclid(n as isize) as usize;
        let turns = i.div_euclid(n as isize) as f64;
        match axis {
            Axis::Linear => values[k],
            Axis::Circular(period) => values[k] + turns * period,
            Axis::Log2 => values[k].log2(),
        }
    };
    let response = |i: isize| r[i.rem_euclid(n as isize) as usize];
    let circular = matches!(axis, Axis::Circular(_));
    // Walk from the peak in direction `dir` to the first sample below half height.
    let crossing = |dir: isize| -> Option<f64> {
        let mut i = peak_at as isize;
        for _ in 0..n {
            let next = i + dir;
            if !circular && !(0..n as isize).contains(&next) {
                return None;
            }
            if response(next) < half {
                let t = (response(i) - half) / (response(i) - response(next));
                return Some(coord(i) + t * (coord(next) - coord(i)));
            }
            i = next;
        }
        None
    };
    Some(crossing(1)? - crossing(-1)?)
}

/// 1 - |sum r e^{i m theta}| / sum r, r rectified at 0; none when every response is <= 0.
pub fn circular_variance(angles_deg: &[f64], r: &[f64], m: f64) -> Option<f64> {
    let (mut re, mut im, mut total) = (0.0, 0.0, 0.0);
    for (a, v) in angles_deg.iter().zip(r) {
        let v = v.max(0.0);
        let phase = m * a.to_radians();
        re += v * phase.cos();
        im += v * phase.sin();
        total += v;
    }
    (total > 0.0).then(|| 1.0 - (re * re + im * im).sqrt() / total)
}

/// The rotational symmetry period in degrees (see the module doc).
pub fn symmetry_period(angles_deg: &[f64], r: &[f64]) -> Option<f64> {
    let n = r.len();
    let step = 360.0 / n as f64;
    let uniform = angles_deg
        .iter()
        .enumerate()
        .all(|(k, a)| (a - angles_deg[0] - k as f64 * step).abs() < 1e-6);
    if n < 2 || !uniform || is_flat(r) {
        return None;
    }
    let power: Vec<f64> = (0..n)
        .map(|h| {
            let (mut re, mut im) = (0.0, 0.0);
            for (k, v) in r.iter().enumerate() {
                let phase = 2.0 * std::f64::consts::PI * (h * k) as f64 / n as f64;
                re += v * phase.cos();
                im -= v * phase.sin();
            }
            re * re + im * im
        })
        .collect();
    let varying: f64 = power[1..].iter().sum();
    let g = (1..=n / 2)
        .rev()
        .filter(|g| n.is_multiple_of(*g))
        .find(|&g| {
            let held: f64 = (1..n)
                .filter(|h| h.is_multiple_of(g))
                .map(|h| power[h])
                .sum();
            held >= SYMMETRY_POWER * varying
        })
        .unwrap_or(1);
    Some(360.0 / g as f64)
}

/// How strongly the curve repeats with its symmetry period p: the resultant length at the
/// harmonic 360 / p, 1 - circular_variance(m = 360 / p), from 0 (no such pattern) to 1 (a pure
/// p-periodic one). None where the period is.
pub fn symmetry_strength(angles_deg: &[f64], r: &[f64]) -> Option<f64> {
    let period = symmetry_period(angles_deg, r)?;
    circular_variance(angles_deg, r, 360.0 / period).map(|v| 1.0 - v)
}

/// (a - b) / (a + b); none when a + b is not positive.
pub fn selectivity_index(a: f64, b: f64) -> Option<f64> {
    (a + b > 0.0).then(|| (a - b) / (a + b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn angles(n: usize) -> Vec<f64> {
        (0..n).map(|k| k as f64 * 360.0 / n as f64).collect()
    }

    #[test]
    fn gaussian_bump_has_its_fwhm() {
        // sigma 10 degrees: FWHM = 2 sqrt(2 ln 2) sigma = 23.55
        let v: Vec<f64> = (0..=100).map(|k| k as f64).collect();
        let r: Vec<f64> = v
            .iter()
            .map(|x| (-(x - 40.0f64).powi(2) / 200.0).exp())
            .collect();
        let t = of(&v, &r, Axis::Linear);
        assert_eq!(t.preferred, 40.0);
        assert!((t.bandwidth.unwrap() - 23.55).abs() < 0.1, "{t:?}");
        assert!(!t.flat);
    }

    #[test]
    fn circular_fwhm_wraps_and_log_axes_count_octaves() {
        let a = angles(24);
        // peak at 0: the lobe spans 345 and 15 degrees
        let r: Vec<f64> = a.iter().map(|x| 1.0 + (x.to_radians()).cos()).collect();
        let t = of(&a, &r, Axis::Circular(360.0));
        assert_eq!(t.preferred, 0.0);
        // 1 + cos is at half height (1) at +-90 degrees
        assert!((t.bandwidth.unwrap() - 180.0).abs() < 1.0, "{t:?}");
        assert!(of(&a, &r, Axis::Linear).bandwidth.is_none());

        let z = [0.25, 0.5, 1.0, 2.0, 4.0];
        let r = [0.0, 0.0, 1.0, 0.0, 0.0];
        // crossings halfway between samples: one octave wide
        assert!((of(&z, &r, Axis::Log2).bandwidth.unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn circular_variance_over_two_theta() {
        let a = angles(24);
        let one: Vec<f64> = a
            .iter()
            .map(|x| f64::from(*x == 30.0 || *x == 210.0))
            .collect();
        assert!(circular_variance(&a, &one, 2.0).unwrap() < 1e-9);
        let flat = vec![1.0; 24];
        assert!((circular_variance(&a, &flat, 2.0).unwrap() - 1.0).abs() < 1e-9);
        assert!(circular_variance(&a, &[0.0; 24], 2.0).is_none());
    }

    #[test]
    fn symmetry_period_finds_the_repeat() {
        let a = angles(24);
        let curve =
            |f: &dyn Fn(f64) -> f64| a.iter().map(|x| f(x.to_radians())).collect::<Vec<_>>();
        let p = |r: Vec<f64>| symmetry_period(&a, &r);
        assert_eq!(p(curve(&|t| 2.0 + (2.0 * t).cos())), Some(180.0));
        assert_eq!(p(curve(&|t| 2.0 + (4.0 * t - 0.3).cos())), Some(90.0));
        assert_eq!(p(curve(&|t| 2.0 + t.cos())), Some(360.0));
        // sharp peaks at 0 and 180 only: all even harmonics
        assert_eq!(p(curve(&|t| f64::from(t.sin().abs() < 1e-9))), Some(180.0));
        assert_eq!(p(vec![1.0; 24]), None);
        assert_eq!(symmetry_period(&[0.0, 10.0, 20.0], &[1.0, 2.0, 1.0]), None);
    }

    /// The paper's 4-fold unit, peaks at 0 and 90 degrees: untuned over 2 theta, yet a strong
    /// 90-degree symmetry; an untuned unit has neither.
    #[test]
    fn a_four_fold_unit_reads_as_four_fold_symmetric() {
        let a = angles(24);
        let four: Vec<f64> = a
            .iter()
            .map(|x| 1.0 + (4.0 * x.to_radians()).cos())
            .collect();
        assert!(circular_variance(&a, &four, 2.0).unwrap() > 0.99);
        assert_eq!(symmetry_period(&a, &four), Some(90.0));
        assert!(
            symmetry_strength(&a, &four).unwrap() > 0.49,
            "1 + cos 4t: strength 1/2"
        );
        let peaks: Vec<f64> = a
            .iter()
            .map(|x| f64::from((x % 90.0).abs() < 1e-9))
            .collect();
        assert!(symmetry_strength(&a, &peaks).unwrap() > 0.99);
        let noisy: Vec<f64> = (0..24)
            .map(|k| 1.0 + 0.01 * ((k * 7919) % 13) as f64)
            .collect();
        let weak = symmetry_strength(&a, &noisy).unwrap_or(0.0);
        assert!(weak < 0.05, "{weak}");
    }

    #[test]
    fn selectivity_index_and_flatness() {
        assert_eq!(selectivity_index(3.0, 1.0), Some(0.5));
        assert_eq!(selectivity_index(0.0, 0.0), None);
        assert!(is_flat(&[1.0, 1.04, 1.02]));
        assert!(!is_flat(&[1.0, 1.2]));
        assert!(is_flat(&[0.0, 0.0]));
    }
}
