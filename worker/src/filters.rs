//! Filter selections: `all`, or a comma-separated list of indices and inclusive ranges
//! (`0-15,40`). Order of first appearance is kept; repeats are dropped.

use crate::error::{Result, WorkerError};

pub fn parse_filters(spec: &str, channels: i64, layer: &str) -> Result<Vec<i64>> {
    let bad = |reason: String| WorkerError::BadFilterSpec {
        spec: spec.to_string(),
        reason,
    };
    let spec_trimmed = spec.trim();
    if spec_trimmed.eq_ignore_ascii_case("all") {
        return Ok((0..channels).collect());
    }
    if spec_trimmed.is_empty() {
        return Err(bad("it is empty".into()));
    }
    let parse_index = |s: &str| -> Result<i64> {
        s.trim()
            .parse::<i64>()
            .map_err(|_| bad(format!("`{}` is not a filter index", s.trim())))
    };
    let mut filters = Vec::new();
    for part in spec_trimmed.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse_index(a)?, parse_index(b)?),
            None => {
                let i = parse_index(part)?;
                (i, i)
            }
        };
        if hi < lo {
            return Err(bad(format!("range {lo}-{hi} is inverted")));
        }
        for f in lo..=hi {
            if f >= channels {
                return Err(WorkerError::FilterOutOfRange {
                    layer: layer.to_string(),
                    filter: f,
                    channels,
                });
            }
            if !filters.contains(&f) {
                filters.push(f);
            }
        }
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_ranges_and_all() {
        assert_eq!(parse_filters("all", 3, "l").unwrap(), vec![0, 1, 2]);
        assert_eq!(
            parse_filters("0-3,7, 2", 10, "l").unwrap(),
            vec![0, 1, 2, 3, 7]
        );
        assert_eq!(parse_filters("5", 10, "l").unwrap(), vec![5]);
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in ["", "a", "3-1", "1,,2", "-1", "1-"] {
            assert!(parse_filters(spec, 10, "l").is_err(), "{spec} accepted");
        }
        let err = parse_filters("0-10", 10, "stem").unwrap_err().to_string();
        assert!(err.contains("filter 10 is out of range"), "{err}");
    }
}
