//! Probe parameters, their defaults (the protocol) and bounds, and the value lists the
//! command line accepts: `a,b,c` (strictly increasing) or `start:stop:step` (stop inclusive).

use serde::{Deserialize, Serialize};

use crate::error::{Result, WorkerError};

/// What fills the border when a zoom factor below 1 shrinks the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ZoomFill {
    /// Repeat the shrunk image (suits max images that tessellate, as channel objectives make).
    Tile,
    /// Pad with the dataset's mean colour.
    Pad,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeParams {
    /// Zoom factors (> 0); 1 is the max image itself.
    pub zoom_factors: Vec<f64>,
    pub zoom_fill: ZoomFill,
    /// Rotation angles in degrees, counterclockwise as displayed, within one turn.
    pub angles: Vec<f64>,
    /// Radius of the rotation probe's circular aperture as a fraction of half the image side.
    /// It must leave out the band along the borders where a max image is weaker (about half a
    /// receptive field wide), or the square borders come back as a 90-degree tuning.
    pub aperture: f64,
    /// Grating orientations in degrees (direction of the wave vector, counterclockwise from
    /// the image's x axis), within half a turn.
    pub orientations: Vec<f64>,
    /// Grating spatial frequencies in cycles per image, below the Nyquist limit (size / 2).
    pub frequencies: Vec<f64>,
    /// Grating phases per orientation and frequency, equally spaced; responses are averaged.
    pub phases: usize,
    /// Number of equally spaced isoluminant hues.
    pub hues: usize,
    /// Std of the baseline's gaussian noise image around the dataset's mean colour.
    pub noise_std: f64,
    /// Seed of the baseline's noise image.
    pub seed: u64,
    /// Stimuli per forward pass.
    pub batch: usize,
}

impl Default for ProbeParams {
    fn default() -> Self {
        ProbeParams {
            zoom_factors: vec![0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0],
            zoom_fill: ZoomFill::Tile,
            angles: steps(0.0, 345.0, 15.0),
            aperture: 0.7,
            orientations: steps(0.0, 165.0, 15.0),
            frequencies: vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            phases: 4,
            hues: 12,
            noise_std: 0.2,
            seed: 0,
            batch: 32,
        }
    }
}

impl ProbeParams {
    /// Checks every bound that does not depend on the image size; the first violation names
    /// its flag. `check_frequencies` adds the one that does.
    pub fn validate(&self) -> Result<()> {
        let bad = WorkerError::bad;
        check_increasing("--zoom-factors", &self.zoom_factors)?;
        if let Some(z) = self.zoom_factors.iter().find(|z| **z <= 0.0) {
            return Err(bad(
                "--zoom-factors",
                format!("zoom factor {z} must be > 0"),
            ));
        }
        check_increasing("--angles", &self.angles)?;
        check_within_turn("--angles", &self.angles, 360.0)?;
        if !(self.aperture > 0.0 && self.aperture <= 1.0) {
            return Err(bad(
                "--aperture",
                format!("{} must be in (0, 1]", self.aperture),
            ));
        }
        check_increasing("--orientations", &self.orientations)?;
        check_within_turn("--orientations", &self.orientations, 180.0)?;
        check_increasing("--frequencies", &self.frequencies)?;
        if let Some(f) = self.frequencies.iter().find(|f| **f <= 0.0) {
            return Err(bad(
                "--frequencies",
                format!("{f} cycles per image must be > 0"),
            ));
        }
        if self.phases == 0 {
            return Err(bad("--phases", "use at least 1 phase".to_string()));
        }
        if self.hues < 2 {
            return Err(bad(
                "--hues",
                format!("{} hues make no sweep; use at least 2", self.hues),
            ));
        }
        if !(self.noise_std.is_finite() && self.noise_std >= 0.0) {
            return Err(bad(
                "--noise-std",
                format!("{} must be >= 0", self.noise_std),
            ));
        }
        if self.batch == 0 {
            return Err(bad("--probe-batch", "use at least 1".to_string()));
        }
        Ok(())
    }

    /// Grating frequencies must stay below the Nyquist limit of `size` px images.
    pub fn check_frequencies(&self, size: i64) -> Result<()> {
        let nyquist = size as f64 / 2.0;
        match self.frequencies.iter().find(|f| **f >= nyquist) {
            Some(f) => Err(WorkerError::bad(
                "--frequencies",
                format!(
                    "{f} cycles per image is not below the Nyquist limit of {nyquist} for \
                     {size} px images; leave it out or use larger images"
                ),
            )),
            None => Ok(()),
        }
    }
}

/// start, start + step, ... up to stop inclusive (within a millionth of a step).
fn steps(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let n = ((stop - start) / step + 1e-6).floor() as usize;
    (0..=n).map(|i| start + i as f64 * step).collect()
}

/// Parses a value list for flag `name`: `a,b,c` or `start:stop:step` (stop inclusive).
pub fn parse_values(name: &'static str, spec: &str) -> Result<Vec<f64>> {
    let bad = |reason: String| {
        WorkerError::bad(
            name,
            format!("`{spec}`: {reason}; write a list such as `0.5,1,2` or a range start:stop:step such as `0:345:15`"),
        )
    };
    let number = |s: &str| -> Result<f64> {
        let s = s.trim();
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(bad(format!("`{s}` is not a number"))),
        }
    };
    let spec_trimmed = spec.trim();
    if spec_trimmed.is_empty() {
        return Err(bad("it is empty".to_string()));
    }
    let values = match spec_trimmed.split(':').collect::<Vec<_>>()[..] {
        [one] => one.split(',').map(number).collect::<Result<Vec<f64>>>()?,
        [start, stop, step] => {
            let (start, stop, step) = (number(start)?, number(stop)?, number(step)?);
            if step <= 0.0 {
                return Err(bad(format!("step {step} must be > 0")));
            }
            if stop < start {
                return Err(bad(format!("range {start}:{stop} is inverted")));
            }
            steps(start, stop, step)
        }
        _ => return Err(bad("a range has exactly three parts".to_string())),
    };
    check_increasing(name, &values)?;
    Ok(values)
}

fn check_increasing(name: &'static str, values: &[f64]) -> Result<()> {
    if values.is_empty() {
        return Err(WorkerError::bad(name, "the list is empty".to_string()));
    }
    if let Some(pair) = values.windows(2).find(|p| p[1] <= p[0]) {
        return Err(WorkerError::bad(
            name,
            format!(
                "values must be strictly increasing, but {} follows {}",
                pair[1], pair[0]
            ),
        ));
    }
    Ok(())
}

/// Circular values must fit in [first, first + period): the curve wraps around.
fn check_within_turn(name: &'static str, values: &[f64], period: f64) -> Result<()> {
    let (first, last) = (values[0], values[values.len() - 1]);
    if last - first >= period {
        return Err(WorkerError::bad(
            name,
            format!("{first} to {last} spans a full turn of {period} degrees or more; leave out the repeat"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_parse() {
        assert_eq!(
            parse_values("--x", "0.5, 1,2").unwrap(),
            vec![0.5, 1.0, 2.0]
        );
        let angles = parse_values("--x", "0:345:15").unwrap();
        assert_eq!(angles.len(), 24);
        assert_eq!(angles[23], 345.0);
        assert_eq!(parse_values("--x", "0:1:0.25").unwrap().len(), 5);
    }

    #[test]
    fn empty_inverted_and_unordered_values_are_refused() {
        for spec in [
            "", " ", "1:0:1", "0:10:0", "0:10:-1", "2,1", "1,1", "a", "1:2", "1,,2",
        ] {
            let err = parse_values("--x", spec);
            assert!(err.is_err(), "{spec:?} accepted");
        }
        let err = parse_values("--x", "345:0:15").unwrap_err().to_string();
        assert!(err.contains("inverted"), "{err}");
    }

    #[test]
    fn defaults_follow_the_protocol_and_validate() {
        let p = ProbeParams::default();
        assert_eq!(p.angles.len(), 24);
        assert_eq!(p.orientations.len(), 12);
        assert!(p.frequencies.len() >= 6);
        p.validate().unwrap();
        p.check_frequencies(224).unwrap();
        // 64 cycles per image is above Nyquist at 64 px
        assert!(p.check_frequencies(64).is_err());
        let zero_zoom = ProbeParams {
            zoom_factors: vec![0.0, 1.0],
            ..ProbeParams::default()
        };
        assert!(zero_zoom
            .validate()
            .unwrap_err()
            .to_string()
            .contains("> 0"));
        let full_turn = ProbeParams {
            angles: vec![0.0, 180.0, 360.0],
            ..ProbeParams::default()
        };
        assert!(full_turn.validate().is_err());
    }
}
